"""Output roles: a model's outputs are class probabilities, its own discriminants, regressions or
embeddings, in one tensor of mixed columns or in several. The real CMS ParticleNet-AK8 mass regression
(one output, ``mass``) and a GloParT-like ONNX built here (17 classes, a with-mass discriminant, two mass
corrections and 8 hidden neurons as separate graph outputs) on the real PFNano file. Skipped where
../shared is absent."""

from __future__ import annotations

import json

import awkward as ak
import numpy as np
import pytest
import uproot
import yaml

from jettagger_coffea._errors import JetTaggerError
from jettagger_coffea.bundle import Bundle
from jettagger_coffea.inputs import OutputColumn, Outputs, OutputTensor, default_column
from jettagger_coffea.tagger import JetTagger

from .conftest import SHARED, import_cms, shared_file
from .conftest import run_cli as cli

MASS = SHARED / "reference" / "cms" / "ParticleNetAK8_MassRegression_V01"
PFNANO = SHARED / "reference" / "nanoaod" / "pfnano.root"
#: GloParT V03's 17 classes (NanoAOD v15's FatJet_globalParT3_* names)
GLOPART = [
    "QCD",
    "TopbWev",
    "TopbWmv",
    "TopbWq",
    "TopbWqq",
    "TopbWtauhv",
    "XWW3q",
    "XWW4q",
    "XWWqqev",
    "XWWqqmv",
    "Xbb",
    "Xcc",
    "Xcs",
    "Xqq",
    "Xtauhtaue",
    "Xtauhtauh",
    "Xtauhtaum",
]
HIDDEN = [f"hidNeuron{k:03d}" for k in range(8)]


@pytest.fixture(scope="module")
def mass_bundle(tmp_path_factory):
    return import_cms(MASS, tmp_path_factory.mktemp("mass") / "pn-mass")


@pytest.fixture(scope="module")
def nano():
    """The file's FatJets, flat, in file order."""
    tree = uproot.open(shared_file(PFNANO))["Events"]
    names = ["FatJet_pt", "FatJet_mass", "FatJet_msoftdrop", "FatJet_rawFactor"]
    cols = {k: ak.to_numpy(ak.flatten(tree[k].array())) for k in names}
    return cols | {"branches": set(tree.keys())}


@pytest.fixture(scope="module")
def events():
    """The file as eager coffea NanoEvents (read once for the module)."""
    from jettagger_coffea.nanoevents import open_events

    return open_events(str(shared_file(PFNANO)))


def test_cms_mass_regression_imports_as_one_regression(mass_bundle):
    """One output ``mass`` in GeV: no classes, no discriminants, no stored scores; evaluate refuses it."""
    b = Bundle.load(mass_bundle)
    assert b.outputs == Outputs((OutputTensor("output", (OutputColumn("mass", "regression", "GeV"),)),))
    assert b.classes == [] and b.discriminants == {} and b.card["stored_scores"] == {}
    assert yaml.safe_load((mass_bundle / "tagger.yaml").read_text())["outputs"] == {
        "output": {"mass": {"role": "regression", "unit": "GeV"}}
    }
    from jettagger_coffea.evaluation import evaluate

    with pytest.raises(JetTaggerError, match="has no class outputs: nothing to evaluate"):
        evaluate(JetTagger(b), [PFNANO])


