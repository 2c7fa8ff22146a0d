"""Regenerate every generated block of docs/performance.md from the committed benchmark JSONs, running none.

    python benchmarks/report.py [--check]

Each benchmark renders its own blocks (peers.py: the peers and converted-CMS tables; precision.py: the
reduced-precision table; fixed_costs.py: the fixed costs); ``--check`` writes nothing and exits 1 naming the
blocks whose text in the doc differs from its JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the benchmark modules, when imported from a test

import fixed_costs
import peers
import precision
from _doc import DOC, between, write_blocks


def blocks() -> dict[str, str]:
    """Every generated block, by marker name, rendered from benchmarks/*.json."""
    out = peers.blocks(json.loads((HERE / "peers.json").read_text()))
    out |= precision.blocks(precision.load_runs())
    fixed = fixed_costs.section(json.loads((HERE / "fixed_costs.json").read_text()))
    out["fixed-costs"] = fixed.removeprefix(fixed_costs.BEGIN).removesuffix(fixed_costs.END).strip("\n")
    return out


def stale(doc: str) -> list[str]:
    """The blocks whose text in ``doc`` is not what their JSON renders."""
    return [name for name, text in blocks().items() if between(doc, name) != text]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if a block is stale")
    args = ap.parse_args()
    if args.check:
        names = stale(DOC.read_text())
        if names:
            raise SystemExit(f"{DOC}: stale blocks {', '.join(names)} (python benchmarks/report.py)")
        return
    rendered = blocks()
    fixed = rendered.pop("fixed-costs")
    write_blocks(rendered)
    fixed_costs.write_doc(f"{fixed_costs.BEGIN}\n{fixed}\n{fixed_costs.END}")  # its own writer
    print(f"{DOC}: {', '.join([*rendered, 'fixed-costs'])} regenerated")


if __name__ == "__main__":
    main()
