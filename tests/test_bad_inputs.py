"""Issue #30, items 1-3: bad model outputs, non-finite inputs and broken link tables are refused (one line,
exit 2, before any work) or processed and counted (cutflow, metrics.json, console), never silently wrong.

Hostile files are written from ../shared/reference/nanoaod/pfnano.root (10 events, 24 FatJets) and the
bundled samples; hostile models are tiny ONNX graphs built here around the tiny bundle's data config."""

from __future__ import annotations

import json
import pickle
import shutil

import awkward as ak
import numpy as np
import pytest
import uproot
import yaml

from jettagger_coffea._errors import JetTaggerError
from jettagger_coffea.backends import OnnxBackend, run_batched
from jettagger_coffea.cli import NONFINITE_TEXT
from jettagger_coffea.data import sample_path
from jettagger_coffea.execution import run_fileset
from jettagger_coffea.features import make_table, standardise
from jettagger_coffea.processor import Selection
from jettagger_coffea.sources import Events
from jettagger_coffea.tagger import INVALID_SCORE, NO_CONSTITUENTS, TAGGED, JetTagger

from .conftest import SHARED, odd_pfnano, run_cli, shared_file

PFNANO = SHARED / "reference" / "nanoaod" / "pfnano.root"
CMS = SHARED / "reference" / "cms" / "ParticleNetAK8_General_V01"
COLLECTIONS = ("FatJet", "FatJetPFCands", "PFCands", "FatJetSVs", "SV", "GenPart")
SCALARS = ("run", "luminosityBlock", "event", "genWeight")
SELECTION = Selection(pt_min=250.0)  # 21 of pfnano.root's 24 FatJets


# -- hostile files and models -----------------------------------------------------------------------------
def _pfnano() -> tuple[dict[str, dict[str, ak.Array]], dict[str, ak.Array]]:
    """pfnano.root's collections, as {collection: {field: [event][row]}}, and its per-event branches."""
    tree = uproot.open(shared_file(PFNANO))["Events"]
    arrays = tree.arrays(filter_name=[f"{c}_*" for c in COLLECTIONS] + list(SCALARS))
    colls = {
        c: {k[len(c) + 1 :]: arrays[k] for k in arrays.fields if k.startswith(f"{c}_")} for c in COLLECTIONS
    }
    return colls, {k: arrays[k] for k in SCALARS}


def _with(arr: ak.Array, flat_index: list[int], values: list[float]) -> ak.Array:
    """``arr`` ([event][row]) with the given rows (flat positions) set to ``values``."""
    flat = ak.to_numpy(ak.flatten(arr)).copy()
    flat[flat_index] = values
    return ak.unflatten(flat, ak.num(arr))


def _write(path, colls, scalars):
    """A TTree ``Events`` (f.mktree: ``f[name] = ...`` writes an RNTuple with uproot >= 5.7)."""
    data = {c: ak.zip(fields) for c, fields in colls.items()} | scalars
    with uproot.recreate(path) as f:
        f.mktree("Events", {k: v.type for k, v in data.items()}).extend(data)
    return path


