"""The joint bundle against the classifier alone, jet by jet (two `jettagger predict` parquet files of the
same test jets, in the same file order): each discriminant's AUC difference with its paired-bootstrap
uncertainty (the test jets' statistics only), optionally a second classifier of another seed (the
training-to-training spread, which the bootstrap does not see), and how far the regressed mass moves QCD
jets into the signals' mass windows (sculpting), against their soft-drop and true masses.

    python models/joint_compare.py JOINT.parquet CLASSES.parquet [--classes-seed2 C2.parquet] \
        --test qcd.root hbb.root wqq.root zqq.root tbqq.root
"""

from __future__ import annotations

import argparse
import json

import awkward as ak
import numpy as np
import uproot

from jettagger_coffea.metrics import auc, discriminant

CLASSES = ["QCD", "Hbb", "Wqq", "Zqq", "Tbqq"]
SIGNALS = {"WvsQCD": "Wqq", "ZvsQCD": "Zqq", "TvsQCD": "Tbqq", "HbbvsQCD": "Hbb"}
WINDOWS = {"W/Z 65-105": (65, 105), "H 105-145": (105, 145), "top 140-200": (140, 200)}


def scores(a) -> np.ndarray:
    return np.stack([ak.to_numpy(a[f"score_{c}"]) for c in CLASSES], 1)


def paired(y: np.ndarray, d1: np.ndarray, d2: np.ndarray, n: int = 200) -> float:
    """The bootstrap spread of AUC(d1) - AUC(d2) over resampled jets (both on the same resample)."""
    rng = np.random.default_rng(1)
    diffs = []
    for _ in range(n):
        i = rng.integers(0, len(y), len(y))
        diffs.append(auc(y[i], d1[i]) - auc(y[i], d2[i]))
    return float(np.std(diffs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("joint")
    ap.add_argument("classes")
    ap.add_argument("--classes-seed2")
    ap.add_argument("--test", nargs="+", required=True, help="the test files, in the parquet files' order")
    args = ap.parse_args()
    joint, classes = ak.from_parquet(args.joint), ak.from_parquet(args.classes)
    label = ak.to_numpy(joint.label)
    assert (label == ak.to_numpy(classes.label)).all(), "not the same jets"
    other = ak.from_parquet(args.classes_seed2) if args.classes_seed2 else None
    out: dict = {"auc": {}, "sculpting": {}}
    for name, sig in SIGNALS.items():
        definition = {"signal": [sig], "background": ["QCD"]}
        keep = np.isin(label, [0, CLASSES.index(sig)])
        y = label[keep] == CLASSES.index(sig)
        dj, dc = (discriminant(scores(a)[keep], CLASSES, definition) for a in (joint, classes))
        row = {"joint": auc(y, dj), "classes": auc(y, dc)}
        row |= {"difference": row["joint"] - row["classes"], "bootstrap": paired(y, dj, dc)}
        if other is not None:
            row["classes_seed2"] = auc(y, discriminant(scores(other)[keep], CLASSES, definition))
        out["auc"][name] = row
    cols = ["label_QCD", "jet_gen_mass", "jet_genjet_sdmass"]
    t = [uproot.open(f)["tree"].arrays(cols, library="np") for f in args.test]
    true = np.concatenate([np.where(x["label_QCD"], x["jet_genjet_sdmass"], x["jet_gen_mass"]) for x in t])
    assert len(true) == len(label), "the test files are not the parquet files' jets"
    qcd = label == 0
    masses = {
        "regressed": ak.to_numpy(joint["mass"]),
        "soft drop": ak.to_numpy(joint.jet_sdmass),
        "true": true,
    }
    for window, (lo, hi) in WINDOWS.items():
        out["sculpting"][window] = {
            k: float(np.mean((m[qcd] > lo) & (m[qcd] < hi))) for k, m in masses.items()
        }
    head = ["AUC joint", "AUC classes only", "difference", "bootstrap sigma", "classes only, seed 2"]
    print(f"| discriminant | {' | '.join(head)} |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, r in out["auc"].items():
        seed2 = f"{r['classes_seed2']:.4f}" if "classes_seed2" in r else "—"
        cells = [
            f"{r['joint']:.4f}",
            f"{r['classes']:.4f}",
            f"{r['difference']:+.4f}",
            f"{r['bootstrap']:.4f}",
        ]
        print(f"| {name} | {' | '.join(cells)} | {seed2} |")
    print()
    print("| QCD jets in the window | regressed mass | soft-drop mass | true mass |")
    print("| --- | --- | --- | --- |")
    for window, r in out["sculpting"].items():
        cells = [f"{100 * r[k]:.1f} %" for k in ("regressed", "soft drop", "true")]
        print(f"| {window} GeV | {' | '.join(cells)} |")
    print()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