def test_mass_regression_predict_against_soft_drop_mass(mass_bundle, nano, tmp_path):
    """predict writes a ``mass`` column (no score_ columns) for all 24 FatJets. The file stores no
    ``FatJet_particleNet_mass`` (UL PFNano): the regressed mass is compared with the soft-drop mass of
    these QCD jets, where CMS trained it to be the generated soft-drop mass."""
    r = cli("predict", "--model", mass_bundle, "--input", PFNANO, "-o", tmp_path / "m.parquet")
    assert r.returncode == 0, r.stderr
    out = ak.from_parquet(tmp_path / "m.parquet")
    assert "mass" in out.fields and not [f for f in out.fields if f.startswith("score_")]
    m, msd = ak.to_numpy(out["mass"]), nano["FatJet_msoftdrop"]
    assert len(m) == 24 and np.isfinite(m).all() and (m > 0).all()
    if "FatJet_particleNet_mass" in nano["branches"]:  # NanoAOD from MiniAOD stores it; this file does not
        stored = ak.to_numpy(ak.flatten(uproot.open(PFNANO)["Events"]["FatJet_particleNet_mass"].array()))
        assert np.abs(m - stored).max() < 0.01 * stored.max()
    hard = msd > 10  # the soft-drop mass of a jet groomed to one particle says little
    ratio = m[hard] / msd[hard]
    assert hard.sum() == 16
    assert 0.95 < np.median(ratio) < 1.25, np.median(ratio)  # measured: 1.085
    assert (np.abs(ratio - 1) < 0.3).sum() >= 10  # measured: 11 of 16
    assert np.median(np.abs(m - msd)) < 10  # GeV; measured: 6.8
    ranks = np.corrcoef(np.argsort(np.argsort(m)), np.argsort(np.argsort(msd)))[0, 1]
    assert ranks > 0.6  # Spearman; measured: 0.72 (Pearson 0.59: one jet regressed at 222 GeV, msd 18)
    assert np.median(m / nano["FatJet_mass"]) < 0.5  # not the ungroomed mass (measured: 0.22)


def test_mass_regression_attached_without_overwriting_the_jet_mass(mass_bundle, events):
    tagger = JetTagger(mass_bundle)
    with pytest.raises(JetTaggerError, match=r"output 'mass' would overwrite FatJet\.mass: attach it with"):
        tagger.attach(events)
    fj = tagger.attach(events, output_prefix="pnet_")
    want = tagger.score_jets(events).outputs["mass"]
    np.testing.assert_allclose(ak.to_numpy(ak.flatten(fj.pnet_mass)), want, rtol=1e-6)
    assert not [f for f in fj.fields if f.startswith("score_")]


def test_default_roles_from_names():
    """CMSSW's and weaver's spellings: label_/prob -> class, ...vsQCD -> the model's discriminant,
    hidNeuron -> embedding, target_/mass/massCorr -> regression (corrections: factors of the jet's own)."""
    assert default_column("label_QCD_bb") == OutputColumn("QCD_bb", "class")
    assert default_column("probXbb") == OutputColumn("Xbb", "class")
    assert default_column("probb") == OutputColumn("b", "class")
    assert default_column("probWithMassTopvsQCD") == OutputColumn("WithMassTopvsQCD", "discriminant")
    assert default_column("hidNeuron042") == OutputColumn("hidNeuron042", "embedding")
    assert default_column("massCorrX2p") == OutputColumn(
        "massCorrX2p", "regression", "GeV", "(1 - rawFactor) * mass"
    )
    assert default_column("target_pt_q16") == OutputColumn(
        "target_pt_q16", "regression", "GeV", "(1 - rawFactor) * pt"
    )
    logits = Outputs((OutputTensor("y", (OutputColumn("a", "logit"), OutputColumn("b", "logit"))),))
    scores, others = logits.split(np.array([[0.0, np.log(3.0)]], np.float32))
    np.testing.assert_allclose(scores, [[0.25, 0.75]], rtol=1e-6)
    assert others.shape == (1, 0)


