"""The processor's histograms: axes and builders, of the histogram class the chunk's arrays take
(``hist.Hist`` for eager chunks, ``hist.dask.Hist`` for dask-awkward: :class:`.columnar.Ops`)."""

from __future__ import annotations

from collections.abc import Sequence

import hist
import numpy as np

from .truth import TRUTH_CLASSES

PT_BINS = (200, 300, 400, 500, 600, 700, 800, 1000, 1500, 2500)
ABSETA_BINS = (0.0, 0.8, 1.6, 2.0, 2.4, 5.0)
MSD_AXIS = hist.axis.Regular(50, 0, 250, name="msd", label=r"Soft-drop mass [GeV]")
SCORE_AXIS = hist.axis.Regular(50, 0, 1, name="score", label="Score")
#: discriminant bins: uniform to 0.9, then logarithmically finer towards 1 (ROC at high rejection)
DISC_EDGES = np.unique(np.concatenate([np.linspace(0, 0.9, 91), 1 - np.logspace(-1, -6, 251), [1.0]]))
DISC_AXIS = hist.axis.Variable(DISC_EDGES, name="score", label="Discriminant")


def _hist(cls: type, *axes) -> hist.Hist:
    """Weight storage: sums of weights and of squared weights (variances), for simulation and data alike."""
    return cls(*axes, storage=hist.storage.Weight())


def dataset_axis() -> hist.axis.StrCategory:
    return hist.axis.StrCategory([], growth=True, name="dataset", label="Dataset")


def truth_axis(classes: Sequence[str] = TRUTH_CLASSES) -> hist.axis.StrCategory:
    return hist.axis.StrCategory(list(classes), name="truth", label="Truth (generator record)")


def pt_axis(bins: Sequence[float] = PT_BINS) -> hist.axis.Variable:
    return hist.axis.Variable(bins, name="pt", label=r"Jet $p_T$ [GeV]")


#: cutflow steps (raw counts and sums of weights); the selected jets are tagged, without constituents or with
#: an invalid (non-finite) model output. The step axis grows: the tagger's counters of input values
#: replaced (``nonfinite_inputs``) and of invalid link rows (``invalid_link_rows_<link table>``) are steps too
CUTFLOW = (
    "events",
    "fatjets",
    "selected_jets",
    "tagged_jets",
    "no_constituent_jets",
    "invalid_score_jets",
)
#: steps that say something went wrong: in the cutflow of a dataset only where they are not zero
PROBLEM_STEPS = ("invalid_score_jets",)


def regression_axis(name: str, unit: str | None, label: str) -> hist.axis.Regular:
    """The value axis of a regressed quantity: a transverse momentum on the pT range, another quantity in
    GeV (a mass) as the soft-drop mass, a factor (no unit) around 1."""
    if unit == "GeV":
        lo, hi, n = (0, PT_BINS[-1], 50) if "pt" in name.lower() else (0, 250, 50)
        return hist.axis.Regular(n, lo, hi, name="value", label=f"{label} [GeV]")
    return hist.axis.Regular(50, 0, 2, name="value", label=label + (f" [{unit}]" if unit else ""))


#: response bins: regressed (or soft-drop) mass over the true mass, 0.01 wide and centred on 0, 0.01, ...,
#: 2 (medians and quartiles are interpolated within a bin, :func:`.analysis.response_summary`: a response
#: of exactly 1 is read as 1)
RESPONSE_AXIS = hist.axis.Regular(201, -0.005, 2.005, name="response", label="Mass / true mass")


def response_histogram(
    hist_class: type = hist.Hist,
    truth: hist.axis.StrCategory | None = None,
    pt_bins: Sequence[float] = PT_BINS,
) -> hist.Hist:
    """Mass over true mass per dataset, truth class and pT: the processor's and ``evaluate``'s."""
    return _hist(hist_class, dataset_axis(), truth or truth_axis(), pt_axis(pt_bins), RESPONSE_AXIS)


