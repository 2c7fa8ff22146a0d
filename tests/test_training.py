"""Training, export and evaluation: a separable toy is learnt, checkpoints reload, ONNX equals torch,
metrics equal scikit-learn's."""

from __future__ import annotations

import json

import numpy as np
import pytest
import uproot

torch = pytest.importorskip("torch")

from jettagger_coffea._errors import JetTaggerError
from jettagger_coffea.configs import config_path
from jettagger_coffea.data import sample_path
from jettagger_coffea.evaluation import evaluate, predict_files
from jettagger_coffea.metrics import auc, confusion_matrix, rejection, roc_curve
from jettagger_coffea.tagger import JetTagger
from jettagger_coffea.training import export, load_trained, lr_factor, torch_scores, train


def train_cli(*args: str) -> list[str]:
    """``jettagger train`` with the W/Z/top config, as a subprocess command line."""
    import sys

    return [
        sys.executable,
        "-m",
        "jettagger_coffea.cli",
        "train",
        "--data-config",
        str(config_path("wzt_full")),
        *args,
    ]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """Top vs QCD (a separable toy: three-prong, 175 GeV vs one-prong) with a 2-class config."""
    import yaml

    work = tmp_path_factory.mktemp("toy")
    cfg = yaml.safe_load(config_path("wzt_full").read_text())
    cfg["labels"]["value"] = ["label_QCD", "label_Tbqq"]
    (work / "toy.yaml").write_text(yaml.safe_dump(cfg))
    files = [sample_path("qcd", "jetclass"), sample_path("tbqq", "jetclass")]
    s = train(
        work / "toy.yaml",
        "pfn",
        files,
        work / "run",
        epochs=4,
        batch_size=64,
        lr=3e-3,
        seed=2,
        network_options={"phi_sizes": [32, 32], "f_sizes": [32]},
        progress=False,
    )
    return work, files, s


