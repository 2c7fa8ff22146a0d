"""Inference: bundles (validated at load), JetTagger on awkward / dask, the processor under every
executor, chunk-size / padding invariance, odd input, predict, the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import awkward as ak
import numpy as np
import pytest
import uproot
import yaml

from jettagger_coffea._errors import JetTaggerError
from jettagger_coffea.bundle import Bundle
from jettagger_coffea.data import default_fileset, sample_path
from jettagger_coffea.execution import run_fileset
from jettagger_coffea.nanoevents import open_events
from jettagger_coffea.outputs import write_outputs
from jettagger_coffea.tagger import JetTagger

from .compare import same_results
from .conftest import PN_KIN_WEIGHTS, odd_pfnano, shared_file


def test_bundle_card_and_working_points(tiny_bundle):
    b = Bundle.load(tiny_bundle)
    assert b.classes == ["QCD", "Wqq", "Zqq", "Tbqq"]
    assert set(b.discriminants) == {"WvsQCD", "ZvsQCD", "TvsQCD"}
    wps = b.working_points["TvsQCD"]
    assert set(wps) == {"mistag0.5%", "mistag1%", "mistag2.5%", "mistag5%", "eff30%", "eff50%"}
    assert wps["mistag0.5%"] >= wps["mistag1%"] >= wps["mistag2.5%"] >= wps["mistag5%"]
    assert b.card["provenance"]["n_train"] > 0


def test_bundle_refuses_config_that_disagrees_with_model(tiny_bundle, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_bundle, bad)
    cfg = yaml.safe_load((bad / "data_config.yaml").read_text())
    cfg["inputs"]["pf_features"]["vars"] = cfg["inputs"]["pf_features"]["vars"][:-2]
    (bad / "data_config.yaml").write_text(yaml.safe_dump(cfg))
    (bad / "preprocess.json").unlink()
    with pytest.raises(JetTaggerError, match=r"pf_features.*\[.*17.*\].*\[-1, 15, 128\]"):
        Bundle.load(bad)


def test_bundle_refuses_missing_and_tampered_files(tiny_bundle, tmp_path):
    missing = tmp_path / "missing"
    shutil.copytree(tiny_bundle, missing)
    (missing / "model.onnx").unlink()
    with pytest.raises(JetTaggerError, match=r"missing model\.onnx"):
        Bundle.load(missing)
    tampered = tmp_path / "tampered"
    shutil.copytree(tiny_bundle, tampered)
    j = json.loads((tampered / "preprocess.json").read_text())
    j["pf_features"]["var_infos"]["part_pt_log"]["median"] = 99.0
    (tampered / "preprocess.json").write_text(json.dumps(j))
    with pytest.raises(JetTaggerError, match=r"preprocess.json.*part_pt_log.median"):
        Bundle.load(tampered)


def test_scores_attach_and_match_flat_scoring(tiny_bundle):
    tagger = JetTagger(tiny_bundle)
    ev = open_events(str(sample_path("wqq")))
    scores = tagger(ev)
    assert ak.to_list(ak.num(scores)) == ak.to_list(ak.num(ev.FatJet))
    assert scores.type.content.content.size == 4
    flat = tagger.score_jets(uproot.open(sample_path("wqq", "jetclass"))["tree"])
    np.testing.assert_allclose(ak.to_numpy(ak.flatten(scores)), flat.scores, atol=1e-5)
    fj = tagger.attach(ev)
    np.testing.assert_allclose(ak.flatten(fj.score_Wqq), ak.flatten(scores[..., 1]))
    d = ak.flatten(fj.score_WvsQCD)
    np.testing.assert_allclose(d, ak.flatten(scores[..., 1] / (scores[..., 1] + scores[..., 0])), rtol=1e-6)


def test_chunk_size_padding_and_batch_invariance(tiny_bundle):
    path = str(sample_path("tbqq"))
    whole = JetTagger(tiny_bundle)(open_events(path, entry_stop=60))
    fixed = JetTagger(tiny_bundle, padding="fixed")(open_events(path, entry_stop=60))
    tiny_batches = JetTagger(tiny_bundle, max_slots=64)(open_events(path, entry_stop=60))
    for other in (fixed, tiny_batches):
        np.testing.assert_allclose(ak.to_numpy(ak.flatten(other)), ak.to_numpy(ak.flatten(whole)), atol=1e-6)
    tagger = JetTagger(tiny_bundle)
    for size, stop in ((1, 20), (7, 60)):  # one event at a time over the first 20 (a file open each)
        parts = [
            tagger(open_events(path, entry_start=i, entry_stop=min(i + size, stop)))
            for i in range(0, stop, size)
        ]
        np.testing.assert_allclose(
            ak.to_numpy(ak.flatten(ak.concatenate(parts))), ak.to_numpy(ak.flatten(whole[:stop])), atol=1e-6
        )


def test_torch_backend_equals_onnx(tiny_bundle):
    pytest.importorskip("torch")
    ev = open_events(str(sample_path("zqq")), entry_stop=100)
    a = JetTagger(tiny_bundle)(ev)
    b = JetTagger(tiny_bundle, backend="torch")(ev)
    np.testing.assert_allclose(ak.to_numpy(ak.flatten(a)), ak.to_numpy(ak.flatten(b)), atol=1e-5)


def test_odd_events_counted(tiny_bundle, tmp_path):
    path = odd_pfnano(tmp_path / "odd.root")
    out = run_fileset(
        tiny_bundle,
        {"odd": {"files": {str(path): "Events"}}},
        executor="iterative",
        chunksize=2,
        progress=False,
    )
    assert out["cutflow"]["odd"] == {
        "events": 5,
        "fatjets": 4,
        "selected_jets": 4,
        "tagged_jets": 3,
        "no_constituent_jets": 1,
        "events_sumw": 5.0,
        "fatjets_sumw": 4.0,
        "selected_jets_sumw": 4.0,
        "tagged_jets_sumw": 3.0,
        "no_constituent_jets_sumw": 1.0,
    }
    jets = out["hists"]["jets"]
    assert jets[{"status": "no_constituents"}].sum().value == 1
    assert jets[{"status": "tagged"}].sum().value == 3
    assert out["hists"]["scores"].sum().value == 3 * 4  # NaN scores never enter the score histograms
    ev = open_events(str(path))
    scores = JetTagger(tiny_bundle)(ev)
    assert ak.to_list(ak.num(scores)) == [2, 0, 1, 1, 0]
    assert np.isnan(ak.to_numpy(scores[2][0])).all()
    assert np.isfinite(ak.to_numpy(scores[3][0])).all()
    empty = JetTagger(tiny_bundle)(ev[:0])
    assert len(empty) == 0


def _fileset(processes=("qcd", "tbqq")):
    fs = default_fileset()
    return {
        p: {**fs[p], "metadata": {"xsec": 10.0 * (i + 1), "is_mc": True}} for i, p in enumerate(processes)
    }


#: the histograms every executor fills alike (counts: per file under the Runner, per dataset under
#: dask-awkward; the cutflow compares them)
SAME = ("jets", "msoftdrop", "predicted", "wp_pt", "wp_msd", "scores", "discriminant")


def _same(a, b):
    same_results(b, a, names=SAME)


@pytest.mark.slow
def test_same_histograms_under_every_executor(tiny_bundle):
    """The coffea Runner's executors (dask-awkward: every histogram, from the CLI, in test_files_outputs)."""
    ref = run_fileset(tiny_bundle, _fileset(), executor="iterative", chunksize=400, progress=False, lumi=3.0)
    assert ref["cutflow"]["qcd"]["selected_jets"] == 1000
    assert ref["cutflow"]["qcd"]["selected_jets_sumw"] == pytest.approx(
        10.0 * 3.0 * 1000 / ref["cutflow"]["qcd"]["events"]
    )
    assert ref["cutflow"]["tbqq"]["events"] == len(open_events(str(sample_path("tbqq"))))
    for executor, chunks in (("futures", 150), ("dask", 1000)):
        _same(
            ref,
            run_fileset(
                tiny_bundle,
                _fileset(),
                executor=executor,
                workers=2,
                chunksize=chunks,
                progress=False,
                lumi=3.0,
            ),
        )


