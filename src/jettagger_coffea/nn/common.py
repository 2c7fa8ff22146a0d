"""Pieces every network shares: input roles, the inference wrapper, angular helpers."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..bundle import ROLES, role_of

__all__ = ["ROLES", "Tagger", "atan2", "delta_phi", "eta_phi", "role_of"]


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


class Tagger(nn.Module):
    """Inference wrapper: data-config groups in, class probabilities out.

    Takes the groups positionally in data-config order (the ONNX input names), pads to the network's
    minimum length (k-NN needs k + 1 points; exported models rely on the runtime for it), applies softmax,
    and returns NaN for jets without constituents.
    """

    def __init__(
        self,
        net: nn.Module,
        input_names: list[str],
        min_length: int = 1,
        roles: list[str | None] | None = None,
    ) -> None:
        super().__init__()
        self.mod = net
        self.input_names = list(input_names)
        self.roles = list(roles) if roles is not None else [role_of(n) for n in self.input_names]
        if "mask" not in self.roles:
            raise ValueError(f"no mask input among {self.input_names}")
        self.min_length = int(min_length)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        args = {r: x for r, x in zip(self.roles, inputs) if r is not None}
        short = self.min_length - args["mask"].shape[-1]
        if not torch.onnx.is_in_onnx_export() and short > 0:  # the runtime pads to min_length itself
            args = {k: nn.functional.pad(x, (0, short)) for k, x in args.items()}
        mask = args["mask"]
        uses: tuple[str, ...] = self.mod.uses  # type: ignore[assignment]
        logits = self.mod(**{k: v for k, v in args.items() if k in uses})
        probs = torch.softmax(logits, dim=1)
        empty = (mask.sum(dim=(1, 2)) == 0).unsqueeze(1)
        return torch.where(empty, torch.full_like(probs, float("nan")), probs)
