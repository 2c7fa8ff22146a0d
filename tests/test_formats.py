"""The files analysts have now, read as CMS writes them: standard NanoAOD v15 candidate tables
(FatJetPFCand -> PFCand) and RNTuple, on coffea's real test samples in ../shared/reference/nanoaod."""

from __future__ import annotations

import json

import awkward as ak
import numpy as np
import pytest

from jettagger_coffea import JetTagger
from jettagger_coffea.evaluation import predict_files
from jettagger_coffea.execution import run_fileset

from .conftest import SHARED, run_cli, shared_file

NANO = SHARED / "reference" / "nanoaod"
CMS = SHARED / "reference" / "cms" / "ParticleNetAK8_General_V01"


@pytest.fixture(scope="module")
def cms_ak8(tmp_path_factory):
    out = tmp_path_factory.mktemp("cms") / "pn-ak8"
    onnx, pre = shared_file(CMS / "model.onnx"), shared_file(CMS / "preprocess.json")
    r = run_cli("import-weaver", "--onnx", onnx, "--preprocess", pre, "-o", out)
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def official_kin(tmp_path_factory):
    """The official JetClass ParticleNet (kin inputs), imported from its weaver checkpoint."""
    pytest.importorskip("torch")
    weights = shared_file(SHARED / "reference" / "weights" / "ParticleNet_kin.pt")
    config = shared_file(SHARED / "reference" / "jetclass" / "JetClass_kin.yaml")
    out = tmp_path_factory.mktemp("kin") / "pn-kin"
    r = run_cli(
        "import-weaver",
        "--data-config",
        config,
        "--network",
        "particlenet",
        "--checkpoint",
        weights,
        "-o",
        out,
    )
    assert r.returncode == 0, r.stderr
    return out


def _jets_with_links(path) -> np.ndarray:
    """Per FatJet (file order): whether the FatJetPFCand table links any candidate to it."""
    import uproot

    with uproot.open(path) as f:
        n = f["Events"]["nFatJet"].array(library="np")
        idx = f["Events"]["FatJetPFCand_jetIdx"].array()
    return np.concatenate(
        [np.bincount(np.asarray(j, dtype=np.int64), minlength=k)[:k] > 0 for j, k in zip(idx, n)]
    )


def test_v15_official_kin_scores_hadronic_tops_higher(official_kin, tmp_path):
    """On real NanoAOD v15 (no PFNano): one finite row per FatJet with constituents, the preset chosen from
    the file's tables and said; the FatJets whose top and its b, q, q' all lie within dR 0.8 (GenPart)
    score a higher TvsQCD than every other FatJet (this sample's FatJets are soft, ~200 GeV)."""
    v15 = shared_file(NANO / "nano_tt_v15.root")
    out = tmp_path / "v15.parquet"
    r = run_cli("predict", "--model", official_kin, "--input", v15, "-o", out)
    assert r.returncode == 0, r.stderr
    assert "source preset jetclass-v15 (FatJet, FatJetPFCand -> PFCand)" in r.stdout
    cols = ak.from_parquet(out)
    assert len(cols) == 64  # every FatJet of the file
    scores = np.stack([np.asarray(cols[f]) for f in cols.fields if f.startswith("score_")], axis=1)
    finite = np.isfinite(scores).all(axis=1)
    np.testing.assert_array_equal(finite, _jets_with_links(v15))  # NaN exactly for jets without candidates
    np.testing.assert_allclose(scores[finite].sum(axis=1), 1, atol=1e-5)
    tvsqcd = np.asarray(cols["score_Tbqq"] / (cols["score_Tbqq"] + cols["score_QCD"]))
    truth = np.asarray(cols["truth"])
    top, other = finite & (truth == "Tbqq"), finite & (truth != "Tbqq")
    assert top.sum() == 3 and other.sum() == 59
    assert tvsqcd[top].min() > tvsqcd[other].max()


def test_v15_shipped_kinpid_bundle(tmp_path):
    """The shipped pfn-kinpid bundle (trained on what v15 has: kinematics and pdgId) on real NanoAOD v15:
    finite rows exactly for the jets with candidates, and the 3 hadronic-top FatJets ranked 3rd to 5th of
    62 by TvsQCD (AUC 57/59; above them a W from a top decay and a QCD jet: these ~200 GeV jets are below
    the 500-1000 GeV it was trained on)."""
    v15 = shared_file(NANO / "nano_tt_v15.root")
    out = tmp_path / "kinpid.parquet"
    r = run_cli("predict", "--model", "pfn-kinpid", "--input", v15, "-o", out)
    assert r.returncode == 0, r.stderr
    assert "source preset jetclass-v15" in r.stdout
    cols = ak.from_parquet(out)
    scores = np.stack([np.asarray(cols[f]) for f in cols.fields if f.startswith("score_")], axis=1)
    finite = np.isfinite(scores).all(axis=1)
    np.testing.assert_array_equal(finite, _jets_with_links(v15))
    tvsqcd = np.asarray(cols["score_Tbqq"] / (cols["score_Tbqq"] + cols["score_QCD"]))
    top = finite & (np.asarray(cols["truth"]) == "Tbqq")
    other = tvsqcd[finite & ~top]
    auc = np.mean([(t > other).mean() for t in tvsqcd[top]])
    assert top.sum() == 3 and auc == pytest.approx(57 / 59)


