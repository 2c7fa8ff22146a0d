"""Print the README results table from the shipped bundles' model cards (metrics on the held-out test set)."""

from __future__ import annotations

from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent


def main() -> None:
    print("| model | params | jets seen | accuracy | AUC (macro) | W vs QCD AUC / R50 / R30 | Z vs QCD AUC / R50 / R30 "
          "| top vs QCD AUC / R50 / R30 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for d in sorted(HERE.iterdir()):
        card_path = d / "tagger.yaml"
        if not card_path.is_file():
            continue
        c = yaml.safe_load(card_path.read_text())
        m, p = c.get("metrics", {}), c.get("provenance", {})
        cells = []
        for name in ("WvsQCD", "ZvsQCD", "TvsQCD"):
            x = m.get("discriminants", {}).get(name)
            cells.append(f"{x['auc']:.4f} / {x['rej50']:.0f} / {x['rej30']:.0f}" if x else "-")
        jets = p.get("jets_seen") or "-"
        print(f"| {c['name']} | {p.get('parameters', 0) / 1e3:.0f}k | {jets} | {m.get('accuracy', float('nan')):.4f} | "
              f"{m.get('auc_macro', float('nan')):.4f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