# -- a GloParT-like model ---------------------------------------------------------------------------------
def _glopart_onnx(path):
    """pf_features (N, 25, P) and pf_mask -> the masked mean of the features -> four graph outputs:
    ``softmax`` (17 class probabilities), ``withMass`` (a discriminant in (0, 1)), ``massCorr``
    (massCorrX2p in (0.9, 1.0), massCorrGeneric in (1.2, 1.3)) and ``hidNeurons`` (neuron k in
    (k - 0.01, k + 0.01)): each column tells where it landed."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)

    def const(name, a):
        return numpy_helper.from_array(np.asarray(a, np.float32), name)

    inits = [
        const("w_cls", rng.normal(size=(25, 17))),
        const("w_disc", rng.normal(size=(25, 1))),
        const("w_mc", rng.normal(size=(25, 2))),
        const("w_hid", rng.normal(size=(25, 8))),
        const("mc_scale", [0.1, 0.1]),
        const("mc_shift", [0.9, 1.2]),
        const("hid_scale", [0.01]),
        const("hid_shift", np.arange(8)),
        const("one", [1.0]),
        numpy_helper.from_array(np.array([2], np.int64), "axis2"),
    ]
    n = helper.make_node
    nodes = [
        n("Mul", ["pf_features", "pf_mask"], ["masked"]),
        n("ReduceSum", ["masked", "axis2"], ["total"], keepdims=0),
        n("ReduceSum", ["pf_mask", "axis2"], ["count"], keepdims=0),
        n("Add", ["count", "one"], ["count1"]),
        n("Div", ["total", "count1"], ["mean"]),
        n("MatMul", ["mean", "w_cls"], ["logits"]),
        n("Softmax", ["logits"], ["softmax"], axis=1),
        n("MatMul", ["mean", "w_disc"], ["disc"]),
        n("Sigmoid", ["disc"], ["withMass"]),
        n("MatMul", ["mean", "w_mc"], ["mc0"]),
        n("Sigmoid", ["mc0"], ["mc1"]),
        n("Mul", ["mc1", "mc_scale"], ["mc2"]),
        n("Add", ["mc2", "mc_shift"], ["massCorr"]),
        n("MatMul", ["mean", "w_hid"], ["h0"]),
        n("Tanh", ["h0"], ["h1"]),
        n("Mul", ["h1", "hid_scale"], ["h2"]),
        n("Add", ["h2", "hid_shift"], ["hidNeurons"]),
    ]

    def io(name, *dims):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", *dims])

    graph = helper.make_graph(
        nodes,
        "glopart_like",
        [io("pf_features", 25, "n_pf"), io("pf_mask", 1, "n_pf")],
        [io("softmax", 17), io("withMass", 1), io("massCorr", 2), io("hidNeurons", 8)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def glopart_like(d):
    """A GloParT-like bundle in folder ``d`` (the CMS mass regression's inputs; four graph outputs)."""
    pytest.importorskip("onnx")
    pre = json.loads(shared_file(MASS / "preprocess.json").read_text())  # the same pf + sv inputs
    pre["output_names"] = [f"prob{c}" for c in GLOPART] + ["probWithMassTopvsQCD"]
    pre["output_names"] += ["massCorrX2p", "massCorrGeneric", *HIDDEN]
    d.mkdir(parents=True, exist_ok=True)
    (d / "preprocess.json").write_text(json.dumps(pre))
    onnx = _glopart_onnx(d / "model.onnx")
    r = cli("import-weaver", "--onnx", onnx, "--preprocess", d / "preprocess.json", "-o", d / "bundle")
    assert r.returncode == 0, r.stderr
    return d / "bundle"


@pytest.fixture(scope="module")
def glopart_bundle(tmp_path_factory):
    return glopart_like(tmp_path_factory.mktemp("glopart"))


def test_glopart_like_outputs_imported_with_their_roles(glopart_bundle):
    b = Bundle.load(glopart_bundle)
    corr = {"role": "regression", "unit": "GeV", "multiplies": "(1 - rawFactor) * mass"}
    assert b.outputs.card() == {
        "softmax": dict.fromkeys(GLOPART, "class"),
        "withMass": {"WithMassTopvsQCD": "discriminant"},
        "massCorr": {"massCorrX2p": corr, "massCorrGeneric": corr},
        "hidNeurons": dict.fromkeys(HIDDEN, "embedding"),
    }
    assert b.classes == GLOPART and b.card["classes"] == GLOPART


def test_a_mass_factor_is_not_compared_with_the_true_mass_per_jet(glopart_bundle):
    """evaluate's response: massCorr is a factor of (1 - rawFactor) x mass, not a mass; only the processor,
    which multiplies it by the jet's fields, histograms its response."""
    from jettagger_coffea.evaluation import mass_responses
    from jettagger_coffea.tagger import JetTagger

    n = 8
    cols = {"massCorrX2p": np.ones(n), "massCorrGeneric": np.ones(n), "true_mass": np.full(n, 80.0)}
    cols |= {"jet_pt": np.full(n, 500.0), "label": np.zeros(n), "msoftdrop": np.full(n, 75.0)}
    assert mass_responses(JetTagger(glopart_bundle), cols) == {}


def test_glopart_like_outputs_checked_per_output(glopart_bundle, tmp_path):
    """A card whose columns are the labels in order but split differently over the outputs: refused at
    load, naming the output; an unknown role: one line naming the card."""
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(glopart_bundle, bad)
    card = yaml.safe_load((bad / "tagger.yaml").read_text())
    generic = card["outputs"]["massCorr"].pop("massCorrGeneric")
    card["outputs"]["hidNeurons"] = {"massCorrGeneric": generic, **card["outputs"]["hidNeurons"]}
    (bad / "tagger.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
    with pytest.raises(
        JetTaggerError, match=r"model output 'massCorr' has 2 columns but tagger.yaml lists 1"
    ):
        Bundle.load(bad)
    card["outputs"] = {"softmax": {"QCD": "probability"}}
    (bad / "tagger.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
    with pytest.raises(JetTaggerError, match=r"outputs.softmax.QCD: role 'probability' is not one of class"):
        Bundle.load(bad)


@pytest.fixture(scope="module")
def glopart_predicted(glopart_bundle, tmp_path_factory):
    out = tmp_path_factory.mktemp("gp") / "p.parquet"
    r = cli("predict", "--model", glopart_bundle, "--input", PFNANO, "-o", out)
    assert r.returncode == 0, r.stderr
    return ak.from_parquet(out)


def test_glopart_like_predict_columns(glopart_predicted):
    """Every output read, each column where its name says: probabilities that sum to 1, the
    discriminant, the two corrections in their ranges, neuron k near k."""
    p = glopart_predicted
    scores = np.stack([ak.to_numpy(p[f"score_{c}"]) for c in GLOPART], axis=1)
    assert scores.shape == (24, 17) and np.allclose(scores.sum(axis=1), 1, atol=1e-5)
    assert (
        (ak.to_numpy(p["score_WithMassTopvsQCD"]) > 0) & (ak.to_numpy(p["score_WithMassTopvsQCD"]) < 1)
    ).all()
    x2p, generic = ak.to_numpy(p["massCorrX2p"]), ak.to_numpy(p["massCorrGeneric"])
    assert ((x2p > 0.9) & (x2p < 1.0)).all() and ((generic > 1.2) & (generic < 1.3)).all()
    for k, h in enumerate(HIDDEN):
        assert np.abs(ak.to_numpy(p[h]) - k).max() <= 0.01


def test_glopart_like_through_the_processor(glopart_bundle, glopart_predicted, nano, events):
    """The processor: FatJet.massCorrX2p attached, the per-jet columns equal predict's, and one histogram
    per regressed quantity (massCorr x (1 - rawFactor) x mass, in GeV) by truth class, filled exactly with
    the quantity computed here."""
    from jettagger_coffea.execution import run_fileset
    from jettagger_coffea.processor import Selection

    fj = JetTagger(glopart_bundle).attach(events)
    x2p = ak.to_numpy(glopart_predicted["massCorrX2p"])
    np.testing.assert_allclose(ak.to_numpy(ak.flatten(fj.massCorrX2p)), x2p, rtol=1e-6)
    assert "score_WithMassTopvsQCD" in fj.fields and "hidNeuron007" in fj.fields

    fileset = {"qcd": {"files": {str(PFNANO): "Events"}, "metadata": {"xsec": 1.0}}}
    sel = Selection(pt_min=200.0, eta_max=None)
    out = run_fileset(
        glopart_bundle,
        fileset,
        executor="iterative",
        chunksize=4,
        progress=False,
        selection=sel,
        per_jet=True,
    )
    jets = out["jets"]
    np.testing.assert_allclose(np.asarray(jets["massCorrX2p"]), x2p, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(jets["hidNeuron003"]), glopart_predicted["hidNeuron003"], rtol=1e-6)
    raw_mass = (1 - nano["FatJet_rawFactor"]) * nano["FatJet_mass"]
    for name in ("massCorrX2p", "massCorrGeneric"):
        h = out["hists"][f"regression_{name}"][{"dataset": "qcd"}].project("truth", "value")
        assert h.axes["value"].label == f"{name} x (1 - rawFactor) * mass [GeV]"
        quantity = ak.to_numpy(glopart_predicted[name]) * raw_mass
        truth, weight = np.asarray(jets["truth"]), np.asarray(jets["weight"])
        assert set(truth) <= set(h.axes["truth"])
        for t in set(truth):
            want, _ = np.histogram(quantity[truth == t], h.axes["value"].edges, weights=weight[truth == t])
            np.testing.assert_allclose(h[{"truth": t}].values(), want, rtol=1e-6)


def test_mass_regression_through_the_processor(mass_bundle, nano):
    """A model of regressions only: no argmax filled, the regressed mass by truth class, metrics without
    classes; the per-jet ``mass`` column is the model's (the jet's own mass is not overwritten)."""
    from jettagger_coffea.execution import run_fileset
    from jettagger_coffea.processor import Selection

    fileset = {"qcd": {"files": {str(PFNANO): "Events"}, "metadata": {"xsec": 1.0}}}
    sel = Selection(pt_min=200.0, eta_max=None)
    opts = {"executor": "iterative", "chunksize": 4, "progress": False, "selection": sel, "per_jet": True}
    out = run_fileset(mass_bundle, fileset, **opts)
    assert out["hists"]["predicted"].sum().value == 0
    h = out["hists"]["regression_mass"][{"dataset": "qcd"}]
    assert h.axes["value"].label == "mass [GeV]" and h.sum(flow=True).value == pytest.approx(
        float(np.sum(out["jets"]["weight"]))
    )
    want = JetTagger(mass_bundle).score_jets(uproot.open(PFNANO)["Events"]).outputs["mass"]
    np.testing.assert_allclose(np.asarray(out["jets"]["mass"]), want, rtol=1e-6)
    assert not np.allclose(np.asarray(out["jets"]["mass"]), nano["FatJet_mass"])


def test_true_mass_as_cms_defines_it():
    """The generated-jet soft-drop mass of a QCD FatJet: its GenJetAK8's two SubGenJetAK8 summed (on the
    real PFNano file, checked by hand for the first jet); W and top jets of NanoAOD v15 take their
    resonance's generated mass."""
    import vector

    from jettagger_coffea.sources import Events
    from jettagger_coffea.truth import fatjet_true_mass, fatjet_truth

    tree = uproot.open(shared_file(PFNANO))["Events"]
    mass = fatjet_true_mass(Events(tree, "pfnano"))
    sub = tree.arrays([f"SubGenJetAK8_{f}" for f in ("pt", "eta", "phi", "mass")], entry_stop=1)[0]
    v, w = (  # in float64: float32 four-momenta lose the mass of a light jet (3.64 instead of 3.58 GeV)
        vector.obj(**{f: float(sub[f"SubGenJetAK8_{f}"][k]) for f in ("pt", "eta", "phi", "mass")})
        for k in (0, 1)
    )
    assert mass[0] == pytest.approx((v + w).mass, rel=1e-5)
    assert len(mass) == 24 and np.isnan(mass[2])  # FatJet_genJetAK8Idx -1: no generated jet
    v15 = Events(
        uproot.open(shared_file(SHARED / "reference" / "nanoaod" / "nano_tt_v15.root"))["Events"], "v15"
    )
    labels, m15 = fatjet_truth(v15), fatjet_true_mass(v15)
    w, top = m15[labels == "Wqq"], m15[labels == "Tbqq"]  # Breit-Wigner: one W at 70.75 GeV
    assert len(w) == 9 and abs(np.median(w) - 80.4) < 1 and np.all(np.abs(w - 80.4) < 15)
    assert len(top) == 3 and np.all(np.abs(top - 172.5) < 5)


def test_mass_response_beside_the_soft_drop_mass(mass_bundle, tmp_path):
    """The CMS mass regression on pfnano.root: regressed mass and soft-drop mass over the true mass, per
    truth class and pT (median, half-IQR), in the histograms, metrics.json, hists.root and a plot; the
    binned medians are those of the jets' own ratios within a bin."""
    from jettagger_coffea.execution import run_fileset
    from jettagger_coffea.outputs import write_outputs
    from jettagger_coffea.processor import Selection
    from jettagger_coffea.sources import Events
    from jettagger_coffea.truth import MIN_TRUE_MASS, fatjet_true_mass

    fileset = {"qcd": {"files": {str(PFNANO): "Events"}, "metadata": {"xsec": 1.0}}}
    opts = {"executor": "iterative", "chunksize": 5, "progress": False, "per_jet": True}
    out = run_fileset(mass_bundle, fileset, selection=Selection(pt_min=200.0, eta_max=None), **opts)
    true = fatjet_true_mass(Events(uproot.open(shared_file(PFNANO))["Events"], "pfnano"))
    known = true > MIN_TRUE_MASS
    assert known.sum() == 10
    paths = write_outputs(out, tmp_path / "out")
    doc = json.loads(paths["metrics"].read_text())
    assert doc["n_jets"] == 24 and doc["classes"] == []  # the jets with outputs, though none has a class
    m = doc["response"]
    regressed = np.asarray(out["jets"]["mass"])
    msd = uproot.open(shared_file(PFNANO))["Events"]["FatJet_msoftdrop"].array()
    for name, values in (("mass", regressed), ("msoftdrop", ak.to_numpy(ak.flatten(msd)))):
        q = m[name]["QCD"]
        assert q["n"] == 10
        ratios = values[known] / true[known]
        assert q["median"] == pytest.approx(np.median(ratios), abs=0.01)
        assert q["resolution"] == pytest.approx(q["half_iqr"] / q["median"])
    assert m["mass"]["QCD"]["resolution"] < m["msoftdrop"]["QCD"]["resolution"]
    assert paths["response_mass"].stat().st_size > 10_000
    with uproot.open(paths["root"]) as f:
        assert f["qcd_response_mass_QCD"].values().sum() == 10
        assert f["qcd_regression_mass_QCD"].values().sum() == pytest.approx(24, abs=1)


def test_regressions_under_dask_awkward_equal_eager(glopart_bundle, events):
    """The regression histograms lazily (dask-awkward, the outputs' typetracer form): those of eager."""
    import dask

    from jettagger_coffea.nanoevents import open_events
    from jettagger_coffea.processor import Selection, TaggerProcessor

    proc = TaggerProcessor(glopart_bundle, selection=Selection(pt_min=200.0, eta_max=None))
    (lazy,) = dask.compute(proc.process(open_events(str(PFNANO), mode="dask")), scheduler="sync")
    eager = proc.process(events)
    for name in ("regression_massCorrX2p", "regression_massCorrGeneric"):
        assert lazy["hists"][name].sum(flow=True).value == 24
        np.testing.assert_allclose(lazy["hists"][name].values(), eager["hists"][name].values())


def test_import_weaver_outputs_option(tmp_path):
    """``--outputs`` overrides the roles from the output names; a role that is none is one line, exit 2."""
    onnx, pre = shared_file(MASS / "model.onnx"), shared_file(MASS / "preprocess.json")
    args = ("import-weaver", "--onnx", onnx, "--preprocess", pre)
    r = cli(*args, "-o", tmp_path / "e", "--outputs", '{"output": {"mass": "embedding"}}')
    assert r.returncode == 0, r.stderr
    assert Bundle.load(tmp_path / "e").outputs.card() == {"output": {"mass": "embedding"}}
    r = cli(*args, "-o", tmp_path / "bad", "--outputs", '{"output": {"mass": "probability"}}')
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "import-weaver --outputs" in r.stderr
    assert not (tmp_path / "bad").exists()
