"""The regression losses a target is trained with (the data config's ``targets.<name>.loss``), per jet:
squared error, log-cosh (quadratic near 0, linear far out: CMS's mass regression) and the pinball loss
of a quantile (its minimum over a constant is the sample's quantile: CMS's ``target_pt_q16`` / ``q84``)."""

from __future__ import annotations

import math

import torch
from torch import nn


def regression_loss(pred: torch.Tensor, target: torch.Tensor, loss: str, quantile: float | None = None):
    """The per-jet loss of ``pred`` against ``target`` (same shape)."""
    e = pred - target
    if loss == "mse":
        return e.square()
    if loss == "logcosh":  # log(cosh(e)) = |e| + log1p(exp(-2|e|)) - log 2, without overflow
        a = e.abs()
        return a + nn.functional.softplus(-2 * a) - math.log(2.0)
    if loss == "quantile":
        assert quantile is not None
        return torch.maximum(quantile * -e, (quantile - 1) * -e)  # (target - pred) * (q - [target < pred])
    raise ValueError(f"unknown regression loss {loss!r}")


def masked_mean(per_jet: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
    """The mean over the jets whose target is finite (0 where none is)."""
    return torch.where(ok, per_jet, torch.zeros_like(per_jet)).sum() / ok.sum().clamp(min=1)
