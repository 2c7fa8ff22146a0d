"""``JetTagger`` = bundle + backend + features, callable on NanoAOD events (coffea NanoEvents, eager,
virtual or dask-awkward) and on JetClass records. Returns [events][jets][classes] scores of the FatJets
(NaN for jets without constituents, and for jets whose model output is not finite: invalid scores); the
outputs that are not classes (regressions, model discriminants, embeddings) come by name beside them."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, Literal

import awkward as ak
import numpy as np

from ._errors import JetTaggerError
from .backends import (
    MAX_PAIRS,
    MAX_SLOTS,
    BackendSpec,
    count_jets,
    make_backend,
    run_batched,
    tuned_budget,
)
from .batching import Padding, check_padding
from .bundle import Bundle
from .columnar import empty_jagged, map_chunks
from .features import make_table, standardise
from .metrics import discriminant
from .shipping import models_of
from .sources import needed_branches, preset_for

#: what became of a jet (:attr:`TagResult.status`): scored; no constituents (never reaches the model); or
#: constituents but a non-finite model output (an invalid score, kept out of every score histogram)
TAGGED, NO_CONSTITUENTS, INVALID_SCORE = 0, 1, 2
#: the per-event counters :meth:`JetTagger.tag_events` returns besides the scores
NONFINITE_INPUTS, INVALID_LINK_ROWS = "nonfinite_inputs", "invalid_link_rows_"


@dataclasses.dataclass
class TagResult:
    """Scores of a flat list of jets and the counters a physicist wants to see."""

    scores: np.ndarray  # (N, K), NaN rows for jets without constituents and for invalid scores
    n_jets: int
    n_empty: int
    n_nonfinite: (
        int  # values replaced by 0 (non-finite; raw beyond sources.RAW_LIMIT, variables beyond ABSURD)
    )
    status: np.ndarray | None = None  # per jet: TAGGED, NO_CONSTITUENTS or INVALID_SCORE
    jet_nonfinite: np.ndarray | None = None  # per jet: input values replaced by 0
    event_of_jet: np.ndarray | None = None  # NanoAOD: the event (of the chunk) of each jet
    #: NanoAOD: link table -> invalid rows per event of the chunk (the tables the model reads)
    invalid_link_rows: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    #: the columns that are not classes (regressions, the model's discriminants, embeddings) by name, (N,)
    outputs: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    @property
    def n_invalid(self) -> int:
        """Jets with constituents whose model output is not finite."""
        return 0 if self.status is None else int((self.status == INVALID_SCORE).sum())

    def counters(self) -> dict[str, int]:
        """The totals: jets, each status, input values replaced and invalid link rows per table."""
        out = {
            "jets": self.n_jets,
            "no_constituent_jets": self.n_empty,
            "invalid_score_jets": self.n_invalid,
            NONFINITE_INPUTS: self.n_nonfinite,
        }
        return out | {INVALID_LINK_ROWS + k: int(v.sum()) for k, v in self.invalid_link_rows.items()}

    def per_event(self, n_events: int, links: tuple[str, ...]) -> dict[str, np.ndarray]:
        """The counters per event of a NanoAOD chunk (what the processor fills: counts survive dask only
        as histogram fills), one ``invalid_link_rows_<table>`` per link table in ``links``."""
        events = np.zeros(0, np.int64) if self.event_of_jet is None else self.event_of_jet
        bad = np.zeros(len(events)) if self.jet_nonfinite is None else self.jet_nonfinite
        out = {NONFINITE_INPUTS: np.bincount(events, weights=bad, minlength=n_events).astype(np.int64)}
        for link in links:
            rows = self.invalid_link_rows.get(link)
            out[INVALID_LINK_ROWS + link] = np.zeros(n_events, np.int64) if rows is None else rows
        return out


class JetTagger:
    """A tagger bundle ready to run.

    >>> tagger = JetTagger("pfn")                              # doctest: +SKIP
    >>> scores = tagger(events)                                # [events][FatJet][classes]
    >>> fatjets = tagger.attach(events, jets=events.FatJet.pt > 300)  # FatJet.score_<class> fields

    ``backend``: a name (onnx, torch, triton) or a :class:`~.backends.BackendSpec` (default: onnx, or triton
    for a client-only bundle); ``backend_options``
    (``threads``, ``device``, ``dtype``, ``server``, ``served_model``, ``precision``) go to that backend;
    ``precision="int8"`` / ``"bf16"`` (default backend: onnx / torch) only where the card records it
    within the limits (:mod:`.precision`). ``jets``: the
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
        if "precision" in backend_options:  # fp32 is none; a reduced one picks the backend that runs it
            from ._names import reduced

            backend_options["precision"], runs_it = reduced(backend_options["precision"])
            backend = backend or runs_it
        self.spec = BackendSpec.of(backend or self.bundle.default_backend, **backend_options)
        self.backend = make_backend(self.spec, self.bundle)
        if getattr(self.backend, "fixed_lengths", None):  # a model with a fixed particle axis: its length
            self.padding = "fixed"
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
        values = self.run_model(std)
        status = np.where(std.counts == 0, NO_CONSTITUENTS, TAGGED).astype(np.int8)
        status[(std.counts > 0) & ~np.isfinite(values).all(axis=1)] = INVALID_SCORE
        scores, others = self.bundle.outputs.split(values)
        return TagResult(
            scores,
            len(std),
            int((std.counts == 0).sum()),
            std.n_nonfinite,
            status=status,
            jet_nonfinite=std.jet_nonfinite,
            event_of_jet=None if table.ids is None else table.ids[:, 0].astype(np.int64),
            invalid_link_rows={} if table.links is None else table.links.invalid_link_rows(),
            outputs={c.name: others[:, k] for k, c in enumerate(self.bundle.outputs.others)},
        )

    def run_model(self, std: Any) -> np.ndarray:
        """Every output column of standardised jets (see :meth:`.inputs.Outputs.split`), in batches
        bounded in particle slots (and pairs, for ParT). With ``max_slots="auto"`` the budget is measured
        for this model once per process (:func:`tuned_budget`). An output that is not one row per jet is
        refused naming the bundle; see :func:`run_batched`."""
        max_pairs = MAX_PAIRS if self.bundle.pairwise else None
        model = f"{self.bundle.name} ({self.bundle.path})"
        min_length = self.bundle.min_length
        budget = self.max_slots
        if budget == "auto":
            key = (tuple(m.digest for m in models_of(self.backend)) or str(self.bundle.path), self.spec)
            budget = (
                tuned_budget(
                    key,
                    self.backend,
                    std,
                    self.bundle.outputs,
                    min_length,
                    max_pairs,
                    padding=self.padding,
                    model=model,
                )
                or MAX_SLOTS
            )
        values = run_batched(
            self.backend, std, self.bundle.outputs, self.padding, min_length, budget, max_pairs, model=model
        )
        count_jets(self.backend, int((std.counts > 0).sum()))
        return values

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
        return self.tag_events(events, jets)["scores"]

    def tag_events(self, events: Any, jets: Any = None) -> Any:
        """Per event of NanoEvents (eager or dask-awkward): ``scores`` [jet][class], ``outputs`` [jet][column]
        (the columns that are not classes, in the order of :attr:`.inputs.Outputs.others`; only where the
        model has such), ``status`` [jet] (:data:`TAGGED`, :data:`NO_CONSTITUENTS`, :data:`INVALID_SCORE`)
        and the counters
        ``nonfinite_inputs`` and ``invalid_link_rows_<link table>`` (one per link table of the preset
        member the events' layout takes): what the processor's fills take."""
        links = tuple(
            c.link for c in preset_for(self.preset, lambda c: c in ak.fields(events)).collections.values()
        )
        args = (events,) if jets is None else (events, jets)
        return map_chunks(
            _tag_chunk,
            *args,
            tagger=self,
            links=links,
            touches=_score_columns,
            empty=functools.partial(_empty_tags, len(self.classes), len(self.bundle.outputs.others), links),
            label="jettagger-scores",
        )

    def attach(self, events: Any, jets: Any = None, prefix: str = "score_", output_prefix: str = "") -> Any:
        """``events.FatJet`` (``[jets]`` if given) with one ``<prefix><class>`` field per class, one
        ``<prefix><discriminant>`` per discriminant (the bundle's and the model's own) and one
        ``<output_prefix><name>`` per regression and embedding output (``FatJet.massCorrX2p``). A name the
        collection already has (the CMS mass regression's ``mass``) is refused: never overwritten."""
        out = events[self.jets] if jets is None else events[self.jets][jets]
        others = self.bundle.outputs.others
        fields = [f"{prefix if c.role == 'discriminant' else output_prefix}{c.name}" for c in others]
        for col, field in zip(others, fields):  # checked before any work
            if field in ak.fields(out):
                raise JetTaggerError(
                    f"{self.bundle.name}: output {col.name!r} would overwrite {self.jets}.{field}: attach "
                    f"it with output_prefix (e.g. output_prefix='{self.bundle.name}_')"
                )
        tags = self.tag_events(events, jets)
        scores = tags["scores"]
        for i, c in enumerate(self.classes):
            out = ak.with_field(out, scores[..., i], f"{prefix}{c}")
        for name in self.bundle.discriminants:
            out = ak.with_field(out, self.discriminant(scores, name), f"{prefix}{name}")
        for i, field in enumerate(fields):
            out = ak.with_field(out, tags["outputs"][..., i], field)
        return out


