"""Fine-tuning: the official JetClass ParticleNet (10 classes) starts a 5-class run with a new head; frozen
parameters stay bit for bit, lr-multiplied ones train at lr x factor, a stopped run resumes exactly, and
every misuse is one line, exit 2, before any jet is read."""

from __future__ import annotations

import hashlib
import logging

import pytest
import yaml

torch = pytest.importorskip("torch")

from jettagger_coffea._errors import JetTaggerError
from jettagger_coffea.cli import main
from jettagger_coffea.configs import config_path
from jettagger_coffea.data import sample_path
from jettagger_coffea.dataconfig import DataConfig
from jettagger_coffea.inputs import default_inputs
from jettagger_coffea.nn import build_for
from jettagger_coffea.nn.model import head_names, load_pretrained
from jettagger_coffea.training import export, train

from .conftest import PN_KIN_WEIGHTS, shared_file

FILES = [sample_path(p, "jetclass") for p in ("qcd", "wqq", "zqq", "tbqq")]
KIN5 = config_path("jetclass5_kin")
SMALL_PFN = {"phi_sizes": [16, 16], "f_sizes": [16]}


@pytest.fixture(scope="module")
def fine_tuned(tmp_path_factory):
    """ParticleNet kin (JetClass) -> our 5 classes: the first EdgeConv block and the input batch norm
    frozen, the head at 50 x lr; one epoch of 64 jets in 2 steps."""
    out = tmp_path_factory.mktemp("ft") / "run"
    weights = shared_file(PN_KIN_WEIGHTS)
    kw = {"epochs": 1, "batch_size": 32, "max_train_jets": 64, "max_val_jets": 32, "lr": 1e-3, "seed": 5}
    kw |= {"progress": False}
    freeze = ["mod.bn_fts.*", "mod.edge_convs.0.*"]
    s = train(KIN5, "particlenet", FILES, out, init=weights, freeze=freeze, lr_mult={"mod.fc.*": 50}, **kw)
    return out, weights, s


def test_official_weights_load_with_a_new_head_named(fine_tuned, caplog):
    out, weights, s = fine_tuned
    config = DataConfig.from_yaml(KIN5)
    model = build_for("particlenet", config, default_inputs(config))
    head = head_names(model, 5)
    assert head == ["mod.fc.1.weight", "mod.fc.1.bias"]
    with caplog.at_level(logging.WARNING):
        s2 = train(
            KIN5, "particlenet", FILES[:1], out.parent / "zero", init=weights, epochs=0, progress=False
        )
    assert s2["init"]["not_loaded"] == head
    line = [r.getMessage() for r in caplog.records if "new head" in r.getMessage()]
    assert len(line) == 1 and "mod.fc.1.weight (10, 256) -> (5, 256), mod.fc.1.bias (10,) -> (5,)" in line[0]
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert s["init"] == {"path": str(weights), "sha256": sha, "not_loaded": head}
    # every other tensor is the checkpoint's, bit for bit (the head: as built)
    misfit = load_pretrained(model, weights, 5)
    assert list(misfit) == head
    ref = torch.load(weights, map_location="cpu", weights_only=True)
    own = model.state_dict()
    assert all(torch.equal(own[k], ref[k]) for k in own if k not in head)


