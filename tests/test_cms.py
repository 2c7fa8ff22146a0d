"""Real CMS artefacts: coffea's PFNano sample and the CMS ParticleNet-AK8 that produced NanoAOD's stored
``FatJet_particleNet_*`` scores. Skipped where ../shared is absent."""

from __future__ import annotations

import json

import awkward as ak
import numpy as np
import pytest
import uproot

from jettagger_coffea._errors import JetTaggerError
from jettagger_coffea.dataconfig import DataConfig

from .conftest import SHARED, import_cms, shared_file
from .conftest import run_cli as cli

CMS = SHARED / "reference" / "cms" / "ParticleNetAK8_General_V01"
NANO = SHARED / "reference" / "nanoaod"
DISCRIMINANTS = ("TvsQCD", "WvsQCD", "ZvsQCD", "HbbvsQCD", "HccvsQCD", "H4qvsQCD", "QCD")


@pytest.fixture(scope="module")
def cms_bundle(tmp_path_factory):
    return import_cms(CMS, tmp_path_factory.mktemp("cms") / "pn-ak8")


@pytest.fixture(scope="module")
def predicted(cms_bundle, tmp_path_factory):
    out = tmp_path_factory.mktemp("pred") / "out.root"
    r = cli("predict", "--model", cms_bundle, "--input", shared_file(NANO / "pfnano.root"), "-o", out)
    assert r.returncode == 0, r.stderr
    return uproot.open(out)["Events"].arrays(library="np")


def nano_discriminant(cols: dict, name: str) -> np.ndarray:
    """NanoAOD's definitions, written out independently of the bundle's."""
    qcd = sum(cols[f"score_QCD_{c}"] for c in ("bb", "cc", "b", "c", "others"))
    sig = {
        "TvsQCD": ("Top_bcq", "Top_bqq"),
        "WvsQCD": ("W_cq", "W_qq"),
        "ZvsQCD": ("Z_bb", "Z_cc", "Z_qq"),
        "HbbvsQCD": ("H_bb",),
        "HccvsQCD": ("H_cc",),
        "H4qvsQCD": ("H_qqqq",),
    }
    if name == "QCD":
        return qcd
    s = sum(cols[f"score_{c}"] for c in sig[name])
    return s / (s + qcd)


def test_cms_bundle_imported_as_cmssw_wrote_it(cms_bundle):
    from jettagger_coffea.bundle import Bundle

    b = Bundle.load(cms_bundle)
    assert b.preset.name == "cms-pfnano"
    assert b.classes[:2] == ["Top_bcq", "Top_bqq"] and b.classes[-1] == "QCD_others" and len(b.classes) == 20
    assert b.config.inputs["pf_features"].min_length == 16 and b.config.inputs["pf_features"].length == 100
    assert b.config.inputs["sv_mask"].length == 10
    assert {g: (s.collection, s.role) for g, s in b.inputs.items()} == {
        "pf_points": ("pf", "points"),
        "pf_features": ("pf", "features"),
        "pf_mask": ("pf", "mask"),
        "sv_points": ("vtx", "sv_points"),
        "sv_features": ("vtx", "sv_features"),
        "sv_mask": ("vtx", "sv_mask"),
    }
    assert b.card["stored_scores"]["TvsQCD"] == "particleNet_TvsQCD"


def test_predict_reproduces_nanoaod_stored_scores(predicted):
    """CMSSW's own inputs rebuilt from PFNano, the CMS model, NanoAOD's discriminants: the stored scores."""
    ev = uproot.open(NANO / "pfnano.root")["Events"]
    n_jets = ev["nFatJet"].array(library="np")
    assert len(predicted["jet_index"]) == n_jets.sum() == 24  # every FatJet, no kinematic selection
    np.testing.assert_array_equal(predicted["entry"], np.repeat(np.arange(len(n_jets)), n_jets))  # file order
    np.testing.assert_array_equal(predicted["jet_index"], np.concatenate([np.arange(n) for n in n_jets]))
    np.testing.assert_array_equal(predicted["event"], ev["event"].array(library="np")[predicted["entry"]])
    for name in DISCRIMINANTS:
        stored = ak.to_numpy(ak.flatten(ev[f"FatJet_particleNet_{name}"].array()))
        diff = np.abs(nano_discriminant(predicted, name) - stored)
        assert diff.mean() <= 3e-3, (name, diff.mean())
        assert (diff < 0.01).sum() >= 22, (name, np.sort(diff))


