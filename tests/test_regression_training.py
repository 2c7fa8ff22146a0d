"""Regression targets (the data config's ``targets``): regression alone and classification + regression in
one network learn, resume bit for bit, export to ONNX outputs in GeV equal to torch's and run through
``jettagger predict``; the losses are right on known numbers and a bad target is one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")

from jettagger_coffea._errors import JetTaggerError
from jettagger_coffea.bundle import Bundle
from jettagger_coffea.configs import config_path
from jettagger_coffea.data import sample_path
from jettagger_coffea.dataconfig import DataConfig
from jettagger_coffea.jetfiles import load_jets
from jettagger_coffea.nn import build
from jettagger_coffea.nn.export import export_onnx, max_difference
from jettagger_coffea.nn.losses import regression_loss
from jettagger_coffea.nn.model import head_names
from jettagger_coffea.training import load_trained, torch_outputs, train

from .conftest import run_cli

FILES = [sample_path("qcd", "jetclass"), sample_path("tbqq", "jetclass")]
PFN = {"phi_sizes": [32, 32], "f_sizes": [32]}
KW = {"batch_size": 64, "lr": 3e-3, "seed": 2, "progress": False, "network_options": PFN}


def _config(work, name: str, labels: list[str] | None, targets: dict) -> object:
    """The W/Z/top config with these labels (None: none, a regression) and targets."""
    cfg = yaml.safe_load(config_path("wzt_full").read_text())
    if labels is None:
        cfg.pop("labels")
    else:
        cfg["labels"]["value"] = labels
    cfg["targets"] = targets
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


MASS = {"mass": {"expr": "jet_sdmass", "loss": "logcosh"}}


@pytest.fixture(scope="module")
def joint(tmp_path_factory):
    """QCD vs top and the soft-drop mass (log-cosh) in one PFN: 4 epochs of ~1600 jets."""
    work = tmp_path_factory.mktemp("joint")
    cfg = _config(work, "joint", ["label_QCD", "label_Tbqq"], MASS)
    s = train(cfg, "pfn", FILES, work / "run", epochs=4, **KW)
    return work, cfg, s


@pytest.fixture(scope="module")
def regression(tmp_path_factory):
    """The soft-drop mass alone (squared error, mean / std standardisation)."""
    work = tmp_path_factory.mktemp("reg")
    cfg = _config(work, "reg", None, {"sdmass": {"expr": "jet_sdmass", "standardise": "mean_std"}})
    s = train(cfg, "pfn", FILES, work / "run", epochs=4, **KW)
    return work, cfg, s


def test_joint_training_learns_both(joint):
    work, _, s = joint
    hist = s["history"]
    assert hist[-1]["train_loss"] < 0.8 * hist[0]["train_loss"]
    assert hist[-1]["val_acc"] > 0.8  # QCD vs top
    mass = hist[-1]["val_targets"]["mass"]
    assert mass["loss"] < hist[0]["val_targets"]["mass"]["loss"]
    assert 0.5 < mass["median"] < 2 and mass["half_iqr"] > 0 and mass["n"] == s["n_val"]
    rec = s["targets"]["mass"]  # the standardisation, recorded: the training jets' median and IQR
    train_mass = load_jets(FILES, DataConfig.from_yaml(work / "run" / "data_config.yaml")).targets
    assert rec["loss"] == "logcosh" and rec["center"] is not None and rec["width"] > 0
    assert 0.5 * np.median(train_mass) < rec["center"] < 2 * np.median(train_mass)
    log = [json.loads(x) for x in (work / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["val_targets"]["mass"]["median"] for r in log] == [
        r["val_targets"]["mass"]["median"] for r in hist
    ]
    assert s["best_epoch"] == min(log, key=lambda r: r["val_loss"])["epoch"]  # the joint objective


def test_regression_alone_learns_in_gev(regression, tmp_path):
    work, _, s = regression
    hist = s["history"]
    assert hist[-1]["train_loss"] < 0.8 * hist[0]["train_loss"] and "val_acc" not in hist[-1]
    model, config, _ = load_trained(work / "run")
    assert model.output_names == ["sdmass"] and config.targets["sdmass"].standardise == "mean_std"
    jets = load_jets(FILES, config)
    (pred,) = torch_outputs(model, jets)
    true = jets.targets[:, 0]
    assert 0.5 < np.median(pred) / np.median(true) < 2  # GeV, not standardised units
    assert np.corrcoef(pred[:, 0], true)[0, 1] > 0.5
    from jettagger_coffea.evaluation import predict_files
    from jettagger_coffea.tagger import JetTagger
    from jettagger_coffea.training import export

    bundle = Bundle.load(export(work / "run", tmp_path / "bundle", reference_files=FILES))
    assert bundle.classes == [] and bundle.outputs.names == ["sdmass"] and "working_points" not in bundle.card
    cols = predict_files(JetTagger(bundle), FILES)  # onnxruntime, one output in GeV
    np.testing.assert_allclose(cols["sdmass"], pred[:, 0], rtol=0, atol=1e-5 * np.abs(pred).max())


def test_joint_bundle_onnx_equals_torch_and_predict_writes_mass(joint, tmp_path):
    """The bundle's ONNX: ``softmax`` and ``mass`` (GeV), equal to torch; the card says class / regression;
    ``jettagger predict`` writes a ``mass`` column, the torch backend the same numbers."""
    import pandas as pd

    work, _, _ = joint
    r = run_cli("export", work / "run", "-o", tmp_path / "bundle", "--reference", *FILES)
    assert r.returncode == 0, r.stderr
    bundle = Bundle.load(tmp_path / "bundle")
    assert bundle.outputs.names == ["softmax", "mass"] and bundle.classes == ["QCD", "Tbqq"]
    assert bundle.card["outputs"]["mass"] == {"mass": {"role": "regression", "unit": "GeV"}}
    model, config, _ = load_trained(work / "run")
    jets = load_jets(FILES, config)
    probs, mass = torch_outputs(model, jets)
    r = run_cli("predict", "--model", tmp_path / "bundle", "--input", *FILES, "-o", tmp_path / "p.parquet")
    assert r.returncode == 0, r.stderr
    cols = pd.read_parquet(tmp_path / "p.parquet")
    scale = np.abs(mass).max()  # float32: 1e-5 of the largest mass (measured: 5e-7 of it)
    np.testing.assert_allclose(cols["mass"], mass[:, 0], rtol=0, atol=1e-5 * scale)
    np.testing.assert_allclose(cols[["score_QCD", "score_Tbqq"]].to_numpy(), probs, atol=1e-5)
    assert 0.5 < np.median(cols["mass"]) / np.median(cols["jet_sdmass"]) < 2
    from jettagger_coffea.evaluation import predict_files
    from jettagger_coffea.tagger import JetTagger

    by_torch = predict_files(JetTagger(bundle, backend="torch"), FILES[:1])["mass"]
    np.testing.assert_allclose(by_torch, cols["mass"][: len(by_torch)], rtol=0, atol=1e-5 * scale)


def test_evaluate_reports_the_mass_response_beside_the_soft_drop_mass(joint, tmp_path):
    """``evaluate`` of a joint bundle: the regressed and the soft-drop mass over the true mass (here the
    target is the soft-drop mass itself: its response is 1, its resolution 0), per truth class, in
    metrics.json and a response plot; the binned median is the jets' own within a bin."""
    from jettagger_coffea.evaluation import evaluate, predict_files
    from jettagger_coffea.tagger import JetTagger
    from jettagger_coffea.training import export

    work, _, _ = joint
    bundle = Bundle.load(export(work / "run", tmp_path / "bundle", reference_files=FILES))
    tagger = JetTagger(bundle)
    m = evaluate(tagger, FILES, tmp_path / "eval")["response"]
    cols = predict_files(tagger, FILES)
    for truth, label in (("QCD", 0), ("Tbqq", 1)):
        known = (cols["label"] == label) & (cols["true_mass"] > 10)
        assert m["msoftdrop"][truth]["median"] == pytest.approx(1.0, abs=1e-9)
        assert m["msoftdrop"][truth]["half_iqr"] < 0.006 and m["mass"][truth]["n"] == known.sum()
        ratio = cols["mass"][known] / cols["true_mass"][known]
        assert m["mass"][truth]["median"] == pytest.approx(np.median(ratio), abs=0.01)
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["response"] == m
    assert (tmp_path / "eval" / "response_mass.png").stat().st_size > 10_000


