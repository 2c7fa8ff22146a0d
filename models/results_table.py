"""Print the results table of docs/results.md from the shipped bundles' model cards (metrics on their held-out
test sets, written by ``jettagger export --reference``)."""

from __future__ import annotations

from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
DISCRIMINANTS = (("WvsQCD", "W"), ("ZvsQCD", "Z"), ("TvsQCD", "top"), ("HbbvsQCD", "H→bb"))


def cell(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def main() -> None:
    heads = " | ".join(f"{label} vs QCD AUC / R50 / R30" for _, label in DISCRIMINANTS)
    cols = "model | classes | params | distinct jets | jets seen | test jets | accuracy | AUC (macro)"
    print(f"| {cols} | {heads} |")
    print("| --- " * (8 + len(DISCRIMINANTS)) + "|")
    for d in sorted(HERE.iterdir()):
        card_path = d / "tagger.yaml"
        if not card_path.is_file():
            continue
        c = yaml.safe_load(card_path.read_text())
        m, p = c.get("metrics", {}), c.get("provenance", {})
        cells = []
        for name, _ in DISCRIMINANTS:
            x = m.get("discriminants", {}).get(name)
            rej = "" if not x else f" / {cell(x['rej50'], '.0f')} / {cell(x['rej30'], '.0f')}"
            cells.append(f"{x['auc']:.4f}{rej}" if x else "-")
        print(
            f"| {c['name']} | {len(c.get('classes', []))} | {p.get('parameters', 0) / 1e3:.0f}k | "
            f"{p.get('n_train') or '-'} | {p.get('jets_seen') or '-'} | {m.get('n_jets', '-')} | "
            f"{cell(m.get('accuracy'), '.4f')} | "
            f"{cell(m.get('auc_macro'), '.4f')} | " + " | ".join(cells) + " |"
        )


if __name__ == "__main__":
    main()