def test_frozen_stay_and_multiplied_lr(fine_tuned):
    out, weights, s = fine_tuned
    ref = torch.load(weights, map_location="cpu", weights_only=True)
    after = torch.load(out / "epoch-0_state.pt", map_location="cpu", weights_only=True)
    frozen = [k for k in after if k.startswith(("mod.bn_fts.", "mod.edge_convs.0."))]
    params = [k for k in frozen if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert len(params) == 14 and all(torch.equal(after[k], ref[k]) for k in params)
    trained = ["mod.edge_convs.1.convs.0.weight", "mod.edge_convs.2.sc.weight", "mod.fc.0.0.weight"]
    assert all(not torch.equal(after[k], ref[k]) for k in trained)
    state = torch.load(out / "last.pt", map_location="cpu", weights_only=False)
    base, head = state["optimizer"]["param_groups"]
    assert (base["mult"], head["mult"]) == (1.0, 50.0) and len(head["params"]) == 4  # fc.0.0 and fc.1
    assert head["lr"] == pytest.approx(50 * base["lr"], rel=1e-12) and head["initial_lr"] == 50 * 1e-3
    assert s["history"][0]["lr"] == pytest.approx(base["lr"], rel=1e-12)
    n_frozen = sum(ref[k].numel() for k in params)
    assert s["trainable_parameters"] == s["parameters"] - n_frozen
    assert len(base["params"]) + len(head["params"]) == 42 - 14  # the frozen are in no group


def test_card_says_what_the_run_started_from(fine_tuned, tmp_path):
    out, _, s = fine_tuned
    bundle = export(out, tmp_path / "b", name="particlenet-kin-ft")
    card = yaml.safe_load((bundle / "tagger.yaml").read_text())
    assert card["init"] == s["init"] and card["init"]["not_loaded"] == ["mod.fc.1.weight", "mod.fc.1.bias"]
    prov = card["provenance"]
    assert prov["freeze"] == ["mod.bn_fts.*", "mod.edge_convs.0.*"] and prov["lr_mult"] == [
        ["mod.fc.*", 50.0]
    ]


def test_resume_with_frozen_and_multiplied_layers_is_exact(tmp_path):
    """A run with frozen and lr-multiplied parameters stopped mid-pass and resumed == the run in one go, bit
    for bit; a resume with other groups is refused."""
    kw = {"epochs": 2, "batch_size": 64, "lr": 3e-3, "seed": 3, "progress": False, "max_train_jets": 640}
    kw |= {"optimizer": "ranger"}  # Lookahead: its slow weights per group
    kw |= {"network_options": SMALL_PFN, "freeze": ["mod.phi.0.*"], "lr_mult": [("mod.out.*", 20.0)]}
    one = train(KIN5, "pfn", FILES, tmp_path / "one", **kw)
    cut = train(KIN5, "pfn", FILES, tmp_path / "cut", stop_after_jets=400, **kw)
    assert cut["interrupted"]["epoch"] == 0
    with pytest.raises(JetTaggerError, match="other freeze than"):
        train(KIN5, "pfn", FILES, tmp_path / "cut", resume=True, **(kw | {"freeze": ["mod.phi.1.*"]}))
    done = train(KIN5, "pfn", FILES, tmp_path / "cut", resume=True, **kw)
    untimed = [[{k: v for k, v in r.items() if k != "seconds"} for r in x["history"]] for x in (one, done)]
    assert untimed[0] == untimed[1]
    w = [torch.load(d / "epoch-1_state.pt") for d in (tmp_path / "one", tmp_path / "cut")]
    assert all(torch.equal(w[0][k], w[1][k]) for k in w[0])
    first = torch.load(tmp_path / "one" / "epoch-0_state.pt")
    assert torch.equal(first["mod.phi.0.weight"], w[0]["mod.phi.0.weight"])  # frozen: not moved
    assert not torch.equal(first["mod.out.weight"], w[0]["mod.out.weight"])


@pytest.fixture(scope="module")
def other_width(tmp_path_factory):
    """A PFN checkpoint of other widths: more than the head differs."""
    config = DataConfig.from_yaml(KIN5)
    model = build_for("pfn", config, default_inputs(config), phi_sizes=[16, 32], f_sizes=[16])
    path = tmp_path_factory.mktemp("w") / "wide.pt"
    torch.save(model.state_dict(), path)
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--freeze", "edge_convs.*"],
            "--freeze 'edge_convs.*' matches no parameter (fnmatch over names like",
        ),
        (["--lr-mult", "mod.out.*=0"], "--lr-mult mod.out.*=0: the factor must be > 0 and <= 1000"),
        (["--lr-mult", "mod.out.*"], "--lr-mult 'mod.out.*': expected PATTERN=FACTOR"),
        (["--freeze", "mod.out.*", "--lr-mult", "mod.*=5"], "is matched by both --freeze 'mod.out.*' and"),
        (["--init", "WIDE"], "does not fit this network: mod.phi.2.weight is (32, 16, 1) there, (16, 16, 1)"),
        (["--init", "no/such.pt"], "--init: no such file no/such.pt"),
    ],
)
def test_cli_misuse_is_one_line(args, message, other_width, tmp_path, capsys):
    """``jettagger train`` (in this process: the CLI's own error path, without a second torch import)."""
    args = [str(other_width) if a == "WIDE" else a for a in args]
    opts = ["--network", "pfn", "--network-options", '{"phi_sizes": [16, 16], "f_sizes": [16]}']
    out = tmp_path / "o"
    assert (
        main(["train", "--data-config", str(KIN5), *opts, *args, "--train", str(FILES[0]), "-o", str(out)])
        == 2
    )
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert not (out / "data_config.yaml").exists()  # refused before any jet was read