def _mask_model(path, *, kind: str, n="N", p="n_pf", k: float = 0.0):
    """A 4-class ONNX model of ``pf_mask`` alone, scores = f(particle count) x (0.1, 0.2, 0.3, 0.4):
    ``nan`` (every score NaN), ``log`` (log(count - k): NaN below k, -inf at k), ``one_row`` (one row per
    call, whatever the batch), ``count``; ``n`` / ``p``: the input's batch and particle axes."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    w = np.full((1, 4), np.nan, np.float32) if kind == "nan" else np.array([[0.1, 0.2, 0.3, 0.4]], np.float32)
    one_row = kind == "one_row"
    inits = [
        numpy_helper.from_array(np.array([0, 2] if one_row else [2], np.int64), "axes"),
        numpy_helper.from_array(w, "w"),
    ]
    nodes = [helper.make_node("ReduceSum", ["pf_mask", "axes"], ["count"], keepdims=int(one_row))]
    if one_row:
        inits.append(numpy_helper.from_array(np.array([1, 1], np.int64), "shape"))
        nodes.append(helper.make_node("Reshape", ["count", "shape"], ["x"]))
    elif kind == "log":
        inits.append(numpy_helper.from_array(np.array([[k]], np.float32), "k"))
        nodes += [helper.make_node("Sub", ["count", "k"], ["d"]), helper.make_node("Log", ["d"], ["x"])]
    else:
        nodes.append(helper.make_node("Identity", ["count"], ["x"]))
    nodes.append(helper.make_node("MatMul", ["x", "w"], ["softmax"]))
    graph = helper.make_graph(
        nodes,
        kind,
        [helper.make_tensor_value_info("pf_mask", TensorProto.FLOAT, [n, 1, p])],
        [helper.make_tensor_value_info("softmax", TensorProto.FLOAT, [1 if one_row else n, 4])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _bundle(tiny_bundle, tmp_path, name: str, **model):
    """The tiny bundle (its config, card and classes) without working points (no efficiency plots: the
    CLI runs stay quick), and with a hostile model.onnx where ``model`` says which."""
    out = tmp_path / name
    shutil.copytree(tiny_bundle, out)
    card = yaml.safe_load((out / "tagger.yaml").read_text())
    card.pop("working_points", None)
    (out / "tagger.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
    if model:
        (out / "model.pt").unlink()
        _mask_model(out / "model.onnx", **model)
    return out


def _run(bundle, files: dict, tmp_path, *extra):
    """``jettagger run`` on {dataset: file}: (the completed process, metrics.json or None)."""
    fs = tmp_path / "fileset.json"
    fs.write_text(json.dumps({name: {"files": {str(path): "Events"}} for name, path in files.items()}))
    out = tmp_path / "out"
    r = run_cli("run", "--model", bundle, "--fileset", fs, "--executor", "iterative", "-o", out, *extra)
    metrics = json.loads((out / "metrics.json").read_text()) if r.returncode == 0 else None
    return r, metrics


def _error_line(r) -> str:
    lines = [x for x in r.stderr.splitlines() if x.startswith("jettagger ")]
    assert len(lines) == 1, r.stderr
    return lines[0]


# -- 1. bad model outputs ---------------------------------------------------------------------------------
def test_nan_model_jets_are_invalid_scores_not_no_constituents(tiny_bundle, tmp_path):
    """A model that outputs NaN: its jets are `invalid_score_jets`, never `no_constituent_jets` (which keeps
    the one jet without constituents), and out of every score, discriminant and working-point histogram."""
    odd = odd_pfnano(tmp_path / "odd.root")  # 5 events, 4 FatJets, one without constituents
    bundle = _bundle(tiny_bundle, tmp_path, "nan", kind="nan")
    r, m = _run(bundle, {"odd": odd}, tmp_path)
    assert r.returncode == 0, r.stderr
    flow = m["cutflow"]["odd"]
    assert (flow["selected_jets"], flow["tagged_jets"]) == (4, 0)
    assert (flow["no_constituent_jets"], flow["invalid_score_jets"]) == (1, 3)
    assert flow["invalid_score_jets_sumw"] == 3.0
    assert "odd: 3 jets with invalid scores (non-finite model output" in r.stdout
    assert m["n_jets"] == 0 and m["discriminants"] == {}
    with (tmp_path / "out" / "hists.pkl").open("rb") as f:
        hists = pickle.load(f)["hists"]
    for name in ("scores", "discriminant", "predicted", "wp_pt", "wp_msd"):
        assert hists[name].sum(flow=True).value == 0, name
    statuses = ("tagged", "no_constituents", "invalid_score")
    assert [hists["jets"][{"status": s}].sum().value for s in statuses] == [0, 1, 3]
    res = JetTagger(bundle).score_jets(Events(uproot.open(odd)["Events"], "odd"))
    assert list(res.status) == [INVALID_SCORE, INVALID_SCORE, NO_CONSTITUENTS, INVALID_SCORE]
    assert (res.n_jets, res.n_empty, res.n_invalid) == (4, 1, 3)


def test_partly_nan_model_counted_exactly_and_valid_scores_unchanged(tiny_bundle, tmp_path):
    """log(count - 40): NaN for jets with fewer than 40 particles, -inf at 40; the others keep their
    scores. Counted; the per-jet front end (evaluate) leaves them out of its metrics too."""
    bundle = _bundle(tiny_bundle, tmp_path, "log", kind="log", k=40.0)
    tagger = JetTagger(bundle)
    tree = uproot.open(sample_path("qcd", "jetclass"))["tree"]
    res = tagger.score_jets(tree)
    n = np.minimum(ak.to_numpy(ak.num(tree["part_px"].array())), 128)
    expected = int(((n > 0) & (n <= 40)).sum())
    assert 0 < expected < len(n)
    assert res.n_invalid == expected and res.n_empty == 0
    np.testing.assert_array_equal(res.status, np.where(n <= 40, INVALID_SCORE, TAGGED))
    assert np.isnan(res.scores[n <= 40]).all()  # the whole row: never a finite class score of a NaN row
    good = n > 40
    want = np.log(n[good] - 40.0)[:, None] * [0.1, 0.2, 0.3, 0.4]
    np.testing.assert_allclose(res.scores[good], want, rtol=1e-6)
    from jettagger_coffea.evaluation import evaluate

    m = evaluate(tagger, [sample_path("qcd", "jetclass")], tmp_path / "eval")
    assert m["counts"]["invalid_score_jets"] == expected and m["n_jets"] == len(n) - expected
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["counts"] == m["counts"]


def test_one_row_model_refused_before_any_work(tiny_bundle, tmp_path):
    """A model that returns one row per call is refused when it is loaded (one line naming the bundle);
    run_batched, the one batching path, refuses any batch that is not one row per jet (no broadcasting)."""
    bundle = _bundle(tiny_bundle, tmp_path, "one_row", kind="one_row")
    r, _ = _run(bundle, {"qcd": sample_path("qcd")}, tmp_path)
    assert r.returncode == 2
    line = _error_line(r)
    assert line == (
        f"jettagger run: error: model tiny-pfn ({bundle}) returned 1 row for 2 jets "
        "(expected (2, 4): one row of 4 scores per jet)"
    )
    assert "Processing" not in r.stderr and not (tmp_path / "out").exists()
    tagger = JetTagger(tiny_bundle)
    std = standardise(
        make_table(uproot.open(sample_path("qcd", "jetclass"))["tree"], tagger.config), tagger.config
    )
    with pytest.raises(
        JetTaggerError, match=r"^model one_row.onnx returned 1 row for 256 jets \(expected \(256, 4\)"
    ):
        run_batched(OnnxBackend(bundle / "model.onnx"), std.take(np.arange(256)), 4, model="one_row.onnx")

    class Flat:  # an output of the wrong rank
        input_names = ("pf_mask",)

        def run(self, inputs):
            return np.zeros(len(inputs["pf_mask"]))

    with pytest.raises(JetTaggerError, match=r"returned an output of shape \(10,\) for 10 jets"):
        run_batched(Flat(), std.take(np.arange(10)), 4)


def test_fixed_shape_models_refused_or_padded(tiny_bundle, tmp_path):
    """A fixed batch axis, or a fixed particle axis other than the config's 128: refused at load, one line
    naming the input and its shape. A fixed particle axis of the config's length: padded to it, with the
    scores of the same model with dynamic axes."""
    fixed_n = _bundle(tiny_bundle, tmp_path, "fixed_n", kind="count", n=8, p=128)
    with pytest.raises(JetTaggerError) as err:
        JetTagger(fixed_n)
    assert str(err.value) == (
        f"model {fixed_n / 'model.onnx'}: input 'pf_mask' has the fixed shape [8, 1, 128]: its batch "
        "axis N must be dynamic (export it with a dynamic N axis, as weaver does)"
    )
    fixed_64 = _bundle(tiny_bundle, tmp_path, "fixed_64", kind="count", p=64)
    with pytest.raises(
        JetTaggerError, match=r"input 'pf_mask' has the fixed shape \['N', 1, 64\] but the data "
    ):
        JetTagger(fixed_64)
    fixed = JetTagger(_bundle(tiny_bundle, tmp_path, "fixed_128", kind="count", p=128))
    assert fixed.padding == "fixed"
    dynamic = JetTagger(_bundle(tiny_bundle, tmp_path, "dynamic", kind="count"))
    tree = uproot.open(sample_path("wqq", "jetclass"))["tree"]
    np.testing.assert_array_equal(fixed.score_jets(tree).scores, dynamic.score_jets(tree).scores)


# -- 2. non-finite and absurd inputs --------------------------------------------------------------------
def _link_targets(colls) -> tuple[np.ndarray, np.ndarray]:
    """Per FatJetPFCands row: the flat PFCands row it points at, and whether its FatJet is selected
    (pT > 250, |eta| < 2.4), computed from the raw branches."""
    link, fj, pf = colls["FatJetPFCands"], colls["FatJet"], colls["PFCands"]
    offsets = np.r_[0, np.cumsum(ak.to_numpy(ak.num(pf["pt"])))]
    row_event = np.repeat(np.arange(len(offsets) - 1), ak.to_numpy(ak.num(link["jetIdx"])))
    target = offsets[row_event] + ak.to_numpy(ak.flatten(link["pFCandsIdx"]))
    jet = ak.to_numpy(ak.flatten(link["jetIdx"]))
    pt, eta = ak.to_list(fj["pt"]), ak.to_list(fj["eta"])
    selected = np.array([pt[e][j] > 250 and abs(eta[e][j]) < 2.4 for e, j in zip(row_event, jet)])
    return target, selected


def _bad_values(colls):
    """PFCands_d0 = NaN (-> part_d0), d0Err = inf and 1e33 (-> part_d0err; raw values beyond 1e10) on three
    PFCands rows inside FatJets; the same file with 0 there; and how many values that makes in the selected
    jets and in all."""
    target, selected = _link_targets(colls)
    rows = sorted({int(target[i]) for i in (0, 200, 400)})
    assert len(rows) == 3
    bad = {c: dict(f) for c, f in colls.items()}
    zero = {c: dict(f) for c, f in colls.items()}
    bad["PFCands"]["d0"] = _with(colls["PFCands"]["d0"], rows[:1], [np.nan])
    bad["PFCands"]["d0Err"] = _with(colls["PFCands"]["d0Err"], rows[1:], [np.inf, 1e33])
    zero["PFCands"]["d0"] = _with(colls["PFCands"]["d0"], rows[:1], [0.0])
    zero["PFCands"]["d0Err"] = _with(colls["PFCands"]["d0Err"], rows[1:], [0.0, 0.0])
    hits = np.isin(target, rows)
    return bad, zero, (int((hits & selected).sum()), int(hits.sum()))


def _raw_values(colls):
    """PFCands_pt = 1e30 (beyond sources.RAW_LIMIT, yet log(1e30) = 69 is a finite model variable), 1e30,
    NaN and inf on four PFCands rows inside selected FatJets; the same file with pT 0 there; and how many
    values that makes in the selected jets and in all (pT feeds ten variables, each value counts once)."""
    target, selected = _link_targets(colls)
    rows = list(dict.fromkeys(int(t) for t in target[selected][::97]))[:4]
    assert len(rows) == 4
    raw = {c: dict(f) for c, f in colls.items()}
    zero = {c: dict(f) for c, f in colls.items()}
    raw["PFCands"]["pt"] = _with(colls["PFCands"]["pt"], rows, [1e30, 1e30, np.nan, np.inf])
    zero["PFCands"]["pt"] = _with(colls["PFCands"]["pt"], rows, [0.0] * 4)
    hits = np.isin(target, rows)
    return raw, zero, (int((hits & selected).sum()), int(hits.sum()))


def _broken_links(colls):
    """pFCandsIdx -5 and 10^6, one jetIdx 99, and every row of event 0's FatJet 0 moved to jetIdx 99."""
    out = {c: dict(f) for c, f in colls.items()}
    link = colls["FatJetPFCands"]
    first = np.flatnonzero(ak.to_numpy(link["jetIdx"][0]) == 0)  # the rows of event 0's FatJet 0
    out["FatJetPFCands"]["pFCandsIdx"] = _with(link["pFCandsIdx"], [500, 900], [-5, 10**6])
    out["FatJetPFCands"]["jetIdx"] = _with(link["jetIdx"], [*first, 700], [99] * (len(first) + 1))
    return out, len(first) + 3


