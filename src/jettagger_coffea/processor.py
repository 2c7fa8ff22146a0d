"""coffea processor: select FatJets, tag them, fill weighted histograms (scores, discriminants, soft-drop
mass, working-point pass/total vs pT, |eta| and mass, recomputed vs stored scores) and a cutflow of raw
counts and sums of weights. Truth comes from ``GenPart`` (any NanoAOD); data is labelled ``data`` and
unweighted. Works under coffea's Runner (Iterative, Futures, Dask; eager or virtual arrays) and with
``apply_to_fileset`` (dask-awkward): the two differ only in :func:`_adapter`."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
from coffea import processor

from ._errors import JetTaggerError
from .batching import Padding
from .bundle import Bundle
from .histograms import PT_BINS, make_histograms
from .tagger import JetTagger, _is_dask
from .truth import TRUTH_CLASSES, fatjet_truth

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
    :func:`run.normalise`). ``working_points``: a correctionlib file written by ``jettagger workingpoints``
    whose thresholds replace the bundle's.
    """

    def __init__(
        self,
        bundle: str | Path | None = None,
        selection: Selection | None = None,
        pt_bins: Sequence[float] | None = None,
        backend: str = "onnx",
        padding: Padding = "dynamic",
        radius: float = 0.8,
        datasets: dict[str, dict[str, Any]] | None = None,
        working_points: str | Path | None = None,
        per_jet: bool = False,
        server: str | None = None,
        served_model: str | None = None,
    ) -> None:
        self.tagger = JetTagger(
            bundle if bundle is not None else Bundle.load(),
            backend=backend,
            padding=padding,
            server=server,
            served_model=served_model,
        )
        self.selection = selection or Selection()
        self.pt_bins = tuple(pt_bins) if pt_bins is not None else pt_bins_for(self.selection)
        self.radius = radius
        self.datasets = dict(datasets or {})
        bundle_wps = self.tagger.bundle.working_points
        if working_points is not None:
            from .workingpoints import read_thresholds

            bundle_wps = read_thresholds(working_points)
        self.wps = {d: dict(bundle_wps.get(d, {})) for d in self.tagger.bundle.discriminants}
        self.stored = {
            d: b
            for d, b in (self.tagger.bundle.card.get("stored_scores") or {}).items()
            if d in self.tagger.bundle.discriminants
        }
        self.per_jet = per_jet

    def is_mc(self, events: Any, dataset: str) -> bool:
        meta = self.datasets.get(dataset, {})
        return bool(meta.get("is_mc", True)) and "genWeight" in ak.fields(events)

    def process(self, events: Any) -> dict[str, Any]:
        dask = _is_dask(events)
        flat, num, as_int, argmax = _adapter(dask)
        dataset = events.metadata.get("dataset", "unknown")
        mc = self.is_mc(events, dataset)
        mask = self.selection.mask(events.FatJet)
        jets = events.FatJet[mask]
        scores = self.tagger(events, mask)
        w_event = events.genWeight if mc else num(events.FatJet, axis=1) * 0 + 1.0
        w_jets = flat(ak.broadcast_arrays(w_event, jets.pt)[0])
        truth = flat(_truth(events, mask, self.radius, mc, dask))
        s, pt, eta, msd = flat(scores), flat(jets.pt), flat(abs(jets.eta)), flat(jets.msoftdrop)
        classes = self.tagger.classes
        wp_names = sorted({w for d in self.wps.values() for w in d})
        hists = make_histograms(
            classes, list(self.wps), wp_names, self.pt_bins, dask=dask, stored=list(self.stored)
        )
        tagged = np.isfinite(s[:, 0])
        stored = {d: flat(jets[b]) for d, b in self.stored.items() if b in ak.fields(jets)}
        for t_index, t in enumerate(TRUTH_CLASSES):  # one fill per truth class: scalar string categories
            is_t = truth == t_index
            ok, bad = is_t & tagged, is_t & ~tagged
            w, wt = w_jets[ok], w_jets[is_t]
            hists["jets"].fill(dataset=dataset, truth=t, status="tagged", pt=pt[ok], weight=w)
            hists["jets"].fill(
                dataset=dataset, truth=t, status="no_constituents", pt=pt[bad], weight=w_jets[bad]
            )
            hists["msoftdrop"].fill(dataset=dataset, truth=t, msd=msd[is_t], weight=wt)
            t_scores, t_pt = s[ok], pt[ok]
            hists["predicted"].fill(dataset=dataset, truth=t, predicted=argmax(t_scores, axis=1), weight=w)
            for i, c in enumerate(classes):
                hists["scores"].fill(dataset=dataset, truth=t, pt=t_pt, cls=c, score=t_scores[:, i], weight=w)
            for name, wps in self.wps.items():
                disc = self.tagger.discriminant(t_scores, name)
                hists["discriminant"].fill(dataset=dataset, truth=t, pt=t_pt, disc=name, score=disc, weight=w)
                for wp, thr in wps.items():
                    passed = as_int(disc > thr, np.int64)
                    hists["wp_pt"].fill(
                        dataset=dataset,
                        truth=t,
                        disc=name,
                        wp=wp,
                        passed=passed,
                        pt=t_pt,
                        abseta=eta[ok],
                        weight=w,
                    )
                    hists["wp_msd"].fill(
                        dataset=dataset, truth=t, disc=name, wp=wp, passed=passed, msd=msd[ok], weight=w
                    )
        for name, values in stored.items():
            d = self.tagger.discriminant(s[tagged], name)
            hists["stored"].fill(
                dataset=dataset, disc=name, recomputed=d, stored=values[tagged], weight=w_jets[tagged]
            )
        fname = str(events.metadata.get("filename", ALL_FILES))  # per file under the Runner
        half = num(events.FatJet, axis=1) * 0 + 0.5  # one entry per event in the single "unit" bin
        n_tagged = num(jets[np.isfinite(scores[..., 0])], axis=1)
        n_selected = num(jets, axis=1)
        steps = (
            ("events", 1),
            ("fatjets", num(events.FatJet, axis=1)),
            ("selected_jets", n_selected),
            ("tagged_jets", n_tagged),
            ("no_constituent_jets", n_selected - n_tagged),
        )
        for step, n in steps:
            hists["counts"].fill(
                dataset=dataset, file=fname, step=step, quantity="raw", unit=half, weight=half * 0 + n
            )
            hists["counts"].fill(
                dataset=dataset, file=fname, step=step, quantity="sumw", unit=half, weight=w_event * n
            )
        out: dict[str, Any] = {"hists": hists}
        if self.per_jet:
            if dask:
                raise JetTaggerError(
                    "per-jet output needs a coffea Runner executor (iterative, futures, dask)"
                )
            out["jets"] = self._columns(events, mask, dataset, fname, s, truth, w_jets)
        return out

    def _columns(
        self,
        events: Any,
        mask: Any,
        dataset: str,
        fname: str,
        s: np.ndarray,
        truth: np.ndarray,
        weight: np.ndarray,
    ) -> dict[str, list[np.ndarray]]:
        """Per selected jet: identifiers, truth, weight, scores and discriminants (lists: they concatenate
        when coffea accumulates chunks)."""
        n = len(s)
        counts = ak.to_numpy(ak.num(mask, axis=1))
        event_of = np.repeat(np.arange(len(counts)), counts)
        jet_index = ak.to_numpy(ak.flatten(ak.local_index(mask, axis=1)))
        keep = ak.to_numpy(ak.flatten(mask))
        start = int(events.metadata.get("entrystart", 0) or 0)
        cols: dict[str, np.ndarray] = {
            "dataset": np.full(n, dataset),
            "file": np.full(n, fname),
            "entry": start + event_of[keep],
            "jet_index": jet_index[keep],
        }
        for b in ("run", "luminosityBlock", "event"):
            if b in ak.fields(events):
                cols[b] = ak.to_numpy(events[b])[event_of[keep]]
        cols["truth"] = np.asarray(TRUTH_CLASSES)[truth]
        cols["weight"] = np.asarray(weight, dtype=np.float64)
        for i, c in enumerate(self.tagger.classes):
            cols[f"score_{c}"] = s[:, i]
        for d in self.tagger.bundle.discriminants:
            cols[f"disc_{d}"] = np.asarray(self.tagger.discriminant(s, d))
        return {k: [v] for k, v in cols.items()}

    def postprocess(self, accumulator: Any) -> Any:
        return accumulator


