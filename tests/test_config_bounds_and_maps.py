"""Issue #30 items 6 and 8: configs that would exhaust the machine are refused at load (one line, the file
and the field, an override), and outputs say what they hold (maps, rejections, plots, help)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from jettagger_coffea._errors import JetTaggerError
from jettagger_coffea.data import sample_path

from .conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]
PFN = ROOT / "models" / "pfn"


def _one_line(r) -> str:
    """The CLI's refusal: exit 2 and exactly one line on stderr."""
    assert r.returncode == 2, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


def _bundle_copy(tmp_path: Path, edit_config=None, edit_preprocess=None) -> Path:
    """The shipped pfn bundle, copied with its data config or preprocess.json edited."""
    b = tmp_path / "bundle"
    shutil.copytree(PFN, b)
    if edit_config is not None:
        cfg = yaml.safe_load((b / "data_config.yaml").read_text())
        edit_config(cfg)
        (b / "data_config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    if edit_preprocess is not None:
        pre = json.loads((b / "preprocess.json").read_text())
        edit_preprocess(pre)
        (b / "preprocess.json").write_text(json.dumps(pre))
    return b


# -- 6. configs that exhaust the machine --------------------------------------------------------------------
def test_power_tower_is_refused_at_load_naming_file_and_field(tmp_path, monkeypatch):
    b = _bundle_copy(tmp_path, edit_config=lambda c: c["new_variables"].update(part_big="0*(9**9**9**9)"))
    line = _one_line(run_cli("run", "--model", b, "-o", tmp_path / "out", timeout=120))
    assert line.startswith(f"jettagger run: error: {b / 'data_config.yaml'}: new_variables.part_big: ")
    assert "nested powers" in line and "JETTAGGER_UNBOUNDED_EXPRESSIONS=1" in line
    assert not (tmp_path / "out").exists()

    from jettagger_coffea.expressions import Expression

    for ok in ("x**2", "(a**2 + b**2)**0.5", "x**(1/3)", "x**-1", "np.sqrt((pf_pt * np.cosh(pf_eta)) ** 2)"):
        Expression(ok)
    for bad, why in (
        ("9**99", "exponent 99 (at most 64"),
        ("x**(9*9*9*9)", "exponent 6561"),
        ("(9**64)**64", "a power of a power"),
        ("'a' * 10**9", "repeating a sequence"),
        ("ak.pad_none(x, 10000000)", "above the cap of 4096"),
        ("+".join(["x"] * 300), "nodes (at most 400)"),
    ):
        with pytest.raises(JetTaggerError, match=re.escape(why)):
            Expression(bad, where="c.yaml: new_variables.v")
    monkeypatch.setenv("JETTAGGER_UNBOUNDED_EXPRESSIONS", "1")  # the override: validation only, never run
    assert Expression("0*(9**9**9**9)").names == set()


def test_length_cap_at_load_with_fixed_padding(tmp_path, monkeypatch):
    def huge(cfg):
        cfg["inputs"]["pf_points"]["length"] = 1_000_000_000

    b = _bundle_copy(tmp_path, edit_config=huge)
    line = _one_line(run_cli("run", "--model", b, "--padding", "fixed", "-o", tmp_path / "out", timeout=120))
    assert line == (
        f"jettagger run: error: {b / 'data_config.yaml'}: input group 'pf_points': length 1000000000 is "
        "above the cap of 4096 particles per jet (set JETTAGGER_MAX_LENGTH to raise it)"
    )
    from jettagger_coffea.batching import check_padding
    from jettagger_coffea.dataconfig import DataConfig

    with pytest.raises(JetTaggerError, match=r"^--padding 100000 is above the cap of 4096 particles per jet"):
        check_padding("100000")  # JetTagger's check, before any work

    cfg = yaml.safe_load((PFN / "data_config.yaml").read_text())
    cfg["inputs"]["pf_points"]["length"] = 5000
    monkeypatch.setenv("JETTAGGER_MAX_LENGTH", "8192")  # the override
    assert DataConfig.from_dict(cfg).inputs["pf_points"].length == 5000
    assert check_padding("6000") == 6000
    monkeypatch.setenv("JETTAGGER_MAX_LENGTH", "lots")
    with pytest.raises(JetTaggerError, match="JETTAGGER_MAX_LENGTH='lots': expected a positive integer"):
        DataConfig.from_dict(cfg)


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda g: g.update(var_length=10**9), "pf_points.var_length = 1000000000 is above the cap of 4096"),
        (
            lambda g: g.update(max_length=g.pop("var_length"), min_length=-5),
            "pf_points.min_length = -5: must be an integer >= 0",
        ),
        (lambda g: g.update(var_length=12.5), "pf_points.var_length = 12.5: must be an integer >= 1"),
    ],
)
def test_import_weaver_refuses_bad_lengths(tmp_path, edit, field):
    pre = json.loads((PFN / "preprocess.json").read_text())
    edit(pre["pf_points"])
    path = tmp_path / "preprocess.json"
    path.write_text(json.dumps(pre))
    out = tmp_path / "imported"
    r = run_cli("import-weaver", "--onnx", PFN / "model.onnx", "--preprocess", path, "-o", out, timeout=120)
    assert _one_line(r) == f"jettagger import-weaver: error: {path}: {field}" + (
        " particles per jet (set JETTAGGER_MAX_LENGTH to raise it)" if "cap" in field else ""
    )
    assert not out.exists()


