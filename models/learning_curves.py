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

from jettagger_coffea.plotting import learning_curve_plot

ORDER = ("pfn", "particlenet-lite", "particlenet", "part", "part-irc")


def load(runs: Path) -> dict[str, list[dict]]:
    found = {p.parent.name: p for p in runs.glob("*/curve.jsonl")}
    return {
        name: [json.loads(line) for line in found[name].read_text().splitlines()]
        for name in sorted(found, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER))
    }


def power_law(rows: list[dict], disc: str, min_jets: float) -> tuple[float, float] | None:
    """Fit ln R50 = a + b ln N over the points at the flat learning rate (not the last) with N >= min_jets."""
    pts = [(r["jets"], r["discriminants"][disc]["rej50"]) for r in rows[:-1] if r["jets"] >= min_jets]
    if len(pts) < 3:
        return None
    b, a = np.polyfit(np.log([p[0] for p in pts]), np.log([p[1] for p in pts]), 1)
    return float(a), float(b)


def crossing(lead: tuple[float, float], lag: tuple[float, float]) -> float | None:
    """Distinct jets where the lagging power law overtakes the leading one (None: it never does)."""
    (a1, b1), (a2, b2) = lead, lag
    return math.exp((a1 - a2) / (b2 - b1)) if b2 > b1 else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=Path, default=Path("runs/curve"))
    ap.add_argument("--figure", type=Path, default=Path("docs/figures/learning_curves.png"))
    ap.add_argument("--min-jets", type=float, default=4000, help="fit range start (after the warm-up)")
    args = ap.parse_args()
    curves = load(args.runs)
    learning_curve_plot(curves, args.figure, title="5 classes, one pass")
    print("| model | distinct jets | accuracy | AUC (macro) | top vs QCD AUC / R50 | H→bb vs QCD AUC / R50 |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, rows in curves.items():
        for r in rows[-3:]:
            t, h = r["discriminants"]["TvsQCD"], r["discriminants"]["HbbvsQCD"]
            print(
                f"| {name} | {r['jets']} | {r['accuracy']:.3f} | {r['auc_macro']:.4f} | "
                f"{t['auc']:.4f} / {t['rej50']:.0f} | {h['auc']:.4f} / {h['rej50']:.0f} |"
            )
    print(f"\nPower laws R50 ∝ N^b (flat-LR points, N >= {args.min_jets:.0f}) and crossings:")
    for disc in ("TvsQCD", "HbbvsQCD"):
        fits = {n: power_law(rows, disc, args.min_jets) for n, rows in curves.items()}
        for n, f in fits.items():
            if f:
                print(f"  {disc} {n}: b = {f[1]:.2f}")
        for lag, lead in (("part", "particlenet-lite"), ("part", "pfn"), ("particlenet-lite", "pfn")):
            if fits.get(lag) and fits.get(lead):
                ends = {n: curves[n][-2]["discriminants"][disc]["rej50"] for n in (lag, lead)}
                if ends[lag] < ends[lead]:
                    x = crossing(fits[lead], fits[lag])  # type: ignore[arg-type]
                    where = f"{x:.3g} distinct jets" if x else "never (not steeper)"
                    print(f"  {disc}: {lag} trails {lead}; power laws cross at {where}")


if __name__ == "__main__":
    main()
