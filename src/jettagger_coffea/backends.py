"""Model runners behind one factory: onnxruntime (default, no torch needed), torch, and a Triton server
(:mod:`.triton`). A :class:`BackendSpec` (a name and its options) travels unchanged from the CLI or the
Python API to :func:`make_backend`, the only place that turns it into a runner. One session per worker
process, reused across chunks; batches of similar multiplicity, padded dynamically and bounded in size."""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import io
import logging
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from . import cache
from ._errors import JetTaggerError
from ._names import BACKENDS  # name -> "module:Class"; adding a backend: its file and a line there
from ._state import ProcessLocal
from .batching import Padding, batch_length, sorted_batches
from .inputs import CLASS_ROLES, OutputColumn, Outputs, OutputTensor
from .shipping import ModelBytes

if TYPE_CHECKING:
    from .features import Standardised

#: at most this many particle slots (jets x padded length) in one dense batch: bounds memory
MAX_SLOTS = 256 * 128
#: and, for networks with pairwise features (ParT), at most this many particle pairs (jets x length^2):
#: their (N, channels, P, P) intermediates, not the particle tensors, set the memory of a batch
MAX_PAIRS = 64 * 128 * 128

#: slot budgets tried by :func:`tuned_budget`: for ParticleNet on CPU small batches are faster (its k-NN
#: distance and edge tensors fall out of cache), for ParT and PFN large ones
BUDGETS = (1024, 4096, 16384, MAX_SLOTS)
#: jets (at least) a budget is measured on
TUNE_JETS = 512
#: sub-folder of the user cache (:mod:`.cache`) that keeps tuned budgets across processes
BUDGET_CACHE = "budgets"

_SESSIONS: dict[tuple, Any] = {}
_BUDGETS: dict[tuple, int] = {}
_LOCK = threading.Lock()
log = logging.getLogger(__name__)
#: this process: jets each model (by sha256) has scored, for where-did-it-run checks (:func:`jets_run`)
_JETS_RUN: dict[str, int] = {}


def jets_run() -> dict[str, int]:
    """This process: jets scored per model (sha256 of its file) — on a dask worker, what ran there."""
    with _LOCK:
        return dict(_JETS_RUN)


def count_jets(backend: Any, n: int) -> None:
    with _LOCK:
        for m in getattr(backend, "payloads", ()):
            _JETS_RUN[m.digest] = _JETS_RUN.get(m.digest, 0) + n


def default_threads() -> int:
    """Threads per inference session: JETTAGGER_THREADS, else the dask worker's thread count, else all
    cores."""
    env = os.environ.get("JETTAGGER_THREADS")
    if env:
        return max(1, int(env))
    if "distributed" not in sys.modules:  # not a dask worker, and importing distributed costs 0.5 s
        return os.cpu_count() or 1
    try:
        from distributed import get_worker

        return max(1, int(get_worker().state.nthreads))
    except (ImportError, ValueError, AttributeError):
        return os.cpu_count() or 1


#: what a runner returns for one batch: the model's outputs in order (one array: its first output)
RunOutput = np.ndarray | Sequence[np.ndarray]


class Backend(Protocol):
    input_names: list[str]

    def run(self, inputs: dict[str, np.ndarray]) -> RunOutput: ...


def backend_class(name: str) -> Any:
    if name not in BACKENDS:
        raise JetTaggerError(f"unknown backend {name!r} ({', '.join(BACKENDS)})")
    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def backend_options(name: str) -> list[str]:
    """The options a backend takes: the keyword parameters of its ``from_bundle``."""
    params = inspect.signature(backend_class(name).from_bundle).parameters
    return [p for p in params if p != "bundle"]


@dataclasses.dataclass(frozen=True)
class BackendSpec:
    """Which backend runs the network and with which options; checked when made, so a wrong combination
    (``--server`` without ``--backend triton``) fails before any work."""

    name: str = "onnx"
    options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        allowed = backend_options(self.name)
        for key, _ in self.options:
            if key not in allowed:
                owners = [b for b in BACKENDS if key in backend_options(b)]
                where = f"goes with --backend {' or '.join(owners)}" if owners else "is not a backend option"
                raise JetTaggerError(f"--{key.replace('_', '-')} {where} (backend {self.name!r})")

    @classmethod
    def of(cls, backend: str | BackendSpec | None = "onnx", **options: Any) -> BackendSpec:
        """A spec from a name (or a spec) and options; options that are None are left to the backend."""
        if isinstance(backend, BackendSpec):
            options = {**dict(backend.options), **options}
            backend = backend.name
        return cls(backend or "onnx", tuple(sorted((k, v) for k, v in options.items() if v is not None)))