def _tag_chunk(
    events: ak.Array, jets: ak.Array | None = None, *, tagger: JetTagger, links: tuple[str, ...]
) -> ak.Array:
    """One chunk: per event, the (selected) jets' scores and status and the chunk's counters."""
    counts = ak.to_numpy(ak.num(events[tagger.jets] if jets is None else events[tagger.jets][jets], axis=1))
    result = tagger.score_jets(events, jets=jets)
    assert result.status is not None
    fields = {
        "scores": ak.unflatten(ak.from_numpy(result.scores, regulararray=True), counts),
        "status": ak.unflatten(result.status, counts),
    }
    if result.outputs:
        others = np.stack(list(result.outputs.values()), axis=1)
        fields["outputs"] = ak.unflatten(ak.from_numpy(others, regulararray=True), counts)
    return ak.zip(fields | result.per_event(len(counts), links), depth_limit=1)


def _empty_tags(n_classes: int, n_others: int, links: tuple[str, ...]) -> ak.Array:
    """The form of :func:`_tag_chunk`'s output (dask's typetracer pass)."""
    counters = [NONFINITE_INPUTS, *(INVALID_LINK_ROWS + link for link in links)]
    fields = {"scores": empty_jagged(n_classes), "status": empty_jagged(dtype=np.int8)}
    if n_others:
        fields["outputs"] = empty_jagged(n_others)
    return ak.zip(fields | {c: np.zeros(0, np.int64) for c in counters}, depth_limit=1)


def _score_columns(
    events: ak.Array, jets: ak.Array | None = None, *, tagger: JetTagger, **_: Any
) -> list[Any]:
    """What a chunk reads: exactly the branches the preset (the member of its family the file's layout
    takes) and config name, and the jet counts."""
    preset = preset_for(tagger.preset, lambda coll: coll in ak.fields(events))
    cols = [
        events[coll][field]
        for coll, field in needed_branches(tagger.config, preset)
        if coll in ak.fields(events) and field in ak.fields(events[coll])
    ]
    return [*cols, ak.num(events[tagger.jets] if jets is None else events[tagger.jets][jets], axis=1)]