@pytest.fixture(scope="module")
def hostile(tiny_bundle, tmp_path_factory):
    """One ``jettagger run --pt-min 250`` over four datasets written from pfnano.root: ``clean`` (a copy),
    ``bad`` (:func:`_bad_values`), ``raw`` (:func:`_raw_values`) and ``links`` (:func:`_broken_links`)."""
    tmp = tmp_path_factory.mktemp("hostile")
    colls, scalars = _pfnano()
    bad, zero, (n_bad, n_bad_all) = _bad_values(colls)
    raw, raw_zero, (n_raw, n_raw_all) = _raw_values(colls)
    broken, n_invalid = _broken_links(colls)
    files = {
        "clean": _write(tmp / "clean.root", colls, scalars),
        "bad": _write(tmp / "bad.root", bad, scalars),
        "raw": _write(tmp / "raw.root", raw, scalars),
        "links": _write(tmp / "links.root", broken, scalars),
    }
    bundle = _bundle(tiny_bundle, tmp, "tiny")
    r, m = _run(bundle, files, tmp, "--pt-min", "250")
    assert r.returncode == 0, r.stderr
    lines = {x.split(":")[0].strip(): x for x in r.stdout.splitlines() if x.startswith("  dataset ")}
    return {
        "metrics": m,
        "lines": lines,
        "files": files,
        "zero": _write(tmp / "zero.root", zero, scalars),
        "raw_zero": _write(tmp / "raw_zero.root", raw_zero, scalars),
        "n_bad": n_bad,
        "n_bad_all": n_bad_all,
        "n_raw": (n_raw, n_raw_all),
        "n_invalid": n_invalid,
    }


