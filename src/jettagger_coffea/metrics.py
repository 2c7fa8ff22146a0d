"""ROC, AUC, background rejection, accuracy and confusion matrices (numpy only)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def roc_curve(is_signal: np.ndarray, score: np.ndarray, weight: np.ndarray | None = None):
    """(eps_b, eps_s, thresholds) for ``score >= threshold``, thresholds descending; ties handled."""
    is_signal = np.asarray(is_signal, dtype=bool)
    score = np.asarray(score, dtype=np.float64)
    w = np.ones_like(score) if weight is None else np.asarray(weight, dtype=np.float64)
    ok = np.isfinite(score)
    is_signal, score, w = is_signal[ok], score[ok], w[ok]
    order = np.argsort(-score, kind="stable")
    s, y, w = score[order], is_signal[order], w[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each distinct score
    tps = np.cumsum(w * y)[last]
    fps = np.cumsum(w * ~y)[last]
    tps, fps = np.r_[0.0, tps], np.r_[0.0, fps]
    return fps / max(fps[-1], 1e-300), tps / max(tps[-1], 1e-300), np.r_[np.inf, s[last]]


def auc(is_signal: np.ndarray, score: np.ndarray, weight: np.ndarray | None = None) -> float:
    eps_b, eps_s, _ = roc_curve(is_signal, score, weight)
    return float(np.trapezoid(eps_s, eps_b))


def rejection(is_signal: np.ndarray, score: np.ndarray, eps_s: float) -> float:
    """1 / eps_b at signal efficiency ``eps_s`` (linear interpolation on the ROC curve)."""
    eb, es, _ = roc_curve(is_signal, score)
    return rejection_from_roc(eb, es, eps_s)


def accuracy(labels: np.ndarray, scores: np.ndarray) -> float:
    ok = np.all(np.isfinite(scores), axis=1)
    return float(np.mean(np.argmax(scores[ok], axis=1) == labels[ok]))


def confusion_matrix(
    labels: np.ndarray, scores: np.ndarray, n_classes: int, normalize: bool = True
) -> np.ndarray:
    """Rows: true class, columns: predicted (argmax); rows sum to 1 when ``normalize``."""
    ok = np.all(np.isfinite(scores), axis=1)
    cm = np.zeros((n_classes, n_classes))
    np.add.at(cm, (labels[ok], np.argmax(scores[ok], axis=1)), 1)
    if normalize:
        cm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    return cm


def discriminant(scores: Any, classes: Sequence[str], definition: Mapping[str, Sequence[str]]) -> Any:
    """The one discriminant: sum of the signal classes' scores over signal + background; with no background
    listed, the signal sum itself (e.g. NanoAOD's ``QCD = sum of QCD_*``). numpy or awkward,
    [..., classes]."""
    idx = {c: i for i, c in enumerate(classes)}
    s = sum(scores[..., idx[c]] for c in definition["signal"])
    background = definition.get("background") or []
    if not background:
        return s
    b = sum(scores[..., idx[c]] for c in background)
    with np.errstate(invalid="ignore", divide="ignore"):
        return s / (s + b)


# -- which jets a discriminant separates: the one rule (metrics, working points, training's curves) --------
def unknown_classes(classes: Sequence[str], definition: Mapping[str, Sequence[str]]) -> list[str]:
    """The classes a discriminant names that a model does not have (none: the model can compute it)."""
    named = [*(definition.get("signal") or []), *(definition.get("background") or [])]
    return [c for c in named if c not in classes]


def background_classes(classes: Sequence[str], definition: Mapping[str, Sequence[str]]) -> list[str]:
    """The classes a discriminant is tested against: its background, or every other class."""
    return list(definition.get("background") or [c for c in classes if c not in definition["signal"]])


def signal_background(
    labels: np.ndarray, classes: Sequence[str], definition: Mapping[str, Sequence[str]]
) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the signal jets (true class among the signal classes) and of the background jets (among
    :func:`background_classes`, never a signal jet) of a discriminant."""
    idx = {c: i for i, c in enumerate(classes)}
    is_sig = np.isin(labels, [idx[c] for c in definition["signal"]])
    is_bkg = np.isin(labels, [idx[c] for c in background_classes(classes, definition)]) & ~is_sig
    return is_sig, is_bkg


#: Version of the metrics.json layout that ``evaluate`` (per jet) and ``run`` (binned) both write.
SCHEMA = "jettagger-metrics/1"
#: 1/eps_b is reported at these signal efficiencies (the seeds' 50 % and 30 %, and tight tagging points).
REJECTION_POINTS = {"rej50": 0.5, "rej30": 0.3, "rej99": 0.99, "rej995": 0.995}


#: 1/eps_b is reported where at least this many (effective) background jets pass, else null with the
#: reason: from k passing jets it is known to ~1/sqrt(k) (10: ~30 %), and R50 = 500 from 2 jets is noise
MIN_BACKGROUND_PASSING = 10


class Null:
    """A value metrics.json writes as null, with ``reason`` in its ``null_reasons``."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"Null({self.reason!r})"


def figures_from_roc(
    eps_b: np.ndarray,
    eps_s: np.ndarray,
    n_signal: float,
    n_background: float,
    n_background_effective: float | None = None,
) -> dict:
    """The one summary of a discriminant, whether its ROC comes from jets or from histograms: AUC, 1/eps_b
    at :data:`REJECTION_POINTS` with its binomial error (``<point>_err``; null below
    :data:`MIN_BACKGROUND_PASSING` passing background jets), and the jets behind it.
    ``n_background_effective``: (sum w)^2 / sum w^2 of weighted background jets (default: n_background)."""
    n_eff = float(n_background if n_background_effective is None else n_background_effective)
    out: dict[str, Any] = {"auc": float(np.trapezoid(eps_s, eps_b))}
    for key, at in REJECTION_POINTS.items():
        out[key], out[f"{key}_err"] = rejection_point(eps_b, eps_s, at, n_eff)
    return out | {
        "n_signal": float(n_signal),
        "n_background": float(n_background),
        "n_background_effective": n_eff,
    }


def rejection_point(eps_b: np.ndarray, eps_s: np.ndarray, at: float, n_effective: float) -> tuple[Any, Any]:
    """(1/eps_b, its binomial error) at signal efficiency ``at``, or the same :class:`Null` twice where
    fewer than :data:`MIN_BACKGROUND_PASSING` background jets pass."""
    e = float(np.interp(at, eps_s, eps_b))
    passing = e * n_effective
    if passing < MIN_BACKGROUND_PASSING:
        bound = n_effective / MIN_BACKGROUND_PASSING
        null = Null(
            f"{passing:.3g} background jets pass at eps_s = {at:g}, fewer than {MIN_BACKGROUND_PASSING}: "
            f"1/eps_b is not measured (it is above ~{bound:.4g})"
        )
        return null, null
    rejection = 1.0 / e
    return rejection, float(rejection_error(rejection, n_effective))


def metrics_document(
    method: str,
    model: str,
    classes: Sequence[str],
    discriminants: dict[str, dict],
    confusion_counts: np.ndarray | None,
    n_jets: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """metrics.json as both front ends write it: ``method`` says how the ROCs were made ("per-jet" or
    "binned"); confusion rows are true classes (normalised), accuracy from the same counts; ``n_jets``: the
    jets with scores (default: those of the confusion matrix; a model without classes has none)."""
    doc: dict[str, Any] = {"schema": SCHEMA, "method": method, "model": model, "classes": list(classes)}
    if confusion_counts is not None and confusion_counts.sum() > 0:
        cm = np.asarray(confusion_counts, dtype=np.float64)
        doc["n_jets"] = float(cm.sum())
        doc["accuracy"] = float(np.trace(cm) / cm.sum())
        doc["confusion"] = (cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)).tolist()
    else:
        doc |= {"n_jets": 0.0, "accuracy": float("nan"), "confusion": None}
    if n_jets is not None:
        doc["n_jets"] = float(n_jets)
    doc["discriminants"] = discriminants
    return strict_json(doc | extra)


def summary(
    labels: np.ndarray,
    scores: np.ndarray,
    classes: Sequence[str],
    discriminants: dict[str, dict[str, list[str]]] | None = None,
    model: str = "",
) -> dict:
    """Per-jet front end: the seeds' table (accuracy, one-vs-rest AUC, 1/eps_b per discriminant)."""
    figures = {}
    for name, d in (discriminants or {}).items():
        is_sig, is_bkg = signal_background(labels, classes, d)
        keep = is_sig | is_bkg
        if not (is_sig.any() and is_bkg.any()):
            continue
        eb, es, _ = roc_curve(is_sig[keep], discriminant(scores, classes, d)[keep])
        figures[name] = figures_from_roc(eb, es, is_sig.sum(), is_bkg.sum())
    auc_ovr = {
        c: auc(labels == i, scores[:, i])
        for i, c in enumerate(classes)
        if np.any(labels == i) and np.any(labels != i)
    }
    return metrics_document(
        "per-jet",
        model,
        classes,
        figures,
        confusion_matrix(labels, scores, len(classes), normalize=False),
        n_jets=len(labels),
        n_without_scores=int(np.sum(~np.all(np.isfinite(scores), axis=1))),  # jets with no constituents
        auc_ovr=auc_ovr,
        auc_macro=float(np.mean(list(auc_ovr.values()))) if auc_ovr else float("nan"),
    )


def roc_from_hist(signal_counts: np.ndarray, background_counts: np.ndarray):
    """Binned ROC (eps_b, eps_s) from discriminant histograms, cutting at every bin edge from the top."""
    s = np.r_[0.0, np.cumsum(np.asarray(signal_counts, dtype=np.float64)[::-1])]
    b = np.r_[0.0, np.cumsum(np.asarray(background_counts, dtype=np.float64)[::-1])]
    return b / max(b[-1], 1e-300), s / max(s[-1], 1e-300)


def rejection_error(rejection: Any, n_background: Any) -> Any:
    """Binomial error of R = 1/eps_b from n_b (effective) background jets: sigma(eps_b) = sqrt(eps_b (1 -
    eps_b) / n_b) propagated, R sqrt((1 - 1/R) / k) with k = n_b / R the jets that pass (at least 1)."""
    rejection = np.asarray(rejection, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        k = np.maximum(np.asarray(n_background, dtype=np.float64) / rejection, 1)
        return rejection * np.sqrt(np.maximum(1 - 1 / rejection, 0) / k)


def rejection_from_roc(eps_b: np.ndarray, eps_s: np.ndarray, at: float) -> float:
    e = float(np.interp(at, eps_s, eps_b))
    return float("inf") if e <= 0 else 1.0 / e


def strict_json(obj: Any) -> Any:
    """Non-finite numbers -> null, each with its reason in ``null_reasons`` (strict JSON for other tools)."""
    reasons: dict[str, str] = {}

    def walk(x: Any, path: str) -> Any:
        if isinstance(x, dict):
            return {k: walk(v, f"{path}.{k}" if path else str(k)) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [walk(v, f"{path}[{i}]") for i, v in enumerate(x)]
        if isinstance(x, Null):
            reasons[path] = x.reason
            return None
        if isinstance(x, (float, np.floating)) and not np.isfinite(x):
            reasons[path] = (
                "unbounded: no background jet is left at this signal efficiency"
                if x > 0
                else "undefined (no jets)"
            )
            return None
        if isinstance(x, np.generic):
            return x.item()
        return x

    out = walk(obj, "")
    if reasons and isinstance(out, dict):
        out["null_reasons"] = reasons
    return out
