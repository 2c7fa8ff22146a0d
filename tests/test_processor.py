"""The analysis processor on real NanoAOD: weights and normalisation, GenPart truth, data, selections,
correctionlib working points, per-jet output."""

from __future__ import annotations

import json
import subprocess
import sys

import awkward as ak
import numpy as np
import pytest
import uproot

from jettagger_coffea._errors import JetTaggerError
from jettagger_coffea.data import PROCESSES, sample_path
from jettagger_coffea.execution import run_fileset
from jettagger_coffea.outputs import write_outputs
from jettagger_coffea.processor import Selection
from jettagger_coffea.truth import fatjet_truth

from .conftest import SHARED, shared_file

PFNANO = SHARED / "reference" / "nanoaod" / "pfnano.root"
JETCLASS_ORDER = ("QCD", "Hbb", "Hcc", "Hgg", "H4q", "Hqql", "Zqq", "Wqq", "Tbqq", "Tbl")


def test_genpart_truth_equals_generator_label_on_bundled_files():
    for p in PROCESSES:
        tree = uproot.open(sample_path(p))["Events"]
        want = [JETCLASS_ORDER[i] for i in ak.flatten(tree["FatJet_truthLabel"].array())]
        assert list(fatjet_truth(tree)) == want


def test_weighted_cutflow_on_real_pfnano(tmp_path):
    """xsec = 2 pb, lumi = 10 / pb: selected jets weigh sum(genWeight) x 2 x 10 / Runs genEventSumw."""
    path = shared_file(PFNANO)
    sel = Selection(pt_min=250.0, eta_max=2.4)
    fileset = {"qcd": {"files": {str(path): "Events"}, "metadata": {"xsec": 2.0, "is_mc": True}}}
    out = run_fileset(
        "pfn",
        fileset,
        executor="iterative",
        chunksize=3,
        progress=False,
        lumi=10.0,
        selection=sel,
        per_jet=True,
    )
    with uproot.open(path) as f:  # the same number, computed from the raw branches
        ev = f["Events"].arrays(["genWeight", "FatJet_pt", "FatJet_eta"])
        sumw_all = f["Runs"]["genEventSumw"].array(library="np").sum()
    w = ak.broadcast_arrays(ev.genWeight, ev.FatJet_pt)[0]
    selected = (ev.FatJet_pt > 250) & (abs(ev.FatJet_eta) < 2.4)
    want = ak.sum(w[selected]) * 2.0 * 10.0 / sumw_all
    row = out["cutflow"]["qcd"]
    assert row["selected_jets"] == ak.sum(selected)
    assert row["selected_jets_sumw"] == pytest.approx(want, rel=1e-6)
    assert out["normalisation"]["qcd"]["sumw_source"] == "Runs.genEventSumw"
    jets = out["hists"]["jets"]
    assert jets[{"dataset": "qcd"}].sum().value == pytest.approx(want, rel=1e-6)
    assert set(out["jets"]["truth"]) <= {"QCD", "Wqq", "Zqq", "Tbqq", "Hbb"}  # every jet labelled
    assert len(out["jets"]["truth"]) == row["selected_jets"]
    assert np.sum(out["jets"]["weight"]) == pytest.approx(want, rel=1e-6)
    paths = write_outputs(out, tmp_path)
    back = ak.from_parquet(paths["jets"])
    assert len(back) == row["selected_jets"] and "score_QCD" in back.fields
    np.testing.assert_array_equal(ak.to_numpy(back["entry"]), np.sort(ak.to_numpy(back["entry"])))


def _data_copy(path, out):
    """pfnano.root without genWeight and GenPart (what a collision-data file looks like)."""
    tree = uproot.open(path)["Events"]
    colls = ("FatJet", "FatJetPFCands", "PFCands", "FatJetSVs", "SV")
    arrays = tree.arrays(filter_name=[f"{c}_*" for c in colls] + ["run", "luminosityBlock", "event"])
    data = {
        c: ak.zip({k[len(c) + 1 :]: arrays[k] for k in arrays.fields if k.startswith(f"{c}_")}) for c in colls
    }
    data |= {k: arrays[k] for k in ("run", "luminosityBlock", "event")}
    with uproot.recreate(out) as f:
        f.mktree("Events", {k: v.type for k, v in data.items()}).extend(data)
    return out


