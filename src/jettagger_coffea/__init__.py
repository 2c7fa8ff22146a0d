"""jettagger-coffea: run ParticleNet, ParT, IRC-safe ParT and PFN/EFN jet taggers inside coffea analyses."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