_STEPS = ("events", "fatjets", "selected_jets", "tagged_jets", "no_constituent_jets")


def test_nonfinite_and_absurd_inputs_counted_and_replaced_by_zero(tiny_bundle, hostile):
    """NaN, inf and 1e33 raw input values (beyond sources.RAW_LIMIT): each replaced by 0 and counted in
    `nonfinite_inputs` (per dataset, metrics.json and console); the scores are those of the file with 0
    there; the clean copy's cutflow lists the jets alone."""
    flow, expected = hostile["metrics"]["cutflow"], hostile["n_bad"]  # one value per linked candidate
    assert expected >= 3
    assert flow["bad"]["nonfinite_inputs"] == expected
    assert hostile["lines"]["dataset bad"] == (f"  dataset bad: {expected} {NONFINITE_TEXT}")
    assert set(flow["clean"]) == {f"{s}{w}" for s in _STEPS for w in ("", "_sumw")}
    assert "dataset clean" not in hostile["lines"]
    tagger = JetTagger(tiny_bundle)
    got = tagger.score_jets(Events(uproot.open(hostile["files"]["bad"])["Events"], "bad"))
    want = tagger.score_jets(Events(uproot.open(hostile["zero"])["Events"], "zero"))
    np.testing.assert_array_equal(got.scores, want.scores)
    assert want.n_nonfinite == 0 and got.jet_nonfinite.sum() == got.n_nonfinite == hostile["n_bad_all"]