def make_histograms(
    classes: Sequence[str],
    discriminants: Sequence[str],
    working_points: Sequence[str],
    pt_bins: Sequence[float] = PT_BINS,
    *,
    hist_class: type = hist.Hist,
    stored: Sequence[str] = (),
    truth_classes: Sequence[str] = TRUTH_CLASSES,
    mass_label: str = MSD_AXIS.label,
    regressions: Sequence[tuple[str, str | None, str]] = (),
    responses: Sequence[str] = (),
) -> dict[str, hist.Hist]:
    """The processor's histograms (weighted), per dataset and truth class; ``mass_label`` names the jet
    mass the ``msoftdrop`` / ``wp_msd`` histograms hold (AK4 jets have no soft-drop mass: their mass);
    ``regressions`` (name, unit, label of each regressed quantity): one ``regression_<name>`` each;
    ``responses`` (the regressed masses, and ``msoftdrop`` beside them): one ``response_<name>`` each, the
    mass over the true mass (:func:`.truth.fatjet_true_mass`) vs pT.
    Longer than most functions on purpose: one literal, every histogram's axes read top to bottom."""
    msd = hist.axis.Regular(50, 0, 250, name="msd", label=mass_label)
    truth = truth_axis(truth_classes)
    cls = hist.axis.StrCategory(list(classes), name="cls", label="Class")
    disc = hist.axis.StrCategory(list(discriminants) or ["none"], name="disc", label="Discriminant")
    wps = hist.axis.StrCategory(list(working_points) or ["none"], name="wp", label="Working point")
    # 0 / 1 rather than a Boolean axis: dask-histogram cannot fill Boolean axes lazily
    passed = hist.axis.Integer(0, 2, name="passed", label="Passed", underflow=False, overflow=False)
    regressed = {
        f"regression_{name}": _hist(
            hist_class, dataset_axis(), truth, pt_axis(pt_bins), regression_axis(name, unit, label)
        )
        for name, unit, label in regressions
    }
    regressed |= {f"response_{name}": response_histogram(hist_class, truth, pt_bins) for name in responses}
    return regressed | {
        # event / jet counts as a histogram: scalar reductions do not work lazily with dask >= 2025.4
        # cutflow: raw counts (quantity "raw") and sums of event weights ("sumw") per step
        "counts": _hist(
            hist_class,
            dataset_axis(),
            hist.axis.StrCategory([], growth=True, name="file"),
            hist.axis.StrCategory(list(CUTFLOW), growth=True, name="step"),
            hist.axis.StrCategory(["raw", "sumw"], name="quantity"),
            hist.axis.Regular(1, 0, 1, name="unit"),
        ),
        "jets": _hist(
            hist_class,
            dataset_axis(),
            truth,
            hist.axis.StrCategory(["tagged", "no_constituents", "invalid_score"], name="status"),
            pt_axis(pt_bins),
        ),
        "scores": _hist(hist_class, dataset_axis(), truth, pt_axis(pt_bins), cls, SCORE_AXIS),
        "discriminant": _hist(hist_class, dataset_axis(), truth, pt_axis(pt_bins), disc, DISC_AXIS),
        "predicted": _hist(
            hist_class,
            dataset_axis(),
            truth,
            hist.axis.IntCategory(
                list(range(len(classes))), name="predicted", label="Predicted class (argmax)"
            ),
        ),
        "msoftdrop": _hist(hist_class, dataset_axis(), truth, msd),
        # recomputed vs stored NanoAOD score, per discriminant the bundle names a stored branch for
        "stored": _hist(
            hist_class,
            dataset_axis(),
            hist.axis.StrCategory(list(stored) or ["none"], name="disc"),
            hist.axis.Regular(50, 0, 1, name="recomputed", label="Recomputed score"),
            hist.axis.Regular(50, 0, 1, name="stored", label="Stored NanoAOD score"),
        ),
        "wp_pt": _hist(
            hist_class,
            dataset_axis(),
            truth,
            disc,
            wps,
            passed,
            pt_axis(pt_bins),
            hist.axis.Variable(ABSETA_BINS, name="abseta", label="Jet |eta|"),
        ),
        "wp_msd": _hist(hist_class, dataset_axis(), truth, disc, wps, passed, msd),
    }