def test_data_config_import_gives_the_same_scores(cms_bundle, predicted, tmp_path):
    """weaver's YAML (awkward-0 spellings, empty data_fraction) + CMSSW's preprocess.json: same bundle."""
    yml = shared_file(CMS / "ak8_points_pf_sv_full.yaml")
    cfg = DataConfig.from_yaml(yml)
    assert cfg.new_variables["pfcand_mask"].source == "ak.ones_like(pfcand_etarel)"
    assert cfg.data_fraction == 0.1
    out = tmp_path / "with-yaml"
    r = cli(
        "import-weaver",
        "--onnx",
        CMS / "model.onnx",
        "--preprocess",
        CMS / "preprocess.json",
        "--data-config",
        yml,
        "-o",
        out,
    )
    assert r.returncode == 0, r.stderr
    r = cli("predict", "--model", out, "--input", NANO / "pfnano.root", "-o", tmp_path / "b.parquet")
    assert r.returncode == 0, r.stderr
    b = ak.from_parquet(tmp_path / "b.parquet")
    np.testing.assert_allclose(ak.to_numpy(b["score_Top_bqq"]), predicted["score_Top_bqq"], atol=1e-6)


def test_python_api_on_nanoevents_equals_predict(cms_bundle, predicted):
    """coffea NanoEvents of the unmodified file (no FatJet_nConstituents): same scores; selections keep
    the order."""
    from jettagger_coffea.nanoevents import open_events
    from jettagger_coffea.tagger import JetTagger

    tagger = JetTagger(cms_bundle)
    events = open_events(str(NANO / "pfnano.root"))
    scores = tagger(events)
    np.testing.assert_allclose(ak.to_numpy(ak.flatten(scores))[:, 1], predicted["score_Top_bqq"], atol=1e-6)
    sel = events.FatJet.pt > 400
    fj = tagger.attach(events, jets=sel)
    want = nano_discriminant(predicted, "TvsQCD")[ak.to_numpy(ak.flatten(sel))]
    np.testing.assert_allclose(ak.to_numpy(ak.flatten(fj.score_TvsQCD)), want, atol=1e-6)


def test_particle_order_and_chunking_do_not_matter(cms_bundle, predicted, tmp_path):
    """Shuffled PF candidates (the preset orders by PUPPI-weighted pT) and one-event chunks: same scores."""
    from jettagger_coffea.sources import Events
    from jettagger_coffea.tagger import JetTagger

    tree = uproot.open(NANO / "pfnano.root")["Events"]
    tagger = JetTagger(cms_bundle)
    parts = [tagger.score_jets(Events(tree, "pfnano", i, i + 1)).scores for i in range(tree.num_entries)]
    np.testing.assert_allclose(np.concatenate(parts)[:, 0], predicted["score_Top_bcq"], atol=1e-6)
    arrays = tree.arrays(filter_name=["FatJet*", "PFCands*", "SV*", "nFatJet*", "nPFCands", "nSV"])
    rng = np.random.default_rng(1)
    perm = ak.Array([rng.permutation(n) for n in ak.num(arrays["FatJetPFCands_jetIdx"])])
    for k in [k for k in arrays.fields if k.startswith("FatJetPFCands_")]:
        arrays[k] = arrays[k][perm]
    events = ak.zip(
        {
            c: ak.zip({k[len(c) + 1 :]: arrays[k] for k in arrays.fields if k.startswith(f"{c}_")})
            for c in ("FatJet", "FatJetPFCands", "PFCands", "FatJetSVs", "SV")
        },
        depth_limit=1,
    )
    shuffled = tagger.score_jets(events).scores
    np.testing.assert_allclose(shuffled[:, 0], predicted["score_Top_bcq"], atol=1e-6)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("nano_dimuon.root", r"nano_dimuon.root: no FatJetPFCands collection"),
        ("nano_tree.root", r"nano_tree.root: no FatJet collection"),
        ("pfnano_2020_layout.root", r"pfnano_2020_layout.root: no FatJetSVs collection"),
    ],
)
def test_files_without_the_information_named(cms_bundle, tmp_path, name, message):
    r = cli("predict", "--model", cms_bundle, "--input", shared_file(NANO / name), "-o", tmp_path / "x.root")
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1
    assert __import__("re").search(message, r.stderr), r.stderr