def make_backend(spec: BackendSpec, bundle: Any) -> Any:
    """The one backend factory: the runner ``spec`` names, for ``bundle``."""
    return backend_class(spec.name).from_bundle(bundle, **dict(spec.options))


class OnnxBackend(ProcessLocal):
    """onnxruntime session on the model's bytes (:class:`~.shipping.ModelBytes`, which travel with a pickled
    tagger), created once per process and cached by the bytes' sha256."""

    _process_local = ("_sess",)

    def __init__(
        self, path: str | Path, threads: int | None = None, providers: list[str] | None = None
    ) -> None:
        self.model = ModelBytes.read(path)
        self.path = str(path)  # names the model in errors; never read on a worker
        self.threads = threads
        self.providers = providers or ["CPUExecutionProvider"]
        self._sess: Any = None
        #: the outputs to run, in the card's order (None: all, in the model's)
        self.output_names: list[str] | None = None
        #: inputs whose particle axis the model fixes (see :func:`fixed_lengths`): batches pad to it
        self.fixed_lengths: dict[str, int] = {}

    @property
    def payloads(self) -> tuple[ModelBytes, ...]:
        """The files a worker needs (see :func:`.shipping.shipped`)."""
        return (self.model,)

    @classmethod
    def from_bundle(
        cls, bundle: Any, threads: int | None = None, precision: str | None = None
    ) -> OnnxBackend:
        """``precision`` int8: the bundle's int8 model, where its card records it within the limits
        (:func:`.precision.check`, else refused before any work)."""
        if not Path(bundle.onnx_path).is_file():
            raise JetTaggerError(
                f"tagger bundle {bundle.path} has no model.onnx: a client-only bundle for Triton model "
                f"{bundle.served_model!r}; run it with --backend triton --server URL"
            )
        from .precision import check

        rec = check(bundle, precision, "onnx")
        backend = cls(bundle.path / rec["model"] if rec else bundle.onnx_path, threads=threads)
        backend.output_names = bundle.outputs.names
        backend.fixed_lengths = fixed_lengths(backend.session.get_inputs(), bundle)
        probe(backend, bundle)
        return backend

    @property
    def session(self):
        if self._sess is None:
            import onnxruntime as ort

            threads = self.threads or default_threads()
            key = (self.model.digest, threads, tuple(self.providers))
            with _LOCK:
                if key not in _SESSIONS:
                    opts = ort.SessionOptions()
                    opts.intra_op_num_threads = threads
                    opts.inter_op_num_threads = 1
                    _SESSIONS[key] = ort.InferenceSession(self.model.data, opts, providers=self.providers)
                self._sess = _SESSIONS[key]
        return self._sess

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.session.get_inputs()]

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The outputs the card names (all where it names none), in its order. The arena is shrunk after
        each call: a long-lived process (a dask worker) does not keep the largest batch's buffers (the
        slot-budget measurement's 32768 slots: +150 MB for ParticleNet-Lite, +80 MB shrunk; same scores,
        no measurable time)."""
        return self.session.run(self.output_names, {k: inputs[k] for k in self.input_names}, _run_options())


@functools.cache
def _run_options() -> Any:
    import onnxruntime as ort

    opts = ort.RunOptions()
    opts.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return opts


def fixed_lengths(inputs: list[Any], bundle: Any) -> dict[str, int]:
    """The model inputs (onnxruntime ``NodeArg``) whose particle axis has a fixed length, checked when the
    model is loaded. weaver exports both the batch axis N and the particle axis P dynamic; a model exported
    without dynamic axes is refused or padded here, before any work, rather than failing in onnxruntime:

    * a fixed **P equal to the data config's length** is what such a model was exported at (the length
      weaver pads to in training): every batch is padded to it (``padding: fixed``), and the scores are
      those of weaver's fixed padding;
    * a fixed P of another length, or a fixed **N** (batches here hold as many jets of one multiplicity as
      the slot budget allows), cannot be fed: refused with one line naming the input and its shape."""
    fixed: dict[str, int] = {}
    for inp in inputs:
        group = bundle.config.inputs.get(inp.name)
        if group is None or len(inp.shape) != 3:
            continue  # not an input group: Bundle.check_model names it
        n, _, p = inp.shape
        where = f"model {bundle.onnx_path}: input {inp.name!r} has the fixed shape {list(inp.shape)}"
        if isinstance(n, int):
            raise JetTaggerError(
                f"{where}: its batch axis N must be dynamic (export it with a dynamic N axis, as weaver does)"
            )
        if isinstance(p, int) and group.length is not None:
            if p != group.length:
                raise JetTaggerError(
                    f"{where} but the data config pads {inp.name!r} to {group.length} particles"
                )
            fixed[inp.name] = p
    return fixed


#: jets in the batch :func:`probe` runs
PROBE_JETS = 2


def probe(backend: Any, bundle: Any) -> None:
    """Run the model once on :data:`PROBE_JETS` full jets of zeros (masks 1) at the data config's lengths
    and refuse it, before any work, where an output is not one row of its columns per jet (a model that
    returns one row per call would otherwise fail only in the first chunk, or be broadcast)."""
    inputs = {}
    for name, group in bundle.config.inputs.items():
        fill = 1.0 if getattr(bundle.inputs.get(name), "role", None) == "mask" else 0.0
        shape = (PROBE_JETS, len(group.vars), group.length or 1)
        inputs[name] = np.full(shape, fill, dtype=np.float32)
    model = f"{bundle.name} ({bundle.path})"
    try:
        got = backend.run(inputs)
    except Exception as err:  # noqa: BLE001 - whatever the runtime says, the model is at fault
        raise JetTaggerError(
            f"model {model} fails on a batch of {PROBE_JETS} jets: {type(err).__name__}: {err}"
        ) from None
    columns(got, bundle.outputs, PROBE_JETS, model)


def as_outputs(outputs: int | Outputs) -> Outputs:
    """An output spec; an int ``n``: one output of ``n`` class scores (a model that returns classes)."""
    if isinstance(outputs, Outputs):
        return outputs
    cols = tuple(OutputColumn(str(i), "class") for i in range(outputs))
    return Outputs((OutputTensor(None, cols),))


def columns(got: RunOutput, outputs: Outputs, n_jets: int, model: str) -> np.ndarray:
    """One batch's outputs as (jets, every column of the card): each output checked to be one row of its
    columns per jet, else refused naming ``model`` and the output (never broadcast)."""
    arrays = [got] if isinstance(got, np.ndarray) else list(got)
    if len(arrays) < len(outputs.tensors):
        raise JetTaggerError(
            f"model {model} returned {len(arrays)} output{'s' * (len(arrays) != 1)} but its card names "
            f"{len(outputs.tensors)} ({', '.join(str(t.name) for t in outputs.tensors)})"
        )
    parts = []
    for t, a in zip(outputs.tensors, arrays):
        a = np.asarray(a)
        if a.shape != (n_jets, len(t.columns)):
            what = "scores" if all(c.role in CLASS_ROLES for c in t.columns) else "values"
            named = f"{model} output {t.name!r}" if len(outputs.tensors) > 1 else model
            raise JetTaggerError(_bad_output(named, a.shape, n_jets, len(t.columns), what))
        parts.append(a.astype(np.float32, copy=False))
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)


class TorchBackend(ProcessLocal):
    """The bundle's ``model.pt`` in torch (CPU or GPU); needs the ``train`` extra."""

    _process_local = ("_model",)

    def __init__(
        self, bundle: Any, device: str | None = None, dtype: str = "float32", precision: str | None = None
    ) -> None:
        if dtype not in ("float32", "float64"):
            raise JetTaggerError(f"torch backend: dtype must be float32 or float64, not {dtype!r}")
        path = bundle.path / "model.pt"
        if not path.is_file():
            raise JetTaggerError(f"tagger bundle {bundle.path}: no model.pt for the torch backend")
        self.bundle = bundle
        self.state = ModelBytes.read(path)  # travels with the tagger, like OnnxBackend's model
        self.device = device
        self.dtype = dtype
        #: bf16: autocast (oneDNN's bf16 kernels on CPU), the outputs returned in float32
        self.bf16 = precision == "bf16"
        self._model: Any = None

    @classmethod
    def from_bundle(
        cls,
        bundle: Any,
        device: str | None = None,
        dtype: str = "float32",
        precision: str | None = None,
    ) -> TorchBackend:
        """``precision`` bf16: where the card records it within the limits (:func:`.precision.check`)."""
        from .precision import check

        check(bundle, precision, "torch")
        return cls(bundle, device=device, dtype=dtype, precision=precision)

    @property
    def payloads(self) -> tuple[ModelBytes, ...]:
        return (self.state,)

    @property
    def model(self):
        if self._model is None:
            try:
                import torch
            except ImportError as err:
                raise JetTaggerError(
                    "the torch backend needs the `train` extra (pip install jettagger-coffea[train])"
                ) from err
            from .nn import build_for, load_state

            card = self.bundle.card
            options = card.get("network_options") or {}
            m = build_for(card["network"], self.bundle.config, self.bundle.inputs, **options)
            load_state(m, io.BytesIO(self.state.data), name=self.state.name)
            self.device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
            self._model = m.eval().to(self.device, dtype=getattr(torch, self.dtype))
        return self._model

    @property
    def input_names(self) -> list[str]:
        return list(self.model.input_names)

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray | list[np.ndarray]:
        import torch

        model = self.model  # resolves the device
        cast = torch.autocast(
            torch.device(self.device or "cpu").type, dtype=torch.bfloat16, enabled=self.bf16
        )
        with torch.no_grad(), cast:
            dt = getattr(torch, self.dtype)
            xs = [torch.from_numpy(inputs[k]).to(self.device, dtype=dt) for k in model.input_names]
            out = model(*xs)
            if isinstance(out, tuple):  # a joint model: class probabilities, then each target
                return [o.float().cpu().numpy() for o in out]
            return out.float().cpu().numpy()


