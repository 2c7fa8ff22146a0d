"""coffea processor: select FatJets, tag them, fill hists (scores, discriminants, soft-drop mass,
working-point pass/total vs pT and mass) and count events and jets. Works under coffea's Runner
(Iterative, Futures, Dask executors; eager or virtual arrays) and with ``apply_to_fileset`` (dask-awkward)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import awkward as ak
import hist
import numpy as np
from coffea import processor

from .histograms import PT_BINS, make_histograms
from .tagger import JetTagger, _is_dask


class TaggerProcessor(processor.ProcessorABC):
    """Tag ``FatJet`` s in ``pt_range``, ``|eta| < eta_max`` (and an optional soft-drop mass window)."""

    def __init__(self, bundle: str | Path, pt_range: tuple[float, float] = (500.0, 1000.0), eta_max: float = 2.0,
                 msd_range: tuple[float, float] | None = None, pt_bins: Sequence[float] = PT_BINS,
                 backend: str = "onnx", padding: str | int = "dynamic") -> None:
        self.tagger = JetTagger(bundle, backend=backend, padding=padding)
        self.pt_range, self.eta_max, self.msd_range = pt_range, eta_max, msd_range
        self.pt_bins = tuple(pt_bins)
        self.wps = {d: dict(self.tagger.bundle.working_points.get(d, {})) for d in self.tagger.bundle.discriminants}

    def select(self, fatjets):
        """[event][jet] mask of the jets to tag."""
        sel = (fatjets.pt > self.pt_range[0]) & (fatjets.pt < self.pt_range[1]) & (abs(fatjets.eta) < self.eta_max)
        if self.msd_range is not None:
            sel = sel & (fatjets.msoftdrop > self.msd_range[0]) & (fatjets.msoftdrop < self.msd_range[1])
        return sel

    def process(self, events):
        dask = _is_dask(events)
        dataset = events.metadata.get("dataset", "unknown")
        mask = self.select(events.FatJet)
        jets = events.FatJet[mask]
        scores = self.tagger(events, mask)
        if dask:
            import dask_awkward as dak

            flatten, argmax, as_int = (lambda a: dak.flatten(a, axis=1)), dak.argmax, dak.values_astype
        else:  # eager: plain numpy from here on (histogram fills and masks are several times faster)
            flatten = lambda a: ak.to_numpy(ak.flatten(a, axis=1))
            argmax, as_int = np.argmax, (lambda a, t: a.astype(t))
        flat, pt, msd = flatten(scores), flatten(jets.pt), flatten(jets.msoftdrop)
        truth = flatten(jets.truthLabel) if "truthLabel" in ak.fields(jets) else as_int(pt * 0 - 1, np.int64)
        classes = self.tagger.classes
        wp_names = sorted({w for d in self.wps.values() for w in d})
        hists = make_histograms(classes, list(self.wps), wp_names, self.pt_bins, dask=dask)
        tagged = np.isfinite(flat[:, 0])
        hists["jets"].fill(dataset=dataset, truth=truth[tagged], status="tagged", pt=pt[tagged])
        hists["jets"].fill(dataset=dataset, truth=truth[~tagged], status="no_constituents", pt=pt[~tagged])
        hists["msoftdrop"].fill(dataset=dataset, truth=truth, msd=msd)
        t_truth, t_pt, t_msd, t_scores = truth[tagged], pt[tagged], msd[tagged], flat[tagged]
        hists["predicted"].fill(dataset=dataset, truth=t_truth, predicted=argmax(t_scores, axis=1))
        for i, c in enumerate(classes):
            hists["scores"].fill(dataset=dataset, truth=t_truth, pt=t_pt, cls=c, score=t_scores[:, i])
        for name, wps in self.wps.items():
            disc = self.tagger.discriminant(t_scores, name)
            hists["discriminant"].fill(dataset=dataset, truth=t_truth, pt=t_pt, disc=name, score=disc)
            for wp, thr in wps.items():
                passed = as_int(disc > thr, np.int64)
                hists["wp_pt"].fill(dataset=dataset, truth=t_truth, disc=name, wp=wp, passed=passed, pt=t_pt)
                hists["wp_msd"].fill(dataset=dataset, truth=t_truth, disc=name, wp=wp, passed=passed, msd=t_msd)
        num = dak.num if dask else ak.num
        n_fatjets = num(events.FatJet, axis=1)
        half = n_fatjets * 0 + 0.5  # one entry per event in the single "unit" bin
        fname = str(events.metadata.get("filename", "(all files)"))  # per file under the Runner
        hists["counts"].fill(dataset=dataset, file=fname, step="events", unit=half)
        hists["counts"].fill(dataset=dataset, file=fname, step="fatjets", unit=half, weight=n_fatjets)
        hists["counts"].fill(dataset=dataset, file=fname, step="selected_jets", unit=half,
                             weight=num(jets, axis=1))
        return {"hists": hists}

    def postprocess(self, accumulator: Any) -> Any:
        return accumulator


def cutflow(hists: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Per dataset: events, FatJets, selected jets, tagged jets and jets without constituents."""
    out = {}
    counts, jets = hists["counts"], hists["jets"]
    for ds in counts.axes["dataset"]:
        row = {step: round(counts[{"dataset": ds, "step": step}].sum(flow=True))  # over files
               for step in counts.axes["step"]}
        for status, key in (("tagged", "tagged_jets"), ("no_constituents", "no_constituent_jets")):
            j = jets[{"status": status}]
            row[key] = round(j[{"dataset": ds}].sum(flow=True)) if ds in j.axes["dataset"] else 0
        out[ds] = row
    return out


def efficiency(h, disc: str, wp: str, axis: str = "pt", truth: int | None = None, dataset: str | None = None):
    """(edges, pass/total, total) of a working point from the ``wp_pt`` / ``wp_msd`` histogram."""
    sel: dict[str, Any] = {"disc": disc, "wp": wp}
    if truth is not None:
        sel["truth"] = hist.loc(truth)  # a label, not a position
    if dataset is not None:
        sel["dataset"] = dataset
    sub = h[sel].project("passed", axis)
    passed, total = sub[hist.loc(1), :].values(), sub.project(axis).values()
    with np.errstate(invalid="ignore", divide="ignore"):
        return sub.axes[axis].edges, passed / total, total
