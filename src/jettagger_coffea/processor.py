"""coffea processor: select FatJets, tag them, fill weighted histograms (scores, discriminants, soft-drop
mass, working-point pass/total vs pT, |eta| and mass, recomputed vs stored scores, each regressed quantity
of a model with regression outputs) and a cutflow of raw
counts and sums of weights. Truth comes from ``GenPart`` (any NanoAOD); data is labelled ``data`` and
unweighted. Works under coffea's Runner (Iterative, Futures, Dask; eager or virtual arrays) and with
``apply_to_fileset`` (dask-awkward): every difference between the two lives in :mod:`.columnar`. It only
fills; what is computed from the filled histograms is :mod:`.analysis`."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
from coffea import processor

from ._errors import JetTaggerError
from .backends import BackendSpec
from .batching import Padding
from .bundle import Bundle
from .columnar import Ops, empty_jagged, map_chunks, ops_for
from .expressions import Expression
from .histograms import PT_BINS, make_histograms
from .inputs import regressed_masses
from .nanoevents import index_rntuple_fields
from .sources import PRESETS, load_preset
from .tagger import (
    INVALID_LINK_ROWS,
    INVALID_SCORE,
    NO_CONSTITUENTS,
    NONFINITE_INPUTS,
    TAGGED,
    JetTagger,
)
from .truth import MIN_TRUE_MASS, fatjet_true_mass, jet_truth, truth_classes
from .workingpoints import read_thresholds

index_rntuple_fields()  # where the processor runs, RNTuples open in one pass whatever the job's schema

#: what truth and true masses read (:mod:`.truth`), and the per-event branches the processor reads
TRUTH_COLLECTIONS = ("GenPart", "GenJetAK8", "SubGenJetAK8")
IDENTIFIERS = ("run", "luminosityBlock", "event")
EVENT_BRANCHES = ("genWeight", *IDENTIFIERS)

#: FatJet_jetId bits (NanoAOD): 1 loose (2016), 2 tight, 4 tight with lepton veto
JET_ID = {"none": 0, "loose": 1, "tight": 2, "tightlepveto": 4}


@dataclasses.dataclass(frozen=True)
class Selection:
    """The jets that are tagged and histogrammed (bounds exclusive; None: no bound)."""

    pt_min: float = 300.0
    pt_max: float | None = None
    eta_max: float | None = 2.4
    msd_min: float | None = None
    msd_max: float | None = None
    jet_id: str = "none"

    def __post_init__(self) -> None:
        if self.jet_id not in JET_ID:
            raise JetTaggerError(f"--jet-id {self.jet_id!r}: choose from {', '.join(JET_ID)}")
        for lo, hi, what in ((self.pt_min, self.pt_max, "pt"), (self.msd_min, self.msd_max, "msd")):
            if lo is not None and hi is not None and lo >= hi:
                raise JetTaggerError(f"--{what}-min {lo} must be below --{what}-max {hi}")
        if self.eta_max is not None and self.eta_max <= 0:
            raise JetTaggerError(f"--eta-max must be > 0, got {self.eta_max}")

    def mask(self, fj: Any) -> Any:
        sel = fj.pt > self.pt_min
        if self.pt_max is not None:
            sel = sel & (fj.pt < self.pt_max)
        if self.eta_max is not None:
            sel = sel & (abs(fj.eta) < self.eta_max)
        if self.msd_min is not None:
            sel = sel & (fj.msoftdrop > self.msd_min)
        if self.msd_max is not None:
            sel = sel & (fj.msoftdrop < self.msd_max)
        if self.jet_id != "none":
            sel = sel & ((fj.jetId & JET_ID[self.jet_id]) != 0)
        return sel


def pt_bins_for(selection: Selection) -> tuple[float, ...]:
    """Histogram pT edges: the standard ones inside the selected range, with its bounds as outer edges."""
    lo = selection.pt_min
    hi = selection.pt_max if selection.pt_max is not None else max(PT_BINS[-1], 2 * lo)
    inner = [b for b in PT_BINS if lo < b < hi]
    return (lo, *inner, hi)


class TaggerProcessor(processor.ProcessorABC):
    """Tag the selected FatJets of each chunk with one bundle and fill weighted histograms.

    ``datasets``: coffea fileset metadata per dataset (``is_mc``; ``xsec`` is applied after the job, see
    :func:`execution.normalise`). ``working_points``: a correctionlib file written by ``jettagger
    workingpoints`` whose thresholds replace the bundle's. ``backend``: a name or a
    :class:`~.backends.BackendSpec`, handed to :class:`JetTagger` as it is; ``jets``: the jet collection
    (default: the bundle's).
    """

    def __init__(
        self,
        bundle: str | Path | Bundle | None = None,
        *,
        selection: Selection | None = None,
        pt_bins: Sequence[float] | None = None,
        backend: str | BackendSpec | None = None,
        padding: Padding = "dynamic",
        radius: float = 0.8,
        datasets: dict[str, dict[str, Any]] | None = None,
        working_points: str | Path | None = None,
        per_jet: bool = False,
        jets: str | None = None,
    ) -> None:
        self.tagger = JetTagger(
            bundle if bundle is not None else Bundle.load(), backend=backend, padding=padding, jets=jets
        )
        self.selection = selection or Selection()
        self.pt_bins = tuple(pt_bins) if pt_bins is not None else pt_bins_for(self.selection)
        self.radius = radius
        self.datasets = dict(datasets or {})
        bundle_wps = self.tagger.bundle.working_points
        if working_points is not None:
            bundle_wps = read_thresholds(working_points)
        self.wps = {d: dict(bundle_wps.get(d, {})) for d in self.tagger.bundle.discriminants}
        self.stored = {
            d: b
            for d, b in (self.tagger.bundle.card.get("stored_scores") or {}).items()
            if d in self.tagger.bundle.discriminants
        }
        self.per_jet = per_jet
        self.truth_classes = truth_classes(self.tagger.preset.truth)
        others = self.tagger.bundle.outputs.others
        #: the regression outputs: position among the non-class outputs, column
        self.regressions = [(i, c) for i, c in enumerate(others) if c.role == "regression"]
        #: the regressed masses: each compared with the true mass, beside the soft-drop mass (AK8 truth)
        self.masses = [c.name for c in regressed_masses(self.tagger.bundle.outputs)]
        if self.tagger.preset.truth == "flavour":
            self.masses = []

    def branch_filter(self) -> list[str] | None:
        """uproot ``filter_name`` globs of every branch :meth:`process` reads (whole collections: the
        jets, the link tables and targets of every member of the preset's family that reads them, the
        generator record and jets, the event weight and identifiers): the NanoEvents of a chunk are built
        from these only. None (every branch) for a subclass, whose ``process`` may read anything.
        Cross-references to collections left out (``FatJet_subJetIdx1`` -> ``SubJet``) stay plain index
        fields (:class:`.nanoevents.PFNanoSchema` builds only the links it can)."""
        if type(self) is not TaggerProcessor:
            return None
        preset, jets = self.tagger.preset, self.tagger.jets
        family = [load_preset(name) for name in PRESETS]
        members = [preset, *(p for p in family if p.family == preset.family and p.jets == jets)]
        tables = {c for p in members for spec in p.collections.values() for c in (spec.link, spec.target)}
        collections = sorted({jets, *TRUTH_COLLECTIONS, *(c for c in tables if c)})
        return [*(f"{c}_*" for c in collections), *(f"n{c}" for c in collections), *EVENT_BRANCHES]

    def is_mc(self, events: Any, dataset: str) -> bool:
        meta = self.datasets.get(dataset, {})
        return bool(meta.get("is_mc", True)) and "genWeight" in ak.fields(events)

    def process(self, events: Any) -> dict[str, Any]:
        ops = ops_for(events)
        dataset = events.metadata.get("dataset", "unknown")
        mc = self.is_mc(events, dataset)
        collection = events[self.tagger.jets]  # FatJet, or Jet for AK4
        mask = self.selection.mask(collection)
        jets = collection[mask]
        tags = self.tagger.tag_events(events, mask)
        w_event = events.genWeight if mc else ops.num(collection, axis=1) * 0 + 1.0
        mass = "msoftdrop" if "msoftdrop" in ak.fields(collection) else "mass"
        others = tags.outputs if "outputs" in ak.fields(tags) else None
        chunk = _Chunk(
            dataset=dataset,
            truth=ops.flat(self._truth(events, mask, mc)),
            scores=ops.flat(tags.scores),
            status=ops.flat(tags.status),
            pt=ops.flat(jets.pt),
            abseta=ops.flat(abs(jets.eta)),
            msd=ops.flat(jets[mass]),
            weight=ops.flat(ak.broadcast_arrays(w_event, jets.pt)[0]),
            others=None if others is None else ops.flat(others),
            regressed={c.name: ops.flat(self._quantity(others, i, c, jets)) for i, c in self.regressions},
            true_mass=ops.flat(self._true_mass(events, mask)) if mc and self.masses else None,
            mass_name=mass,
        )
        wp_names = sorted({w for d in self.wps.values() for w in d})
        hists = make_histograms(
            self.tagger.classes,
            list(self.wps),
            wp_names,
            self.pt_bins,
            hist_class=ops.Hist,
            stored=list(self.stored),
            truth_classes=self.truth_classes,
            mass_label="Soft-drop mass [GeV]" if mass == "msoftdrop" else "Jet mass [GeV]",
            regressions=[(c.name, c.unit, _quantity_label(c)) for _, c in self.regressions],
            responses=[*self.masses, mass] if chunk.true_mass is not None and mass == "msoftdrop" else (),
        )
        for t_index, t in enumerate(self.truth_classes):  # one fill per truth class: scalar string categories
            self._fill_truth(hists, chunk, t_index, t, ops)
        self._fill_stored(
            hists, chunk, {d: ops.flat(jets[b]) for d, b in self.stored.items() if b in ak.fields(jets)}
        )
        fname = str(events.metadata.get("filename", ALL_FILES))  # per file under the Runner
        _fill_counts(
            hists["counts"],
            dataset,
            fname,
            w_event,
            _steps(ops, collection, tags),
            half=ops.num(collection, axis=1) * 0 + 0.5,  # one entry per event in the single "unit" bin
        )
        out: dict[str, Any] = {"hists": hists}
        if self.per_jet:
            ops.require_eager("per-jet output")
            out["jets"] = self._columns(events, mask, chunk, fname)
        return out

    def _fill_truth(self, hists: dict[str, Any], c: _Chunk, t_index: int, t: str, ops: Ops) -> None:
        """Every histogram's fill for the jets of one truth class."""
        is_t = c.truth == t_index
        ok = is_t & c.tagged
        w = c.weight[ok]
        fill = {"dataset": c.dataset, "truth": t}
        hists["jets"].fill(**fill, status="tagged", pt=c.pt[ok], weight=w)
        for status, code in (("no_constituents", NO_CONSTITUENTS), ("invalid_score", INVALID_SCORE)):
            other = is_t & (c.status == code)
            hists["jets"].fill(**fill, status=status, pt=c.pt[other], weight=c.weight[other])
        hists["msoftdrop"].fill(**fill, msd=c.msd[is_t], weight=c.weight[is_t])
        t_scores, t_pt = c.scores[ok], c.pt[ok]
        if self.tagger.classes:  # a model of regressions only has no argmax
            hists["predicted"].fill(**fill, predicted=ops.argmax(t_scores, axis=1), weight=w)
        for name, value in c.regressed.items():
            hists[f"regression_{name}"].fill(**fill, pt=t_pt, value=value[ok], weight=w)
        if (
            c.true_mass is not None and c.mass_name == "msoftdrop"
        ):  # NaN true masses (no matched generated jet) fall outside every fill
            known = ok & (c.true_mass > MIN_TRUE_MASS)
            truth_mass = c.true_mass[known]
            for name in self.masses:
                ratio = c.regressed[name][known] / truth_mass
                hists[f"response_{name}"].fill(**fill, pt=c.pt[known], response=ratio, weight=c.weight[known])
            ratio = c.msd[known] / truth_mass
            hists[f"response_{c.mass_name}"].fill(
                **fill, pt=c.pt[known], response=ratio, weight=c.weight[known]
            )
        for i, cls in enumerate(self.tagger.classes):
            hists["scores"].fill(**fill, pt=t_pt, cls=cls, score=t_scores[:, i], weight=w)
        for name, wps in self.wps.items():
            disc = self.tagger.discriminant(t_scores, name)
            hists["discriminant"].fill(**fill, pt=t_pt, disc=name, score=disc, weight=w)
            for wp, thr in wps.items():
                passed = ops.as_int(disc > thr, np.int64)
                hists["wp_pt"].fill(
                    **fill, disc=name, wp=wp, passed=passed, pt=t_pt, abseta=c.abseta[ok], weight=w
                )
                hists["wp_msd"].fill(**fill, disc=name, wp=wp, passed=passed, msd=c.msd[ok], weight=w)

    def _quantity(self, others: Any, i: int, col: Any, jets: Any) -> Any:
        """[event][jet] regressed quantity: the output column, times the expression of the jet's fields it
        multiplies (``(1 - rawFactor) * mass``) where the card says so."""
        value = others[:, :, i]
        if not col.multiplies:
            return value
        expr = Expression(col.multiplies, where=f"{self.tagger.bundle.path}: outputs {col.name} multiplies")
        missing = sorted(expr.names - set(ak.fields(jets)))
        if missing:
            raise JetTaggerError(
                f"{expr.where} {col.multiplies!r}: {self.tagger.jets} has no {', '.join(missing)}"
            )
        return value * expr(lambda n: jets[n])

    def _fill_stored(self, hists: dict[str, Any], c: _Chunk, stored: dict[str, Any]) -> None:
        """Recomputed vs the experiment's stored discriminant, for the tagged jets."""
        for name, values in stored.items():
            d = self.tagger.discriminant(c.scores[c.tagged], name)
            hists["stored"].fill(
                dataset=c.dataset, disc=name, recomputed=d, stored=values[c.tagged], weight=c.weight[c.tagged]
            )

    def _columns(self, events: Any, mask: Any, c: _Chunk, fname: str) -> dict[str, list[np.ndarray]]:
        """Per selected jet: identifiers, truth, weight, scores and discriminants (lists: they concatenate
        when coffea accumulates chunks)."""
        n = len(c.scores)
        counts = ak.to_numpy(ak.num(mask, axis=1))
        event_of = np.repeat(np.arange(len(counts)), counts)
        jet_index = ak.to_numpy(ak.flatten(ak.local_index(mask, axis=1)))
        keep = ak.to_numpy(ak.flatten(mask))
        start = int(events.metadata.get("entrystart", 0) or 0)
        cols: dict[str, np.ndarray] = {
            "dataset": np.full(n, c.dataset),
            "file": np.full(n, fname),
            "entry": start + event_of[keep],
            "jet_index": jet_index[keep],
        }
        for b in IDENTIFIERS:
            if b in ak.fields(events):
                cols[b] = ak.to_numpy(events[b])[event_of[keep]]
        cols["truth"] = np.asarray(self.truth_classes)[c.truth]
        cols["weight"] = np.asarray(c.weight, dtype=np.float64)
        for i, cls in enumerate(self.tagger.classes):
            cols[f"score_{cls}"] = c.scores[:, i]
        for d in self.tagger.bundle.discriminants:
            cols[f"disc_{d}"] = np.asarray(self.tagger.discriminant(c.scores, d))
        for k, col in enumerate(self.tagger.bundle.outputs.others):  # named as predict names them
            cols[f"score_{col.name}" if col.role == "discriminant" else col.name] = c.others[:, k]
        return {k: [v] for k, v in cols.items()}

    def _truth(self, events: Any, mask: Any, mc: bool) -> Any:
        """[event][selected jet] index into the truth classes (``data`` for data)."""
        if not mc:
            return mask[mask] * 0 + self.truth_classes.index("data")
        return map_chunks(
            _truth_chunk,
            events,
            mask,
            scheme=self.tagger.preset.truth,
            collection=self.tagger.jets,
            radius=self.radius,
            touches=_truth_columns,
            empty=empty_jagged,
            label="jettagger-truth",
        )

    def _true_mass(self, events: Any, mask: Any) -> Any:
        """[event][selected jet] true mass (:func:`.truth.fatjet_true_mass`)."""
        return map_chunks(
            _true_mass_chunk,
            events,
            mask,
            collection=self.tagger.jets,
            radius=self.radius,
            touches=_true_mass_columns,
            empty=empty_jagged,
            label="jettagger-true-mass",
        )

    def postprocess(self, accumulator: Any) -> Any:
        return accumulator


#: the ``file`` entry of the counts histogram under dask-awkward, which has no per-file metadata
ALL_FILES = "(all files)"


@dataclasses.dataclass
class _Chunk:
    """The selected jets of one chunk, flat: what every fill takes (numpy, or dask-awkward)."""

    dataset: str
    truth: Any
    scores: Any
    status: Any  # per jet: tagger.TAGGED, NO_CONSTITUENTS or INVALID_SCORE
    pt: Any
    abseta: Any
    msd: Any
    weight: Any
    others: Any  # the outputs that are not classes, (jets, columns); None for a model of classes only
    regressed: dict[str, Any]  # regression output -> its quantity per jet
    true_mass: Any = None  # per jet, where the model regresses a mass: what it should give (NaN: unknown)
    mass_name: str = "msoftdrop"  # the jet mass beside it: msoftdrop, or mass (AK4)

    @property
    def tagged(self) -> Any:
        """Jets with scores: every score, discriminant and working-point histogram holds only these."""
        return self.status == TAGGED


def _steps(ops: Ops, collection: Any, tags: Any) -> list[tuple[str, Any]]:
    """The cutflow's steps of a chunk, per event: events, jets, the selected jets by what became of them
    (scored, no constituents, invalid score) and the tagger's counters (input values replaced, invalid
    link rows per table; counts of values and rows, not of jets)."""
    status = tags.status
    steps: list[tuple[str, Any]] = [
        ("events", 1),
        ("fatjets", ops.num(collection, axis=1)),
        ("selected_jets", ops.num(status, axis=1)),
        ("tagged_jets", ops.num(status[status == TAGGED], axis=1)),
        ("no_constituent_jets", ops.num(status[status == NO_CONSTITUENTS], axis=1)),
        ("invalid_score_jets", ops.num(status[status == INVALID_SCORE], axis=1)),
    ]
    counters = [f for f in ak.fields(tags) if f == NONFINITE_INPUTS or f.startswith(INVALID_LINK_ROWS)]
    return steps + [(name, tags[name]) for name in counters]


def _quantity_label(col: Any) -> str:
    """What a regression histogram holds: the output, times what it multiplies."""
    return f"{col.name} x {col.multiplies}" if col.multiplies else col.name


def _fill_counts(h: Any, dataset: str, fname: str, w_event: Any, steps: Any, half: Any) -> None:
    """The cutflow: per step, raw counts and sums of event weights (as histogram fills: scalar reductions
    do not work lazily)."""
    for step, n in steps:
        h.fill(dataset=dataset, file=fname, step=step, quantity="raw", unit=half, weight=half * 0 + n)
        h.fill(dataset=dataset, file=fname, step=step, quantity="sumw", unit=half, weight=w_event * n)


def _true_mass_chunk(events: Any, mask: Any, *, collection: str, radius: float) -> ak.Array:
    mass = fatjet_true_mass(events, radius=radius, jets=mask, collection=collection)
    return ak.unflatten(mass, ak.to_numpy(ak.num(events[collection][mask], axis=1)))


def _true_mass_columns(events: Any, mask: Any, *, collection: str, **_: Any) -> list[Any]:
    """What the true mass reads besides truth's columns: the generated jets and their subjets."""
    out = _truth_columns(events, mask, collection=collection)
    jets = events[collection]
    if "genJetAK8Idx" in ak.fields(jets):
        out.append(jets["genJetAK8Idx"])
    for coll, fields in (
        ("GenJetAK8", ("eta", "phi", "msoftdrop")),
        ("SubGenJetAK8", ("pt", "eta", "phi", "mass")),
    ):
        if coll in ak.fields(events):
            out += [events[coll][f] for f in fields if f in ak.fields(events[coll])]
    return out


def _truth_chunk(events: Any, mask: Any, *, scheme: str, collection: str, radius: float) -> ak.Array:
    names = jet_truth(events, scheme=scheme, collection=collection, radius=radius, jets=mask)
    classes = truth_classes(scheme)
    index = np.array([classes.index(n) for n in names], dtype=np.int64)
    return ak.unflatten(index, ak.to_numpy(ak.num(events[collection][mask], axis=1)))


def _truth_columns(events: Any, mask: Any, *, collection: str, **_: Any) -> list[Any]:
    """What truth reads: GenPart's record, the jets' four-vectors and flavours."""
    gen = [
        events.GenPart[f]
        for f in ("pdgId", "genPartIdxMother", "statusFlags", "pt", "eta", "phi", "mass")
        if "GenPart" in ak.fields(events) and f in ak.fields(events.GenPart)
    ]
    jets = events[collection]
    own = [
        jets[f]
        for f in ("pt", "eta", "phi", "mass", "hadronFlavour", "partonFlavour")
        if f in ak.fields(jets)
    ]
    return [*gen, *own, ak.num(jets[mask], axis=1)]