SMALL = {
    "particlenet": {"conv_params": [(4, (16, 16)), (4, (16, 16))], "fc_params": [(16, 0.0)]},
    "particlenet-lite": {},
    "part": {"num_layers": 1, "embed_dims": (16, 32, 16), "pair_embed_dims": (8, 8), "num_heads": 2},
    "part-irc": {"num_layers": 1, "embed_dims": (16, 32, 16), "pair_embed_dims": (8, 8), "num_heads": 2},
    "pfn": {"phi_sizes": (16, 16), "f_sizes": (16,)},
}


@pytest.mark.parametrize("network", list(SMALL))
def test_one_head_mechanism_for_every_network(network, tmp_path):
    """3 logits and 2 targets from the shared wrapper: ``softmax`` (N, 3) and one (N, 1) output per target
    = center + width x the head's output; ONNX == torch to 1e-5 (in GeV: values of ~100)."""
    names = ["pf_points", "pf_features", "pf_vectors", "pf_mask"]
    dims = {"pf_points": 2, "pf_features": 7, "pf_vectors": 4, "pf_mask": 1}
    roles = {n: n.removeprefix("pf_") for n in names}
    targets = [("mass", 120.0, 40.0), ("pt_q84", 500.0, 100.0)]
    torch.manual_seed(0)
    m = build(network, names, dims, 3, roles=roles, targets=targets, **SMALL[network]).eval()
    assert m.output_names == ["softmax", "mass", "pt_q84"] and m.n_outputs == 5
    assert len(head_names(m, 5)) == 2  # the head's weight and bias: the layer fine-tuning replaces
    from jettagger_coffea.nn.export import example_inputs

    xs = example_inputs(m, dims, n=4)
    probs, mass, pt = m(*xs)
    with torch.no_grad():
        raw = m.raw(*xs)
    assert probs.shape == (4, 3) and mass.shape == (4, 1) and pt.shape == (4, 1)
    torch.testing.assert_close(probs.sum(1), torch.ones(4))
    torch.testing.assert_close(mass[:, 0], 120 + 40 * raw[:, 3])
    onnx = export_onnx(m, dims, tmp_path / "m.onnx")
    assert max_difference(m, dims, onnx, lengths=(20, 37)) <= 1e-5 * 500  # relative to values of ~500