def test_absurd_raw_values_read_as_zero_and_counted_once(tiny_bundle, hostile):
    """PFCands_pt = 1e30 (its model variables part_px = 1e30 and log(pT) = 69 are below the 1e32 bound), NaN
    and inf: each raw value is read as 0 and counted once in `nonfinite_inputs` (not again for the
    log(0) = -inf it makes, nor per variable it feeds); the scores are finite and those of the file with pT 0
    there (the candidate ordering included)."""
    (expected, expected_all), flow = hostile["n_raw"], hostile["metrics"]["cutflow"]["raw"]
    assert expected >= 4
    assert flow["nonfinite_inputs"] == expected
    assert hostile["lines"]["dataset raw"] == (f"  dataset raw: {expected} {NONFINITE_TEXT}")
    tagger = JetTagger(tiny_bundle)
    got = tagger.score_jets(Events(uproot.open(hostile["files"]["raw"])["Events"], "raw"))
    want = tagger.score_jets(Events(uproot.open(hostile["raw_zero"])["Events"], "zero"))
    assert np.isfinite(got.scores).all() and (got.status == TAGGED).all()
    np.testing.assert_array_equal(got.scores, want.scores)
    assert got.jet_nonfinite.sum() == got.n_nonfinite == expected_all
    assert want.n_nonfinite >= 2 * expected_all  # a file's real 0s: log(pT) and log(pT / jet pT) at least


