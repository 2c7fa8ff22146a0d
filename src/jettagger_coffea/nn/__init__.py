"""Torch networks (``train`` extra): ParticleNet(-Lite), ParT(-plain), IRC-safe ParT, PFN, EFN.

Only training, export and the torch backend import this; onnxruntime inference never does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .._errors import JetTaggerError
from .common import Tagger, role_of
from .part import ParticleTransformer, ParticleTransformerPlain
from .part_irc import ParticleTransformerIRC
from .particlenet import PARTICLENET, PARTICLENET_LITE, ParticleNet
from .pfn import EFN, PFN

#: network name -> (class, default options). Defaults are weaver's / the papers'.
NETWORKS: dict[str, tuple[type[torch.nn.Module], dict[str, Any]]] = {
    "particlenet": (ParticleNet, PARTICLENET),
    "particlenet-lite": (ParticleNet, PARTICLENET_LITE),
    "part": (ParticleTransformer, {}),
    "part-plain": (ParticleTransformerPlain, {}),
    "part-irc": (ParticleTransformerIRC, {}),
    "pfn": (PFN, {}),
    "efn": (EFN, {}),
}


def build(network: str, input_names: list[str], input_dims: dict[str, int], num_classes: int,
          **options: Any) -> Tagger:
    """A :class:`Tagger` around ``network`` fed by the data-config groups ``input_names``."""
    if network not in NETWORKS:
        raise JetTaggerError(f"unknown network {network!r}; choose from {', '.join(NETWORKS)}")
    cls, defaults = NETWORKS[network]
    opts = {**defaults, **options}
    roles = {role_of(n): n for n in input_names}
    missing = [r for r in cls.uses if r not in roles]  # type: ignore[attr-defined]
    if missing:
        raise JetTaggerError(f"network {network!r} needs input groups for {missing}; the config has {input_names}")
    in_dim = input_dims[roles["features"]] if "features" in roles else 0
    net = cls(in_dim, num_classes, **opts)
    return Tagger(net, input_names, min_length=getattr(net, "min_length", 1))


def load_state(model: Tagger, path: str | Path) -> None:
    """Load a weaver (``mod.``-prefixed) or our own checkpoint strictly, never unpickling code."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is the file's fault
        raise JetTaggerError(f"cannot load checkpoint {path}: {type(err).__name__}: {err}") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not any(k.startswith("mod.") for k in state):
        state = {f"mod.{k}": v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise JetTaggerError(f"checkpoint {path} does not fit this network: {err}") from None


__all__ = [
    "EFN",
    "NETWORKS",
    "PFN",
    "ParticleNet",
    "ParticleTransformer",
    "ParticleTransformerIRC",
    "ParticleTransformerPlain",
    "Tagger",
    "build",
    "load_state",
]
