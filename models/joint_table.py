"""The joint bundle against soft drop and against the classifier alone, from two `jettagger evaluate`
metrics.json files (the joint bundle's, then the classifier's): a markdown table of the relative mass
resolution (half-IQR / median of mass / true mass) per truth class, and of each discriminant's AUC.

    python models/joint_table.py runs/joint/eval-mass/metrics.json runs/joint/eval-classes/metrics.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SIGNALS = ("Wqq", "Zqq", "Tbqq", "Hbb")
#: the goal of issue #29: every signal class's resolution at least 20 % narrower than soft drop's
GOAL = 0.20


def main(joint_path: str, classes_path: str) -> int:
    joint, classes = (json.loads(Path(p).read_text()) for p in (joint_path, classes_path))
    resp = joint["response"]
    print("| truth | jets | median m_reg/m_true | resolution m_reg | median m_SD/m_true | resolution m_SD "
          "| narrower than SD |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- |")
    met = True
    for t in (*SIGNALS, "QCD"):
        r, sd = resp["mass"].get(t), resp["msoftdrop"].get(t)
        if r is None or sd is None:
            continue
        gain = 1 - r["resolution"] / sd["resolution"]
        if t in SIGNALS:
            met &= gain >= GOAL
        print(f"| {t} | {r['n']:.0f} | {r['median']:.3f} | {r['resolution']:.3f} | {sd['median']:.3f} "
              f"| {sd['resolution']:.3f} | {100 * gain:+.0f} % |")  # fmt: skip
    print()
    print("| discriminant | AUC joint | AUC classes only | difference |")
    print("| --- | --- | --- | --- |")
    no_worse = True
    for name, d in joint["discriminants"].items():
        a, b = d["auc"], classes["discriminants"][name]["auc"]
        no_worse &= a >= b - 1e-3
        print(f"| {name} | {a:.4f} | {b:.4f} | {a - b:+.4f} |")
    print()
    verdict = "met" if met else "missed"
    goal = f"resolution goal (>= {100 * GOAL:.0f} % narrower for every signal class): {verdict}"
    print(f"{goal}; AUCs no worse than the classifier's (within 1e-3): {'yes' if no_worse else 'no'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
