"""The generated blocks of docs/performance.md: each benchmark renders its tables from its JSON into the text
between a block's markers, so the doc cannot drift from the JSON (tests/test_benchmark_report.py)."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

#: the doc's multiplication sign and range dash (escaped: ruff reads them as look-alikes of x and -)
X, DASH = "\u00d7", "\u2013"
DOC = Path(__file__).resolve().parent.parent / "docs" / "performance.md"


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def between(doc: str, name: str) -> str:
    """The text between a block's markers (a block the doc lacks is an error naming it)."""
    begin, end = markers(name)
    if begin not in doc or end not in doc:
        raise SystemExit(f"{DOC}: no {begin} ... {end} block")
    return doc[doc.index(begin) + len(begin) : doc.index(end)].strip("\n")


def write_blocks(blocks: dict[str, str], doc_path: Path = DOC) -> None:
    """Replace the text between each block's markers; every block must already have its place in the doc."""
    doc = doc_path.read_text()
    for name, text in blocks.items():
        begin, end = markers(name)
        between(doc, name)  # the check, before anything is written
        doc = doc[: doc.index(begin) + len(begin)] + "\n" + text + "\n" + doc[doc.index(end) :]
    doc_path.write_text(doc)


def wrap(text: str, indent: str = "") -> str:
    """Prose at the doc's width, never breaking a number from its unit."""
    text = re.sub(r"(\d) (ms|s|%)(?=\W|$)", "\\1\u00a0\\2", text)
    text = textwrap.fill(
        text, width=110, subsequent_indent=indent, break_on_hyphens=False, break_long_words=False
    )
    return text.replace("\u00a0", " ")


def bullet(text: str) -> str:
    """A list item wrapped at the doc's width, its continuation lines indented."""
    return wrap("- " + text, indent="  ")


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def ratio(x: float) -> str:
    return f"{x:.2f}{X}"


def sci(x: float) -> str:
    """1 significant decimal in scientific notation, as the doc writes it: 5.4e-7."""
    mantissa, exp = f"{x:.1e}".split("e")
    return f"{mantissa}e{int(exp)}"
