"""Particle Transformer (arXiv:2202.03772): particle-attention blocks whose attention carries a bias from
pairwise features (ln kT, ln z, ln dR, ln m^2), then class-attention blocks with a class token.
``pair_input_dim=0`` gives ParT (plain). Module names follow weaver-core (its checkpoints load strictly)."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import nn

from .common import atan2, delta_phi


def pair_features(v: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(N, 4, P) four-vectors -> (N, 4, P, P): ln kT, ln z, ln dR, ln m^2 (GeV, rapidity-phi distance)."""
    px, py, pz, e = v.split(1, dim=1)
    pt = torch.sqrt(px.square() + py.square())
    rap = 0.5 * torch.log(1 + (2 * pz) / (e - pz).clamp(min=1e-20))
    phi = atan2(py, px)
    pti, ptj = pt.unsqueeze(-1), pt.unsqueeze(-2)
    delta = torch.sqrt(
        (rap.unsqueeze(-1) - rap.unsqueeze(-2)).square()
        + delta_phi(phi.unsqueeze(-1), phi.unsqueeze(-2)).square()
    )
    ptmin = torch.minimum(pti, ptj)
    lnkt = torch.log((ptmin * delta).clamp(min=eps))
    lnz = torch.log((ptmin / (pti + ptj).clamp(min=eps)).clamp(min=eps))
    lndelta = torch.log(delta.clamp(min=eps))
    s = v.unsqueeze(-1) + v.unsqueeze(-2)
    m2 = s[:, 3:4].square() - s[:, :3].square().sum(dim=1, keepdim=True)
    return torch.cat((lnkt, lnz, lndelta, torch.log(m2.clamp(min=eps))), dim=1)


class Embed(nn.Module):
    """Per-particle embedding: BatchNorm, then (LayerNorm, Linear, GELU) per width."""

    def __init__(self, input_dim: int, dims, activation: str = "gelu") -> None:
        super().__init__()
        self.input_bn = nn.BatchNorm1d(input_dim)
        layers: list[nn.Module] = []
        for d in dims:
            layers += [
                nn.LayerNorm(input_dim),
                nn.Linear(input_dim, d),
                nn.GELU() if activation == "gelu" else nn.ReLU(),
            ]
            input_dim = d
        self.embed = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, P) -> (N, P, D)
        return self.embed(self.input_bn(x).transpose(1, 2))


class PairEmbed(nn.Module):
    """Pointwise embedding of pair features into one attention-bias channel per head."""

    def __init__(self, input_dim: int, dims, use_pre_activation_pair: bool = True) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.BatchNorm1d(input_dim)]
        for d in dims:
            layers += [nn.Conv1d(input_dim, d, 1), nn.BatchNorm1d(d), nn.GELU()]
            input_dim = d
        if use_pre_activation_pair:
            layers = layers[:-1]
        self.embed = nn.Sequential(*layers)
        self.out_dim = dims[-1]

    def forward(self, u: torch.Tensor) -> torch.Tensor:  # (N, C, P, P) -> (N, H, P, P)
        n, c, p, _ = u.shape
        return self.embed(u.reshape(n, c, p * p)).reshape(n, self.out_dim, p, p)