def test_write_outputs(tiny_bundle, tmp_path):
    out = run_fileset(
        tiny_bundle, _fileset(("qcd", "wqq", "tbqq")), executor="iterative", chunksize=1000, progress=False
    )
    paths = write_outputs(out, tmp_path)
    m = json.loads(paths["metrics"].read_text())
    assert m["cutflow"]["wqq"]["selected_jets"] == 1000
    assert m["discriminants"]["TvsQCD"]["n_signal"] == 1000
    assert 0.5 < m["discriminants"]["TvsQCD"]["auc"] <= 1
    with uproot.open(paths["root"]) as f:
        assert f["qcd_msoftdrop_QCD"].values(flow=True).sum() == 1000
        assert all("%" not in k and "." not in k.split(";")[0] for k in f)
    json.loads(paths["metrics"].read_text(), parse_constant=lambda _: 1 / 0)  # strict JSON
    for key in ("roc", "confusion", "eff_pt_TvsQCD", "eff_msd_TvsQCD", "msoftdrop"):
        assert paths[key].stat().st_size > 10_000


def test_run_and_evaluate_write_one_metrics_schema(tiny_bundle):
    """Binned (run) and per-jet (evaluate) front ends of one metrics computation: same schema, same jets,
    the same numbers up to the binning of the ROC; and both equal an independent AUC."""
    from sklearn.metrics import roc_auc_score

    from jettagger_coffea.analysis import metrics_from_hists
    from jettagger_coffea.evaluation import evaluate

    out = run_fileset(tiny_bundle, _fileset(), executor="iterative", chunksize=1000, progress=False)
    binned = metrics_from_hists(out)
    per_jet = evaluate(JetTagger(tiny_bundle), [sample_path("qcd"), sample_path("tbqq")])
    assert (binned["method"], per_jet["method"]) == ("binned", "per-jet")
    assert binned["schema"] == per_jet["schema"] == "jettagger-metrics/1"
    common = {"schema", "method", "model", "classes", "n_jets", "accuracy", "confusion", "discriminants"}
    assert common <= binned.keys() and common <= per_jet.keys()
    assert binned["n_jets"] == per_jet["n_jets"] == 2000
    assert binned["accuracy"] == pytest.approx(per_jet["accuracy"], abs=1e-12)  # argmax: nothing binned
    np.testing.assert_allclose(binned["confusion"], per_jet["confusion"], atol=1e-12)
    b, p = binned["discriminants"]["TvsQCD"], per_jet["discriminants"]["TvsQCD"]
    assert b.keys() == p.keys()
    assert b["n_signal"] == p["n_signal"] == 1000 and b["n_background"] == p["n_background"] == 1000
    assert b["auc"] == pytest.approx(p["auc"], abs=2e-3)
    assert b["rej50"] == pytest.approx(p["rej50"], rel=0.15)

    tagger = JetTagger(tiny_bundle)
    s = tagger.score_jets(uproot.open(sample_path("tbqq", "jetclass"))["tree"]).scores
    q = tagger.score_jets(uproot.open(sample_path("qcd", "jetclass"))["tree"]).scores
    d = np.r_[s[:, 3] / (s[:, 3] + s[:, 0]), q[:, 3] / (q[:, 3] + q[:, 0])]
    y = np.r_[np.ones(len(s)), np.zeros(len(q))]
    assert p["auc"] == pytest.approx(roc_auc_score(y, d), abs=1e-6)


