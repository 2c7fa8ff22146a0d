"""mplhep figures: ROC curves, score distributions, confusion matrix, working-point efficiency vs pT."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib as mpl

mpl.use("Agg")
import matplotlib.pyplot as plt
import mplhep as hep
import numpy as np

from .metrics import discriminant, roc_curve

LABEL = "Pythia 8 + FastJet, 13 TeV"


def _style() -> None:
    plt.style.use(hep.style.ROOT)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def roc_plot(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str = "") -> Path:
    """``curves``: name -> (is_signal, discriminant) per jet; drawn as :func:`roc_from_counts_plot`."""
    return roc_from_counts_plot({name: roc_curve(y, d)[:2] for name, (y, d) in curves.items()}, path, title)


def score_plot(scores: np.ndarray, labels: np.ndarray, classes: Sequence[str], path: Path,
               definition: dict, name: str) -> Path:
    _style()
    d = discriminant(scores, classes, definition)
    fig, ax = plt.subplots(figsize=(7, 6))
    bins = np.linspace(0, 1, 41)
    for i, c in enumerate(classes):
        sel = (labels == i) & np.isfinite(d)
        if sel.any():
            ax.hist(d[sel], bins=bins, histtype="step", density=True, label=f"true {c}", linewidth=1.5)
    ax.set_yscale("log")
    sig, bkg = "+".join(definition["signal"]), "+".join(definition.get("background") or [])
    ax.set_xlabel(f"{name} = {sig} / ({sig} + {bkg})" if bkg else f"{name} = {sig}")
    ax.set_ylabel("Normalised jets")
    ax.legend(fontsize=12)
    ax.set_title(LABEL, fontsize=12, loc="right")
    return _save(fig, path)


def confusion_plot(cm: np.ndarray, classes: Sequence[str], path: Path, title: str = "") -> Path:
    _style()
    fig, ax = plt.subplots(figsize=(7, 6))
    im = ax.imshow(cm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{cm[i, j]:.2f}", ha="center", va="center", color="white" if cm[i, j] > 0.5 else "black",
                    fontsize=12)
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("Predicted")
    ax.set_ylabel("True")
    ax.set_title(title, fontsize=13)
    fig.colorbar(im, ax=ax)
    return _save(fig, path)


def efficiency_plot(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, xlabel: str,
                    title: str = "") -> Path:
    """``curves``: label -> (bin edges, efficiency per bin)."""
    _style()
    fig, ax = plt.subplots(figsize=(7, 6))
    for name, (edges, eff) in curves.items():
        centres = 0.5 * (edges[1:] + edges[:-1])
        ax.errorbar(centres, eff, xerr=np.diff(edges) / 2, fmt="o", label=name, markersize=4)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("Efficiency (pass / total)")
    ax.legend(fontsize=10, title=title)
    ax.set_title(LABEL, fontsize=12, loc="right")
    return _save(fig, path)


def roc_from_counts_plot(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str = "") -> Path:
    """``curves``: name -> (eps_b, eps_s) from binned discriminants."""
    _style()
    fig, ax = plt.subplots(figsize=(7, 6))
    for name, (eb, es) in curves.items():
        ok = eb > 0
        ax.plot(es[ok], 1 / eb[ok], label=name)
    ax.set_yscale("log")
    ax.set_xlabel(r"Signal efficiency $\varepsilon_s$")
    ax.set_ylabel(r"Background rejection $1/\varepsilon_b$")
    ax.set_xlim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(title=title, fontsize=12)
    ax.set_title(LABEL, fontsize=12, loc="right")
    return _save(fig, path)


def mass_plot(h, path: Path) -> Path:
    """Soft-drop mass per truth label (all datasets)."""
    from .generate.settings import JETCLASS_LABELS

    _style()
    fig, ax = plt.subplots(figsize=(7, 6))
    ht = h.project("truth", "msd")
    for i, t in enumerate(ht.axes["truth"]):
        name = JETCLASS_LABELS[t] if 0 <= t < len(JETCLASS_LABELS) else "unmatched"
        hep.histplot(ht[i, :], ax=ax, label=name, density=True)
    ax.set_xlabel("Soft-drop mass [GeV]")
    ax.set_ylabel("Normalised jets")
    ax.legend(fontsize=12)
    ax.set_title(LABEL, fontsize=12, loc="right")
    return _save(fig, path)
