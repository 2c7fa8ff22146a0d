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
    e = float(np.interp(eps_s, es, eb))
    return float("inf") if e <= 0 else 1.0 / e


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


def background_classes(classes: Sequence[str], definition: Mapping[str, Sequence[str]]) -> list[str]:
    """The classes a discriminant is tested against: its background, or every other class."""
    return list(definition.get("background") or [c for c in classes if c not in definition["signal"]])


def summary(
    labels: np.ndarray,
    scores: np.ndarray,
    classes: Sequence[str],
    discriminants: dict[str, dict[str, list[str]]] | None = None,
) -> dict:
    """The seeds' table: accuracy, AUC (one-vs-rest), 1/eps_b at 50 % and 30 % per discriminant."""
    out: dict = {
        "n_jets": len(labels),
        "accuracy": accuracy(labels, scores),
        "auc_ovr": {
            c: auc(labels == i, scores[:, i])
            for i, c in enumerate(classes)
            if np.any(labels == i) and np.any(labels != i)
        },
    }
    out["auc_macro"] = float(np.mean(list(out["auc_ovr"].values())))
    out["confusion"] = confusion_matrix(labels, scores, len(classes)).tolist()
    out["discriminants"] = {}
    for name, d in (discriminants or {}).items():
        idx = {c: i for i, c in enumerate(classes)}
        is_sig = np.isin(labels, [idx[c] for c in d["signal"]])
        is_bkg = np.isin(labels, [idx[c] for c in background_classes(classes, d)])
        keep = is_sig | is_bkg
        if not (is_sig.any() and is_bkg.any()):
            continue
        disc = discriminant(scores, classes, d)[keep]
        y = is_sig[keep]
        out["discriminants"][name] = {
            "auc": auc(y, disc),
            "rej50": rejection(y, disc, 0.5),
            "rej30": rejection(y, disc, 0.3),
            "rej99": rejection(y, disc, 0.99),
            "rej995": rejection(y, disc, 0.995),
        }
    return out


def roc_from_hist(signal_counts: np.ndarray, background_counts: np.ndarray):
    """Binned ROC (eps_b, eps_s) from discriminant histograms, cutting at every bin edge from the top."""
    s = np.r_[0.0, np.cumsum(np.asarray(signal_counts, dtype=np.float64)[::-1])]
    b = np.r_[0.0, np.cumsum(np.asarray(background_counts, dtype=np.float64)[::-1])]
    return b / max(b[-1], 1e-300), s / max(s[-1], 1e-300)


def rejection_from_roc(eps_b: np.ndarray, eps_s: np.ndarray, at: float) -> float:
    e = float(np.interp(at, eps_s, eps_b))
    return float("inf") if e <= 0 else 1.0 / e