def test_per_class_target_trains_each_hypothesis_on_its_own_class(tmp_path):
    """A per-class target: one head output per class hypothesis; the loss moves only the hypothesis of
    each jet's own class; the output (torch and ONNX) is the hypotheses weighted by the class
    probabilities."""
    from jettagger_coffea.dataconfig import Target
    from jettagger_coffea.expressions import Expression
    from jettagger_coffea.nn.export import example_inputs
    from jettagger_coffea.training import Objective

    names = ["pf_points", "pf_features", "pf_vectors", "pf_mask"]
    dims = {"pf_points": 2, "pf_features": 7, "pf_vectors": 4, "pf_mask": 1}
    roles = {n: n.removeprefix("pf_") for n in names}
    targets = [("mass", 120.0, 40.0), ("pt", 500.0, 100.0)]
    torch.manual_seed(0)
    m = build("pfn", names, dims, 3, roles=roles, targets=targets, per_class=["mass"], **SMALL["pfn"]).eval()
    assert m.n_outputs == 3 + 3 + 1 and m.output_names == ["softmax", "mass", "pt"]
    xs = example_inputs(m, dims, n=4)
    probs, mass, pt = m(*xs)
    with torch.no_grad():
        raw = m.raw(*xs)
    torch.testing.assert_close(mass[:, 0], (probs * (120 + 40 * raw[:, 3:6])).sum(1))
    torch.testing.assert_close(pt[:, 0], 500 + 100 * raw[:, 6])
    onnx = export_onnx(m, dims, tmp_path / "m.onnx")
    assert max_difference(m, dims, onnx, lengths=(20, 37)) <= 1e-5 * 500

    mass_t = Target("mass", Expression("jet_sdmass"), "logcosh", per_class=True)
    tg = [mass_t, Target("pt", Expression("jet_pt"))]
    raw = raw.clone().requires_grad_(True)
    labels = np.array([0, 2, 2, 1])
    terms = Objective(3, tuple(tg)).terms(m, raw, labels, np.full((4, 2), 90.0, dtype=np.float32))
    (grad,) = torch.autograd.grad(terms["mass"], raw)
    moved = grad[:, 3:6] != 0
    assert moved.tolist() == [[c == k for c in range(3)] for k in labels]  # its own class's hypothesis only
    assert (grad[:, :3] == 0).all() and (grad[:, 6] == 0).all()