def test_2020_layout_works_where_the_information_is_there(tmp_path):
    """Kinematics on FatJetPFCands, no PFCands: a JetClass model runs on it."""
    path = shared_file(NANO / "pfnano_2020_layout.root")
    r = cli("predict", "--model", "pfn", "--input", path, "-o", tmp_path / "x.parquet")
    assert r.returncode == 0, r.stderr
    out = ak.from_parquet(tmp_path / "x.parquet")
    assert len(out) == 209
    scores = np.stack([ak.to_numpy(out[f]) for f in out.fields if f.startswith("score_")], axis=1)
    assert np.isfinite(scores).all() and np.allclose(scores.sum(axis=1), 1, atol=1e-4)


def test_empty_jets_and_missing_sv_table(cms_bundle):
    """A jet whose candidates all fail the PUPPI cut has NaN scores; a file without the SV table is named."""
    from jettagger_coffea.tagger import JetTagger

    tree = uproot.open(NANO / "pfnano.root")["Events"]
    arrays = tree.arrays(
        filter_name=["FatJet*", "PFCands*", "SV*", "nFatJet*", "nPFCands", "nSV"], entry_stop=2
    )
    jet0 = arrays["FatJetPFCands_jetIdx"] == 0
    pw = arrays["PFCands_puppiWeight"]
    idx = arrays["FatJetPFCands_pFCandsIdx"][jet0]
    flat = ak.to_numpy(ak.flatten(pw)).copy()
    offs = np.r_[0, np.cumsum(ak.to_numpy(ak.num(pw)))[:-1]]
    for e in range(len(idx)):
        flat[offs[e] + ak.to_numpy(idx[e])] = 0.0  # jet 0 of each event: nothing passes PUPPI >= 0.01
    arrays["PFCands_puppiWeight"] = ak.unflatten(flat, ak.num(pw))
    events = ak.zip(
        {
            c: ak.zip({k[len(c) + 1 :]: arrays[k] for k in arrays.fields if k.startswith(f"{c}_")})
            for c in ("FatJet", "FatJetPFCands", "PFCands", "FatJetSVs", "SV")
        },
        depth_limit=1,
    )
    res = JetTagger(cms_bundle).score_jets(events)
    first = np.r_[0, np.cumsum(ak.to_numpy(ak.num(arrays["FatJet_pt"])))[:-1]]
    assert res.n_empty == 2 and np.isnan(res.scores[first]).all()
    others = np.setdiff1d(np.arange(len(res.scores)), first)
    assert np.isfinite(res.scores[others]).all()
    no_sv = ak.zip({c: events[c] for c in ("FatJet", "FatJetPFCands", "PFCands")}, depth_limit=1)
    with pytest.raises(JetTaggerError, match="no FatJetSVs collection"):
        JetTagger(cms_bundle).score_jets(no_sv)


def test_run_fills_recomputed_vs_stored(cms_bundle, tmp_path):
    """`jettagger run` on the real file: the stored NanoAOD scores beside the recomputed ones, per
    discriminant, as a 2-D histogram and plot; all jets on the diagonal within a bin or two."""
    from jettagger_coffea.execution import run_fileset
    from jettagger_coffea.outputs import write_outputs
    from jettagger_coffea.processor import Selection

    fileset = {
        "qcd": {"files": {str(shared_file(NANO / "pfnano.root")): "Events"}, "metadata": {"xsec": 1.0}}
    }
    out = run_fileset(
        cms_bundle,
        fileset,
        executor="iterative",
        chunksize=4,
        progress=False,
        selection=Selection(pt_min=200.0, eta_max=None),
    )
    h = out["hists"]["stored"]
    assert set(h.axes["disc"]) == set(DISCRIMINANTS)
    for name in DISCRIMINANTS:
        v = h[{"dataset": "qcd", "disc": name}].values()
        assert v.sum() == 24
        i, j = np.nonzero(v)
        assert np.all(np.abs(i - j) <= 2), name  # 50 bins of 0.02: within two bins of the diagonal
    paths = write_outputs(out, tmp_path)
    assert paths["stored_TvsQCD"].stat().st_size > 10_000


def test_run_names_a_file_without_the_inputs(cms_bundle, tmp_path):
    """`jettagger run`: a NanoAOD without PF candidates is named before any processing, one line, exit 2."""
    fileset = tmp_path / "fileset.json"
    fileset.write_text(json.dumps({"mu": {"files": {str(shared_file(NANO / "nano_dimuon.root")): "Events"}}}))
    r = cli("run", "--model", cms_bundle, "--fileset", fileset, "-o", tmp_path / "out")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("jettagger run: error: ")
    assert "nano_dimuon.root: no FatJetPFCands collection" in r.stderr
    assert "Processing" not in r.stderr + r.stdout
