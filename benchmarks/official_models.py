"""The official JetClass ParticleNet models (kin, kinpid, full) on the project's generated jets.

The three models differ only in their inputs: kinpid adds charge and particle ID to kin, full adds the
four track impact-parameter inputs to kinpid. If the generator's tracks are distributed as JetClass's
Delphes detector makes them, full is at least as good as kinpid on our jets; if not, full collapses.
Regenerates the table of docs/generator.md:

    jettagger generate --process qcd wqq zqq tbqq hbb --njets 1500 --seed 77 --format jetclass \
        --jobs 2 -o /tmp/official-jets
    python benchmarks/official_models.py --jets /tmp/official-jets --weights /path/to/ParT/models

``--weights`` holds ``ParticleNet_{kin,kinpid,full}.pt`` (jet-universe/particle_transformer, models/);
the data configs are read from ``../shared/reference/jetclass`` (or ``--configs``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import uproot

from jettagger_coffea.metrics import auc, discriminant
from jettagger_coffea.tagger import JetTagger
from jettagger_coffea.weaver import import_weaver

SIGNALS = {"tbqq": "Tbqq", "wqq": "Wqq", "zqq": "Zqq", "hbb": "Hbb"}
MODELS = ("kin", "kinpid", "full")


def scores_of(model: str, weights: Path, configs: Path, jets: Path, workdir: Path) -> dict[str, np.ndarray]:
    bundle = import_weaver(
        configs / f"JetClass_{model}.yaml",
        workdir / model,
        network="particlenet",
        checkpoint=weights / f"ParticleNet_{model}.pt",
    )
    tagger = JetTagger(bundle)
    out = {}
    for process in ("qcd", *SIGNALS):
        path = jets / f"{process}_jetclass.root"
        if path.exists():
            with uproot.open(path) as f:
                out[process] = tagger.score_jets(f["tree"]).scores
    return out


def main() -> None:
    here = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jets", type=Path, required=True, help="folder with <process>_jetclass.root")
    parser.add_argument("--weights", type=Path, required=True, help="folder with ParticleNet_<inputs>.pt")
    parser.add_argument("--configs", type=Path, default=here.parent.parent / "shared/reference/jetclass")
    parser.add_argument("--output", type=Path, default=None, help="write the AUCs as JSON here")
    args = parser.parse_args()

    classes = ["QCD", "Hbb", "Hcc", "Hgg", "H4q", "Hqql", "Zqq", "Wqq", "Tbqq", "Tbl"]
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for model in MODELS:
            scores = scores_of(model, args.weights, args.configs, args.jets, Path(tmp))
            results[model] = {}
            for process, label in SIGNALS.items():
                if process not in scores:
                    continue
                definition = {"signal": [label], "background": ["QCD"]}
                s = discriminant(scores[process], classes, definition)
                b = discriminant(scores["qcd"], classes, definition)
                is_signal = np.r_[np.ones(len(s)), np.zeros(len(b))].astype(bool)
                results[model][f"{label}vsQCD"] = auc(is_signal, np.r_[s, b])
    names = list(next(iter(results.values())))
    print("| official ParticleNet | " + " | ".join(f"{n} AUC" for n in names) + " |")
    print("|" + " --- |" * (1 + len(names)))
    for model, row in results.items():
        print(f"| {model} | " + " | ".join(f"{row[n]:.3f}" for n in names) + " |")
    if args.output:
        args.output.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