def run_batched(
    backend: Backend,
    std: Standardised,
    outputs: int | Outputs,
    padding: Padding = "dynamic",
    min_length: int = 1,
    max_slots: int = MAX_SLOTS,
    max_pairs: int | None = None,
    *,
    model: str | None = None,
) -> np.ndarray:
    """Every column of the model's ``outputs`` (a bundle's :class:`~.inputs.Outputs`, or the number of
    class scores of a one-output model) for every jet of ``std``, in input order; jets without particles
    get NaN and never reach the model. Batches: :func:`batching.sorted_batches` (similar multiplicities,
    bounded in slots and pairs).

    Every batch's outputs must be one row of their columns per jet, else the run is refused naming
    ``model`` (never broadcast, see :func:`columns`); a row with a non-finite value is made NaN as a whole
    (the caller tells it from a jet without particles by its particle count: an invalid score)."""
    spec = as_outputs(outputs)
    out = np.full((len(std), len(spec.columns)), np.nan, dtype=np.float32)
    length_of = batch_length(list(std.config.inputs.values()), padding, min_length)
    order, ranges = sorted_batches(std.counts, length_of, max_slots, max_pairs)
    if not ranges:
        return out
    ordered = std.take(order)
    for start, stop in ranges:
        got = backend.run(ordered.dense(start, stop, length=padding, min_length=min_length))
        out[order[start:stop]] = columns(got, spec, stop - start, model or _name_of(backend))
    out[~np.isfinite(out).all(axis=1)] = np.nan
    return out


