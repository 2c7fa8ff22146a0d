"""What a run's filled histograms say: the cutflow, working-point efficiencies with binomial intervals on
effective counts and adaptive binning, binned ROCs and the metrics document. One module for the
statistics that plots, working points and metrics.json all read."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ._errors import JetTaggerError
from .histograms import CUTFLOW, PROBLEM_STEPS
from .metrics import background_classes, figures_from_roc, metrics_document, roc_from_hist
from .truth import truth_of_class

#: efficiency plots merge neighbouring bins until each holds this many (effective) jets
MIN_JETS_PER_BIN = 20.0


def cutflow(hists: dict[str, Any], scale: dict[str, float] | None = None) -> dict[str, dict[str, float]]:
    """Per dataset: each step's raw count (``<step>``) and normalised sum of weights (``<step>_sumw``).

    What went wrong is in the cutflow only where it happened, so that a clean dataset's cutflow lists the
    jets alone: ``invalid_score_jets`` (jets with constituents whose model output is not finite), and the
    counters of values and rows (raw counts only): ``nonfinite_inputs`` (input values NaN, +-inf or
    absurd — raw beyond 1e10, model variables beyond 1e32 — replaced by 0) and
    ``invalid_link_rows_<link table>`` (link rows whose jet or target index is out of range). Absent means
    zero."""
    out: dict[str, dict[str, float]] = {}
    counts = hists["counts"]
    for ds in counts.axes["dataset"]:
        f = (scale or {}).get(ds, 1.0)
        row: dict[str, float] = {}
        for step in counts.axes["step"]:
            sub = counts[{"dataset": ds, "step": step}]
            raw = round(sub[{"quantity": "raw"}].sum(flow=True).value)
            if raw == 0 and (step in PROBLEM_STEPS or step not in CUTFLOW):
                continue
            row[step] = raw
            if step in CUTFLOW:
                row[f"{step}_sumw"] = float(sub[{"quantity": "sumw"}].sum(flow=True).value) * f
        out[ds] = row
    return out


def efficiency(
    h: Any,
    disc: str,
    wp: str,
    axis: str | tuple[str, ...] = "pt",
    truth: str | Sequence[str] | None = None,
    dataset: str | None = None,
) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(edges, passed, total, sum w^2 passed, sum w^2 total) of a working point vs ``axis`` (or several
    axes: edges is then a tuple, one per axis) from the ``wp_pt`` / ``wp_msd`` histogram, summed over the
    given truth classes and datasets."""
    axes = (axis,) if isinstance(axis, str) else tuple(axis)
    sel: dict[str, Any] = {"disc": disc, "wp": wp}
    if dataset is not None:
        sel["dataset"] = dataset
    sub = h[sel]
    truths = [truth] if isinstance(truth, str) else list(truth or sub.axes["truth"])
    parts = [sub[{"truth": t}].project("passed", *axes) for t in truths if t in sub.axes["truth"]]
    if not parts:
        raise JetTaggerError(f"no truth class {truths} in the working-point histogram")
    sub = sum(parts[1:], parts[0])
    view = sub.view()
    edges = sub.axes[axis].edges if isinstance(axis, str) else tuple(sub.axes[a].edges for a in axes)
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