def test_a_factor_target_says_what_it_multiplies(tmp_path):
    """A target that is a factor of the jet's mass (GloParT's massCorr): the card's output says what it
    multiplies, so the processor multiplies it out; a bad expression there is one line naming it."""
    from jettagger_coffea.inputs import trained_outputs

    factor = {"expr": "jet_gen_mass / jet_sdmass", "multiplies": "msoftdrop"}
    cfg = DataConfig.from_yaml(_config(tmp_path, "f", ["label_QCD", "label_Tbqq"], {"massCorr": factor}))
    assert cfg.targets["massCorr"].multiplies == "msoftdrop"
    (col,) = trained_outputs(cfg).tensors[1].columns
    assert col.card() == {"role": "regression", "unit": "GeV", "multiplies": "msoftdrop"}
    bad = _config(tmp_path, "b", ["label_QCD"], {"m": {"expr": "jet_sdmass", "multiplies": "os.system(1)"}})
    with pytest.raises(JetTaggerError, match=r"targets\.m\.multiplies") as err:
        DataConfig.from_yaml(bad)
    assert "\n" not in str(err.value)


def test_per_class_needs_classes(tmp_path):
    cfg = _config(tmp_path, "reg", None, {"m": {"expr": "jet_sdmass", "per_class": True}})
    with pytest.raises(JetTaggerError, match=r"targets\.m: per_class needs classes"):
        DataConfig.from_yaml(cfg)


def test_losses_on_known_numbers():
    pred, true = torch.tensor([0.0, 1.0, -2.0, 30.0]), torch.tensor([1.0, 1.0, 0.0, 0.0])
    torch.testing.assert_close(regression_loss(pred, true, "mse"), torch.tensor([1.0, 0.0, 4.0, 900.0]))
    want = np.log(np.cosh(np.array([-1.0, 0.0, -2.0, 30.0])))  # no overflow at 30
    np.testing.assert_allclose(regression_loss(pred, true, "logcosh").numpy(), want, rtol=1e-6, atol=1e-7)
    # pinball at 0.84: under-predicting by 1 costs 0.84, over-predicting by 1 costs 0.16
    got = regression_loss(torch.tensor([0.0, 2.0]), torch.tensor([1.0, 1.0]), "quantile", 0.84)
    torch.testing.assert_close(got, torch.tensor([0.84, 0.16]))
    sample = torch.from_numpy(np.random.default_rng(7).normal(100, 20, 2001))
    grid = torch.linspace(50, 150, 10001, dtype=torch.float64)
    mean_loss = [float(regression_loss(c.expand_as(sample), sample, "quantile", 0.84).mean()) for c in grid]
    best = float(grid[int(np.argmin(mean_loss))])
    assert best == pytest.approx(np.quantile(sample.numpy(), 0.84), abs=0.02)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ({"mass": {"expr": "jet_sdmass", "loss": "huber"}}, r"targets\.mass: unknown loss 'huber'"),
        ({"QCD": "jet_sdmass"}, r"targets\.QCD: the name is taken by one of the config's classes"),
        ({"q": {"expr": "jet_sdmass", "loss": "quantile", "quantile": 1.5}}, r"targets\.q: quantile 1\.5"),
        ({"q": {"expr": "jet_sdmass", "loss": "quantile"}}, r"targets\.q: `quantile` goes with"),
        ({"softmax": "jet_sdmass"}, r"targets\.softmax: a target name must be"),
        ({"m": {"expr": "jet_sdmass", "los": "mse"}}, r"targets\.m: unknown keys \['los'\]"),
        ({"m": {"expr": "jet_sdmass", "center": 1.0}}, r"targets\.m: give both `center` and `width`"),
        ({"m": {"expr": "jet_sdmass", "per_class": "yes"}}, r"targets\.m: per_class must be true or false"),
    ],
)
def test_bad_target_is_one_line_naming_config_and_target(target, message, tmp_path):
    cfg = _config(tmp_path, "bad", ["label_QCD", "label_Tbqq"], target)
    with pytest.raises(JetTaggerError, match=message) as err:
        DataConfig.from_yaml(cfg)
    assert str(err.value).startswith(str(cfg)) and "\n" not in str(err.value)


