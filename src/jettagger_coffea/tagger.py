"""``JetTagger`` = bundle + backend + features, callable on NanoAOD events (coffea NanoEvents, eager,
virtual or dask-awkward) and on JetClass records. Returns [events][jets][classes] scores of the FatJets
(NaN for jets without constituents)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

import awkward as ak
import numpy as np

from ._errors import JetTaggerError
from .backends import MAX_PAIRS, MAX_SLOTS, OnnxBackend, TorchBackend, run_batched, tuned_budget
from .batching import Padding
from .bundle import Bundle
from .features import make_table, standardise
from .metrics import discriminant
from .sources import JETS, needed_branches
from .triton import TritonBackend


@dataclasses.dataclass
class TagResult:
    """Scores of a flat list of jets and the counters a physicist wants to see."""

    scores: np.ndarray  # (N, K), NaN rows for jets without constituents
    n_jets: int
    n_empty: int
    n_nonfinite: int


def _is_dask(x: Any) -> bool:
    return type(x).__module__.startswith("dask_awkward")


class JetTagger:
    """A tagger bundle ready to run.

    >>> tagger = JetTagger("pfn")                              # doctest: +SKIP
    >>> scores = tagger(events)                                # [events][FatJet][classes]
    >>> fatjets = tagger.attach(events, jets=events.FatJet.pt > 300)  # FatJet.score_<class> fields
    """

    def __init__(
        self,
        bundle: str | Path | Bundle,
        backend: str = "onnx",
        padding: Padding = "dynamic",
        max_slots: int | Literal["auto"] = "auto",
        threads: int | None = None,
        device: str | None = None,
        dtype: str = "float32",
        server: str | None = None,
        served_model: str | None = None,
    ) -> None:
        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
        if backend == "onnx":
            self.backend: Any = OnnxBackend(self.bundle.onnx_path, threads=threads)
        elif backend == "torch":
            self.backend = TorchBackend(self.bundle, device=device, dtype=dtype)
        elif backend == "triton":
            if not server:
                raise JetTaggerError("the triton backend needs a server URL (--server grpc://host:8001)")
            self.backend = TritonBackend(server, served_model or self.bundle.name, self.bundle)
            self.backend.metadata()  # an unreachable server or a different model fails here, before any work
        else:
            raise JetTaggerError(f"unknown backend {backend!r} (onnx, torch or triton)")
        if padding not in ("dynamic", "fixed") and not isinstance(padding, int):
            raise JetTaggerError(f"padding must be 'dynamic', 'fixed' or an int, got {padding!r}")
        self.padding = padding
        self.max_slots = max_slots

    @property
    def config(self):
        return self.bundle.config

    @property
    def classes(self) -> list[str]:
        return self.bundle.classes

    # -- jets ------------------------------------------------------------------------------------------
    def score_jets(self, data: Any, where: str = "input", table: Any = None, jets: Any = None) -> TagResult:
        """Scores of the FatJets of NanoAOD events (all, or where the [event][jet] mask ``jets`` is true), in
        file order, or of JetClass records / a TTree. Pass ``table`` (from :func:`make_table`) to share
        already-read columns with other uses."""
        table = table if table is not None else make_table(data, self.config, self.bundle.preset, where, jets)
        std = standardise(table, self.config, self.bundle.primary)
        return TagResult(self.run_model(std), len(std), int((std.counts == 0).sum()), std.n_nonfinite)

    def run_model(self, std: Any) -> np.ndarray:
        """Scores of standardised jets, in batches bounded in particle slots (and pairs, for ParT). With
        ``max_slots="auto"`` the budget is measured for this model once per process (:func:`tuned_budget`)."""
        max_pairs = MAX_PAIRS if self.bundle.pairwise else None
        budget = self.max_slots
        if budget == "auto":
            key = (str(self.bundle.path), type(self.backend).__name__, getattr(self.backend, "threads", None))
            budget = (
                tuned_budget(key, self.backend, std, len(self.classes), self.bundle.min_length, max_pairs)
                or MAX_SLOTS
            )
        return run_batched(
            self.backend, std, len(self.classes), self.padding, self.bundle.min_length, budget, max_pairs
        )

    def discriminant(self, scores: Any, name: str) -> Any:
        """The bundle's discriminant ``name`` from class scores (see :func:`metrics.discriminant`)."""
        return discriminant(scores, self.classes, self.bundle.discriminants[name])

    # -- coffea events ----------------------------------------------------------------------------------
    def __call__(self, events: Any, jets: Any = None) -> Any:
        """[events][jets][classes] scores of ``events.FatJet`` (or of ``events.FatJet[jets]`` for an
        [event][jet] boolean mask), on eager, virtual or dask-awkward NanoEvents; for flat JetClass records,
        [jets][classes]."""
        if JETS not in ak.fields(events):
            if hasattr(events, "_events") or (events.ndim > 1):
                raise JetTaggerError(
                    "JetTagger takes NanoAOD events (tagger(events), or tagger(events, jets=mask) "
                    "for a selection of events.FatJet), not a jet collection"
                )
            return ak.Array(self.score_jets(events).scores)
        if _is_dask(events):
            import dask_awkward as dak

            configure_dask()
            args = (events,) if jets is None else (events, jets)
            return dak.map_partitions(_score_partition, *args, tagger=self, label="jettagger-scores")
        return _score_partition(events, jets, tagger=self)

    def attach(self, events: Any, jets: Any = None, prefix: str = "score_") -> Any:
        """``events.FatJet`` (``[jets]`` if given) with one ``<prefix><class>`` field per class and one
        ``<prefix><discriminant>`` per discriminant."""
        scores = self(events, jets)
        out = events[JETS] if jets is None else events[JETS][jets]
        for i, c in enumerate(self.classes):
            out = ak.with_field(out, scores[..., i], f"{prefix}{c}")
        for name in self.bundle.discriminants:
            out = ak.with_field(out, self.discriminant(scores, name), f"{prefix}{name}")
        return out


def configure_dask() -> None:
    """Keep dask-awkward's column projection but skip its layer-chain rewrite, which fails on coffea's
    cross-referenced collections with dask >= 2025.4 ("Cannot fuse tasks with multiple outputs"). Set
    globally: it must hold when the graph is computed."""
    import dask

    dask.config.set({"awkward.optimization.which": ["columns"]})


def _score_partition(events: ak.Array, jets: ak.Array | None = None, *, tagger: JetTagger) -> ak.Array:
    """One chunk: tag the (selected) FatJets, in [events][jets][classes]. On a typetracer it touches exactly
    the branches the preset and config read, and returns the result's form."""
    k = len(tagger.classes)
    fatjets = events[JETS] if jets is None else events[JETS][jets]
    counts = ak.num(fatjets, axis=1)
    if ak.backend(events) == "typetracer":
        for coll, field in needed_branches(tagger.config, tagger.bundle.preset):
            if coll in ak.fields(events) and field in ak.fields(events[coll]):
                ak.typetracer.touch_data(events[coll][field])
        ak.typetracer.touch_data(counts)
        empty = ak.unflatten(ak.Array(np.zeros((0, k), dtype=np.float32)), np.zeros(0, dtype=np.int64))
        return ak.Array(empty.layout.to_typetracer(forget_length=True))
    result = tagger.score_jets(events, jets=jets)
    return ak.unflatten(ak.from_numpy(result.scores, regulararray=True), ak.to_numpy(counts))
