"""mplhep figures a physicist can read: ROC curves (with AUC and the statistical floor), score
distributions, confusion matrix, working-point efficiency with binomial intervals, soft-drop mass,
recomputed vs stored scores. Legends sit outside the data; the experiment label is configurable."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib as mpl

mpl.use("Agg")
import matplotlib.pyplot as plt
import mplhep as hep
import numpy as np

from .metrics import MIN_BACKGROUND_PASSING, discriminant, rejection_error, roc_curve

#: the text in the top-right corner of every figure; set it to what the data is (``--label``)
LABEL = "Simulation"
#: colours of curves that are not truth classes (discriminants, models): a colour-blind-safe cycle
COLOURS = ("#3f90da", "#ffa90e", "#bd1f01", "#94a4a2", "#832db6", "#a96b59", "#e76300", "#b9ac70")
#: one colour per truth class, the same in every plot (score, efficiency, mass): AK8 truth, AK4 flavours,
#: and JetClass's other class names
TRUTH_COLOURS = {
    "QCD": "#3f90da",
    "Tbqq": "#ffa90e",
    "Wqq": "#bd1f01",
    "Zqq": "#832db6",
    "Hbb": "#3a923a",
    "data": "#000000",
    "b": "#e76300",
    "c": "#a96b59",
    "uds": "#94a4a2",
    "g": "#b9ac70",
    "undef": "#717581",
    "Hcc": "#92dadd",
    "Hgg": "#6f4e37",
    "H4q": "#d67ab1",
    "Hqql": "#1b7c7d",
    "Tbl": "#8c8c00",
}
_OTHER_COLOURS = ("#5a5a5a", "#c49c94", "#7b4173", "#637939", "#bd9e39", "#ad494a", "#3182bd", "#e6550d")


def colour_of(name: str) -> str:
    """The colour of a truth class (or model class) by its name, fixed across plots; a name outside
    :data:`TRUTH_COLOURS` gets one of a few others, chosen by a stable hash of the name."""
    import zlib

    return TRUTH_COLOURS.get(name) or _OTHER_COLOURS[zlib.crc32(name.encode()) % len(_OTHER_COLOURS)]


def _style() -> None:
    plt.style.use(hep.style.ROOT)


def _corner(ax: Any, text: str = "") -> None:
    ax.set_title(f"{text}   {LABEL}" if text else LABEL, fontsize=12, loc="right")


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _legend_outside(ax: Any, **kw: Any) -> None:
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=11, frameon=False, **kw)


def roc_plot(
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    path: Path,
    *,
    title: str = "",
    colours: Mapping[str, str] | None = None,
) -> Path:
    """``curves``: name -> (is_signal, discriminant) per jet; drawn as :func:`roc_from_counts_plot`."""
    counts = {
        name: (*roc_curve(y, d)[:2], int((~np.asarray(y, bool)).sum())) for name, (y, d) in curves.items()
    }
    return roc_from_counts_plot(counts, path, title=title, colours=colours)


def signal_colours(signals: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """Discriminant -> the colour of its signal truth class, where it has one and no earlier discriminant
    took that colour (CvsL and CvsB share c: the second gets another colour)."""
    out: dict[str, str] = {}
    for name, truths in signals.items():
        colour = TRUTH_COLOURS.get(truths[0]) if len(truths) == 1 else None
        if colour is not None and colour not in out.values():
            out[name] = colour
    return out


def roc_from_counts_plot(
    curves: Mapping[str, tuple], path: Path, *, title: str = "", colours: Mapping[str, str] | None = None
) -> Path:
    """``curves``: name -> (eps_b, eps_s[, n_background]). The AUC is in the legend; 1/eps_b cannot exceed
    the number of background jets, drawn as a dotted floor per curve. ``colours``: name -> colour (e.g.
    its signal's truth colour); other curves take colours that are no truth class's."""
    _style()
    fig, ax = plt.subplots(figsize=(9, 6))
    for i, (name, c) in enumerate(curves.items()):
        eb, es = np.asarray(c[0]), np.asarray(c[1])
        auc = float(np.trapezoid(es, eb))
        ok = eb > 0
        colour = (colours or {}).get(name) or _OTHER_COLOURS[i % len(_OTHER_COLOURS)]
        ax.plot(es[ok], 1 / eb[ok], color=colour, label=f"{name} (AUC {auc:.3f})")
        if len(c) > 2 and c[2]:
            ax.axhline(
                c[2],
                color=colour,
                linestyle=":",
                linewidth=1,
                label=f"{name}: floor 1/N$_b$, N$_b$ = {int(c[2])}",
            )
    ax.set_yscale("log")
    ax.set_xlabel(r"Signal efficiency $\varepsilon_s$")
    ax.set_ylabel(r"Background rejection $1/\varepsilon_b$")
    ax.set_xlim(0, 1)
    ax.grid(alpha=0.3)
    _legend_outside(ax, title=title)
    _corner(ax)
    return _save(fig, path)


def score_plot(
    scores: np.ndarray, labels: np.ndarray, classes: Sequence[str], path: Path, definition: dict, name: str
) -> Path:
    _style()
    d = discriminant(scores, classes, definition)
    fig, ax = plt.subplots(figsize=(9, 6))
    bins = np.linspace(0, 1, 41)
    for i, c in enumerate(classes):
        sel = (labels == i) & np.isfinite(d)
        if sel.any():
            n, _ = np.histogram(d[sel], bins=bins)
            hep.histplot(
                n / n.sum() / np.diff(bins),
                bins,
                yerr=np.sqrt(n) / n.sum() / np.diff(bins),
                ax=ax,
                color=colour_of(c),
                label=f"true {c} ({int(sel.sum())} jets)",
            )
    ax.set_yscale("log")
    sig, bkg = "+".join(definition["signal"]), "+".join(definition.get("background") or [])
    ax.set_xlabel(f"{name} = {sig} / ({sig} + {bkg})" if bkg else f"{name} = {sig}", fontsize=14)
    ax.set_ylabel("1/N dN/dx")
    _legend_outside(ax)
    _corner(ax)
    return _save(fig, path)


def confusion_plot(cm: np.ndarray, classes: Sequence[str], path: Path, *, title: str = "") -> Path:
    """Rows normalised to 1 per true class; a true class without jets (a row of zeros) is grey and marked
    "no jets", not read as 0.00 of a row that sums to 1."""
    _style()
    fig, ax = plt.subplots(figsize=(8, 7))
    cm = np.asarray(cm, dtype=float)
    empty = ~(cm.sum(axis=1) > 0)
    cmap = mpl.colormaps["Blues"].with_extremes(bad="#d9d9d9")
    im = ax.imshow(
        np.ma.masked_array(cm, np.broadcast_to(empty[:, None], cm.shape)), cmap=cmap, vmin=0, vmax=1
    )
    for i in range(len(classes)):
        if empty[i]:
            ax.text(
                (len(classes) - 1) / 2, i, "no jets", ha="center", va="center", color="#555555", fontsize=12
            )
            continue
        for j in range(len(classes)):
            ax.text(
                j,
                i,
                f"{cm[i, j]:.2f}",
                ha="center",
                va="center",
                color="white" if cm[i, j] > 0.5 else "black",
                fontsize=12,
            )
    ax.set_xticks(range(len(classes)), classes, rotation=45 if len(classes) > 6 else 0)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("Predicted class (argmax)")
    ax.set_ylabel("True class")
    ax.set_title(title, fontsize=13, loc="left")
    bar = fig.colorbar(im, ax=ax)
    bar.set_label("Fraction of true class (row sums to 1)")
    return _save(fig, path)


def efficiency_plot(
    curves: Mapping[str, Mapping[str, tuple]], path: Path, xlabel: str, *, title: str = ""
) -> Path:
    """``curves``: working point -> truth class -> (edges, passed, total, low, high[, span]) with a binomial
    interval [low, high] and, per bin, the (low, high) range its jets are in (``analysis.filled_spans``:
    a merged bin is drawn there, not over its empty part). One panel per working point (shared axes), one
    colour per truth class (:func:`colour_of`); empty bins (no jets) are left out, bins where no jet passed
    are drawn as 68 % upper limits (arrows)."""
    _style()
    fig, axes = _panel_grid(len(curves))
    floor = 1.0
    for ax, (wp, per_wp) in zip(axes.flat, curves.items()):
        for t, (edges, passed, total, low, high, *span) in per_wp.items():
            extent = span[0] if span else (np.asarray(edges)[:-1], np.asarray(edges)[1:])
            floor = min(
                floor,
                _draw_efficiency(ax, extent, passed, total, low, high, colour=colour_of(t), label=t),
            )
        ax.set_title(wp, fontsize=13)
        ax.set_yscale("log")
        ax.tick_params(labelsize=11)
    for ax in axes.flat[len(curves) :]:
        ax.set_visible(False)
    axes[0, 0].set_ylim(max(floor / 2, 1e-5), 2)
    for ax in axes[-1]:
        ax.set_xlabel(xlabel, fontsize=13)
    for ax in axes[:, 0]:
        ax.set_ylabel("Efficiency", fontsize=13)
    _truth_legend(fig, axes)
    fig.suptitle(f"{title}   (arrows: 68 % upper limit where no jet passed)   {LABEL}", fontsize=12)
    fig.tight_layout(rect=(0, 0, 1.0 - 2.2 / fig.get_figwidth(), 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _panel_grid(n: int) -> tuple[Any, np.ndarray]:
    """Up to three panels a row, shared axes, room on the right for the legend."""
    ncols = min(3, n)
    nrows = -(-n // ncols)
    return plt.subplots(
        nrows, ncols, figsize=(4.2 * ncols + 2.2, 3.6 * nrows + 0.6), sharex=True, sharey=True, squeeze=False
    )


def _draw_efficiency(
    ax: Any,
    extent: tuple[np.ndarray, np.ndarray],
    passed: np.ndarray,
    total: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    *,
    colour: str,
    label: str,
) -> float:
    """One truth class's efficiency in one panel, each bin drawn over its ``extent`` (low, high); returns
    the lowest value drawn (at most 1), for the shared y range."""
    x_lo, x_hi = (np.asarray(e, dtype=float) for e in extent)
    centres, half = 0.5 * (x_lo + x_hi), 0.5 * (x_hi - x_lo)
    with np.errstate(invalid="ignore", divide="ignore"):
        eff = passed / total
    zero = (total > 0) & (passed <= 0)
    ok = (total > 0) & ~zero
    lowest = 1.0
    if ok.any():
        lowest = min(lowest, float(np.min(low[ok][low[ok] > 0], initial=1.0)))
        ax.errorbar(
            centres[ok],
            eff[ok],
            xerr=half[ok],
            yerr=[eff[ok] - low[ok], high[ok] - eff[ok]],
            fmt="o",
            color=colour,
            markersize=4,
            capsize=2,
            label=label,
        )
    if zero.any():
        lowest = min(lowest, float(np.min(high[zero])) / 3)
        ax.errorbar(
            centres[zero],
            high[zero],
            xerr=half[zero],
            yerr=0.4 * high[zero],
            uplims=True,
            fmt="none",
            color=colour,
            capsize=2,
        )
    return lowest


def _truth_legend(fig: Any, axes: np.ndarray) -> None:
    """One legend for all panels (a truth class drawn in several panels is listed once)."""
    handles = {h.get_label(): h for ax in axes.flat for h in ax.get_legend_handles_labels()[0]}
    fig.legend(
        list(handles.values()),
        list(handles),
        loc="upper left",
        bbox_to_anchor=(1.0 - 2.1 / fig.get_figwidth(), 0.9),
        frameon=False,
        fontsize=12,
        title="truth",
        title_fontsize=12,
    )


def mass_plot(
    per_truth: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    path: Path,
    *,
    xlabel: str = "Soft-drop mass [GeV]",
) -> Path:
    """``per_truth``: truth class -> (edges, sum of weights, sum of weights squared) per bin."""
    _style()
    fig, ax = plt.subplots(figsize=(9, 6))
    for t, (edges, w, w2) in per_truth.items():
        total = w.sum()
        if total <= 0:
            continue
        width = np.diff(edges)
        hep.histplot(
            w / total / width,
            edges,
            yerr=np.sqrt(w2) / total / width,
            ax=ax,
            color=colour_of(t),
            label=f"{t} ({total:.4g} jets)",
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel("1/N dN/dm [1/GeV]")
    _legend_outside(ax)
    _corner(ax)
    return _save(fig, path)


def stored_plot(values: np.ndarray, xedges: np.ndarray, yedges: np.ndarray, path: Path, name: str) -> Path:
    """Recomputed vs stored score (2-D), with the diagonal."""
    _style()
    fig, ax = plt.subplots(figsize=(8, 7))
    masked = np.ma.masked_equal(values.T, 0)
    mesh = ax.pcolormesh(xedges, yedges, masked, cmap="viridis")
    ax.plot([0, 1], [0, 1], color="red", linewidth=1, linestyle="--", label="equal")
    ax.set_xlabel(f"Recomputed {name}")
    ax.set_ylabel(f"Stored NanoAOD {name}")
    bar = fig.colorbar(mesh, ax=ax)
    bar.set_label("Jets (weighted)")
    ax.legend(loc="upper left", fontsize=11)
    _corner(ax)
    return _save(fig, path)


def after_lr_decay(rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Which rows of a learning curve come after the learning-rate decay: below half the peak rate, and after
    a row at it (the warm-up is low too, but before)."""
    lr = np.array([r.get("lr", 0.0) for r in rows], dtype=float)
    high = lr >= 0.5 * lr.max(initial=0.0)
    return ~high & np.maximum.accumulate(high)


def learning_curve_plot(
    curves: Mapping[str, Sequence[Mapping[str, Any]]],
    path: Path,
    *,
    discriminants: Sequence[str] = ("TvsQCD", "HbbvsQCD"),
    title: str = "",
) -> Path:
    """Learning curves (rows of ``curve.jsonl`` per model): accuracy and 1/eps_b at eps_s = 50 % of each
    discriminant vs distinct training jets. Error bars are binomial (accuracy and rejection); points after
    the learning-rate decay (a finished run's last) are stars; where the rejection is null (too few
    background jets passed), an open triangle marks its lower limit."""
    _style()
    panels = ["accuracy", *discriminants]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels) + 2.4, 4.6), squeeze=False)
    any_limit = False
    for i, (name, rows) in enumerate(curves.items()):
        colour = COLOURS[i % len(COLOURS)]
        n = np.array([r["jets"] for r in rows], dtype=float)
        decayed = after_lr_decay(rows)
        for ax, panel in zip(axes[0], panels):
            if panel == "accuracy":
                y, err = _accuracy(rows)
            else:
                y, err, limit, none = _rejection(rows, panel)
                ax.plot(n[none], limit[none], "^", color=colour, ms=8, mfc="none")  # a lower limit on R50
                any_limit |= bool(none.any())
            flat = ~decayed
            ax.errorbar(n[flat], y[flat], yerr=err[flat], fmt="o-", color=colour, ms=4, capsize=2, label=name)
            ax.errorbar(n[decayed], y[decayed], yerr=err[decayed], fmt="*", color=colour, ms=11, capsize=2)
    _learning_curve_axes(axes[0], panels)
    limits = "\nopen triangles: lower limits\n(too few background jets passed)" if any_limit else ""
    _legend_outside(axes[0, -1], title=f"stars: after LR decay{limits}", title_fontsize=11)
    _corner(axes[0, -1], title)
    return _save(fig, path)