def test_imported_particlenet_kin_runs(tmp_path):
    pytest.importorskip("torch")
    from jettagger_coffea.weaver import import_weaver

    from .conftest import JETCLASS_CONFIGS

    weights = shared_file(PN_KIN_WEIGHTS)
    b = import_weaver(
        JETCLASS_CONFIGS / "JetClass_kin.yaml",
        tmp_path / "pn",
        network="particlenet",
        checkpoint=weights,
        discriminants={"TvsQCD": {"signal": ["Tbqq"], "background": ["QCD"]}},
    )
    # a fixed slot budget: "auto" would first time every budget on 512 jets (twice the work of the test,
    # 3.7 GB instead of 0.6 GB of onnxruntime arena for the full ParticleNet); batch composition changes no
    # score
    tagger = JetTagger(b, max_slots=4096)  # 300 jets a class: the full-size network is the slow part
    top = tagger.score_jets(
        uproot.open(sample_path("tbqq", "jetclass"))["tree"].arrays(entry_stop=300)
    ).scores
    qcd = tagger.score_jets(uproot.open(sample_path("qcd", "jetclass"))["tree"].arrays(entry_stop=300)).scores
    assert np.mean(top.argmax(1) == 8) > 0.7
    assert np.mean(qcd.argmax(1) == 0) > 0.7


def test_predict_cli(tiny_bundle, tmp_path):
    files = [str(sample_path("wqq", "jetclass")), str(sample_path("qcd"))]
    for suffix in (".root", ".parquet"):
        out = tmp_path / f"pred{suffix}"
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "jettagger_coffea.cli",
                "predict",
                "--model",
                str(tiny_bundle),
                "--input",
                *files,
                "--output",
                str(out),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert r.returncode == 0, r.stderr
        if suffix == ".root":
            cols = uproot.open(out)["Events"].arrays(library="np")
        else:
            table = ak.from_parquet(out)
            cols = {k: ak.to_numpy(table[k]) for k in ak.fields(table)}
        assert len(cols["score_QCD"]) == 2000
        assert np.array_equal(cols["file_index"], np.r_[np.zeros(1000), np.ones(1000)])
        ref = uproot.open(files[0])["tree"]["jet_pt"].array(library="np")
        np.testing.assert_allclose(cols["jet_pt"][:1000], ref, rtol=1e-6)
        assert np.all(cols["label"][:1000] == 1) and np.all(cols["label"][1000:] == 0)


