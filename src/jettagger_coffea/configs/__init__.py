"""Data configs shipped with the package (weaver format)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def config_path(name: str) -> Path:
    path = Path(str(files(__package__) / f"{name}.yaml"))
    if not path.exists():
        raise FileNotFoundError(f"no shipped data config {name!r}")
    return path
