"""Reduced precision (int8, bf16), offered only where it is measured. :func:`quantize` makes a bundle's
int8 model (onnxruntime static QDQ, calibrated on real jets, weights per output channel; the k-NN
distances, softmax and pooling stay fp32) or measures its bf16 run (torch autocast, oneDNN), and writes
in the card what it does to the scores on held-out jets: mean / max |Δscore| and each discriminant's AUC
against fp32 (:func:`.metrics.summary`, the project's one AUC). :func:`check` refuses a precision whose
record is absent, stale or over the limits, in one line naming the bundle and the numbers."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import JetTaggerError
from ._names import BACKEND_OF, PRECISIONS
from .bundle import MODEL, Bundle

#: the limits a reduced precision must keep on the held-out jets, against fp32 (never relaxed)
MAX_MEAN_DELTA = 1e-3
MAX_AUC_DELTA = 1e-3
INT8_MODEL = "model.int8.onnx"
#: jets the activations' ranges are calibrated on (and the int8 layers chosen on); the rest are held out
CALIBRATION_JETS = 512
#: the share of the limits the layers are chosen within (on other jets than the held-out ones, which the
#: limits themselves are then checked on: choosing at the limit would leave their noise to chance)
SELECTION_MARGIN = 0.7
#: the slot budget both sides of a comparison run at (the same batches)
BUDGET = 4096
log = logging.getLogger(__name__)


def record(bundle: Bundle, precision: str) -> dict[str, Any] | None:
    """The card's measurement of ``precision`` (None: never measured)."""
    got = (bundle.card.get("precision") or {}).get(precision)
    return got if isinstance(got, dict) else None


def within_limits(rec: dict[str, Any], margin: float = 1.0) -> bool:
    """Whether a measurement keeps ``margin`` times the limits (an AUC that could not be measured, where
    no discriminant has signal and background among the jets, fails)."""
    aucs = list((rec.get("auc_delta") or {}).values())
    worst_auc = max((abs(v) for v in aucs), default=np.inf)
    return (
        rec.get("mean_abs_delta", np.inf) <= margin * MAX_MEAN_DELTA and worst_auc <= margin * MAX_AUC_DELTA
    )


def describe(rec: dict[str, Any]) -> str:
    """``mean |Δscore| 4.1e-04, max 1.2e-02, AUC within 2.0e-04 (1000 held-out jets)``."""
    worst = max((abs(v) for v in (rec.get("auc_delta") or {}).values()), default=float("nan"))
    return (
        f"mean |Δscore| {rec['mean_abs_delta']:.1e}, max {rec['max_abs_delta']:.1e}, AUC within "
        f"{worst:.1e} ({rec['jets']} held-out jets)"
    )


