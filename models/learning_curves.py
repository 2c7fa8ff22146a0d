"""Learning curves of the 5-class networks: one pass over the same training jets, validation metrics at
log-spaced counts of distinct jets (``jettagger train --curve-points``; the runs of
``models/train_models.sh`` with ``ONLY=curves``). Writes docs/figures/learning_curves.png and prints the
markdown table of docs/results.md, with a power-law extrapolation of where an inverted pair would cross."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from jettagger_coffea.metrics import rejection_error
from jettagger_coffea.plotting import after_lr_decay, learning_curve_plot

ORDER = ("pfn", "particlenet-lite", "particlenet", "part", "part-irc")
#: (should lead, should trail) in the seeds' ordering ParT >= ParticleNet(-Lite) >= PFN
SEEDS_PAIRS = (
    ("part", "particlenet"),
    ("part", "particlenet-lite"),
    ("particlenet", "pfn"),
    ("particlenet-lite", "pfn"),
    ("part", "pfn"),
)


def load(runs: Path) -> dict[str, list[dict]]:
    found = {p.parent.name: p for p in runs.glob("*/curve.jsonl")}
    return {
        name: [json.loads(line) for line in found[name].read_text().splitlines()]
        for name in sorted(found, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER))
    }


def flat_rows(rows: list[dict], min_jets: float = 0) -> list[dict]:
    """The points before the learning-rate decay with N >= min_jets (min_jets: past the warm-up)."""
    return [r for r, late in zip(rows, after_lr_decay(rows)) if not late and r["jets"] >= min_jets]


def power_law(rows: list[dict], disc: str, min_jets: float) -> tuple[float, float] | None:
    """Fit ln R50 = a + b ln N over the flat-LR points with N >= min_jets."""
    flat = flat_rows(rows, min_jets)
    pts = [(r["jets"], r["discriminants"][disc]["rej50"]) for r in flat if r["discriminants"][disc]["rej50"]]
    if len(pts) < 3:
        return None
    b, a = np.polyfit(np.log([p[0] for p in pts]), np.log([p[1] for p in pts]), 1)
    return float(a), float(b)


def crossing(lead: tuple[float, float], lag: tuple[float, float]) -> float | None:
    """Distinct jets where the lagging power law overtakes the leading one (None: it never does)."""
    (a1, b1), (a2, b2) = lead, lag
    return math.exp((a1 - a2) / (b2 - b1)) if b2 > b1 else None


def r50(d: dict) -> str:
    """R50, or its lower limit where no background jet passed (metrics.json's null)."""
    return f"> {d['n_background']:.0f}" if d["rej50"] is None else f"{d['rej50']:.0f}"


def rejection_cell(d: dict) -> str:
    """R50 ± its statistical error, 1/sqrt(background jets passing)."""
    r, nb = d["rej50"], d["n_background"]
    return r50(d) if r is None else f"{r:.0f} ± {rejection_error(r, nb):.0f}"


def endpoints(folder: Path) -> None:
    """The table of the runs' models on the test set: ``<folder>/<model>/metrics.json`` of ``jettagger
    evaluate``. Accuracy is class-balanced (the mean of the confusion matrix's diagonal), since the extra QCD
    test jets that make the rejections precise would otherwise dominate it."""
    print(
        "| model | test jets (QCD) | balanced accuracy | AUC (macro) | "
        + " | ".join(f"{label} vs QCD AUC / R50" for label in ("W", "Z", "top", "H→bb"))
        + " |"
    )
    print("| --- " * 8 + "|")
    for m in sorted(folder.glob("*/metrics.json"), key=lambda p: ORDER.index(p.parent.name)):
        doc = json.loads(m.read_text())
        d = doc["discriminants"]
        cells = [
            f"{d[k]['auc']:.4f} / {rejection_cell(d[k])}" for k in ("WvsQCD", "ZvsQCD", "TvsQCD", "HbbvsQCD")
        ]
        nq = d["TvsQCD"]["n_background"]
        balanced = float(np.mean(np.diag(doc["confusion"])))
        print(
            f"| {m.parent.name} | {doc['n_jets']:.0f} ({nq:.0f}) | {balanced:.3f} | {doc['auc_macro']:.4f} | "
            + " | ".join(cells)
            + " |"
        )


def compare(curves: dict[str, list[dict]], a: str, b: str) -> None:
    """Two runs on the same jets, point by point (the fine-tuning study: fine-tuned vs from scratch): macro
    AUC and top / H->bb R50 of each at every count of distinct jets, and by how much ``a`` wins."""
    pair = f"{a} / {b}"
    print(f"| distinct jets | AUC (macro) {pair} | top R50 {pair} | H→bb R50 {pair} | {a} wins by (AUC) |")
    print("| --- | --- | --- | --- | --- |")
    for ra, rb in zip(curves[a], curves[b]):
        assert ra["jets"] == rb["jets"], "the runs' curve points must be the same counts of jets"
        cells = []
        for disc in ("TvsQCD", "HbbvsQCD"):
            da, db = ra["discriminants"][disc], rb["discriminants"][disc]
            cells.append(f"{r50(da)} / {r50(db)}")
        gain = ra["auc_macro"] - rb["auc_macro"]
        aucs = f"{ra['auc_macro']:.4f} / {rb['auc_macro']:.4f}"
        print(f"| {ra['jets']} | {aucs} | {' | '.join(cells)} | {gain:+.4f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=Path, default=Path("runs/curve"))
    ap.add_argument("--figure", type=Path, default=Path("docs/figures/learning_curves.png"))
    ap.add_argument("--min-jets", type=float, default=4000, help="fit range start (after the warm-up)")
    ap.add_argument("--endpoints", type=Path, help="folder of `jettagger evaluate` outputs, one per model")
    ap.add_argument("--compare", nargs=2, metavar=("A", "B"), help="two runs point by point (A vs B)")
    args = ap.parse_args()
    if args.endpoints:
        endpoints(args.endpoints)
        return
    curves = load(args.runs)
    learning_curve_plot(curves, args.figure, title="5 classes, one pass, same jets")
    if args.compare:
        compare(curves, *args.compare)
        return
    print("| model | distinct jets | accuracy | AUC (macro) | top vs QCD AUC / R50 | H→bb vs QCD AUC / R50 |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, rows in curves.items():
        for r in rows[-3:]:
            t, h = r["discriminants"]["TvsQCD"], r["discriminants"]["HbbvsQCD"]
            print(
                f"| {name} | {r['jets']} | {r['accuracy']:.3f} | {r['auc_macro']:.4f} | "
                f"{t['auc']:.4f} / {r50(t)} | {h['auc']:.4f} / {r50(h)} |"
            )
    print(f"\nPower laws R50 ∝ N^b (flat-LR points, N >= {args.min_jets:.0f}) and crossings:")
    for disc in ("TvsQCD", "HbbvsQCD"):
        fits = {n: power_law(rows, disc, args.min_jets) for n, rows in curves.items()}
        for n, f in fits.items():
            if f:
                print(f"  {disc} {n}: b = {f[1]:.2f}")
        for lag, lead in SEEDS_PAIRS:
            if fits.get(lag) and fits.get(lead):
                ends = {n: flat_rows(curves[n])[-1]["discriminants"][disc]["rej50"] for n in (lag, lead)}
                if None not in ends.values() and ends[lag] < ends[lead]:
                    x = crossing(fits[lead], fits[lag])  # type: ignore[arg-type]
                    where = f"{x:.3g} distinct jets" if x else "never (not steeper)"
                    print(f"  {disc}: {lag} trails {lead}; power laws cross at {where}")


if __name__ == "__main__":
    main()
