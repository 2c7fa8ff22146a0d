"""IRC safety through the whole product: JetClass-layout file -> features -> padding -> model -> scores.

Perturbed copies of the bundled top and QCD jets (collinear splits, soft photons; see
``jettagger_coffea.perturb``) are scored like the originals; the table gives max and median |delta score|
over all jets and classes, per backend and precision. One command regenerates docs/irc.md's tables:

    python benchmarks/irc_study.py --models part-irc part [--extra-model /path/to/old/part-irc]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import uproot

from jettagger_coffea.data import sample_path
from jettagger_coffea.perturb import perturb_jetclass
from jettagger_coffea.tagger import JetTagger

BACKENDS = (("onnx", "float32"), ("torch", "float32"), ("torch", "float64"))
SPLITS = (0.1, 0.3, 0.5)
EPSILONS = (1e-3, 1e-5, 1e-7, 1e-9)


def scores(model: str, path: Path, backend: str, dtype: str) -> np.ndarray:
    tagger = JetTagger(model, backend=backend, dtype=dtype)
    return tagger.score_jets(uproot.open(path)["tree"]).scores


def study(models: list[str], max_particles: int, min_particles: int, workdir: Path) -> list[str]:
    rows = []
    cases: list[tuple[str, dict]] = [(f"split {int(100 * f)} %", {"split_fraction": f}) for f in SPLITS]
    cases += [(f"2 soft photons, eps = {e:g}", {"n_soft": 2, "epsilon": e}) for e in EPSILONS]
    for process in ("tbqq", "qcd"):
        src = sample_path(process, "jetclass")
        base = perturb_jetclass(src, workdir / f"{process}.root", max_particles=max_particles)
        if min_particles:
            t = uproot.open(base)["tree"].arrays()
            t = t[t["npart"] >= min_particles]
            if len(t) == 0:
                continue
        for name, kw in cases:
            perturb_jetclass(
                src,
                workdir / f"{process}_{name.replace(' ', '_')}.root",
                seed=7,
                max_particles=max_particles,
                **kw,
            )
    header = "| model | perturbation | " + " | ".join(f"{b} {d}: max / median" for b, d in BACKENDS) + " |"
    rows += [header, "|" + " --- |" * (2 + len(BACKENDS))]
    for model in models:
        for name, _ in cases:
            cells = []
            for backend, dtype in BACKENDS:
                diffs = []
                for process in ("tbqq", "qcd"):
                    a = scores(model, workdir / f"{process}.root", backend, dtype)
                    b = scores(model, workdir / f"{process}_{name.replace(' ', '_')}.root", backend, dtype)
                    keep = np.ones(len(a), bool)
                    if min_particles:
                        n = uproot.open(workdir / f"{process}.root")["tree"]["npart"].array(library="np")
                        keep = n >= min_particles
                    diffs.append(np.abs(a - b)[keep].max(axis=1))
                d = np.concatenate(diffs)
                cells.append(f"{d.max():.1e} / {np.median(d):.1e}")
            rows.append(f"| {Path(model).name} | {name} | " + " | ".join(cells) + " |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["part-irc", "part"])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print("Jets with at most 90 particles (bundled tbqq + qcd):\n")
        print("\n".join(study(args.models, 90, 0, Path(tmp))))
        print("\nJets with 100-128 particles (a 30 % split pushes particles past the 128 truncation):\n")
        print("\n".join(study(args.models, 128, 100, Path(tmp))))


if __name__ == "__main__":
    main()