class Attention(nn.Module):
    """Multi-head attention with an additive float bias (pair features, padding, energy)."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, embed_dim // num_heads
        self.in_proj = nn.Linear(embed_dim, 3 * embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        self.dropout = nn.Dropout(dropout)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # nn.MultiheadAttention names
        for old, new in (("in_proj_weight", "in_proj.weight"), ("in_proj_bias", "in_proj.bias")):
            if prefix + old in state_dict:
                state_dict[prefix + new] = state_dict.pop(prefix + old)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, query: torch.Tensor, key: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        n, lq, d = query.shape
        lk = key.shape[1]
        w_q, w_kv = self.in_proj.weight.split((d, 2 * d))
        b_q, b_kv = self.in_proj.bias.split((d, 2 * d))
        q = nn.functional.linear(query, w_q, b_q).view(n, lq, self.num_heads, self.head_dim).transpose(1, 2)
        k, v = nn.functional.linear(key, w_kv, b_kv).view(n, lk, 2, self.num_heads, self.head_dim).unbind(2)
        k, v = k.transpose(1, 2), v.transpose(1, 2)
        att = (q * (1.0 / math.sqrt(self.head_dim))) @ k.transpose(-2, -1) + bias
        out = self.dropout(torch.softmax(att, dim=-1)) @ v
        return self.out_proj(out.transpose(1, 2).reshape(n, lq, d))


class Block(nn.Module):
    """NormFormer-style block (weaver's ParT block, version 1)."""

    def __init__(
        self,
        embed_dim: int = 128,
        num_heads: int = 8,
        ffn_ratio: int = 4,
        dropout: float = 0.1,
        attn_dropout: float = 0.1,
        activation_dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        ffn = embed_dim * ffn_ratio
        self.pre_attn_norm = nn.LayerNorm(embed_dim)
        self.attn = Attention(embed_dim, num_heads, attn_dropout)
        self.post_attn_norm = nn.LayerNorm(embed_dim)
        self.dropout = nn.Dropout(dropout)
        self.pre_fc_norm = nn.LayerNorm(embed_dim)
        self.fc1 = nn.Linear(embed_dim, ffn)
        self.act = nn.GELU()
        self.act_dropout = nn.Dropout(activation_dropout)
        self.post_fc_norm = nn.LayerNorm(ffn)
        self.fc2 = nn.Linear(ffn, embed_dim)
        self.c_attn = nn.Parameter(torch.ones(num_heads))
        self.w_resid = nn.Parameter(torch.ones(embed_dim))

    def forward(self, x: torch.Tensor, bias: torch.Tensor, x_cls: torch.Tensor | None = None) -> torch.Tensor:
        """``bias``: (N, H or 1, Lq, Lk) added to the attention logits (-inf masks a key)."""
        if x_cls is not None:
            residual = x_cls
            u = self.pre_attn_norm(torch.cat((x_cls, x), dim=1))
            x = self.attn(x_cls, u, bias)
        else:
            residual = x
            x = self.pre_attn_norm(x)
            x = self.attn(x, x, bias)
        n, lq, _ = x.shape
        x = (x.view(n, lq, self.num_heads, self.head_dim) * self.c_attn.view(1, 1, -1, 1)).reshape(n, lq, -1)
        x = self.dropout(self.post_attn_norm(x)) + residual
        residual = x
        x = self.act_dropout(self.act(self.fc1(self.pre_fc_norm(x))))
        x = self.dropout(self.fc2(self.post_fc_norm(x)))
        return x + self.w_resid * residual


def key_mask(mask: torch.Tensor) -> torch.Tensor:
    """(N, 1, P) 0/1 mask -> (N, 1, 1, P) additive bias: 0 for real particles, -inf for padding."""
    real = (mask != 0).unsqueeze(1)
    return torch.zeros_like(real, dtype=torch.float32).masked_fill(~real, float("-inf"))


class ParticleTransformer(nn.Module):
    uses: tuple[str, ...] = ("features", "vectors", "mask")
    pairwise: ClassVar[bool] = True  #: attention biased by (N, C, P, P) pair features

    def __init__(
        self,
        input_dim: int,
        num_classes: int,
        pair_input_dim: int = 4,
        use_pre_activation_pair: bool = True,
        embed_dims=(128, 512, 128),
        pair_embed_dims=(64, 64, 64),
        num_heads: int = 8,
        num_layers: int = 8,
        num_cls_layers: int = 2,
        fc_params=(),
        block_params: dict | None = None,
    ) -> None:
        super().__init__()
        d = embed_dims[-1]
        self.embed = Embed(input_dim, embed_dims)
        self.pair_embed = (
            PairEmbed(pair_input_dim, (*pair_embed_dims, num_heads), use_pre_activation_pair)
            if pair_input_dim > 0 and pair_embed_dims
            else None
        )
        cfg = {"embed_dim": d, "num_heads": num_heads, **(block_params or {})}
        self.blocks = nn.ModuleList(Block(**cfg) for _ in range(num_layers))
        cls_cfg = {**cfg, "dropout": 0.0, "attn_dropout": 0.0, "activation_dropout": 0.0}
        self.cls_blocks = nn.ModuleList(Block(**cls_cfg) for _ in range(num_cls_layers))
        self.norm = nn.LayerNorm(d)
        fcs: list[nn.Module] = []
        in_dim = d
        for out_dim, drop in fc_params:
            fcs.append(nn.Sequential(nn.Linear(in_dim, out_dim), nn.ReLU(), nn.Dropout(drop)))
            in_dim = out_dim
        fcs.append(nn.Linear(in_dim, num_classes))
        self.fc = nn.Sequential(*fcs)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for i, blk in enumerate(self.blocks):  # weaver's fix_init: damp deep residual branches
            blk.attn.out_proj.weight.data.div_(math.sqrt(2.0 * (i + 1)))  # type: ignore[union-attr,operator]
            blk.fc2.weight.data.div_(math.sqrt(2.0 * (i + 1)))  # type: ignore[union-attr,operator]

    def encode(
        self,
        tokens: torch.Tensor,
        pair_bias: torch.Tensor | None,
        mask: torch.Tensor,
        key_bias: torch.Tensor,
        cls_shift: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``tokens`` (N, C, P); ``key_bias`` (N, 1, 1, P) padding (and, for IRC safety, ln E);
        ``cls_shift`` (N, 1, D) added to the class token (jet-level inputs)."""
        x = self.embed(tokens).masked_fill((mask == 0).transpose(1, 2), 0)
        bias = key_bias if pair_bias is None else pair_bias + key_bias
        for blk in self.blocks:
            x = blk(x, bias)
        cls = self.cls_token.expand(x.size(0), -1, -1)
        if cls_shift is not None:
            cls = cls + cls_shift
        cls_bias = torch.cat((torch.zeros_like(key_bias[..., :1]), key_bias), dim=-1)
        for blk in self.cls_blocks:
            cls = blk(x, cls_bias, x_cls=cls)
        return self.fc(self.norm(cls.squeeze(1)))

    def forward(self, features: torch.Tensor, vectors: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pair = self.pair_embed(pair_features(vectors)) if self.pair_embed is not None else None
        return self.encode(features, pair, mask, key_mask(mask))


class ParticleTransformerPlain(ParticleTransformer):
    """ParT without pair features: the attention sees only the particle tokens."""

    uses = ("features", "mask")
    pairwise: ClassVar[bool] = False

    def __init__(self, input_dim: int, num_classes: int, **kwargs) -> None:
        kwargs["pair_input_dim"] = 0
        super().__init__(input_dim, num_classes, **kwargs)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.encode(features, None, mask, key_mask(mask))