#: the ``file`` entry of the counts histogram under dask-awkward, which has no per-file metadata
ALL_FILES = "(all files)"


def _adapter(dask: bool):
    """The only place eager and dask-awkward differ: flatten, count, cast and argmax."""
    if dask:
        import dask_awkward as dak

        return (lambda a: dak.flatten(a, axis=1)), dak.num, dak.values_astype, dak.argmax
    # eager: plain numpy from here on (histogram fills and masks are several times faster)
    return (lambda a: ak.to_numpy(ak.flatten(a, axis=1))), ak.num, (lambda a, t: a.astype(t)), np.argmax


def _truth(events: Any, mask: Any, radius: float, mc: bool, dask: bool) -> Any:
    """[event][selected jet] index into TRUTH_CLASSES (``data`` for data)."""
    if not mc:
        return mask[mask] * 0 + TRUTH_CLASSES.index("data")
    if dask:
        import dask_awkward as dak

        return dak.map_partitions(_truth_partition, events, mask, radius=radius, label="jettagger-truth")
    return _truth_partition(events, mask, radius=radius)


def _truth_partition(events: Any, mask: Any, *, radius: float) -> ak.Array:
    counts = ak.num(events.FatJet[mask], axis=1)
    if ak.backend(events) == "typetracer":
        for f in ("pdgId", "genPartIdxMother", "statusFlags", "pt", "eta", "phi", "mass"):
            if "GenPart" in ak.fields(events) and f in ak.fields(events.GenPart):
                ak.typetracer.touch_data(events.GenPart[f])
        for f in ("pt", "eta", "phi", "mass"):
            ak.typetracer.touch_data(events.FatJet[f])
        ak.typetracer.touch_data(counts)
        empty = ak.unflatten(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
        return ak.Array(empty.layout.to_typetracer(forget_length=True))
    names = fatjet_truth(events, radius, jets=mask)
    index = np.array([TRUTH_CLASSES.index(n) for n in names], dtype=np.int64)
    return ak.unflatten(index, ak.to_numpy(counts))


def cutflow(hists: dict[str, Any], scale: dict[str, float] | None = None) -> dict[str, dict[str, float]]:
    """Per dataset: each step's raw count (``<step>``) and normalised sum of weights (``<step>_sumw``)."""
    out: dict[str, dict[str, float]] = {}
    counts = hists["counts"]
    for ds in counts.axes["dataset"]:
        f = (scale or {}).get(ds, 1.0)
        row: dict[str, float] = {}
        for step in counts.axes["step"]:
            sub = counts[{"dataset": ds, "step": step}]
            row[step] = round(sub[{"quantity": "raw"}].sum(flow=True).value)
            row[f"{step}_sumw"] = float(sub[{"quantity": "sumw"}].sum(flow=True).value) * f
        out[ds] = row
    return out


def efficiency(
    h: Any,
    disc: str,
    wp: str,
    axis: str = "pt",
    truth: str | Sequence[str] | None = None,
    dataset: str | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(edges, passed, total, sum w^2 passed, sum w^2 total) of a working point vs ``axis`` from the
    ``wp_pt`` / ``wp_msd`` histogram, summed over the given truth classes and datasets."""
    sel: dict[str, Any] = {"disc": disc, "wp": wp}
    if dataset is not None:
        sel["dataset"] = dataset
    sub = h[sel]
    truths = [truth] if isinstance(truth, str) else list(truth or sub.axes["truth"])
    parts = [sub[{"truth": t}].project("passed", axis) for t in truths if t in sub.axes["truth"]]
    if not parts:
        raise JetTaggerError(f"no truth class {truths} in the working-point histogram")
    sub = sum(parts[1:], parts[0])
    view = sub.view()
    edges = sub.axes[axis].edges
    passed, total = view["value"][1], view["value"].sum(axis=0)
    return edges, passed, total, view["variance"][1], view["variance"].sum(axis=0)


def merge_sparse_bins(
    edges: np.ndarray,
    passed: np.ndarray,
    total: np.ndarray,
    var_passed: np.ndarray,
    var_total: np.ndarray,
    min_jets: float = 20.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Binning that adapts to the statistics: neighbouring bins are merged, left to right, until each holds
    at least ``min_jets`` effective jets (sum w)^2 / sum w^2; a short remainder joins the last bin."""
    keep = [0]
    acc_w = acc_w2 = 0.0
    for i in range(len(total)):
        acc_w, acc_w2 = acc_w + total[i], acc_w2 + var_total[i]
        if acc_w2 > 0 and acc_w * acc_w / acc_w2 >= min_jets:
            keep.append(i + 1)
            acc_w = acc_w2 = 0.0
    if keep[-1] != len(total):
        if len(keep) > 1 and acc_w > 0:
            keep[-1] = len(total)  # too few jets after the last full bin: widen it
        else:
            keep.append(len(total))
    cuts = np.asarray(keep)
    summed = [
        np.add.reduceat(np.asarray(c, dtype=np.float64), cuts[:-1])
        for c in (passed, total, var_passed, var_total)
    ]
    return (np.asarray(edges)[cuts], *summed)  # type: ignore[return-value]


def wilson_interval(passed: np.ndarray, total: np.ndarray, z: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval (68 %) of pass / total; with weights use effective counts."""
    passed, total = np.asarray(passed, dtype=float), np.asarray(total, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = passed / total
        denom = 1 + z * z / total
        centre = (p + z * z / (2 * total)) / denom
        half = z * np.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
        # the interval contains p also after rounding (p = 0 or 1 would otherwise poke out by 1e-17)
        return np.clip(np.fmin(centre - half, p), 0, 1), np.clip(np.fmax(centre + half, p), 0, 1)


def effective_counts(
    passed: np.ndarray, total: np.ndarray, var_total: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted (passed, total) -> the unweighted counts with the same relative precision (Kish)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        n_eff = np.where(var_total > 0, total**2 / var_total, 0.0)
        scale = np.where(total > 0, n_eff / total, 0.0)
    return passed * scale, total * scale
