"""Realistic boosted jets from Pythia 8 + FastJet, written as PFNano-like NanoAOD and JetClass ntuples.

Needs the ``generate`` extra (pythia8mc, fastjet); the rest of the package never imports this.
"""

from __future__ import annotations

from .pipeline import generate
from .settings import PROCESSES, GenerationSettings

__all__ = ["PROCESSES", "GenerationSettings", "generate"]
