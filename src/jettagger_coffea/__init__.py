"""jettagger-coffea: run ParticleNet, ParT, IRC-safe ParT and PFN/EFN jet taggers inside coffea analyses.

The names below are imported on first use, so ``import jettagger_coffea`` stays light.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "JetTagger": "tagger",
    "BackendSpec": "backends",
    "Bundle": "bundle",
    "TaggerProcessor": "processor",
    "Selection": "processor",
    "PFNanoSchema": "nanoevents",
    "open_events": "nanoevents",
    "sample_path": "data",
    "run_fileset": "execution",
    "shipped": "shipping",
}

__all__ = [
    "BackendSpec",
    "Bundle",
    "JetTagger",
    "PFNanoSchema",
    "Selection",
    "TaggerProcessor",
    "__version__",
    "open_events",
    "run_fileset",
    "sample_path",
    "shipped",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
