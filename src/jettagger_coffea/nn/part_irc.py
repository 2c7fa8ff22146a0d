"""IRC-safe Particle Transformer (C. Li et al., ML4Jets 2023): ParT blocks with two rules.

1. Tokens carry no energy: (deta, dphi, dR) to the jet axis (the four-vector sum, itself IRC safe);
   pair features are angular only (ln dR_ij).
2. Energy enters only as an attention bias, ``a_ij = q_i.k_j / sqrt(d) + U_ij + ln z_j`` with the energy
   fraction z_j, in every particle- and class-attention block (the class token's own key gets ln 1).

A collinear split j -> (lambda, 1 - lambda) then gives two identical tokens whose attention weights add up
to the original one's, and a soft particle's weight vanishes as its z -> 0: every output is unchanged.
"""

from __future__ import annotations

import torch

from .common import delta_phi, eta_phi
from .part import ParticleTransformer, key_mask


def angular_inputs(vectors: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8):
    """Tokens (N, 3, P) = (deta, dphi, dR) to the jet axis, pair features (N, 1, P, P) = ln dR_ij,
    and the energy fractions z (N, 1, P)."""
    real = (mask != 0).to(vectors.dtype)
    v = vectors * real
    jet = v.sum(dim=-1, keepdim=True)
    eta, phi = eta_phi(v, eps)
    jeta, jphi = eta_phi(jet, eps)
    deta, dphi = (eta - jeta) * real, delta_phi(phi, jphi) * real
    tokens = torch.cat((deta, dphi, torch.sqrt(deta.square() + dphi.square())), dim=1)
    dr = torch.sqrt((eta.unsqueeze(-1) - eta.unsqueeze(-2)).square()
                    + delta_phi(phi.unsqueeze(-1), phi.unsqueeze(-2)).square())
    pair = torch.log(dr.clamp(min=eps))
    z = v[:, 3:4] / jet[:, 3:4].clamp(min=eps)
    return tokens, pair, z


class ParticleTransformerIRC(ParticleTransformer):
    uses = ("vectors", "mask")

    def __init__(self, input_dim: int, num_classes: int, **kwargs) -> None:
        kwargs["pair_input_dim"] = 1
        super().__init__(3, num_classes, **kwargs)

    def forward(self, vectors: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        tokens, pair, z = angular_inputs(vectors, mask)
        energy_bias = torch.log(z.clamp(min=1e-30)).unsqueeze(1) + key_mask(mask)  # (N, 1, 1, P)
        return self.encode(tokens, self.pair_embed(pair), mask, energy_bias)
