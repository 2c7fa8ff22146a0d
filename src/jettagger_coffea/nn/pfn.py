"""Deep Sets baselines (arXiv:1810.05165): the Particle Flow Network sums a per-particle embedding of all
features; the Energy Flow Network sums an embedding of the angles weighted by energy fraction (IRC safe)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from .part_irc import angular_inputs


def _mlp(dims, conv: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(dims, dims[1:]):
        layers += [nn.Conv1d(a, b, 1) if conv else nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers)


class PFN(nn.Module):
    uses = ("features", "mask")
    pairwise: ClassVar[bool] = False

    def __init__(
        self, input_dim: int, num_classes: int, phi_sizes=(100, 100, 256), f_sizes=(100, 100, 100)
    ) -> None:
        super().__init__()
        self.phi = _mlp((input_dim, *phi_sizes), conv=True)
        self.f = _mlp((phi_sizes[-1], *f_sizes), conv=False)
        self.out = nn.Linear(f_sizes[-1], num_classes)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.out(self.f((self.phi(features) * (mask != 0)).sum(dim=-1)))


class EFN(nn.Module):
    uses = ("vectors", "mask")
    pairwise: ClassVar[bool] = False

    def __init__(
        self, input_dim: int, num_classes: int, phi_sizes=(100, 100, 256), f_sizes=(100, 100, 100)
    ) -> None:
        super().__init__()
        self.phi = _mlp((2, *phi_sizes), conv=True)
        self.f = _mlp((phi_sizes[-1], *f_sizes), conv=False)
        self.out = nn.Linear(f_sizes[-1], num_classes)

    def forward(self, vectors: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        tokens, _, z = angular_inputs(vectors, mask)
        return self.out(self.f((self.phi(tokens[:, :2]) * z).sum(dim=-1)))