def test_run_cli_bad_model(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "jettagger_coffea.cli", "run", "--model", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 2
    assert "no tagger bundle" in r.stderr


@pytest.mark.slow
def test_run_cli_default(tmp_path):
    """The README's main job: no arguments -> default shipped model, bundled samples."""
    from jettagger_coffea.bundle import resolve

    try:
        resolve(None)
    except JetTaggerError:
        pytest.skip("no shipped default model")
    env = {k: v for k, v in os.environ.items() if k != "JETTAGGER_MODEL"}
    r = subprocess.run(
        [sys.executable, "-m", "jettagger_coffea.cli", "run", "--output", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
        env=env,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert {c["selected_jets"] for c in m["cutflow"].values()} == {1000}
    assert m["skipped"] == []
    assert m["discriminants"]["TvsQCD"]["auc"] > 0.9
    for name in ("hists.pkl", "hists.root", "roc.png", "confusion.png", "eff_pt_WvsQCD.png", "msoftdrop.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_slot_budget_is_measured_once_and_changes_no_score(tiny_bundle):
    """max_slots="auto": the fastest of BUDGETS, measured on the first chunk with enough jets and cached for
    the process; the scores are those of any fixed budget (batch composition never matters)."""
    from jettagger_coffea import backends

    tree = uproot.open(sample_path("tbqq", "jetclass"))["tree"]
    fixed = JetTagger(tiny_bundle, max_slots=2048).score_jets(tree).scores
    backends._BUDGETS.clear()
    auto = JetTagger(tiny_bundle)
    scores = auto.score_jets(tree).scores
    (budget,) = backends._BUDGETS.values()
    assert budget in backends.BUDGETS
    np.testing.assert_allclose(scores, fixed, rtol=1e-5, atol=1e-6)
    again = JetTagger(tiny_bundle).score_jets(tree).scores  # cached: no second measurement
    assert len(backends._BUDGETS) == 1
    np.testing.assert_allclose(again, fixed, rtol=1e-5, atol=1e-6)


def test_shipped_joint_bundle_regresses_the_mass():
    """models/particlenet-lite-mass: the 5 classes and ``mass`` (GeV) as two ONNX outputs, in onnxruntime;
    on the bundled W and top jets the regressed mass sits at the resonance's (median within 15 %)."""
    from jettagger_coffea.bundle import Bundle, resolve
    from jettagger_coffea.evaluation import predict_files

    b = Bundle.load(resolve("particlenet-lite-mass"))
    assert b.classes == ["QCD", "Hbb", "Wqq", "Zqq", "Tbqq"] and b.outputs.names == ["softmax", "mass"]
    assert b.card["outputs"]["mass"] == {"mass": {"role": "regression", "unit": "GeV"}}
    cols = predict_files(JetTagger(b), [sample_path("wqq", "jetclass"), sample_path("tbqq", "jetclass")])
    for i, resonance in ((0, 80.4), (1, 172.5)):
        assert abs(np.median(cols["mass"][cols["file_index"] == i]) / resonance - 1) < 0.15


def test_shipped_fine_tuned_bundle_says_what_it_started_from():
    """models/particlenet-kin-ft: the official JetClass ParticleNet (kin, 10 classes) fine-tuned on the 5
    classes; its card names the weights (sha256) and the new head's tensors that were not loaded."""
    from jettagger_coffea.bundle import Bundle, resolve

    b = Bundle.load(resolve("particlenet-kin-ft"))
    init = b.card["init"]
    assert init["path"].endswith("ParticleNet_kin.pt") and len(init["sha256"]) == 64
    assert init["not_loaded"] == ["mod.fc.1.weight", "mod.fc.1.bias"]
    assert b.classes == ["QCD", "Hbb", "Wqq", "Zqq", "Tbqq"]
    top = JetTagger(b).score_jets(uproot.open(sample_path("tbqq", "jetclass"))["tree"].arrays(entry_stop=200))
    assert np.mean(top.scores.argmax(1) == 4) > 0.5