def test_data_runs_unweighted(tmp_path):
    path = _data_copy(shared_file(PFNANO), tmp_path / "data.root")
    fileset = {"data": {"files": {str(path): "Events"}, "metadata": {"is_mc": False}}}
    out = run_fileset(
        "pfn",
        fileset,
        executor="iterative",
        chunksize=100,
        progress=False,
        lumi=10.0,
        selection=Selection(pt_min=250.0),
    )
    row = out["cutflow"]["data"]
    assert row["selected_jets_sumw"] == row["selected_jets"] > 0
    assert list(out["hists"]["jets"][{"dataset": "data"}].project("truth").values()) == [
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        row["selected_jets"],
    ]  # only the "data" truth entry


def test_selection_that_removes_everything_is_reported():
    out = run_fileset(
        "pfn",
        {"qcd": {"files": {str(sample_path("qcd")): "Events"}}},
        executor="iterative",
        chunksize=1000,
        progress=False,
        selection=Selection(pt_min=5000.0),
    )
    assert len(out["warnings"]) == 1
    assert out["warnings"][0].startswith("dataset 'qcd': the selection removed every jet (1000 FatJets in")
    with pytest.raises(JetTaggerError, match=r"--pt-min 500\.0 must be below --pt-max 400\.0"):
        Selection(pt_min=500.0, pt_max=400.0)


def test_correctionlib_round_trip(tmp_path):
    correctionlib = pytest.importorskip("correctionlib")
    fileset = {p: {"files": {str(sample_path(p)): "Events"}} for p in ("qcd", "wqq")}
    out = run_fileset("pfn", fileset, executor="iterative", chunksize=1000, progress=False)
    paths = write_outputs(out, tmp_path / "run")
    wp = tmp_path / "wp.json"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "jettagger_coffea.cli",
            "workingpoints",
            "--model",
            "pfn",
            "--hists",
            paths["pickle"],
            "-o",
            wp,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    cset = correctionlib.CorrectionSet.from_file(str(wp))
    from jettagger_coffea.bundle import Bundle

    thresholds = Bundle.load("pfn").working_points
    assert cset["working_points"].evaluate("WvsQCD", "mistag1%") == pytest.approx(
        thresholds["WvsQCD"]["mistag1%"], rel=1e-15
    )
    eff = cset["WvsQCD_mistag1%_efficiency"]
    # the map equals pass / total from the histogram, per bin
    h = out["hists"]["wp_pt"][{"disc": "WvsQCD", "wp": "mistag1%", "truth": "Wqq"}].project(
        "passed", "pt", "abseta"
    )
    v = h.values()
    i, j = np.unravel_index(np.argmax(v.sum(axis=0)), v.shape[1:])
    pt, aeta = h.axes["pt"].centers[i], h.axes["abseta"].centers[j]
    assert eff.evaluate("Wqq", pt, aeta, "nominal") == pytest.approx(v[1, i, j] / v.sum(axis=0)[i, j])
    assert (
        eff.evaluate("Wqq", pt, aeta, "down")
        < eff.evaluate("Wqq", pt, aeta, "nominal")
        < eff.evaluate("Wqq", pt, aeta, "up")
    )
    again = run_fileset(
        "pfn", fileset, executor="iterative", chunksize=1000, progress=False, working_points=wp
    )
    assert again["meta"]["working_points"]["WvsQCD"] == pytest.approx(thresholds["WvsQCD"], rel=1e-15)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema_version": 2, "corrections": []}))
    with pytest.raises(JetTaggerError, match="no correction named 'working_points'"):
        run_fileset("pfn", fileset, executor="iterative", progress=False, working_points=bad)


def test_sparse_bins_merge_until_enough_jets():
    from jettagger_coffea.analysis import merge_sparse_bins

    edges = np.arange(11.0)
    total = np.array([0, 5, 30, 2, 2, 2, 50, 1, 1, 0.0])
    passed = np.floor(total / 2)
    e, p, n, vp, vn = merge_sparse_bins(edges, passed, total, passed, total, min_jets=20)
    np.testing.assert_array_equal(vp, p)
    np.testing.assert_array_equal(e, [0, 3, 10])  # 35 jets, then 56 + a remainder of 2 joins the last bin
    np.testing.assert_array_equal(n, [35, 58])
    np.testing.assert_array_equal(p, [passed[:3].sum(), passed[3:].sum()])
    assert n.sum() == total.sum() and vn.sum() == total.sum()
    # weights: effective jets (sum w)^2 / sum w^2 decide, not the sum of weights
    e, *_ = merge_sparse_bins(
        edges[:3], np.zeros(2), np.array([40.0, 40.0]), np.zeros(2), np.array([400.0, 400.0])
    )
    np.testing.assert_array_equal(e, [0, 2])  # 4 + 4 effective jets: one bin