def test_raw_limit_replaces_only_what_no_file_holds():
    """replace_absurd: NaN, +-inf and |x| > 1e10 -> 0 with their mask; 1e10, ints and clean columns kept as
    they are (no mask); jagged columns keep their layout."""
    from jettagger_coffea.sources import RAW_LIMIT, replace_absurd

    assert RAW_LIMIT == 1e10
    x = np.array([1.0, -np.inf, 1e10, -1.1e10, np.nan, 99968.0], np.float32)
    out, bad = replace_absurd(x)
    np.testing.assert_array_equal(out, [1.0, 0, 1e10, 0, 0, 99968.0])
    assert out.dtype == np.float32 and bad.tolist() == [False, True, False, True, True, False]
    for clean in (np.array([1e10, -3.0]), np.array([2**40, -1], np.int64)):
        same, none = replace_absurd(clean)
        assert same is clean and none is None
    jagged, mask = replace_absurd(ak.Array([[1.0, 1e30], [], [np.inf]]))
    assert jagged.tolist() == [[1.0, 0.0], [], [0.0]] and mask.tolist() == [[False, True], [], [True]]


def test_raw_and_derived_replacements_counted_once_per_value_on_records():
    """JetClass-layout records: raw NaN, inf and 1e30 (energy, px) count once each on their jet, whatever
    the variables they feed (log E, log E/E_jet, px ...); a model variable beyond 1e32 computed from sane raw
    values (px**4 of px = 1e9) is still replaced and counted, once. A column the inputs do not read (an
    observer) is left as the file has it."""
    from jettagger_coffea.dataconfig import DataConfig

    config = DataConfig.from_dict(
        {
            "new_variables": {
                "part_e_log": "np.log(part_energy)",
                "part_logerel": "np.log(part_energy / jet_energy)",
                "part_px4": "part_px ** 4",
            },
            "inputs": {
                "pf": {
                    "length": 128,
                    "vars": [["part_e_log", 2, 0.7], ["part_logerel", -4.7, 0.7], ["part_px"], ["part_px4"]],
                }
            },
        }
    )
    t = uproot.open(sample_path("qcd", "jetclass"))["tree"].arrays(entry_stop=4)
    cols = {k: t[k] for k in ("part_energy", "part_px", "jet_energy")}
    cols["jet_sdmass"] = ak.Array([np.nan, 1.0, 2.0, 3.0])
    starts = np.r_[0, np.cumsum(ak.to_numpy(ak.num(cols["part_px"])))][:4]
    e_rows = [starts[0], starts[0] + 1, starts[2]]
    cols["part_energy"] = _with(cols["part_energy"], e_rows, [np.nan, np.inf, 1e30])
    cols["part_px"] = _with(cols["part_px"], [starts[1], starts[3]], [1e30, 1e9])
    table = make_table(cols, config)
    std = standardise(table, config)
    assert std.jet_nonfinite.tolist() == [2, 1, 1, 1] and std.n_nonfinite == 5
    assert np.isnan(table["jet_sdmass"][0]) and set(table.raw.replaced) == {"part_energy", "part_px"}
    assert all(np.isfinite(x).all() for values, _ in std.groups.values() for x in values)
    (e_log, _, px, px4), _ = std.groups["pf"]
    assert e_log[starts[0]] == e_log[starts[2]] == 0 and px[starts[1]] == 0 and px4[starts[3]] == 0


