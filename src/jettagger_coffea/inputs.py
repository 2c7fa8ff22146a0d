"""What a model input is: a data-config group of one collection, fed to the network in one role. Bundles
declare their inputs (``tagger.yaml`` ``inputs``); :func:`infer_inputs` is the one place where the default
is chosen for a config that declares none. Torch-free: bundles, training and the networks share it."""

from __future__ import annotations

import dataclasses
from typing import Any

from ._errors import JetTaggerError
from .dataconfig import DataConfig
from .sources import Preset, guess_preset, load_preset

#: what a network argument is: the particle collection's points / features / vectors / mask, or those of
#: the secondary-vertex collection (``sv_*``, as weaver's ParticleNet / ParT taggers take them)
ROLES = ("points", "features", "vectors", "mask", "sv_points", "sv_features", "sv_mask")


def role_of(group: str) -> str | None:
    """The role a group name suggests: its kind (points / features / vectors / mask), ``sv_`` for a group
    of secondary vertices. Bundles declare roles; this is the default where none is declared."""
    kind = next((r for r in ROLES[:4] if r in group.lower()), None)
    if kind is not None and group.lower().startswith("sv") and kind != "vectors":
        return f"sv_{kind}"
    return kind


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """One model input: a data-config group of one collection, in one role."""

    group: str
    collection: str
    role: str


def default_source(config: DataConfig) -> str:
    """The source preset a config's variable names suggest (a card's ``source`` overrides it)."""
    return guess_preset([v for g in config.inputs.values() for v in g.var_names])


def infer_inputs(config: DataConfig, preset: Preset) -> dict[str, InputSpec]:
    """The input spec of a config whose bundle does not declare one (written into bundles on export):
    the collection is traced from the group's variables through the preset; the role is the group name's
    kind (points / features / vectors / mask), ``sv_`` for a secondary-vertex collection."""
    out = {}
    for g in config.inputs.values():
        coll = preset.collection_of(g.vars[0].name, config.new_variables) or preset.particles
        role = role_of(g.name)
        if role is None:
            raise JetTaggerError(
                f"{config.source}: cannot tell the role of input {g.name!r}: declare it in "
                f"tagger.yaml `inputs` (roles: {', '.join(ROLES)})"
            )
        out[g.name] = InputSpec(g.name, coll, role)
    return out


def default_inputs(config: DataConfig, source: str | None = None) -> dict[str, InputSpec]:
    """:func:`infer_inputs` through the ``source`` preset (default: the one the variable names suggest):
    the spec a bundle written from this config declares, so the roles a network is built with."""
    return infer_inputs(config, load_preset(source or default_source(config)))


def card_inputs(config: DataConfig, inputs: dict[str, InputSpec]) -> dict[str, Any]:
    """The ``inputs`` section of a model card: shape, collection and role of each group."""
    return {
        g: {"shape": list(config.input_shapes[g]), "collection": s.collection, "role": s.role}
        for g, s in inputs.items()
    }


def read_inputs(card: dict[str, Any], config: DataConfig, preset: Preset, where: str) -> dict[str, InputSpec]:
    """The input spec a card declares (``where``: the card's path, for messages); inferred for older cards,
    which give shapes only."""
    declared = card.get("inputs")
    if not isinstance(declared, dict) or not all(isinstance(v, dict) for v in declared.values()):
        return infer_inputs(config, preset)
    out = {}
    for g in config.inputs:
        d = declared.get(g)
        if d is None:
            raise JetTaggerError(f"{where}: inputs: no entry for data-config group {g!r}")
        role, coll = str(d.get("role")), str(d.get("collection", preset.particles))
        if role not in ROLES:
            raise JetTaggerError(f"{where}: inputs.{g}.role {role!r} is not one of {', '.join(ROLES)}")
        out[g] = InputSpec(g, coll, role)
    unknown = sorted(set(declared) - set(config.inputs))
    if unknown:
        raise JetTaggerError(f"{where}: inputs {unknown} are not groups of {config.source}")
    return out