def test_bad_target_in_the_cli_is_one_line_exit_2(tmp_path):
    cfg = _config(
        tmp_path, "bad", ["label_QCD", "label_Tbqq"], {"mass": {"expr": "jet_sdmass", "loss": "l1"}}
    )
    r = run_cli("train", "--data-config", cfg, "--network", "pfn", "--train", FILES[0], "-o", tmp_path / "o")
    assert r.returncode == 2 and f"{cfg}: targets.mass: unknown loss 'l1'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_joint_resume_is_bit_exact_with_fine_tuning_options(tmp_path):
    """Two targets (log-cosh, the 84 % quantile) and two classes, a frozen layer and an lr-multiplied
    head, stopped mid-pass and resumed == the run in one go: weights, log and learning curve."""
    targets = MASS | {"mass_q84": {"expr": "jet_sdmass", "loss": "quantile", "quantile": 0.84, "weight": 0.5}}
    cfg = _config(tmp_path, "two", ["label_QCD", "label_Tbqq"], targets)
    kw = KW | {"epochs": 2, "max_train_jets": 640, "curve_points": 4, "freeze": ["mod.phi.0.*"]}
    kw |= {"lr_mult": {"mod.out.*": 10.0}, "optimizer": "ranger"}
    one = train(cfg, "pfn", FILES, tmp_path / "one", **kw)
    cut = train(cfg, "pfn", FILES, tmp_path / "cut", stop_after_jets=300, **kw)
    assert cut["interrupted"]["epoch"] == 0
    done = train(cfg, "pfn", FILES, tmp_path / "cut", resume=True, **kw)
    untimed = [[{k: v for k, v in r.items() if k != "seconds"} for r in x["history"]] for x in (one, done)]
    assert untimed[0] == untimed[1] and set(untimed[0][-1]["val_targets"]) == {"mass", "mass_q84"}
    for epoch in (0, 1):
        w = [torch.load(d / f"epoch-{epoch}_state.pt") for d in (tmp_path / "one", tmp_path / "cut")]
        assert all(torch.equal(w[0][k], w[1][k]) for k in w[0])
    curve = [(d / "curve.jsonl").read_text() for d in (tmp_path / "one", tmp_path / "cut")]
    assert curve[0] == curve[1] and "mass_q84" in json.loads(curve[0].splitlines()[-1])["targets"]


def test_regression_resume_is_bit_exact(regression, tmp_path):
    _, cfg, _ = regression
    kw = KW | {"epochs": 1, "max_train_jets": 512}
    one = train(cfg, "pfn", FILES, tmp_path / "one", **kw)
    train(cfg, "pfn", FILES, tmp_path / "cut", stop_after_jets=200, **kw)
    done = train(cfg, "pfn", FILES, tmp_path / "cut", resume=True, **kw)
    assert [r["val_loss"] for r in one["history"]] == [r["val_loss"] for r in done["history"]]
    w = [torch.load(d / "epoch-0_state.pt") for d in (tmp_path / "one", tmp_path / "cut")]
    assert all(torch.equal(w[0][k], w[1][k]) for k in w[0])


def test_classifier_weights_start_a_joint_run_with_a_new_head(joint, tmp_path):
    """--init from a classifier's weights: every tensor but the head (2 logits -> 2 logits + mass) loads."""
    _, cfg, _ = joint
    classifier = _config(tmp_path, "cls", ["label_QCD", "label_Tbqq"], {})
    base = train(classifier, "pfn", FILES[:1], tmp_path / "cls", epochs=1, max_train_jets=128, **KW)
    assert base["targets"] == {}
    s = train(cfg, "pfn", FILES, tmp_path / "ft", init=tmp_path / "cls" / "best_state.pt", epochs=1, **KW)
    assert s["init"]["not_loaded"] == ["mod.out.weight", "mod.out.bias"]
    assert s["history"][0]["val_targets"]["mass"]["n"] > 0


def test_shipped_joint_config_is_the_classifier_inputs_plus_mass():
    joint, full = (DataConfig.from_yaml(config_path(n)) for n in ("jetclass5_joint", "jetclass5_full"))
    assert joint.inputs == full.inputs and joint.label_value == full.label_value
    mass = joint.targets["mass"]
    assert mass.expr.source == "np.where(label_QCD, jet_genjet_sdmass, jet_gen_mass)"
    assert (mass.loss, mass.unit, mass.weight, mass.per_class) == ("logcosh", "GeV", 1.0, True)
    assert joint.output_names == [*full.label_value, "mass"]
