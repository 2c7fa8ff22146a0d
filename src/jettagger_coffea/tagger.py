"""``JetTagger`` = bundle + backend + features, callable on NanoAOD events (coffea NanoEvents, eager,
virtual or dask-awkward) and on JetClass records. Returns [events][jets][classes] scores of the FatJets
(NaN for jets without constituents)."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, Literal

import awkward as ak
import numpy as np

from ._errors import JetTaggerError
from .backends import MAX_PAIRS, MAX_SLOTS, BackendSpec, make_backend, run_batched, tuned_budget
from .batching import Padding, check_padding
from .bundle import Bundle
from .columnar import empty_jagged, map_chunks
from .features import make_table, standardise
from .metrics import discriminant
from .sources import needed_branches, preset_for


@dataclasses.dataclass
class TagResult:
    """Scores of a flat list of jets and the counters a physicist wants to see."""

    scores: np.ndarray  # (N, K), NaN rows for jets without constituents
    n_jets: int
    n_empty: int
    n_nonfinite: int


class JetTagger:
    """A tagger bundle ready to run.

    >>> tagger = JetTagger("pfn")                              # doctest: +SKIP
    >>> scores = tagger(events)                                # [events][FatJet][classes]
    >>> fatjets = tagger.attach(events, jets=events.FatJet.pt > 300)  # FatJet.score_<class> fields

    ``backend``: a name (onnx, torch, triton) or a :class:`~.backends.BackendSpec` (default: onnx, or triton
    for a client-only bundle); ``backend_options``
    (``threads``, ``device``, ``dtype``, ``server``, ``served_model``) go to that backend. ``jets``: the
    jet collection to tag (default: the bundle's source preset's, e.g. ``FatJet``; ``Jet`` for AK4), read
    through the member of the preset's family that reads it.
    """

    def __init__(
        self,
        bundle: str | Path | Bundle,
        *,
        backend: str | BackendSpec | None = None,
        padding: Padding = "dynamic",
        max_slots: int | Literal["auto"] = "auto",
        jets: str | None = None,
        **backend_options: Any,
    ) -> None:
        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
        self.preset = preset_for(self.bundle.preset, lambda _: True, jets) if jets else self.bundle.preset
        self.padding = check_padding(padding)
        self.spec = BackendSpec.of(backend or self.bundle.default_backend, **backend_options)
        self.backend = make_backend(self.spec, self.bundle)
        self.max_slots = max_slots

    @property
    def config(self):
        return self.bundle.config

    @property
    def jets(self) -> str:
        """The jet collection tagged (``FatJet``, ``Jet``)."""
        return self.preset.jets

    @property
    def classes(self) -> list[str]:
        return self.bundle.classes

    # -- jets ------------------------------------------------------------------------------------------
    def score_jets(self, data: Any, where: str = "input", table: Any = None, jets: Any = None) -> TagResult:
        """Scores of the FatJets of NanoAOD events (all, or where the [event][jet] mask ``jets`` is true), in
        file order, or of JetClass records / a TTree. Pass ``table`` (from :func:`make_table`) to share
        already-read columns with other uses."""
        table = table if table is not None else make_table(data, self.config, self.preset, where, jets)
        std = standardise(table, self.config, self.bundle.primary)
        return TagResult(self.run_model(std), len(std), int((std.counts == 0).sum()), std.n_nonfinite)

    def run_model(self, std: Any) -> np.ndarray:
        """Scores of standardised jets, in batches bounded in particle slots (and pairs, for ParT). With
        ``max_slots="auto"`` the budget is measured for this model once per process (:func:`tuned_budget`)."""
        max_pairs = MAX_PAIRS if self.bundle.pairwise else None
        budget = self.max_slots
        if budget == "auto":
            key = (str(self.bundle.path), self.spec)
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
        if self.jets not in ak.fields(events):
            if hasattr(events, "_events") or (events.ndim > 1):
                raise JetTaggerError(
                    f"JetTagger takes NanoAOD events (tagger(events), or tagger(events, jets=mask) "
                    f"for a selection of events.{self.jets}), not a jet collection"
                )
            return ak.Array(self.score_jets(events).scores)
        args = (events,) if jets is None else (events, jets)
        return map_chunks(
            _score_chunk,
            *args,
            tagger=self,
            touches=_score_columns,
            empty=functools.partial(empty_jagged, len(self.classes)),
            label="jettagger-scores",
        )

    def attach(self, events: Any, jets: Any = None, prefix: str = "score_") -> Any:
        """``events.FatJet`` (``[jets]`` if given) with one ``<prefix><class>`` field per class and one
        ``<prefix><discriminant>`` per discriminant."""
        scores = self(events, jets)
        out = events[self.jets] if jets is None else events[self.jets][jets]
        for i, c in enumerate(self.classes):
            out = ak.with_field(out, scores[..., i], f"{prefix}{c}")
        for name in self.bundle.discriminants:
            out = ak.with_field(out, self.discriminant(scores, name), f"{prefix}{name}")
        return out


def _score_chunk(events: ak.Array, jets: ak.Array | None = None, *, tagger: JetTagger) -> ak.Array:
    """One chunk: the (selected) FatJets' scores in [events][jets][classes]."""
    counts = ak.num(events[tagger.jets] if jets is None else events[tagger.jets][jets], axis=1)
    result = tagger.score_jets(events, jets=jets)
    return ak.unflatten(ak.from_numpy(result.scores, regulararray=True), ak.to_numpy(counts))


def _score_columns(events: ak.Array, jets: ak.Array | None = None, *, tagger: JetTagger) -> list[Any]:
    """What a chunk reads: exactly the branches the preset (the member of its family the file's layout
    takes) and config name, and the jet counts."""
    preset = preset_for(tagger.preset, lambda coll: coll in ak.fields(events))
    cols = [
        events[coll][field]
        for coll, field in needed_branches(tagger.config, preset)
        if coll in ak.fields(events) and field in ak.fields(events[coll])
    ]
    return [*cols, ak.num(events[tagger.jets] if jets is None else events[tagger.jets][jets], axis=1)]