def _name_of(backend: Any) -> str:
    """What names a model in an error: its file or bundle, else its backend's class."""
    where = getattr(backend, "path", None) or getattr(getattr(backend, "bundle", None), "path", None)
    return str(where) if where is not None else type(backend).__name__


def _bad_output(model: str, shape: tuple[int, ...], n_jets: int, n_cols: int, what: str = "scores") -> str:
    """``model X returned 1 row for 256 jets ...``: the one line of an output that is not a row per jet."""
    if len(shape) == 2 and shape[1] == n_cols:
        got = f"{shape[0]} row{'s' * (shape[0] != 1)}"
    else:
        got = f"an output of shape {tuple(shape)}"
    return (
        f"model {model} returned {got} for {n_jets} jets "
        f"(expected ({n_jets}, {n_cols}): one row of {n_cols} {what} per jet)"
    )


def tuned_budget(
    key: tuple,
    backend: Backend,
    std: Standardised,
    outputs: int | Outputs,
    min_length: int,
    max_pairs: int | None,
    *,
    padding: Padding = "dynamic",
    model: str | None = None,
) -> int | None:
    """The fastest of :data:`BUDGETS` for this model (``key``: model and backend spec), measured once on
    up to :data:`TUNE_JETS` jets of ``std`` spread over its multiplicities and kept for the process and in
    the user cache (:func:`budget_cache_key`: the next process on this machine, a dask worker included,
    reads it instead of measuring); ``None`` while no chunk has had enough jets to measure on (the caller
    then uses the default)."""
    full = (key, padding, min_length, max_pairs)
    if full in _BUDGETS:
        return _BUDGETS[full]
    disk = budget_cache_key(backend, padding, min_length, max_pairs)
    cached = cache.read_entry(BUDGET_CACHE, disk) if disk else None
    if isinstance(cached, dict) and cached.get("budget") in BUDGETS:
        log.debug("slot budget %s for %s read from the cache", cached["budget"], model or key)
        _BUDGETS[full] = int(cached["budget"])
        return _BUDGETS[full]
    seconds = _measure_budgets(backend, std, outputs, min_length, max_pairs, padding, model)
    if seconds is None:
        return None
    _BUDGETS[full] = min(seconds, key=seconds.__getitem__)
    where = (
        cache.write_entry(BUDGET_CACHE, disk, {"budget": _BUDGETS[full], "seconds": seconds})
        if disk
        else None
    )
    log.debug("slot budget %s for %s measured (%s)", _BUDGETS[full], model or key, where or "not cached")
    return _BUDGETS[full]