def check(bundle: Bundle, precision: str | None, backend: str) -> dict[str, Any] | None:
    """The card's record of ``precision`` for running in ``backend``; refused in one line (naming the bundle
    and the numbers) where never measured, measured on another model.onnx, over the limits, or asked of a
    backend that does not run it. None for fp32."""
    if precision in (None, "fp32"):
        return None
    if precision not in BACKEND_OF:
        raise JetTaggerError(f"--precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    where = f"tagger bundle {bundle.name} ({bundle.path})"
    if backend != BACKEND_OF[precision]:
        raise JetTaggerError(
            f"--precision {precision} runs in --backend {BACKEND_OF[precision]}, not {backend}"
        )
    rec = record(bundle, precision)
    if rec is None:
        raise JetTaggerError(
            f"{where}: no measured {precision} deviation in its card, so --precision {precision} is refused "
            f"(measure it: jettagger quantize {bundle.path} --precision {precision} --reference FILES)"
        )
    if rec.get("fp32_sha256") != _digest(bundle.onnx_path):
        raise JetTaggerError(
            f"{where}: its {precision} record was measured on another {MODEL}; measure again"
        )
    if not within_limits(rec):
        raise JetTaggerError(
            f"{where}: --precision {precision} refused: {describe(rec)} against fp32, over the limits "
            f"(mean |Δscore| <= {MAX_MEAN_DELTA:g}, AUC within {MAX_AUC_DELTA:g})"
        )
    if precision == "int8" and not (bundle.path / rec["model"]).is_file():
        raise JetTaggerError(f"{where}: its int8 model {rec['model']} is missing")
    return rec


def _digest(path: Path) -> str:
    from .shipping import ModelBytes

    return ModelBytes.read(path).digest


# -- measuring -----------------------------------------------------------------------------------------
def split_jets(
    bundle: Bundle,
    files: Sequence[str | Path],
    calibration: int = CALIBRATION_JETS,
    jets_max: int | None = None,
    seed: int = 0,
):
    """(calibration, held-out) jets with particles, with labels, from ``files`` (at most ``jets_max`` in
    all): a seeded shuffle, so that the calibration jets span every file and multiplicity."""
    from .jetfiles import load_jets

    jets = load_jets(files, bundle.config, with_labels=True, drop_empty=True)
    perm = np.random.default_rng(seed).permutation(len(jets))[:jets_max]
    jets = jets.take(np.sort(perm))
    if len(jets) < 2 * min(calibration, 64):
        raise JetTaggerError(
            f"--reference: {len(jets)} jets with particles, too few to calibrate and measure on"
        )
    calibration = min(calibration, len(jets) // 2)
    perm = np.random.default_rng(seed).permutation(len(jets))
    return jets.take(np.sort(perm[:calibration])), jets.take(np.sort(perm[calibration:]))


def scores(backend: Any, bundle: Bundle, jets: Any) -> np.ndarray:
    """The class scores of ``jets`` (standardised) in ``backend``, batched at :data:`BUDGET`."""
    from .backends import MAX_PAIRS, run_batched

    pairs = MAX_PAIRS if bundle.pairwise else None
    values = run_batched(backend, jets, bundle.outputs, "dynamic", bundle.min_length, BUDGET, pairs)
    return bundle.outputs.split(values)[0]


def deviation(bundle: Bundle, jets: Any, ref: np.ndarray, got: np.ndarray) -> dict[str, Any]:
    """What a reduced precision does on ``jets``: mean and max |Δscore| over every class score, and the
    change of each discriminant's AUC (of each class one-vs-rest where the bundle defines none)."""
    from .metrics import summary

    delta = np.abs(got.astype(np.float64) - ref)
    a, b = (summary(jets.labels, s, bundle.classes, bundle.discriminants) for s in (ref, got))
    if bundle.discriminants:
        aucs = {k: b["discriminants"][k]["auc"] - v["auc"] for k, v in a["discriminants"].items()}
    else:
        aucs = {k: b["auc_ovr"][k] - v for k, v in a["auc_ovr"].items()}
    return {
        "jets": len(jets),
        "mean_abs_delta": float(np.nanmean(delta)),
        "max_abs_delta": float(np.nanmax(delta)),
        "auc_delta": {k: float(v) for k, v in aucs.items()},
    }


def fp32_backend(bundle: Bundle) -> Any:
    from .backends import BackendSpec, make_backend

    return make_backend(BackendSpec.of("onnx"), bundle)


# -- int8 ----------------------------------------------------------------------------------------------
def fp32_graph(bundle: Bundle, folder: Path) -> Path:
    """The graph to quantise: the bundle's torch network exported with its 1x1 convolutions as MatMul
    (:func:`.nn.export.matmul_form`; a bundle written before that form has Conv), else its model.onnx."""
    if not (bundle.path / "model.pt").is_file() or "network" not in bundle.card:
        return bundle.onnx_path
    from .backends import TorchBackend
    from .nn.export import export_onnx

    dims = {k: v[1] for k, v in bundle.config.input_shapes.items()}
    return export_onnx(TorchBackend(bundle).model, dims, folder / "fp32-matmul.onnx")


def candidates(graph: Path) -> list[str]:
    """The MatMul / Gemm nodes int8 may take, in the order they are tried: those with a constant weight
    (never the k-NN distances x·xᵀ, whose operands are both activations); for ParticleNet only the
    per-edge MLP layers (``/layers.``: k times the FLOPs of the per-particle ones), last block first
    (the widest, and the least sensitive: measured, docs/performance.md)."""
    import onnx

    model = onnx.load(str(graph))
    weights = {i.name for i in model.graph.initializer}
    nodes = [
        n.name
        for n in model.graph.node
        if n.op_type in ("MatMul", "Gemm") and any(i in weights for i in n.input)
    ]
    edge = [n for n in nodes if "/layers." in n]
    return list(reversed(edge or nodes))


def _batches(bundle: Bundle, jets: Any, names: set[str]) -> list[dict[str, np.ndarray]]:
    """``jets`` in the tagger's batches (:data:`BUDGET`), the model's inputs only."""
    from .batching import batch_length, sorted_batches

    length_of = batch_length(list(bundle.config.inputs.values()), "dynamic", bundle.min_length)
    order, ranges = sorted_batches(jets.counts, length_of, BUDGET, None)
    ordered = jets.take(order)
    return [
        {k: v for k, v in ordered.dense(a, b, "dynamic", bundle.min_length).items() if k in names}
        for a, b in ranges
    ]


class _Reader:
    """onnxruntime's CalibrationDataReader over batches (its own ranges are replaced by ours)."""

    def __init__(self, batches: list[dict[str, np.ndarray]]) -> None:
        self.batches = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.batches, None)


#: an activation's range: this percentile of its values on real particles (and its minimum): the rare
#: largest values would otherwise set the int8 step of every other one (MinMax: 1.6x the deviation)
PERCENTILE = 99.999
#: values of each activation kept per batch for its percentile
SAMPLE = 200_000


def activation_ranges(bundle: Bundle, graph: Path, jets: Any, nodes: list[str]) -> dict[str, tuple]:
    """(min, :data:`PERCENTILE`) of the activation input of each of ``nodes`` over the real particles of
    ``jets`` (padded slots left out: they never reach a score)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(graph))
    weights = {i.name for i in model.graph.initializer}
    inputs = {
        n.name: next(i for i in n.input if i not in weights) for n in model.graph.node if n.name in nodes
    }
    tensors = sorted(set(inputs.values()))
    model.graph.output.extend(onnx.ValueInfoProto(name=t) for t in tensors)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    mask = bundle.primary
    rng = np.random.default_rng(0)
    values: dict[str, list[np.ndarray]] = {t: [] for t in tensors}
    for batch in _batches(bundle, jets, names | {mask}):
        real = batch[mask][:, 0, :] > 0
        for t, x in zip(tensors, sess.run(tensors, {k: v for k, v in batch.items() if k in names})):
            x = x[real] if x.shape[:2] == real.shape else x  # channels-last (N, P, ...): real particles
            flat = x.reshape(-1)
            values[t].append(flat if len(flat) <= SAMPLE else rng.choice(flat, SAMPLE, replace=False))
    return {
        t: (min(float(v.min()), 0.0), float(np.percentile(v, PERCENTILE)))
        for t, v in ((t, np.concatenate(vs)) for t, vs in values.items())
    }


def quantise(graph: Path, nodes: list[str], ranges: dict[str, tuple], probe: dict, out: Path) -> Path:
    """Static int8 QDQ of ``nodes`` of ``graph`` into ``out``: activations uint8 over ``ranges``
    (:func:`activation_ranges`), weights int8 per output channel; the MatMul outputs stay fp32
    (MatMulIntegerToFloat: no second rounding before the bias and ReLU). ``probe``: one batch, for
    onnxruntime's calibration pass (whose ranges ours replace)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    overrides = {t: [{"rmin": np.float32(lo), "rmax": np.float32(hi)}] for t, (lo, hi) in ranges.items()}
    quantize_static(
        str(graph),
        str(out),
        _Reader([probe]),  # type: ignore[arg-type]
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul", "Gemm"],
        nodes_to_quantize=nodes,
        extra_options={
            "OpTypesToExcludeOutputQuantization": ["MatMul", "Gemm"],
            "TensorQuantOverrides": overrides,
        },
    )
    return out


def _session(path: Path, threads: int | None = None) -> Any:
    from .backends import OnnxBackend

    return OnnxBackend(path, threads=threads)


def int8_model(bundle: Bundle, calibration: Any, selection: Any, out: Path) -> list[str]:
    """Quantise the bundle into ``out`` (ranges from ``calibration``), taking the :func:`candidates` one
    at a time in their order where the scores of the ``selection`` jets stay within
    :data:`SELECTION_MARGIN` of the limits (a node that breaks them stays fp32); returns the nodes taken
    (none: ``out`` not written)."""
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        graph = fp32_graph(bundle, Path(tmp))
        nodes = candidates(graph)
        ranges = activation_ranges(bundle, graph, calibration, nodes)
        probe = _batches(bundle, calibration, {i.name for i in onnx.load(str(graph)).graph.input})[0]
        ref = scores(fp32_backend(bundle), bundle, selection)
        taken: list[str] = []
        for node in nodes:
            trial = quantise(graph, [*taken, node], ranges, probe, Path(tmp) / "trial.onnx")
            dev = deviation(bundle, selection, ref, scores(_session(trial), bundle, selection))
            log.info("int8 %s: %s", node, describe(dev))
            if within_limits(dev, SELECTION_MARGIN):  # else left in fp32, and the next one tried
                taken.append(node)
                shutil.copyfile(trial, out)
    return taken


# -- the command ---------------------------------------------------------------------------------------
def quantize(
    path: str | Path,
    precision: str,
    reference: Sequence[str | Path],
    calibration: int = CALIBRATION_JETS,
    jets: int | None = None,
) -> dict[str, Any]:
    """Make (int8) or measure (bf16) ``precision`` of the bundle at ``path`` on the jets of ``reference``
    files (at most ``jets`` of them), and record in its card what it does to the scores of the held-out
    jets (:func:`deviation`, whether within the limits): the record :func:`check` reads."""
    from .backends import TorchBackend
    from .bundle import update_card

    if precision not in BACKEND_OF:
        raise JetTaggerError(
            f"--precision: {precision!r} is not a reduced precision ({', '.join(BACKEND_OF)})"
        )
    bundle = Bundle.load(path)
    calib, held_out = split_jets(bundle, reference, calibration, jets)
    ref = scores(fp32_backend(bundle), bundle, held_out)
    rec: dict[str, Any] = {"backend": BACKEND_OF[precision]}
    if precision == "int8":
        # every other jet chooses the layers, the others measure them (both span every file)
        choose, held_out, ref = (
            held_out.take(np.arange(0, len(ref), 2)),
            held_out.take(np.arange(1, len(ref), 2)),
            ref[1::2],
        )
        out = bundle.path / INT8_MODEL
        out.unlink(missing_ok=True)
        rec |= {"model": INT8_MODEL, "nodes": int8_model(bundle, calib, choose, out)}
        got = scores(_session(out), bundle, held_out) if rec["nodes"] else None
    else:
        got = scores(TorchBackend(bundle, precision="bf16"), bundle, held_out)
    rec |= {"calibration_jets": len(calib), "reference": [str(f) for f in reference]}
    if got is None:  # no layer could be quantised within the limits
        rec |= {
            "jets": len(held_out),
            "mean_abs_delta": float("inf"),
            "max_abs_delta": float("inf"),
            "auc_delta": {},
        }
    else:
        rec |= deviation(bundle, held_out, ref, got)
    rec |= {"within_limits": within_limits(rec), "fp32_sha256": _digest(bundle.onnx_path)}
    update_card(bundle.path, {"precision": {**(bundle.card.get("precision") or {}), precision: rec}})
    return rec
