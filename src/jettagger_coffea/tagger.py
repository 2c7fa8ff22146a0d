"""``JetTagger`` = bundle + backend + features, callable on coffea FatJets (awkward or dask-awkward)
and on JetClass records. Returns [events][jets][classes] scores (NaN for jets without constituents)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np

from ._errors import JetTaggerError
from .backends import MAX_PAIRS, MAX_SLOTS, OnnxBackend, TorchBackend, run_batched
from .bundle import Bundle
from .features import configure_dask, jagged_features, make_table, standardise
from .sources import is_pfnano


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

    >>> tagger = JetTagger("models/particlenet-lite")          # doctest: +SKIP
    >>> scores = tagger(events.FatJet)                         # [events][jets][classes]
    >>> fatjets = tagger.attach(events.FatJet)                 # FatJet.score_<class> fields
    """

    def __init__(self, bundle: str | Path | Bundle, backend: str = "onnx", padding: str | int = "dynamic",
                 max_slots: int = MAX_SLOTS, threads: int | None = None, device: str | None = None) -> None:
        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
        if backend == "onnx":
            self.backend: Any = OnnxBackend(self.bundle.onnx_path, threads=threads)
        elif backend == "torch":
            self.backend = TorchBackend(self.bundle, device=device)
        else:
            raise JetTaggerError(f"unknown backend {backend!r} (onnx or torch)")
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

    # -- flat jets ------------------------------------------------------------------------------------
    def score_jets(self, jets: Any, pf: Any = None, where: str = "input", table: Any = None) -> TagResult:
        """Scores of a flat collection (one entry per jet): PFNano FatJets, JetClass records or a TTree.
        Pass ``table`` (from :func:`make_table`) to share already-read columns with other uses."""
        k = len(self.classes)
        if len(jets) == 0:  # empty chunk: nothing to read, nothing to run
            return TagResult(np.zeros((0, k), dtype=np.float32), 0, 0, 0)
        table = table if table is not None else make_table(jets, self.config, where, pf)
        std = standardise(table, self.config)
        return TagResult(self.run_model(std), len(std), int((std.counts == 0).sum()), std.n_nonfinite)

    def run_model(self, std: Any) -> np.ndarray:
        """Scores of standardised jets, in batches bounded in particle slots (and pairs, for ParT)."""
        return run_batched(self.backend, std, len(self.classes), self.padding, self.bundle.min_length,
                           self.max_slots, MAX_PAIRS if self.bundle.pairwise else None)

    def discriminant(self, scores: Any, name: str) -> Any:
        """signal / (signal + background) from the class scores (sums over the listed classes)."""
        d = self.bundle.discriminants[name]
        idx = {c: i for i, c in enumerate(self.classes)}
        sig = sum(scores[..., idx[c]] for c in d["signal"])
        bkg = sum(scores[..., idx[c]] for c in d["background"]) if d.get("background") else 0
        return sig / (sig + bkg) if d.get("background") else sig

    # -- coffea collections -----------------------------------------------------------------------------
    def __call__(self, fatjets: Any) -> Any:
        """[events][jets][classes] scores for a jagged FatJet collection (or [jets][classes] for flat)."""
        if _is_dask(fatjets):
            import dask_awkward as dak

            configure_dask()
            pf = fatjets.constituents.pf if is_pfnano(fatjets) else None
            return dak.map_partitions(_score_partition, fatjets, pf, self, label="jettagger-scores")
        return _score_partition(fatjets, None, self)

    def attach(self, fatjets: Any, prefix: str = "score_") -> Any:
        """``fatjets`` with one ``<prefix><class>`` field per class (and per discriminant)."""
        scores = self(fatjets)
        out = fatjets
        for i, c in enumerate(self.classes):
            out = ak.with_field(out, scores[..., i], f"{prefix}{c}")
        for name in self.bundle.discriminants:
            out = ak.with_field(out, self.discriminant(scores, name), f"{prefix}{name}")
        return out


def _score_partition(fatjets: ak.Array, pf: ak.Array | None, tagger: JetTagger) -> ak.Array:
    """One chunk: flatten jets, featurize, run, unflatten. Typetracer-safe (touches only needed columns)."""
    k = len(tagger.classes)
    jagged = fatjets.ndim > 1
    flat = ak.flatten(fatjets, axis=1) if jagged else fatjets
    flat_pf = None if pf is None else (ak.flatten(pf, axis=1) if jagged else pf)
    if ak.backend(fatjets) == "typetracer":
        ak.typetracer.touch_data(jagged_features(flat, tagger.config, pf=flat_pf))
        empty = ak.Array(np.zeros((0, k), dtype=np.float32))
        if jagged:
            empty = ak.unflatten(empty, np.zeros(0, dtype=np.int64))
        return ak.Array(empty.layout.to_typetracer(forget_length=True))
    result = tagger.score_jets(flat, pf=flat_pf)
    scores = ak.from_numpy(result.scores, regulararray=True)
    return ak.unflatten(scores, ak.num(fatjets, axis=1)) if jagged else scores