def _measure_budgets(
    backend: Backend,
    std: Standardised,
    outputs: int | Outputs,
    min_length: int,
    max_pairs: int | None,
    padding: Padding,
    model: str | None,
) -> dict[int, float] | None:
    """Seconds of each of :data:`BUDGETS` on :data:`TUNE_JETS` jets of ``std``, or None if it has fewer."""
    import time

    with_particles = np.flatnonzero(std.counts > 0)
    if len(with_particles) < TUNE_JETS:
        return None
    sample = std.take(np.sort(with_particles[:: len(with_particles) // TUNE_JETS][:TUNE_JETS]))
    seconds = {}
    run = functools.partial(run_batched, backend, sample, outputs, padding, min_length, model=model)
    run(MAX_SLOTS, max_pairs)  # warm up
    for budget in BUDGETS:
        t = time.perf_counter()
        run(budget, max_pairs)
        seconds[budget] = time.perf_counter() - t
    return seconds


def budget_cache_key(
    backend: Any, padding: Padding, min_length: int, max_pairs: int | None
) -> dict[str, Any] | None:
    """What a tuned budget depends on: the model files (sha256), how the batches are made, the runtime,
    its threads and device, and this machine's CPU; None for a backend whose speed this machine does not
    set (a Triton server's), whose budget is measured once per process only."""
    if isinstance(backend, OnnxBackend):
        runtime: dict[str, Any] = {
            "onnxruntime": _version("onnxruntime"),
            "providers": list(backend.providers),
            "threads": backend.threads or default_threads(),
        }
    elif isinstance(backend, TorchBackend):
        import torch

        backend.model  # noqa: B018 - building it resolves the device (cuda where torch sees one)
        device = torch.device(backend.device or "cpu")
        runtime = {"torch": torch.__version__, "dtype": backend.dtype, "device": str(device)}
        runtime["bf16"] = backend.bf16
        if device.type == "cuda":
            runtime["gpu"] = torch.cuda.get_device_name(device)
        else:
            runtime["threads"] = torch.get_num_threads()
    else:
        return None
    return {
        "models": [m.digest for m in backend.payloads],
        "backend": type(backend).__name__,
        "padding": padding,
        "min_length": min_length,
        "max_pairs": max_pairs,
        "budgets": list(BUDGETS),
        "tune_jets": TUNE_JETS,
        "runtime": runtime,
        "machine": machine_fingerprint(),
    }


#: CPU flags that change which batch size is fastest (vector width, fused multiply-add, int8 / bf16 dots)
_SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "asimd", "sve")


@functools.cache
def machine_fingerprint() -> dict[str, Any]:
    """This machine as a tuned budget sees it: CPU model, cores and speed-relevant flags."""
    import platform

    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            field, _, value = line.partition(":")
            info.setdefault(field.strip(), value.strip())  # the first CPU's
    except OSError:
        pass  # not Linux: the platform's processor name
    flags = set((info.get("flags") or info.get("Features") or "").split())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": info.get("model name") or platform.processor() or platform.machine(),
        "cores": cores,
        "flags": sorted(flags & set(_SPEED_FLAGS)),
    }


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None