def binomial_interval(
    passed: np.ndarray, total: np.ndarray, var_total: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(efficiency, low, high) of weighted counts: pass / total with the 68 % Wilson interval on the
    effective counts; NaN where no jet is."""
    pe, ne = effective_counts(passed, total, var_total)
    lo, hi = wilson_interval(pe, ne)
    with np.errstate(invalid="ignore", divide="ignore"):
        return passed / total, lo, hi


def effective_counts(
    passed: np.ndarray, total: np.ndarray, var_total: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted (passed, total) -> the unweighted counts with the same relative precision (Kish)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        n_eff = np.where(var_total > 0, total**2 / var_total, 0.0)
        scale = np.where(total > 0, n_eff / total, 0.0)
    return passed * scale, total * scale


def _truth_rows(h: Any, classes: Sequence[str]) -> list[int]:
    """Positions on a histogram's truth axis of the truth classes behind these model classes."""
    truths = list(h.axes["truth"])
    wanted = {truth_of_class(c) for c in classes} - {None}
    return [i for i, t in enumerate(truths) if t in wanted]


def binned_roc(h: Any, name: str, d: dict[str, Any], classes: Sequence[str]):
    """(eps_b, eps_s, n_signal, n_background, effective n_background) of one discriminant from the
    ``discriminant`` histogram (effective: (sum w)^2 / sum w^2, what binomial errors are counted in)."""
    hd = h[{"disc": name}].project("truth", "score")
    values = hd.values()
    s_rows = _truth_rows(hd, d["signal"])
    b_rows = [i for i in _truth_rows(hd, background_classes(classes, d)) if i not in s_rows]
    if not s_rows or not b_rows:
        return None
    s, b = values[s_rows].sum(axis=0), values[b_rows].sum(axis=0)
    if s.sum() <= 0 or b.sum() <= 0:
        return None
    eb, es = roc_from_hist(s, b)
    variances = hd.variances()
    b_var = float(variances[b_rows].sum()) if variances is not None else float(b.sum())
    n_eff = float(b.sum()) ** 2 / b_var if b_var > 0 else float(b.sum())
    return eb, es, float(s.sum()), float(b.sum()), n_eff


def metrics_from_hists(out: dict[str, Any]) -> dict[str, Any]:
    """Binned front end of :func:`metrics.metrics_document`: ROCs from the run's discriminant histograms,
    accuracy and confusion from its predicted-class histogram, plus the cutflow and timing."""
    h = out["hists"]
    meta = out["meta"]
    classes = meta["classes"]
    figures = {}
    for name, d in meta["discriminants"].items():
        roc = binned_roc(h["discriminant"], name, d, classes)
        if roc is not None:
            figures[name] = figures_from_roc(*roc)
    hp = h["predicted"].project("truth", "predicted")
    truths = list(hp.axes["truth"])
    cm = np.zeros((len(classes), len(classes)))
    for i, c in enumerate(classes):
        t = truth_of_class(c)
        if t == c and t in truths:  # the confusion matrix needs model classes that are truth classes
            cm[i] = hp.values()[truths.index(t)]
    jets = sum(c["selected_jets"] for c in out["cutflow"].values())
    warnings = [*out.get("warnings", []), *efficiency_warnings(out)]
    doc = metrics_document(
        "binned",
        meta["model"],
        classes,
        figures,
        cm,
        n_jets=sum(c.get("tagged_jets", 0) for c in out["cutflow"].values()),
        cutflow=out["cutflow"],
        normalisation=out.get("normalisation", {}),
        selection=meta.get("selection"),
        skipped=out.get("skipped", []),
        warnings=warnings,
        seconds=meta["seconds"],
        jets_per_second=jets / meta["seconds"] if meta["seconds"] else None,
        executor=meta.get("executor"),
        shipping=meta.get("shipping"),
    )
    responses = {
        n.removeprefix("response_"): response_summary(v) for n, v in h.items() if n.startswith("response_")
    }
    if responses:  # the regressed masses and the soft-drop mass over the true mass (NaN: no jets -> null)
        doc["response"] = json_numbers(responses)
    return doc


def json_numbers(x: Any) -> Any:
    """NaN and infinities as null (metrics.json is strict JSON)."""
    if isinstance(x, dict):
        return {k: json_numbers(v) for k, v in x.items()}
    if isinstance(x, list):
        return [json_numbers(v) for v in x]
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


def roc_curves(out: dict[str, Any]) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """Per discriminant with signal and background jets: (eps_b, eps_s, n_background)."""
    h, meta = out["hists"], out["meta"]
    curves = {}
    for name, d in meta["discriminants"].items():
        roc = binned_roc(h["discriminant"], name, d, meta["classes"])
        if roc is not None:
            curves[name] = (roc[0], roc[1], roc[3])
    return curves


def truth_groups(classes: Sequence[str], d: dict[str, Any]) -> dict[str, list[str]]:
    """The truth classes behind a discriminant's signal and background model classes."""
    sig = {t for t in map(truth_of_class, d["signal"]) if t is not None}
    bkg = {t for t in map(truth_of_class, background_classes(classes, d)) if t is not None} - sig
    return {"signal": sorted(sig), "background": sorted(bkg)}


def efficiency_curves(
    h: Any, name: str, wps: Sequence[str], truths: Sequence[str], axis: str
) -> dict[str, dict[str, tuple]]:
    """wp -> truth class -> (edges, passed, total, low, high, span) of one discriminant vs ``axis``: sparse
    bins merged to :data:`MIN_JETS_PER_BIN` effective jets, 68 % Wilson intervals on effective counts, and
    per merged bin the (low, high) range of its bins that hold jets (:func:`filled_spans`)."""
    eff: dict[str, dict[str, tuple]] = {}
    for wp in wps:
        for t in truths:
            counts = efficiency(h, name, wp, axis=axis, truth=t)
            if counts[2].sum() <= 0:
                continue
            edges, p, n, _, vn = merge_sparse_bins(*counts, min_jets=MIN_JETS_PER_BIN)
            _, lo, hi = binomial_interval(p, n, vn)
            eff.setdefault(wp, {})[t] = (edges, p, n, lo, hi, filled_spans(counts[0], counts[2], edges))
    return eff


def filled_spans(edges: np.ndarray, total: np.ndarray, merged: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) per bin of the ``merged`` binning: the range of the original bins (``edges``, jets
    ``total``) inside it that hold jets, so that a bin merged from 300-600 GeV whose jets are all above
    500 GeV is drawn over 500-600; a merged bin without jets keeps its own edges."""
    edges, total, merged = np.asarray(edges), np.asarray(total), np.asarray(merged)
    low, high = merged[:-1].astype(float), merged[1:].astype(float)
    for k in range(len(merged) - 1):
        inside = np.flatnonzero((edges[:-1] >= merged[k]) & (edges[1:] <= merged[k + 1]) & (total > 0))
        if len(inside):
            low[k], high[k] = edges[inside[0]], edges[inside[-1] + 1]
    return low, high


def signal_missing(out: dict[str, Any]) -> dict[str, list[str]]:
    """Discriminant -> its signal truth classes, for the discriminants with working points whose signal
    has no jets in the run while their background has: those efficiency panels would hold background only
    (upper limits), so they are not drawn."""
    h, meta = out["hists"]["wp_pt"], out["meta"]
    truths = set(h.axes["truth"])

    def jets(sub: Any, group: list[str]) -> float:
        return float(sum(sub[{"truth": t}].sum(flow=True).value for t in group if t in truths))

    missing = {}
    for name in meta["working_points"]:
        if name not in h.axes["disc"]:
            continue
        groups = truth_groups(meta["classes"], meta["discriminants"][name])
        sub = h[{"disc": name}]
        if jets(sub, groups["signal"]) <= 0 < jets(sub, groups["background"]):
            missing[name] = groups["signal"]
    return missing


def efficiency_warnings(out: dict[str, Any]) -> list[str]:
    """metrics.json warnings (the CLI prints them) for the efficiency plots that are not drawn."""
    return [
        f"{name}: no {'/'.join(signal) or 'signal'} jets in the run, so its efficiency plots "
        f"(eff_pt_{name}, eff_msd_{name}) are not drawn"
        for name, signal in signal_missing(out).items()
    ]


def _quantiles(values: np.ndarray, edges: np.ndarray, qs: Sequence[float]) -> list[float]:
    """Quantiles of a binned distribution (with its under- and overflow), linear within a bin; inf where a
    quantile lies in the overflow, NaN without entries."""
    total = values.sum()
    if total <= 0:
        return [float("nan")] * len(qs)
    cum = np.cumsum(values) / total  # [underflow, bins..., overflow]
    out = []
    for q in qs:
        k = int(np.searchsorted(cum, q))
        if k == 0:
            out.append(float(edges[0]))
        elif k > len(edges) - 1:
            out.append(float("inf"))
        else:
            below = cum[k - 1]
            frac = (q - below) / (cum[k] - below) if cum[k] > below else 0.0
            out.append(float(edges[k - 1] + frac * (edges[k] - edges[k - 1])))
    return out


def response_summary(h: Any) -> dict[str, dict[str, Any]]:
    """Per truth class, from a ``response_*`` histogram (dataset, truth, pt, response): the median response
    (mass / true mass), the half inter-quartile range and the relative resolution (half-IQR / median),
    over all pT and per pT bin (``per_pt``, lists over ``pt_edges``), with the jets' sum of weights."""
    hp = h.project("truth", "pt", "response")
    values = hp.view(flow=True)["value"]  # [truth (+other)][pt (+under, over)][response (+under, over)]
    edges = hp.axes["response"].edges

    def one(v: np.ndarray) -> dict[str, float]:
        q25, med, q75 = _quantiles(v, edges, (0.25, 0.5, 0.75))
        half = (q75 - q25) / 2
        return {"n": float(v.sum()), "median": med, "half_iqr": half, "resolution": half / med}

    out: dict[str, dict[str, Any]] = {}
    for i, t in enumerate(hp.axes["truth"]):  # a string category axis has no underflow: row i is class i
        inclusive = one(values[i].sum(axis=0))
        if inclusive["n"] <= 0:
            continue
        per_pt = [one(values[i][k + 1]) for k in range(len(hp.axes["pt"]))]
        out[t] = inclusive | {
            "pt_edges": [float(x) for x in hp.axes["pt"].edges],
            "per_pt": {k: [p[k] for p in per_pt] for k in ("n", "median", "half_iqr", "resolution")},
        }
    return out
