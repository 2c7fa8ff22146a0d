"""Realistic boosted jets from Pythia 8 + FastJet, written as PFNano-like NanoAOD and JetClass ntuples.

Needs the ``generate`` extra (pythia8mc, fastjet); the rest of the package never imports this.
"""

from __future__ import annotations

from .settings import PROCESSES, GenerationSettings
from .run import generate

__all__ = ["PROCESSES", "GenerationSettings", "generate"]
