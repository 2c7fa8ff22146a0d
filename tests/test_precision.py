"""Reduced precision: ParticleNet's MatMul export equals its Conv export; an int8 model made and its
deviation on held-out jets recorded in the card; ``--precision`` runs what is recorded within the limits
and refuses, in one line naming the bundle and the numbers, what is not."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pyarrow.parquet as pq
import pytest
import yaml

from jettagger_coffea import precision
from jettagger_coffea.backends import OnnxBackend, TorchBackend
from jettagger_coffea.bundle import Bundle, resolve
from jettagger_coffea.cli import main
from jettagger_coffea.data import PROCESSES, sample_path
from jettagger_coffea.jetfiles import load_jets
from jettagger_coffea.nn.export import export_onnx, max_difference

from .conftest import run_cli

FILES = [sample_path(p, "jetclass") for p in PROCESSES]


@pytest.fixture(scope="module")
def lite(tmp_path_factory):
    """A copy of the shipped particlenet-lite, with its int8 model made on 800 of the bundled jets (in its
    own process: the calibration's activations are not left in the test session's heap)."""
    path = tmp_path_factory.mktemp("precision") / "lite"
    shutil.copytree(resolve("particlenet-lite"), path)
    args = ["--precision", "int8", "--calibration-jets", "128", "--max-jets", "800", "--reference"]
    r = run_cli("quantize", path, *args, *FILES)
    assert r.returncode == 0, r.stderr[-2000:]
    return path, precision.record(Bundle.load(path), "int8")


def test_matmul_export_equals_conv(tmp_path):
    """The MatMul form (BatchNorms folded, channels-last) has no Conv left, and gives the Conv export's
    scores on real jets."""
    bundle = Bundle.load("particlenet-lite")
    model = TorchBackend(bundle).model
    dims = {k: v[1] for k, v in bundle.config.input_shapes.items()}
    conv = export_onnx(model, dims, tmp_path / "conv.onnx", matmul=False)
    mm = export_onnx(model, dims, tmp_path / "mm.onnx")
    ops = {n.op_type for n in onnx.load(str(mm)).graph.node}
    assert "Conv" not in ops and "MatMul" in ops
    assert "Conv" in {n.op_type for n in onnx.load(str(conv)).graph.node}
    assert max_difference(model, dims, mm) < 1e-5
    jets = load_jets(FILES[3:], bundle.config, with_labels=False, drop_empty=True).take(np.arange(400))
    a, b = (precision.scores(OnnxBackend(p), bundle, jets) for p in (conv, mm))
    assert np.abs(a - b).mean() < 1e-6


def test_int8_recorded_and_run(lite, tmp_path, capsys):
    """`jettagger quantize` wrote the int8 model and its record; `predict --precision int8` runs it, its
    scores within the recorded deviation of fp32's."""
    path, rec = lite
    card = yaml.safe_load((path / "tagger.yaml").read_text())["precision"]["int8"]
    assert card["mean_abs_delta"] == pytest.approx(rec["mean_abs_delta"])
    assert card["jets"] > 300 and card["nodes"] and (path / card["model"]).is_file()
    assert card["auc_delta"] and set(card["auc_delta"]) <= set(Bundle.load(path).discriminants)
    assert card["within_limits"] == precision.within_limits(card)
    ops = {n.op_type for n in onnx.load(str(path / card["model"])).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    if not card["within_limits"]:
        pytest.skip(f"int8 over the limits for this network: {precision.describe(card)}")
    outs = {}
    for p in ("fp32", "int8"):
        outs[p] = tmp_path / f"{p}.parquet"
        assert main(["predict", "--model", str(path), "--input", str(FILES[2]), "-o", str(outs[p]),
                     "--precision", p]) == 0  # fmt: skip
    a, b = (pq.read_table(outs[p]).to_pandas() for p in ("fp32", "int8"))
    cols = [c for c in a.columns if c.startswith("score_") and c[6:] in Bundle.load(path).classes]
    delta = np.abs(a[cols].to_numpy() - b[cols].to_numpy())
    assert 0 < np.nanmean(delta) <= precision.MAX_MEAN_DELTA
    assert np.nanmean(delta) < 3 * card["mean_abs_delta"]


def test_refused_without_record(lite, tmp_path, capsys):
    """No record (the shipped bundle), a record over the limits, a record of another model.onnx: one line
    each, exit 2, before any output is written."""
    path, _ = lite
    out = tmp_path / "x.parquet"
    args = ["predict", "--input", str(FILES[0]), "-o", str(out), "--precision", "int8", "--model"]
    assert main([*args, "particlenet-lite"]) == 2
    err = capsys.readouterr().err.strip()
    assert "particlenet-lite" in err and "no measured int8 deviation" in err and len(err.splitlines()) == 1
    over = tmp_path / "over"
    shutil.copytree(path, over)
    card = yaml.safe_load((over / "tagger.yaml").read_text())
    card["precision"]["int8"] |= {"mean_abs_delta": 4.2e-3, "within_limits": False}
    (over / "tagger.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
    assert main([*args, str(over)]) == 2
    err = capsys.readouterr().err.strip()
    assert str(over) in err and "4.2e-03" in err and "over the limits" in err
    assert main([*args, str(over), "--backend", "torch"]) == 2
    assert "runs in --backend onnx" in capsys.readouterr().err
    assert not out.exists()


def test_bf16_measured(lite):
    """bf16 (torch autocast): measured and recorded; run where within the limits, else refused."""
    path, _ = lite
    rec = precision.quantize(path, "bf16", FILES, calibration=64, jets=400)
    bundle = Bundle.load(path)
    assert bundle.card["precision"]["bf16"]["mean_abs_delta"] == pytest.approx(rec["mean_abs_delta"])
    assert rec["mean_abs_delta"] > 0 and "int8" in bundle.card["precision"]  # the int8 record kept
    if rec["within_limits"]:
        TorchBackend.from_bundle(bundle, precision="bf16")
    else:
        with pytest.raises(precision.JetTaggerError, match="over the limits"):
            TorchBackend.from_bundle(bundle, precision="bf16")
