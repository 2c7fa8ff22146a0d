"""IRC safety through the whole product: JetClass-layout file -> features -> padding -> model -> scores.

Perturbed copies of the bundled top and QCD jets (30 % collinear splits, two soft photons at epsilon x the
jet energy; ``jettagger_coffea.perturb``) are scored like the originals; each cell is max / median
|delta score| over all jets and classes. Regenerates the tables of docs/irc.md:

    python benchmarks/irc_study.py                     # part-irc and part, onnx float32, torch float32 / 64
    python benchmarks/irc_study.py --models part-irc /path/to/an/older/bundle
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from jettagger_coffea.data import sample_path
from jettagger_coffea.perturb import irc_figures

BACKENDS = (("onnx", "float32"), ("torch", "float32"), ("torch", "float64"))


def table(models: list[str], max_particles: int, workdir: Path, truncated: bool = False) -> list[str]:
    sources = [sample_path(p, "jetclass") for p in ("tbqq", "qcd")]
    rows = [
        "| model | perturbation | " + " | ".join(f"{b} {d}" for b, d in BACKENDS) + " |",
        "|" + " --- |" * (2 + len(BACKENDS)),
    ]
    for model in models:
        figures = [
            irc_figures(
                model, sources, workdir, max_particles=max_particles, backend=b, dtype=d, truncated=truncated
            )
            for b, d in BACKENDS
        ]
        for case in figures[0]:
            cells = [f"{f[case]['max']:.1e} / {f[case]['median']:.1e} ({f[case]['n_jets']})" for f in figures]
            rows.append(f"| {Path(model).name} | {case} | " + " | ".join(cells) + " |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["part-irc", "part"], help="bundle names or folders")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print("Jets with at most 90 particles (bundled tbqq + qcd), max / median |delta score|:\n")
        print("\n".join(table(args.models, 90, Path(tmp))))
        print(
            "\nJets up to 128 particles whose perturbed copy exceeds 128 (the truncation drops particles):\n"
        )
        print("\n".join(table(args.models[:1], 128, Path(tmp), truncated=True)))


if __name__ == "__main__":
    main()