# -- 3. link tables -----------------------------------------------------------------------------------
def test_invalid_link_rows_counted_per_table(hostile):
    """Out-of-range pFCandsIdx and jetIdx rows are counted (`invalid_link_rows_FatJetPFCands`); a jet whose
    rows all point elsewhere has no constituents and is counted there, with the rows that left it; the
    candidates whose PFCands row is out of range have no values (NaN -> 0, counted)."""
    flow, n_invalid = hostile["metrics"]["cutflow"]["links"], hostile["n_invalid"]
    assert flow["invalid_link_rows_FatJetPFCands"] == n_invalid
    assert flow["no_constituent_jets"] == 1 and flow["tagged_jets"] == 20
    assert hostile["lines"]["dataset links"] == (
        f"  dataset links: {flow['nonfinite_inputs']} {NONFINITE_TEXT}; "
        f"{n_invalid} invalid FatJetPFCands rows (index out of range)"
    )


def test_counters_identical_under_runner_and_dask_awkward(tiny_bundle, tmp_path):
    """Invalid scores, replaced inputs and invalid link rows are histogram fills (scalar reductions do not
    work lazily): the coffea Runner in chunks and a dask-awkward graph count the same."""
    import dask

    from jettagger_coffea.analysis import cutflow
    from jettagger_coffea.nanoevents import open_events
    from jettagger_coffea.processor import TaggerProcessor

    colls, scalars = _pfnano()
    broken, n_invalid = _broken_links(colls)
    broken["PFCands"]["d0"] = _with(colls["PFCands"]["d0"], [3, 300, 3000], [np.nan, np.inf, 1e33])
    path = _write(tmp_path / "hostile.root", broken, scalars)
    bundle = _bundle(tiny_bundle, tmp_path, "log", kind="log", k=40.0)
    fileset = {"hostile": {"files": {str(path): "Events"}}}
    eager = run_fileset(
        bundle, fileset, executor="iterative", chunksize=3, progress=False, selection=SELECTION
    )
    flow = eager["cutflow"]["hostile"]
    assert flow["invalid_link_rows_FatJetPFCands"] == n_invalid
    assert flow["invalid_score_jets"] > 0 and flow["nonfinite_inputs"] > 0
    assert flow["tagged_jets"] + flow["no_constituent_jets"] + flow["invalid_score_jets"] == 21
    proc = TaggerProcessor(bundle, selection=SELECTION)
    (lazy,) = dask.compute(proc.process(open_events(str(path), mode="dask")), scheduler="sync")
    assert cutflow(lazy["hists"])["unknown"] == flow


def test_sv_index_sentinel_kept_and_out_of_range_counted(tmp_path):
    """FatJetSVs_sVIdx = -1 is CMS's "SV dropped by the SV table" (pfnano.root has 12): not invalid, the link
    table's own values are used as before. sVIdx = 10^6 is invalid: counted, with the link table's values
    (the same scores as -1 there)."""
    from jettagger_coffea.weaver import import_weaver

    bundle = import_weaver(
        None,
        tmp_path / "pn",
        onnx=shared_file(CMS / "model.onnx"),
        preprocess=shared_file(CMS / "preprocess.json"),
    )
    colls, scalars = _pfnano()
    sv = ak.to_numpy(ak.flatten(colls["FatJetSVs"]["sVIdx"]))
    assert (sv == -1).sum() == 12
    kept = np.flatnonzero(sv >= 0)[0]
    tagger = JetTagger(bundle)
    scores = {}
    for name, value in (("clean", None), ("minus1", -1), ("huge", 10**6)):
        c = {k: dict(f) for k, f in colls.items()}
        if value is not None:
            c["FatJetSVs"]["sVIdx"] = _with(colls["FatJetSVs"]["sVIdx"], [kept], [value])
        res = tagger.score_jets(
            Events(uproot.open(_write(tmp_path / f"{name}.root", c, scalars))["Events"], name)
        )
        scores[name] = res.scores
        assert res.counters()["invalid_link_rows_FatJetSVs"] == (name == "huge")
        assert res.counters()["invalid_link_rows_FatJetPFCands"] == 0
    np.testing.assert_array_equal(scores["huge"], scores["minus1"])
