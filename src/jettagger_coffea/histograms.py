"""Histogram builders: hist.Hist for eager chunks (coffea Runner), hist.dask.Hist for dask-awkward."""

from __future__ import annotations

from collections.abc import Sequence

import hist

PT_BINS = (500, 600, 700, 800, 1000)
MSD_AXIS = hist.axis.Regular(50, 0, 250, name="msd", label=r"Soft-drop mass [GeV]")
SCORE_AXIS = hist.axis.Regular(50, 0, 1, name="score", label="Score")


def _hist(dask: bool, *axes) -> hist.Hist:
    if dask:
        import hist.dask as hda

        return hda.Hist(*axes, storage=hist.storage.Double())
    return hist.Hist(*axes, storage=hist.storage.Double())


def dataset_axis() -> hist.axis.StrCategory:
    return hist.axis.StrCategory([], growth=True, name="dataset", label="Dataset")


def truth_axis() -> hist.axis.IntCategory:
    return hist.axis.IntCategory([], growth=True, name="truth", label="Truth label (JetClass index, -1 none)")


def pt_axis(bins: Sequence[float] = PT_BINS) -> hist.axis.Variable:
    return hist.axis.Variable(bins, name="pt", label=r"Jet $p_T$ [GeV]")


def make_histograms(classes: Sequence[str], discriminants: Sequence[str], working_points: Sequence[str],
                    pt_bins: Sequence[float] = PT_BINS, dask: bool = False) -> dict[str, hist.Hist]:
    cls = hist.axis.StrCategory(list(classes), name="cls", label="Class")
    disc = hist.axis.StrCategory(list(discriminants) or ["none"], name="disc", label="Discriminant")
    wps = hist.axis.StrCategory(list(working_points) or ["none"], name="wp", label="Working point")
    passed = hist.axis.Boolean(name="passed")
    return {
        "jets": _hist(dask, dataset_axis(), truth_axis(), hist.axis.StrCategory(
            ["tagged", "no_constituents"], name="status"), pt_axis(pt_bins)),
        "scores": _hist(dask, dataset_axis(), truth_axis(), pt_axis(pt_bins), cls, SCORE_AXIS),
        "discriminant": _hist(dask, dataset_axis(), truth_axis(), pt_axis(pt_bins), disc, SCORE_AXIS),
        "msoftdrop": _hist(dask, dataset_axis(), truth_axis(), MSD_AXIS),
        "wp_pt": _hist(dask, dataset_axis(), truth_axis(), disc, wps, passed, pt_axis(pt_bins)),
        "wp_msd": _hist(dask, dataset_axis(), truth_axis(), disc, wps, passed, MSD_AXIS),
    }
