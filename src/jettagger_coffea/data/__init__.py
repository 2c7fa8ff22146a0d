"""Bundled samples (made by ``jettagger generate``, see ``samples/README.md``), found after a plain
install."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

PROCESSES = ("qcd", "wqq", "zqq", "tbqq")


def sample_path(process: str, fmt: str = "nanoaod") -> Path:
    """Path of a bundled sample file, e.g. ``sample_path("tbqq", "jetclass")``."""
    path = Path(str(files(__package__) / "samples" / f"{process}_{fmt}.root"))
    if not path.exists():
        raise FileNotFoundError(
            f"no bundled sample {path.name} (processes {PROCESSES}, formats nanoaod/jetclass)"
        )
    return path


def default_fileset(fmt: str = "nanoaod") -> dict[str, dict]:
    """A coffea fileset of the bundled samples, one dataset per process."""
    tree = "Events" if fmt == "nanoaod" else "tree"
    return {p: {"files": {str(sample_path(p, fmt)): tree}} for p in PROCESSES}