def test_toy_is_learnt(toy):
    work, files, s = toy
    losses = [r["train_loss"] for r in s["history"]]
    assert losses[-1] < 0.8 * losses[0]
    model, config, _ = load_trained(work / "run")
    from jettagger_coffea.jetfiles import load_jets

    f = load_jets(files, config)
    p = torch_scores(model, f)
    assert auc(f.labels == 1, p[:, 1]) > 0.85  # 0.88 after 4 short epochs; an untrained model gives 0.5
    log = [json.loads(line) for line in (work / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [0, 1, 2, 3]
    assert s["best_epoch"] == min(log, key=lambda r: r["val_loss"])["epoch"]


def test_checkpoint_reload_and_resume(toy, tmp_path):
    work, files, _ = toy
    a, config, _ = load_trained(work / "run")
    b, _, _ = load_trained(work / "run")
    from jettagger_coffea.jetfiles import load_jets

    f = load_jets(files[:1], config)
    np.testing.assert_array_equal(torch_scores(a, f), torch_scores(b, f))
    # resume: two epochs, stop, then resume to four == four in one go (same seed, same batches)
    kw = {
        "epochs": 4,
        "batch_size": 64,
        "lr": 3e-3,
        "seed": 2,
        "progress": False,
        "network_options": {"phi_sizes": [32, 32], "f_sizes": [32]},
    }
    first = train(work / "toy.yaml", "pfn", files, tmp_path / "r", stop_after=2, **kw)
    assert len(first["history"]) == 2
    resumed = train(work / "toy.yaml", "pfn", files, tmp_path / "r", resume=True, **kw)["history"]
    one_go = toy[2]["history"]
    assert [r["epoch"] for r in resumed] == [0, 1, 2, 3]
    np.testing.assert_allclose([r["val_loss"] for r in resumed], [r["val_loss"] for r in one_go], rtol=1e-5)


def test_a_pass_left_in_the_middle_resumes_exactly(toy, tmp_path):
    """A long pass split across job slots (``stop_after_jets``, mid-pass) ends with the weights, the epoch log
    and the learning curve of the same run in one go, bit for bit."""
    work, files, _ = toy
    opts = {"phi_sizes": [32, 32], "f_sizes": [32]}
    kw = {"batch_size": 64, "lr": 3e-3, "seed": 3, "progress": False, "network_options": opts, "epochs": 2}
    kw |= {"val_files": files, "curve_points": 6}
    one = train(work / "toy.yaml", "pfn", files, tmp_path / "one", **kw)
    n = one["n_train"]
    cut = train(work / "toy.yaml", "pfn", files, tmp_path / "cut", stop_after_jets=n // 3, **kw)
    assert cut["interrupted"] == {"epoch": 0, "jets": 64 * -(-(n // 3) // 64)} and cut["history"] == []
    state = torch.load(tmp_path / "cut" / "last.pt", weights_only=False)
    assert state["partial"]["jets"] == cut["interrupted"]["jets"]
    with pytest.raises(JetTaggerError, match="other max_train_jets, seed than"):  # other jets: refused
        train(
            work / "toy.yaml",
            "pfn",
            files,
            tmp_path / "cut",
            resume=True,
            **(kw | {"seed": 9}),
            max_train_jets=99,
        )
    cut = train(work / "toy.yaml", "pfn", files, tmp_path / "cut", stop_after_jets=n, resume=True, **kw)
    assert cut["interrupted"]["epoch"] == 1 and [r["epoch"] for r in cut["history"]] == [0]
    done = train(work / "toy.yaml", "pfn", files, tmp_path / "cut", resume=True, **kw)
    assert "interrupted" not in done

    def untimed(s):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in s["history"]]

    assert untimed(one) == untimed(done)
    assert (tmp_path / "one" / "curve.jsonl").read_text() == (tmp_path / "cut" / "curve.jsonl").read_text()
    for epoch in (0, 1):
        w1 = torch.load(tmp_path / "one" / f"epoch-{epoch}_state.pt")
        w2 = torch.load(tmp_path / "cut" / f"epoch-{epoch}_state.pt")
        assert all(torch.equal(w1[k], w2[k]) for k in w1)


def test_sigterm_saves_a_resumable_checkpoint(tmp_path):
    """A batch system's SIGTERM mid-pass: the run saves where it is and exits 75 (EX_TEMPFAIL: try again);
    --resume ends as the run in one go."""
    import os
    import signal
    import subprocess
    import time

    cmd = train_cli(
        "--network",
        "pfn",
        "--network-options",
        '{"phi_sizes": [64, 64], "f_sizes": [64]}',
        "--epochs",
        "1",
    )
    cmd += ["--train", *(str(sample_path(p, "jetclass")) for p in ("qcd", "tbqq"))]
    cmd += ["--batch-size", "32", "--threads", "1", "--seed", "4"]
    out = tmp_path / "cut"
    proc = subprocess.Popen(
        [*cmd, "-o", str(out), "--checkpoint-minutes", "0"], stdout=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while not (out / "last.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # the first mid-pass save: the handler is in place
    os.kill(proc.pid, signal.SIGTERM)
    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode == 75 and "go on with --resume" in stdout
    state = torch.load(out / "last.pt", weights_only=False)
    assert state["partial"] is not None and state["partial"]["jets"] > 0
    subprocess.run([*cmd, "-o", str(out), "--resume"], check=True, capture_output=True)
    subprocess.run([*cmd, "-o", str(tmp_path / "one")], check=True, capture_output=True)
    log1 = [json.loads(x) for x in (tmp_path / "one" / "log.jsonl").read_text().splitlines()]
    log2 = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["val_loss"] for r in log1] == [r["val_loss"] for r in log2] and len(log1) == 1
    w1, w2 = (torch.load(d / "epoch-0_state.pt") for d in (tmp_path / "one", out))
    assert all(torch.equal(w1[k], w2[k]) for k in w1)


def test_learning_curve_is_the_first_pass_on_distinct_jets(toy, tmp_path):
    """curve.jsonl: validation metrics at log-spaced counts of distinct jets, in the first pass only; its last
    row is the epoch-0 model (the same numbers as predicting with that checkpoint)."""
    from jettagger_coffea.jetfiles import load_jets

    work, files, _ = toy
    opts = {"phi_sizes": [32, 32], "f_sizes": [32]}
    kw = {"batch_size": 64, "lr": 3e-3, "seed": 2, "progress": False, "network_options": opts}
    out = tmp_path / "c"
    s = train(work / "toy.yaml", "pfn", files, out, val_files=files, epochs=2, curve_points=5, **kw)
    rows = [json.loads(line) for line in (out / "curve.jsonl").read_text().splitlines()]
    jets = [r["jets"] for r in rows]
    assert len(rows) == 5 and jets == sorted(set(jets)) and jets[-1] == s["n_train"]  # none from epoch 1
    assert rows[-1]["discriminants"]["TvsQCD"]["auc"] > rows[0]["discriminants"]["TvsQCD"]["auc"] + 0.1
    model, config, _ = load_trained(out, which=0)
    val = load_jets(files, config)
    p = torch_scores(model, val)
    top = rows[-1]["discriminants"]["TvsQCD"]
    assert top["auc"] == pytest.approx(auc(val.labels == 1, p[:, 1]), abs=1e-6)
    assert rows[-1]["accuracy"] == pytest.approx(float(np.mean(p.argmax(1) == val.labels)), abs=1e-9)
    assert top["n_signal"] == int(np.sum(val.labels == 1)) and rows[-1]["n_jets"] == len(val.labels)
    from jettagger_coffea.plotting import learning_curve_plot

    png = learning_curve_plot({"pfn": rows}, tmp_path / "curve.png", discriminants=["TvsQCD"])
    assert png.stat().st_size > 10_000
    # a point where no background jet passed (metrics.json's null) is drawn as a lower limit, not a crash
    none = {**rows[-1]["discriminants"]["TvsQCD"], "rej50": None}
    limit = [*rows[:-1], {**rows[-1], "discriminants": {"TvsQCD": none}}]
    assert learning_curve_plot({"pfn": limit}, tmp_path / "limit.png", discriminants=["TvsQCD"]).is_file()


def test_export_onnx_equals_torch_and_evaluate_equals_sklearn(toy, tmp_path):
    from sklearn.metrics import confusion_matrix as sk_confusion
    from sklearn.metrics import roc_auc_score
    from sklearn.metrics import roc_curve as sk_roc

    work, files, _ = toy
    bundle = export(
        work / "run",
        tmp_path / "bundle",
        reference_files=files,
        discriminants={"TvsQCD": {"signal": ["Tbqq"], "background": ["QCD"]}},
    )
    model, config, _ = load_trained(work / "run")
    from jettagger_coffea.jetfiles import load_jets

    f = load_jets(files, config)
    scores = torch_scores(model, f)
    cols = predict_files(JetTagger(bundle), files)
    onnx_scores = np.stack([cols["score_QCD"], cols["score_Tbqq"]], axis=1)
    np.testing.assert_allclose(onnx_scores, scores, atol=1e-5)
    m = evaluate(JetTagger(bundle), files, tmp_path / "eval")
    y = cols["label"].astype(int)
    d = onnx_scores[:, 1] / onnx_scores.sum(1)
    assert m["discriminants"]["TvsQCD"]["auc"] == pytest.approx(roc_auc_score(y, d), abs=1e-9)
    assert m["auc_ovr"]["Tbqq"] == pytest.approx(roc_auc_score(y, onnx_scores[:, 1]), abs=1e-9)
    assert m["accuracy"] == pytest.approx(np.mean(onnx_scores.argmax(1) == y))
    np.testing.assert_allclose(m["confusion"], sk_confusion(y, onnx_scores.argmax(1), normalize="true"))
    fpr, tpr, _ = sk_roc(y, d)
    assert m["discriminants"]["TvsQCD"]["rej50"] == pytest.approx(1 / np.interp(0.5, tpr, fpr), rel=1e-9)
    for png in ("roc.png", "confusion.png", "scores_TvsQCD.png"):
        assert (tmp_path / "eval" / png).stat().st_size > 10_000


def test_metrics_edge_cases():
    y = np.array([1, 1, 0, 0, 1, 0])
    s = np.array([0.9, 0.9, 0.9, 0.1, np.nan, 0.2])  # ties and a NaN (excluded)
    eb, es, _ = roc_curve(y, s)
    assert eb[0] == es[0] == 0 and eb[-1] == es[-1] == 1
    from sklearn.metrics import roc_auc_score

    ok = np.isfinite(s)
    assert auc(y, s) == pytest.approx(roc_auc_score(y[ok], s[ok]))
    assert rejection(np.array([1, 0]), np.array([1.0, 0.0]), 0.5) == float("inf")
    cm = confusion_matrix(np.array([0, 1]), np.array([[0.9, 0.1], [np.nan, np.nan]]), 2)
    assert cm.tolist() == [[1, 0], [0, 0]]
    assert lr_factor(0, 100) < lr_factor(4, 100) <= 1 and lr_factor(99, 100) == pytest.approx(0.01, rel=0.2)


def test_train_cli_bad_network(tmp_path):
    import subprocess

    r = subprocess.run(
        train_cli("--network", "resnet", "--train", str(sample_path("qcd", "jetclass")), "-o", str(tmp_path)),
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 2
    assert "unknown network 'resnet'" in r.stderr
    assert uproot  # the module is used by the fixtures' files
