"""Shipped tagger bundles: ``models/`` of the repository, installed as ``jettagger_coffea/models``."""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

from ._errors import JetTaggerError


def models_dir() -> Path:
    installed = Path(str(files("jettagger_coffea") / "models"))
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parents[2] / "models"  # editable checkout


def available() -> list[str]:
    d = models_dir()
    return sorted(p.name for p in d.iterdir() if (p / "tagger.yaml").is_file()) if d.is_dir() else []


def resolve(name_or_path: str | None = None) -> Path:
    """A bundle path from a folder path, a shipped bundle name, or None (``$JETTAGGER_MODEL``, else the
    default bundle named in ``models/DEFAULT``)."""
    name_or_path = name_or_path or os.environ.get("JETTAGGER_MODEL") or None
    if name_or_path and Path(name_or_path).is_dir():
        return Path(name_or_path)
    d = models_dir()
    default = d / "DEFAULT"
    name = name_or_path or (default.read_text().strip() if default.is_file() else None)
    if name and (d / name / "tagger.yaml").is_file():
        return d / name
    if name_or_path and Path(name_or_path).exists():
        raise JetTaggerError(f"tagger bundle {name_or_path} is not a folder")
    raise JetTaggerError(
        f"no tagger bundle {name_or_path or '(default)'}: neither a folder nor a shipped name "
        f"({', '.join(available()) or 'none'})"
    )
