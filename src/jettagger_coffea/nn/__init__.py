"""Torch networks (``train`` extra): ParticleNet(-Lite), ParT(-plain), IRC-safe ParT, PFN, EFN.

Only training, export and the torch backend build them; onnxruntime inference never does. This module is
the registry and imports no torch (the CLI lists the names from it): a network's class is imported when it
is built or named (``from jettagger_coffea.nn import ParticleNet``). Adding a network is one file here and
one line in :data:`NETWORKS`; its traits (``uses``, ``pairwise``) are class attributes in its file.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .._errors import JetTaggerError

if TYPE_CHECKING:
    from torch import nn

    from .model import Tagger, build, build_for, load_state, network_options
    from .part import ParticleTransformer, ParticleTransformerPlain
    from .part_irc import ParticleTransformerIRC
    from .particlenet import ParticleNet
    from .pfn import EFN, PFN

#: network name -> ("module:Class" in this package, default options). Defaults are weaver's / the papers'.
NETWORKS: dict[str, tuple[str, dict[str, Any]]] = {
    "particlenet": ("particlenet:ParticleNet", {}),
    "particlenet-lite": (
        "particlenet:ParticleNet",
        {"conv_params": [(7, (32, 32, 32)), (7, (64, 64, 64))], "fc_params": [(128, 0.1)]},
    ),
    "part": ("part:ParticleTransformer", {}),
    "part-plain": ("part:ParticleTransformerPlain", {}),
    "part-irc": ("part_irc:ParticleTransformerIRC", {}),
    "pfn": ("pfn:PFN", {}),
    "efn": ("pfn:EFN", {}),
}

#: names importable from this package, resolved on first use: the network classes, and what builds,
#: wraps and loads them (:mod:`.model`)
_LAZY = {
    **{target.split(":")[1]: target.split(":")[0] for target, _ in NETWORKS.values()},
    "Tagger": "model",
    "build": "model",
    "build_for": "model",
    "load_state": "model",
    "network_options": "model",
}


def network_class(network: str) -> type[nn.Module]:
    """The class of a registered network (imports torch)."""
    if network not in NETWORKS:
        raise JetTaggerError(f"unknown network {network!r}; choose from {', '.join(NETWORKS)}")
    module, cls = NETWORKS[network][0].split(":")
    return getattr(import_module(f".{module}", __name__), cls)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    "build_for",
    "load_state",
    "network_class",
    "network_options",
]