def test_bundle_with_stale_var_length_is_refused(tmp_path):
    b = _bundle_copy(tmp_path, edit_preprocess=lambda p: p["pf_features"].update(var_length=64))
    line = _one_line(run_cli("run", "--model", b, "-o", tmp_path / "out", timeout=120))
    assert line == (
        f"jettagger run: error: {b / 'preprocess.json'}: pf_features.var_length = 64 disagrees with "
        f"{b / 'data_config.yaml'} (length 128)"
    )
    from jettagger_coffea.bundle import Bundle

    b2 = _bundle_copy(tmp_path / "2", edit_preprocess=lambda p: p["pf_mask"].update(min_length=4))
    with pytest.raises(JetTaggerError, match=r"pf_mask\.min_length = 4 disagrees with .* \(min_length 1\)"):
        Bundle.load(b2)


# -- 8. outputs that mislead --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def qcd_wqq_run(tmp_path_factory):
    """``jettagger run`` on the bundled QCD and W samples (no H->bb, no Z, no top jets), and the
    correctionlib file of its hists.pkl."""
    tmp = tmp_path_factory.mktemp("run")
    fileset = tmp / "fileset.json"
    fileset.write_text(json.dumps({p: {"files": {str(sample_path(p)): "Events"}} for p in ("qcd", "wqq")}))
    r = run_cli("run", "--fileset", fileset, "--chunksize", 1000, "-o", tmp / "out", timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    import pickle

    from jettagger_coffea.bundle import Bundle
    from jettagger_coffea.workingpoints import write_correction_set

    hists = pickle.loads((tmp / "out" / "hists.pkl").read_bytes())["hists"]  # as `workingpoints --hists`
    return tmp / "out", r.stdout, write_correction_set(tmp / "wp.json", Bundle.load("pfn"), hists)


def test_efficiency_maps_error_outside_the_filled_range_and_for_absent_classes(qcd_wqq_run):
    correctionlib = pytest.importorskip("correctionlib")
    import pickle

    from jettagger_coffea.analysis import efficiency

    out, _, wp = qcd_wqq_run
    eff = correctionlib.CorrectionSet.from_file(str(wp))["WvsQCD_mistag1%_efficiency"]
    h = pickle.loads((out / "hists.pkl").read_bytes())["hists"]["wp_pt"]
    (edges, _), p, n, _, _ = efficiency(h, "WvsQCD", "mistag1%", axis=("pt", "abseta"), truth="Wqq")
    i = int(np.searchsorted(edges, 550.0)) - 1  # 500-600 GeV, |eta| 0-0.8
    assert eff.evaluate("Wqq", 550.0, 0.4, "nominal") == pytest.approx(p[i, 0] / n[i, 0])
    for pt, abseta in ((350.0, 0.4), (1200.0, 0.4), (550.0, 2.2)):  # no jets below 500, above 1000, > 2.0
        with pytest.raises(RuntimeError, match=r"Index (below|above) bounds in MultiBinning"):
            eff.evaluate("Wqq", pt, abseta, "nominal")
    with pytest.raises(IndexError, match="Index not available in Category for input argument 0 val: Hbb"):
        eff.evaluate("Hbb", 550.0, 0.4, "nominal")
    raw = json.loads(wp.read_text())
    corr = next(c for c in raw["corrections"] if c["name"] == "WvsQCD_mistag1%_efficiency")
    assert corr["inputs"][0]["description"] == "one of QCD, Wqq"
    assert "Wqq: pT 500-1000 GeV, |eta| 0-2" in corr["description"]
    assert corr["data"].get("default") is None  # no default: never a silent 0

    from jettagger_coffea.workingpoints import _fill_from_nearest

    values = np.array([[0.1, 0.5], [0.0, 0.0], [0.0, 0.0], [0.3, 0.0]])  # [pT, |eta|]
    filled = np.array([[True, True], [False, False], [False, False], [True, False]])
    # an empty bin takes the nearest filled pT bin at its own |eta|, before a bin at another |eta|
    np.testing.assert_array_equal(
        _fill_from_nearest(values, filled), [[0.1, 0.5], [0.1, 0.5], [0.3, 0.5], [0.3, 0.5]]
    )


def test_efficiency_map_helper_names_the_classes_present_and_the_range(qcd_wqq_run):
    """workingpoints.EfficiencyMap: correctionlib's values, with what correctionlib's own messages cannot
    say: an absent truth class names the classes with a map, a value outside the measured range names the
    class's range (JetTaggerError, one line); truth may be one name per jet."""
    correctionlib = pytest.importorskip("correctionlib")
    from jettagger_coffea.workingpoints import EfficiencyMap

    _, _, wp = qcd_wqq_run
    name = "WvsQCD_mistag1%_efficiency"
    raw = correctionlib.CorrectionSet.from_file(str(wp))[name]
    eff = EfficiencyMap(wp, name)
    assert eff.classes == ("QCD", "Wqq")
    for syst in ("nominal", "up", "down"):
        assert eff.evaluate("Wqq", 550.0, 0.4, syst) == raw.evaluate("Wqq", 550.0, 0.4, syst)
    with pytest.raises(JetTaggerError) as err:
        eff.evaluate("Hbb", 550.0, 0.4)
    assert str(err.value) == (
        f"{name} ({wp}): no efficiency for truth class 'Hbb' (the run had no such jets); "
        "the classes with one: QCD, Wqq"
    )
    with pytest.raises(JetTaggerError, match=r"truth class 'Hbb', 'Zqq' \(.*classes with one: QCD, Wqq$"):
        eff.evaluate(np.array(["Wqq", "Zqq", "Hbb"]), [550.0] * 3, 0.4)
    with pytest.raises(JetTaggerError) as err:
        eff.evaluate("Wqq", 350.0, 0.4)
    assert str(err.value) == (
        f"{name} ({wp}): Wqq jets were measured only in pT 500-1000 GeV, |eta| 0-2 "
        "(Index below bounds in MultiBinning for input argument 1 value: 350.000000)"
    )
    with pytest.raises(JetTaggerError, match=r"systematic 'nominl' is not one of nominal, up, down$"):
        eff.evaluate("QCD", 550.0, 0.4, "nominl")
    truth = np.array(["Wqq", "QCD", "Wqq"])
    pt = np.array([550.0, 650.0, 750.0])
    want = [raw.evaluate(t, p, 0.4, "nominal") for t, p in zip(truth, pt)]
    np.testing.assert_array_equal(eff.evaluate(truth, pt, 0.4), want)
    with pytest.raises(JetTaggerError, match=r"no efficiency map 'WvsQCD_mistag2%_efficiency' \(maps: .*1%"):
        EfficiencyMap(wp, "WvsQCD_mistag2%_efficiency")


def test_rejections_have_binomial_errors_and_are_null_below_ten_passing(qcd_wqq_run):
    out, stdout, _ = qcd_wqq_run
    m = json.loads((out / "metrics.json").read_text())
    w = m["discriminants"]["WvsQCD"]
    assert w["n_background"] == w["n_background_effective"] == 1000
    assert w["rej99"] is not None and w["rej99_err"] == pytest.approx(
        w["rej99"] ** 2 * np.sqrt((1 / w["rej99"]) * (1 - 1 / w["rej99"]) / 1000)
    )
    assert w["rej50"] is None and w["rej50_err"] is None  # the pfn passes a handful of QCD jets at 50 %
    reason = m["null_reasons"]["discriminants.WvsQCD.rej50"]
    assert re.fullmatch(
        r"[\d.]+ background jets pass at eps_s = 0\.5, fewer than 10: "
        r"1/eps_b is not measured \(it is above ~100\)",
        reason,
    )
    assert "WvsQCD: AUC" in stdout and "@50% n/a" in stdout

    from jettagger_coffea.metrics import summary

    # 2000 QCD jets, 20 of them above the discriminant value that keeps half the signal, none above 30 %'s
    background = np.r_[np.linspace(0, 0.79, 1980), np.linspace(0.801, 0.87, 20)]
    s = np.r_[background, np.linspace(0.6, 1.0, 1000)]
    labels = np.r_[np.zeros(2000, int), np.ones(1000, int)]
    per_jet = summary(labels, np.stack([1 - s, s], 1), ["QCD", "Tbqq"], {"TvsQCD": {"signal": ["Tbqq"]}})
    t = per_jet["discriminants"]["TvsQCD"]
    assert t.keys() == w.keys()
    k = 2000 / t["rej50"]  # background jets passing at 50 %
    assert 15 < k < 25 and t["rej50_err"] == pytest.approx(t["rej50"] * np.sqrt((1 - 1 / t["rej50"]) / k))
    assert t["rej30"] is None and t["rej30_err"] is None
    assert per_jet["null_reasons"]["discriminants.TvsQCD.rej30"].startswith("0 background jets pass at eps_s")


def test_plots_say_what_they_hold(qcd_wqq_run, monkeypatch, tmp_path):
    from jettagger_coffea import plotting

    out, stdout, _ = qcd_wqq_run
    m = json.loads((out / "metrics.json").read_text())
    warning = (
        "HbbvsQCD: no Hbb jets in the run, so its efficiency plots (eff_pt_HbbvsQCD, eff_msd_HbbvsQCD) are "
        "not drawn"
    )
    assert warning in m["warnings"] and f"  warning: {warning}" in stdout.splitlines()
    assert not (out / "eff_pt_HbbvsQCD.png").exists() and (out / "eff_pt_WvsQCD.png").is_file()
    assert not (out / "eff_pt_TvsQCD.png").exists()  # no top jets either
    for png in ("roc.png", "confusion.png", "eff_pt_WvsQCD.png", "eff_msd_WvsQCD.png", "msoftdrop.png"):
        assert (out / png).stat().st_size > 10_000

    figures, colours = [], []
    save, histplot, draw = plotting._save, plotting.hep.histplot, plotting._draw_efficiency

    def keep(fig, path):
        figures.append(fig)
        return save(fig, path)

    def histplot_colour(*args, **kw):
        colours.append((kw["label"].split()[-3 if kw["label"].startswith("true") else 0], kw["color"]))
        return histplot(*args, **kw)

    def draw_colour(*args, **kw):
        colours.append((kw["label"], kw["colour"]))
        return draw(*args, **kw)

    monkeypatch.setattr(plotting, "_save", keep)
    monkeypatch.setattr(plotting.hep, "histplot", histplot_colour)
    monkeypatch.setattr(plotting, "_draw_efficiency", draw_colour)
    cm = np.array([[0.9, 0.1, 0.0], [0.0, 0.0, 0.0], [0.2, 0.1, 0.7]])
    plotting.confusion_plot(cm, ["QCD", "Hbb", "Wqq"], tmp_path / "c.png")
    texts = [t.get_text() for t in figures[-1].axes[0].texts]
    assert texts.count("no jets") == 1 and len(texts) == 7  # 2 x 3 numbers and the absent row's mark

    # one colour per truth class, whatever the order or the company a class is drawn in
    edges = np.array([0.0, 50.0, 100.0])
    plotting.mass_plot({t: (edges, np.ones(2), np.ones(2)) for t in ("Wqq", "QCD")}, tmp_path / "m.png")
    plotting.mass_plot({t: (edges, np.ones(2), np.ones(2)) for t in ("QCD", "Zqq")}, tmp_path / "m2.png")
    scores = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    plotting.score_plot(
        scores, np.array([0, 1, 0]), ["Wqq", "QCD"], tmp_path / "s.png", {"signal": ["Wqq"]}, "W"
    )
    curve = (edges, np.array([1.0, 1.0]), np.array([4.0, 4.0]), np.full(2, 0.1), np.full(2, 0.5))
    plotting.efficiency_plot({"wp": {"QCD": curve, "Tbqq": curve}}, tmp_path / "e.png", "pT")
    seen: dict[str, set] = {}
    for name, colour in colours:
        seen.setdefault(name, set()).add(colour)
    assert seen == {t: {plotting.TRUTH_COLOURS[t]} for t in ("Wqq", "QCD", "Zqq", "Tbqq")}


def test_merged_bins_are_drawn_over_their_jets_and_root_pairs(qcd_wqq_run):
    import pickle

    import uproot

    from jettagger_coffea.analysis import efficiency_curves, filled_spans

    edges = np.array([200.0, 300, 400, 500, 600, 700])
    total = np.array([0.0, 0, 0, 30, 0])
    np.testing.assert_array_equal(
        filled_spans(edges, total, np.array([200.0, 600, 700])), [[500, 600], [600, 700]]
    )
    out, _, _ = qcd_wqq_run
    h = pickle.loads((out / "hists.pkl").read_bytes())["hists"]["wp_pt"]
    curves = efficiency_curves(h, "WvsQCD", ["mistag1%"], ["Wqq", "QCD"], "pt")
    for t, (merged, _, n, _, _, (low, high)) in curves["mistag1%"].items():
        assert merged[0] < 500 and low[0] == 500, t  # every jet is above 500 GeV: drawn from 500
        assert np.all(high[n > 0] <= 1000)  # and below 1000 GeV (a bin without jets is not drawn)
    with uproot.open(out / "hists.root") as f:
        keys = {k.split(";")[0] for k in f}
    totals = {k.removesuffix("_total_pt") for k in keys if k.endswith("_total_pt")}
    passes = {k.removesuffix("_pass_pt") for k in keys if k.endswith("_pass_pt")}
    assert totals and totals == passes


def test_predict_progress_reaches_the_end(capsys):
    from jettagger_coffea.evaluation import predict_files
    from jettagger_coffea.tagger import JetTagger

    cols = predict_files(JetTagger("pfn"), [sample_path("qcd"), sample_path("wqq")], progress=True)
    assert len(cols["score_QCD"]) == 2000
    bar = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()
    assert "2/2" in bar[-1], bar[-3:]


def test_help_says_each_default_once_and_readme_says_what_the_constraints_pin(capsys):
    from jettagger_coffea.cli import main

    for command in ("run", "workingpoints", "train", "import-weaver"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "(default: None)" not in text and "(default: False)" not in text
        assert not re.search(r"default: [^()]*\)\s*\(default:", text), text
        if command == "run":
            assert "bundle folder or shipped name (default: models/DEFAULT) --fileset" in text
            assert "events per chunk (default: 500)" in text
    pins = dict(
        line.split("==")
        for line in (ROOT / ".ci" / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert f"pins torch {pins['torch']}" in readme and "does not choose the CPU build" in readme
    assert "PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu" in readme
