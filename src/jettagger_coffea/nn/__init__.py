"""Torch networks (``train`` extra): ParticleNet(-Lite), ParT(-plain), IRC-safe ParT, PFN, EFN.

Only training, export and the torch backend import this; onnxruntime inference never does.
"""

from __future__ import annotations

import inspect
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


def network_options(cls: type) -> set[str]:
    """The options a network class takes (its and its bases' keyword parameters)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" in vars(klass) and klass is not torch.nn.Module and klass is not object:
            params = inspect.signature(vars(klass)["__init__"]).parameters.values()
            names |= {p.name for p in params if p.kind is p.KEYWORD_ONLY or p.default is not p.empty}
    return names


def build(
    network: str,
    input_names: list[str],
    input_dims: dict[str, int],
    num_classes: int,
    roles: dict[str, str] | None = None,
    **options: Any,
) -> Tagger:
    """A :class:`Tagger` around ``network`` fed by the data-config groups ``input_names`` in the given
    ``roles`` (group -> role, as the bundle declares; default: from the group names)."""
    if network not in NETWORKS:
        raise JetTaggerError(f"unknown network {network!r}; choose from {', '.join(NETWORKS)}")
    cls, defaults = NETWORKS[network]
    allowed = network_options(cls) - {"sv_input_dims"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise JetTaggerError(f"network {network!r}: unknown option(s) {unknown}; allowed: {sorted(allowed)}")
    opts = {**defaults, **options}
    role_list = [(roles or {}).get(n) or role_of(n) for n in input_names]
    by_role = {r: n for r, n in zip(role_list, input_names) if r is not None}
    if "sv_features" in by_role:
        if "sv_input_dims" not in network_options(cls):
            raise JetTaggerError(
                f"network {network!r} takes no secondary-vertex inputs ({by_role['sv_features']})"
            )
        opts["sv_input_dims"] = input_dims[by_role["sv_features"]]
    in_dim = input_dims[by_role["features"]] if "features" in by_role else 0
    net = cls(in_dim, num_classes, **opts)
    missing = [r for r in net.uses if r not in by_role]  # type: ignore[union-attr]
    if missing:
        raise JetTaggerError(
            f"network {network!r} needs input groups for {missing}; the config has {input_names}"
        )
    return Tagger(net, input_names, min_length=getattr(net, "min_length", 1), roles=role_list)


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
