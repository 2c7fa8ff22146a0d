"""Angular helpers every network shares (ONNX-exportable)."""

from __future__ import annotations

import math

import torch

__all__ = ["atan2", "delta_phi", "eta_phi"]


def delta_phi(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b + math.pi) % (2 * math.pi) - math.pi


def atan2(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """atan2 that is 0 at (0, 0) also after ONNX export (the exporter's decomposition gives NaN there,
    which padded particles would hit)."""
    origin = (x == 0) & (y == 0)
    return torch.atan2(y, torch.where(origin, torch.ones_like(x), x))


def eta_phi(v: torch.Tensor, eps: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor]:
    """Pseudorapidity and azimuth of (N, 4, P) four-vectors (px, py, pz, E); scale-invariant."""
    px, py, pz = v[:, 0:1], v[:, 1:2], v[:, 2:3]
    pt = torch.sqrt((px.square() + py.square()).clamp(min=eps))
    r = pz / pt  # asinh(r), spelled out: ONNX has no Asinh in the TorchScript exporter
    eta = torch.sign(r) * torch.log(r.abs() + torch.sqrt(r.square() + 1))
    return eta, atan2(py, px)
