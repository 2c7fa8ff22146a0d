"""docs/performance.md's generated blocks are what the committed benchmark JSONs render (a stale doc fails),
and each renderer's table has the rows the benchmarks measure; nothing is run but the renderers."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import _doc
import peers
import precision
import report
from _doc import X


def _rows(text: str) -> list[list[str]]:
    """The body rows of the markdown tables in ``text`` (no header, no rule), cells stripped."""
    lines = [*text.splitlines(), ""]
    body = [
        ln
        for ln, nxt in zip(lines, lines[1:])
        if ln.startswith("|") and not ln.startswith("| ---") and not nxt.startswith("| ---")
    ]
    return [[c.strip() for c in re.split(r"(?<!\\)\|", ln.strip("|"))] for ln in body]


def test_doc_is_what_the_jsons_render():
    doc = _doc.DOC.read_text()
    rendered = report.blocks()
    assert set(rendered) == {
        "peers",
        "peers-targets",
        "cms-converted",
        "precision",
        "precision-limits",
        "fixed-costs",
    }
    for name, text in rendered.items():
        assert _doc.between(doc, name) == text, (
            f"docs/performance.md block {name} is stale: python benchmarks/report.py"
        )


def test_a_changed_number_makes_the_doc_stale(tmp_path):
    res = json.loads((BENCH / "peers.json").read_text())
    res["cms-particlenet-ak8"]["ours_end_to_end_converted"] *= 2
    doc = tmp_path / "performance.md"
    doc.write_text(_doc.DOC.read_text())
    assert _doc.between(doc.read_text(), "cms-converted") != peers.blocks(res)["cms-converted"]
    _doc.write_blocks({"cms-converted": peers.blocks(res)["cms-converted"]}, doc)
    assert f"| **23.72** | **172** | 1.00{X} |" in doc.read_text()
    assert _doc.between(doc.read_text(), "peers") == _doc.between(_doc.DOC.read_text(), "peers")


def test_peers_tables_rows():
    b = peers.blocks(json.loads((BENCH / "peers.json").read_text()))
    rows = _rows(b["peers"])
    assert [r[0] for r in rows if r[0]] == ["JetClass ParticleNet", "CMS ParticleNet-AK8"]
    assert len(rows) == 8  # 5 ways for JetClass, 3 for CMS
    assert rows[0][2:] == ["17.19", "233", f"1.14{X}"]  # CMSSW's loop against ours end to end (15.04 s)
    assert rows[4][2:] == ["**15.04**", "**266**", f"1.00{X}"]
    conv = _rows(b["cms-converted"])
    assert [r[0] for r in conv][-1] == "**ours, end to end, converted (`--convert`)**"
    assert conv[0][1:] == ["24.06", "170", f"**2.03{X}**"]
    assert f"**missed** (1.14{X} and 0.94{X}" in b["peers-targets"]


def test_peers_first_table_is_one_run():
    """A partial rerun (the CMS model alone) replaces its entry; the first table keeps both models' rows of
    one run, the replaced one from ``previous``, while the converted section shows the newest."""
    res = json.loads((BENCH / "peers.json").read_text())
    assert res["cms-particlenet-ak8"]["run"]["id"] != res["jetclass-particlenet"]["run"]["id"]
    newer = {**res["cms-particlenet-ak8"], "run": {"id": "2099-01-01T00:00"}}
    merged = peers.merge(json.loads(json.dumps(res)), {"cms-particlenet-ak8": newer})
    assert merged["previous"]["cms-particlenet-ak8"]["cmssw_per_jet"] == pytest.approx(15.348, abs=1e-3)
    assert (
        peers.one_run(merged)["cms-particlenet-ak8"]["run"]["id"] == res["jetclass-particlenet"]["run"]["id"]
    )
    both = {m: {**res["jetclass-particlenet"], "run": {"id": "2099-01-02T00:00"}} for m in peers.MODELS}
    assert peers.merge(merged, both)["previous"] == {}  # a full rerun: nothing older is needed


def test_precision_table_rows():
    b = precision.blocks(precision.load_runs())
    rows = _rows(b["precision"])
    assert [r[:2] for r in rows] == [
        [net, p]
        for net in ("official ParticleNet", "particlenet-lite (loaded)")
        for p in (
            "CMSSW per-jet fp32",
            "fp32",
            "**int8**" if net.startswith("official") else "int8",
            "bf16 (torch)",
        )
    ]
    layers = "3 of 6 (block 3 both, block 2 second)"
    assert rows[2][2:] == [
        layers,
        "6.3e-4 / 7.6e-2",
        "7.5e-4 (Zqq)",
        "yes",
        "8.66",
        "**8.94**",
        f"**2.20{X}**",
    ]
    assert rows[3][5:] == ["**no**", "—", "—", "—"]  # bf16's speed is in no JSON
    assert f"met, 2.20{X}**" in b["precision"]