def test_v15_refuses_a_model_that_needs_impact_parameters(tmp_path):
    """A JetClass *full* model (17 inputs) on v15: one line naming the impact-parameter inputs, exit 2,
    before any work (no output file)."""
    v15 = shared_file(NANO / "nano_tt_v15.root")
    r = run_cli("predict", "--model", "pfn", "--input", v15, "-o", tmp_path / "x.parquet")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jettagger predict: error:")
    for name in ("part_d0val", "part_d0err", "part_dzval", "part_dzerr"):
        assert name in lines[0]
    assert "no track impact parameters" in lines[0] and "FatJetPFCand -> PFCand" in lines[0]
    assert not (tmp_path / "x.parquet").exists()


def test_rntuple_equals_ttree_jet_by_jet(cms_ak8):
    """coffea's RNTuple twin of pfnano.root gives the CMS model's scores of the TTree, jet by jet."""
    tree, rntuple = shared_file(NANO / "pfnano.root"), shared_file(NANO / "pfnano_rntuple.root")
    tagger = JetTagger(cms_ak8)
    a, b = predict_files(tagger, [tree]), predict_files(tagger, [rntuple])
    assert len(a["score_QCD_others"]) == 24
    for k in a:
        if k.startswith("score_"):
            np.testing.assert_allclose(b[k], a[k], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(a["event"], b["event"])


def test_rntuple_field_index_is_uproots_scan():
    """The one-pass subfield index (scikit-hep/uproot5#1637 made each open quadratic in the fields) gives
    uproot's own lists, in its order, for every 10th field of the PFNano RNTuple."""
    import uproot
    from uproot.behaviors.RNTuple import HasFields

    path = shared_file(NANO / "pfnano_rntuple.root")
    scan = HasFields.fields.fget.scan
    ntuple = uproot.open(path)["Events"].ntuple
    sample = ntuple.all_fields[::10]
    want = []
    for field in sample:
        want.append([f.path for f in scan(field)])
        field._fields = None
    assert [[f.path for f in field.fields] for field in sample] == want
    assert sum(map(len, want)) > 50  # collections with their members among them
    assert len(uproot.open(path)["Events"].typenames()) == 2451  # coffea's call, one pass (was ~10 s)


def test_rntuple_runs_like_the_ttree(cms_ak8):
    """The main job on the RNTuple on dask workers: the cutflow and histograms of the TTree in this
    process (reading the RNTuple in-process is checked jet by jet in the test above)."""
    out = {}
    for name, executor in (("pfnano.root", "iterative"), ("pfnano_rntuple.root", "dask")):
        fs = {"qcd": {"files": {str(shared_file(NANO / name)): "Events"}}}
        # one chunk: uproot 5.7 rebuilds an RNTuple's field list per open (~10 s for PFNano's 1802 fields,
        # scikit-hep/uproot5#1637), and coffea opens the file per chunk
        out[name] = run_fileset(cms_ak8, fs, executor=executor, workers=1, chunksize=10, progress=False)
    a, b = out["pfnano.root"], out["pfnano_rntuple.root"]
    assert a["cutflow"] == b["cutflow"] and a["cutflow"]["qcd"]["tagged_jets"] == 21
    for h in ("discriminant", "scores", "msoftdrop", "wp_pt"):
        np.testing.assert_array_equal(a["hists"][h].values(), b["hists"][h].values())


def test_rntuple_with_dask_awkward_is_refused_up_front(cms_ak8, tmp_path):
    """uproot.dask cannot read RNTuple fields (coffea's dask-awkward path): one line, exit 2, no output."""
    fileset = tmp_path / "fs.json"
    fileset.write_text(json.dumps({"qcd": [str(shared_file(NANO / "pfnano_rntuple.root"))]}))
    out = tmp_path / "out"
    r = run_cli("run", "--model", cms_ak8, "--fileset", fileset, "--executor", "dask-awkward", "-o", out)
    assert r.returncode == 2
    expected = (
        f"jettagger run: error: {shared_file(NANO / 'pfnano_rntuple.root')} is an RNTuple, which the "
        "dask-awkward executor cannot read with this coffea and uproot: "
        "use --executor iterative, futures or dask"
    )
    assert r.stderr.strip().splitlines() == [expected]
    assert not out.exists()


AK4 = SHARED / "reference" / "cms" / "ParticleNetAK4_CHS_V00"
AK4_CLASSES = ("b", "bb", "c", "cc", "uds", "g", "undef", "pu")


@pytest.fixture(scope="module")
def cms_ak4(tmp_path_factory):
    out = tmp_path_factory.mktemp("cms") / "pn-ak4"
    onnx, pre = shared_file(AK4 / "model.onnx"), shared_file(AK4 / "preprocess.json")
    r = run_cli("import-weaver", "--onnx", onnx, "--preprocess", pre, "--jets", "Jet", "-o", out)
    assert r.returncode == 0, r.stderr
    return out


def test_cms_ak4_on_pfnano_ak4_jets(cms_ak4, tmp_path):
    """CMS ParticleNet-AK4 on PFNano's AK4 jets (Jet + JetPFCands + JetSVs): one row per Jet, summing to 1;
    PFNano stores no ParticleNet-AK4 scores, so the discriminants are held against DeepJet's: the same
    ordering of jets in every one (QvsG against 1 - btagDeepFlavQG, which NanoAOD defines as g vs uds)."""
    import uproot
    from scipy.stats import spearmanr

    from jettagger_coffea.bundle import Bundle

    bundle = Bundle.load(cms_ak4)  # --jets Jet: the member of the cms-pfnano family that reads Jet
    assert bundle.preset.name == "cms-pfnano-ak4" and bundle.preset.jets == "Jet"
    assert bundle.discriminants["BvsAll"] == {"signal": ["b", "bb"], "background": ["c", "cc", "uds", "g"]}
    assert set(bundle.discriminants) == {"BvsAll", "CvsL", "CvsB", "QvsG"}
    pfnano = shared_file(NANO / "pfnano.root")
    out = tmp_path / "ak4.parquet"
    r = run_cli("predict", "--model", cms_ak4, "--input", pfnano, "-o", out)
    assert r.returncode == 0, r.stderr
    assert "source preset cms-pfnano-ak4 (Jet, JetPFCands -> PFCands, JetSVs -> SV)" in r.stdout
    cols = ak.from_parquet(out)
    assert len(cols) == 64
    s = np.stack([np.asarray(cols[f"score_{c}"]) for c in AK4_CLASSES], axis=1)
    np.testing.assert_allclose(s.sum(axis=1), 1, atol=1e-5)
    with uproot.open(pfnano) as f:
        deepjet = {
            k: ak.to_numpy(ak.flatten(f["Events"][f"Jet_btagDeepFlav{k}"].array()))
            for k in ("B", "CvL", "QG")
        }
        flavour = ak.to_numpy(ak.flatten(f["Events"]["Jet_hadronFlavour"].array()))
    b, c, uds, g = s[:, 0] + s[:, 1], s[:, 2] + s[:, 3], s[:, 4], s[:, 5]
    assert spearmanr(b / (b + c + uds + g), deepjet["B"]).correlation > 0.4
    assert spearmanr(c / (c + uds + g), deepjet["CvL"]).correlation > 0.4
    assert spearmanr(uds / (uds + g), 1 - deepjet["QG"]).correlation > 0.7
    truth = np.asarray(cols["truth"])
    np.testing.assert_array_equal(truth == "c", flavour == 4)  # CMS's hadron flavour
    assert set(truth) <= {"b", "c", "uds", "g", "undef"}


def test_run_tags_ak4_jets_by_flavour(cms_ak4):
    """The main job on AK4 jets: the Jet collection selected and histogrammed with flavour truth."""
    fs = {"qcd": {"files": {str(shared_file(NANO / "pfnano.root")): "Events"}}}
    from jettagger_coffea.processor import Selection

    out = run_fileset(
        cms_ak4,
        fs,
        executor="iterative",
        chunksize=5,
        progress=False,
        selection=Selection(pt_min=15, eta_max=2.5),
    )
    flow = out["cutflow"]["qcd"]
    assert flow["fatjets"] == 64 and flow["tagged_jets"] == flow["selected_jets"] > 30
    jets = out["hists"]["jets"]
    assert list(jets.axes["truth"]) == ["b", "c", "uds", "g", "undef", "data"]
    assert (
        jets[{"truth": "g"}].sum().value > 0
        and jets[{"truth": "QCD"} if False else {"truth": "uds"}].sum().value > 0
    )
    assert out["hists"]["msoftdrop"].axes["msd"].label == "Jet mass [GeV]"


def test_cli_run_on_ak4_jets(cms_ak4, tmp_path):
    """`jettagger run --jets Jet`: CMS's AK4 discriminants on the console and in metrics.json, the jet mass
    (not a soft-drop mass) on the mass plot's axis."""
    fileset = tmp_path / "fs.json"
    fileset.write_text(json.dumps({"qcd": [str(shared_file(NANO / "pfnano.root"))]}))
    out = tmp_path / "out"
    r = run_cli("run", "--model", cms_ak4, "--fileset", fileset, "--pt-min", "15", "--jets", "Jet", "-o", out)
    assert r.returncode == 0, r.stderr
    assert "QvsG: AUC" in r.stdout and "source preset cms-pfnano-ak4" in r.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["cutflow"]["qcd"]["fatjets"] == 64
    assert 0.5 < metrics["discriminants"]["QvsG"]["auc"] < 1
    import pickle

    with (out / "hists.pkl").open("rb") as f:
        assert pickle.load(f)["hists"]["msoftdrop"].axes["msd"].label == "Jet mass [GeV]"
