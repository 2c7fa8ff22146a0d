"""Model runners: onnxruntime (default, no torch needed) and torch. One session per worker process, reused
across chunks; batches of similar multiplicity, padded dynamically and bounded in size."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ._errors import JetTaggerError
from .batching import Padding, batch_length, sorted_batches
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

_SESSIONS: dict[tuple, Any] = {}
_BUDGETS: dict[tuple, int] = {}
_LOCK = threading.Lock()


def default_threads() -> int:
    """Threads per inference session: JETTAGGER_THREADS, else the dask worker's thread count, else all
    cores."""
    env = os.environ.get("JETTAGGER_THREADS")
    if env:
        return max(1, int(env))
    try:
        from distributed import get_worker

        return max(1, int(get_worker().state.nthreads))
    except (ImportError, ValueError, AttributeError):
        return os.cpu_count() or 1


class Backend(Protocol):
    input_names: list[str]

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray: ...


class OnnxBackend:
    """onnxruntime session, created once per process (cached by file, size and mtime)."""

    def __init__(
        self, path: str | Path, threads: int | None = None, providers: list[str] | None = None
    ) -> None:
        self.path = Path(path)
        self.threads = threads
        self.providers = providers or ["CPUExecutionProvider"]
        self._sess: Any = None

    def __getstate__(self) -> dict[str, Any]:  # sessions never travel: each worker makes its own
        return {**self.__dict__, "_sess": None}

    @property
    def session(self):
        if self._sess is None:
            import onnxruntime as ort

            st = self.path.stat()
            threads = self.threads or default_threads()
            key = (str(self.path), st.st_size, st.st_mtime_ns, threads, tuple(self.providers))
            with _LOCK:
                if key not in _SESSIONS:
                    opts = ort.SessionOptions()
                    opts.intra_op_num_threads = threads
                    opts.inter_op_num_threads = 1
                    _SESSIONS[key] = ort.InferenceSession(str(self.path), opts, providers=self.providers)
                self._sess = _SESSIONS[key]
        return self._sess

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.session.get_inputs()]

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, {k: inputs[k] for k in self.input_names})[0]


class TorchBackend:
    """The bundle's ``model.pt`` in torch (CPU or GPU); needs the ``train`` extra."""

    def __init__(self, bundle: Any, device: str | None = None, dtype: str = "float32") -> None:
        if dtype not in ("float32", "float64"):
            raise JetTaggerError(f"torch backend: dtype must be float32 or float64, not {dtype!r}")
        self.bundle = bundle
        self.device = device
        self.dtype = dtype
        self._model: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_model": None}

    @property
    def model(self):
        if self._model is None:
            try:
                import torch
            except ImportError as err:
                raise JetTaggerError(
                    "the torch backend needs the `train` extra (pip install jettagger-coffea[train])"
                ) from err
            from .nn import build, load_state

            card = self.bundle.card
            path = self.bundle.path / "model.pt"
            if not path.is_file():
                raise JetTaggerError(f"tagger bundle {self.bundle.path}: no model.pt for the torch backend")
            dims = {k: v[1] for k, v in self.bundle.config.input_shapes.items()}
            roles = {g: s.role for g, s in self.bundle.inputs.items()}
            m = build(
                card["network"],
                list(self.bundle.config.input_names),
                dims,
                len(self.bundle.classes),
                roles=roles,
                **(card.get("network_options") or {}),
            )
            load_state(m, path)
            self.device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
            self._model = m.eval().to(self.device, dtype=getattr(torch, self.dtype))
        return self._model

    @property
    def input_names(self) -> list[str]:
        return list(self.model.input_names)

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        import torch

        with torch.no_grad():
            dt = getattr(torch, self.dtype)
            xs = [torch.from_numpy(inputs[k]).to(self.device, dtype=dt) for k in self.model.input_names]
            return self.model(*xs).float().cpu().numpy()


def run_batched(
    backend: Backend,
    std: Standardised,
    n_classes: int,
    padding: Padding = "dynamic",
    min_length: int = 1,
    max_slots: int = MAX_SLOTS,
    max_pairs: int | None = None,
) -> np.ndarray:
    """Scores of every jet of ``std`` in input order; jets without particles get NaN and never reach the
    model. Batches: :func:`batching.sorted_batches` (similar multiplicities, bounded in slots and pairs)."""
    out = np.full((len(std), n_classes), np.nan, dtype=np.float32)
    length_of = batch_length(list(std.config.inputs.values()), padding, min_length)
    order, ranges = sorted_batches(std.counts, length_of, max_slots, max_pairs)
    if not ranges:
        return out
    ordered = std.take(order)
    for start, stop in ranges:
        out[order[start:stop]] = backend.run(
            ordered.dense(start, stop, length=padding, min_length=min_length)
        )
    return out


def tuned_budget(
    key: tuple, backend: Backend, std: Standardised, n_classes: int, min_length: int, max_pairs: int | None
) -> int | None:
    """The fastest of :data:`BUDGETS` for this model, measured once per process (``key``: model and
    threads) on up to :data:`TUNE_JETS` jets of ``std`` spread over its multiplicities; ``None`` while no
    chunk has had enough jets to measure on (the caller then uses the default)."""
    if key in _BUDGETS:
        return _BUDGETS[key]
    import time

    with_particles = np.flatnonzero(std.counts > 0)
    if len(with_particles) < TUNE_JETS:
        return None
    sample = std.take(np.sort(with_particles[:: len(with_particles) // TUNE_JETS][:TUNE_JETS]))
    seconds = {}
    run_batched(backend, sample, n_classes, "dynamic", min_length, MAX_SLOTS, max_pairs)  # warm up
    for budget in BUDGETS:
        t = time.perf_counter()
        run_batched(backend, sample, n_classes, "dynamic", min_length, budget, max_pairs)
        seconds[budget] = time.perf_counter() - t
    _BUDGETS[key] = min(seconds, key=seconds.__getitem__)
    return _BUDGETS[key]