def _accuracy(rows: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy per row and its binomial error."""
    y = np.array([r["accuracy"] for r in rows])
    return y, np.sqrt(y * (1 - y) / np.array([max(r["n_jets"], 1) for r in rows]))


def _rejection(
    rows: Sequence[Mapping[str, Any]], panel: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """R50 of discriminant ``panel`` per row (NaN where it is null: ``none``), its binomial error and the
    lower limit where it is null: n_background / MIN_BACKGROUND_PASSING for rows that carry ``rej50_err``
    (null below that many passing jets), n_background for older rows (null when none passed)."""
    figures = [r["discriminants"][panel] for r in rows]
    r50 = [f["rej50"] for f in figures]
    nb = np.array([f.get("n_background_effective", f["n_background"]) for f in figures], dtype=float)
    limit = np.array([n / MIN_BACKGROUND_PASSING if "rej50_err" in f else n for f, n in zip(figures, nb)])
    none = np.array([x is None for x in r50])
    y = np.array([np.nan if x is None else x for x in r50], dtype=float)
    return y, rejection_error(y, nb), limit, none


def _learning_curve_axes(axes: Sequence[Any], panels: Sequence[str]) -> None:
    for ax, panel in zip(axes, panels):
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(mpl.ticker.NullFormatter())
        ax.set_xlabel("Distinct training jets", fontsize=13)
        if panel == "accuracy":
            ax.set_ylabel("Accuracy (all classes)", fontsize=13)
        else:
            ax.set_yscale("log")
            ax.set_ylabel(f"{panel}: 1/$\\varepsilon_b$ at $\\varepsilon_s$ = 50 %", fontsize=13)
        ax.tick_params(which="both", labelsize=11)


def response_plot(
    summaries: Mapping[str, Mapping[str, Mapping[str, Any]]], path: Path, *, title: str = ""
) -> Path:
    """Median response (mass / true mass) and relative resolution (half-IQR / median) vs jet pT, per truth
    class: ``summaries`` maps a mass (the regressed one first, solid; then the soft-drop mass, dashed) to
    :func:`.analysis.response_summary`."""
    _style()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 9), sharex=True)
    styles = ("-", "--", ":", "-.")
    for (mass, summary), ls in zip(summaries.items(), styles):
        for t, s in summary.items():
            edges = np.asarray(s["pt_edges"])
            centres, half = 0.5 * (edges[1:] + edges[:-1]), 0.5 * np.diff(edges)
            per = s["per_pt"]
            filled = np.asarray(per["n"]) > 0
            label = f"{t}, {mass}: {_number(s['median'])}, {_number(s['resolution'])}"
            for ax, key in ((top, "median"), (bottom, "resolution")):
                y = np.asarray(per[key], dtype=float)
                ax.errorbar(centres[filled], y[filled], xerr=half[filled], ls=ls, marker="o", ms=5,
                            color=colour_of(t), label=label if ax is top else None)  # fmt: skip
    top.axhline(1.0, color="0.6", lw=1)
    top.set_ylabel("Median (mass / true mass)", fontsize=18)
    bottom.set_ylabel("Half-IQR / median", fontsize=18)
    bottom.set_xlabel(r"Jet $p_T$ [GeV]")
    bottom.set_ylim(bottom=0)
    kinds = ", ".join(
        f"{name} {word}" for name, word in zip(summaries, ("solid", "dashed", "dotted", "dash-dot"))
    )
    top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=11, frameon=False,
               title=f"{kinds}\ntruth, mass: median, resolution (all pT)", title_fontsize=11)  # fmt: skip
    _corner(top, title)
    return _save(fig, path)


def _number(x: float | None) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.3f}"


def response_plots(
    responses: Mapping[str, Mapping[str, Any]], folder: Path, *, title: str = ""
) -> dict[str, Path]:
    """``response_<mass>.png`` for each regressed mass of ``responses`` (metrics.json's ``response``: mass
    -> :func:`.analysis.response_summary`), beside the soft-drop mass where it is there."""
    paths = {}
    for name in (n for n in responses if n != "msoftdrop"):
        summaries = {name: responses[name]}
        if "msoftdrop" in responses:
            summaries["msoftdrop"] = responses["msoftdrop"]
        paths[f"response_{name}"] = response_plot(summaries, folder / f"response_{name}.png", title=title)
    return paths
