"""What a model input is: a data-config group of one collection, fed to the network in one role; and what
a model output column is: a class, the model's own discriminant, a regression or an embedding. Bundles
declare both (``tagger.yaml`` ``inputs`` and ``outputs``); :func:`infer_inputs` and
:func:`default_outputs` are the one place where the default is chosen for a card that declares none.
Torch-free: bundles, training and the networks share it."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

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


# -- outputs -------------------------------------------------------------------------------------------
#: what a model output column is: a class probability (argmax, confusion, ROC, working points), a class
#: logit (the softmax over the logits gives the probabilities: a model without its own softmax), a score
#: the model computes itself (a discriminant: attached and written, never argmaxed), a regression target
#: or an embedding (hidden neurons)
OUTPUT_ROLES = ("class", "logit", "discriminant", "regression", "embedding")
CLASS_ROLES = ("class", "logit")


@dataclasses.dataclass(frozen=True)
class OutputColumn:
    """One column of a model output. A regression's ``unit`` is that of the regressed quantity; with
    ``multiplies`` the column is a factor of that expression of the jet's fields (GloParT's massCorr:
    ``(1 - rawFactor) * mass``), the quantity their product."""

    name: str
    role: str
    unit: str | None = None
    multiplies: str | None = None

    def card(self) -> str | dict[str, str]:
        """The column's card entry: its role alone, or a mapping where it has a unit or a factor."""
        extra = {k: v for k, v in (("unit", self.unit), ("multiplies", self.multiplies)) if v is not None}
        return {"role": self.role, **extra} if extra else self.role


@dataclasses.dataclass(frozen=True)
class OutputTensor:
    """One model output: its name (None: the model's first output, for cards from before output roles)
    and its columns, in order."""

    name: str | None
    columns: tuple[OutputColumn, ...]


@dataclasses.dataclass(frozen=True)
class Outputs:
    """The model's outputs, in the model's order: one tensor of mixed columns (CMS's ParticleNet) or
    several (GloParT-like); every column has a role."""

    tensors: tuple[OutputTensor, ...]

    @property
    def columns(self) -> list[OutputColumn]:
        return [c for t in self.tensors for c in t.columns]

    @property
    def classes(self) -> list[str]:
        """The class columns (probabilities or logits): what argmax, metrics and working points see."""
        return [c.name for c in self.columns if c.role in CLASS_ROLES]

    @property
    def others(self) -> list[OutputColumn]:
        """Every column that is not a class: discriminants, regressions, embeddings."""
        return [c for c in self.columns if c.role not in CLASS_ROLES]

    def of_role(self, role: str) -> list[OutputColumn]:
        return [c for c in self.columns if c.role == role]

    @property
    def names(self) -> list[str] | None:
        """The model output names to run (None: the model's first output, unnamed in the card)."""
        names = [t.name for t in self.tensors]
        return None if any(n is None for n in names) else [str(n) for n in names]

    def split(self, values: Any) -> tuple[Any, Any]:
        """(N, all columns) -> class probabilities (N, classes; softmax over the logits) and the other
        columns (N, others), both in card order."""
        roles = np.array([c.role for c in self.columns])
        scores = values[:, np.isin(roles, CLASS_ROLES)]
        if "logit" in roles:
            shifted = np.exp(scores - np.max(scores, axis=1, keepdims=True))
            scores = shifted / shifted.sum(axis=1, keepdims=True)
        return scores, values[:, ~np.isin(roles, CLASS_ROLES)]

    def card(self) -> dict[str, Any]:
        """The ``outputs`` section of a model card: output name -> column -> role (or role and unit)."""
        return {str(t.name): {c.name: c.card() for c in t.columns} for t in self.tensors}


#: the default role of an output name (CMSSW's and weaver's spellings), first match wins; anything else is
#: a class (weaver's ``label_*``). A card's ``outputs`` overrides it.
_ROLE_PATTERNS = (
    ("hidNeuron", "embedding"),
    ("target_", "regression"),
    ("massCorr", "regression"),
    ("mass", "regression"),
)
#: what a regression multiplies (its quantity's unit) by its name's start: the jet's own mass or raw pT
_FACTORS = {"massCorr": "(1 - rawFactor) * mass", "target_pt": "(1 - rawFactor) * pt"}


def default_column(label: str) -> OutputColumn:
    """An output name's column: ``label_X`` / ``probX`` -> class ``X``, ``probXvsY`` -> discriminant
    ``XvsY``; ``hidNeuron*`` an embedding; ``target_*``, ``massCorr*`` and ``mass*`` regressions (``mass``
    in GeV; corrections are factors of the jet's mass or raw pT)."""
    role = next((r for prefix, r in _ROLE_PATTERNS if label.startswith(prefix)), None)
    if role is None:
        name = label.removeprefix("label_")
        if name == label and label.startswith("prob") and len(label) > 4:
            name = label[4:]
        is_disc = any(name[i : i + 2] == "vs" and name[i + 2 : i + 3].isupper() for i in range(len(name)))
        return OutputColumn(name, "discriminant" if is_disc else "class")
    if role != "regression":
        return OutputColumn(label, role)
    factor = next((f for prefix, f in _FACTORS.items() if label.startswith(prefix)), None)
    return OutputColumn(label, role, unit="GeV", multiplies=factor)


def default_outputs(labels: list[str], tensors: list[tuple[str, int | None]] | None = None) -> Outputs:
    """The output spec of a model whose card declares none: the label names (preprocess.json's
    ``output_names``, the data config's labels) with their default roles, split over the model's outputs
    (``tensors``: name and width, in order) where their widths add up to the labels; all in the first
    output otherwise (the other outputs are not read)."""
    cols = [default_column(v) for v in labels]
    if not tensors:
        return Outputs((OutputTensor(None, tuple(cols)),))
    widths = [w if isinstance(w, int) else -1 for _, w in tensors]
    if len(tensors) > 1 and min(widths) > 0 and sum(widths) == len(cols):
        ends = np.cumsum(widths)
        return Outputs(
            tuple(OutputTensor(n, tuple(cols[e - w : e])) for (n, _), w, e in zip(tensors, widths, ends))
        )
    return Outputs((OutputTensor(tensors[0][0], tuple(cols)),))


def trained_outputs(config: DataConfig) -> Outputs:
    """The outputs of a network trained here (:class:`~.nn.model.Tagger`): ``softmax``, the class
    probabilities, where the config has classes; then one output per regression target, named as it, one
    column in its unit (and what it multiplies, where the target is a factor)."""
    from .dataconfig import CLASS_OUTPUT

    classes = tuple(OutputColumn(default_column(v).name, "class") for v in config.label_value)
    tensors = [OutputTensor(CLASS_OUTPUT, classes)] if classes else []
    tensors += [
        OutputTensor(t.name, (OutputColumn(t.name, "regression", t.unit, t.multiplies),))
        for t in config.targets.values()
    ]
    return Outputs(tuple(tensors))


def read_outputs(card: dict[str, Any], labels: list[str], where: str) -> Outputs:
    """The output spec a card declares (``outputs``: output name -> column -> role, or a mapping with
    ``role``, ``unit``, ``multiplies``), checked: known roles, columns that are the config's labels in
    order, not both probabilities and logits. Cards without it: :func:`default_outputs` of the labels."""
    declared = card.get("outputs")
    if declared is None:
        return default_outputs(labels)
    if not isinstance(declared, dict) or not all(isinstance(v, dict) for v in declared.values()):
        raise JetTaggerError(f"{where}: outputs must map each model output to its columns")
    tensors = []
    for tname, columns in declared.items():
        cols = []
        for cname, d in columns.items():
            d = {"role": d} if isinstance(d, str) else d
            if not isinstance(d, dict) or d.get("role") not in OUTPUT_ROLES:
                got = d.get("role") if isinstance(d, dict) else d
                raise JetTaggerError(
                    f"{where}: outputs.{tname}.{cname}: role {got!r} is not one of {', '.join(OUTPUT_ROLES)}"
                )
            unknown = sorted(set(d) - {"role", "unit", "multiplies"})
            if unknown:
                raise JetTaggerError(f"{where}: outputs.{tname}.{cname}: unknown keys {unknown}")
            if d.get("multiplies") is not None:
                from .expressions import Expression

                Expression(str(d["multiplies"]), where=f"{where}: outputs.{tname}.{cname}.multiplies")
            unit, factor = (None if d.get(k) is None else str(d[k]) for k in ("unit", "multiplies"))
            cols.append(OutputColumn(str(cname), d["role"], unit, factor))
        tensors.append(OutputTensor(str(tname), tuple(cols)))
    out = Outputs(tuple(tensors))
    _check_outputs(out, labels, where)
    return out


def _check_outputs(out: Outputs, labels: list[str], where: str) -> None:
    names = [c.name for c in out.columns]
    expected = [default_column(v).name for v in labels]
    if labels and len(names) != len(expected):
        raise JetTaggerError(
            f"{where}: outputs list {len(names)} columns but the data config has {len(expected)} "
            f"output names ({', '.join(expected)})"
        )
    if labels and names != expected:
        bad = next(f"{a!r} where the data config has {b!r}" for a, b in zip(names, expected) if a != b)
        raise JetTaggerError(f"{where}: outputs disagree with the data config's output names: {bad}")
    if len(set(names)) != len(names):
        raise JetTaggerError(f"{where}: outputs name a column twice")
    roles = {c.role for c in out.columns}
    if {"class", "logit"} <= roles:
        raise JetTaggerError(f"{where}: outputs mix class probabilities and logits (one or the other)")


def is_mass(col: Any) -> bool:
    """A regressed quantity that is a jet mass (compared with the true mass): in GeV, named ``mass...`` or
    ``target_mass``, or a factor that multiplies a mass (``massCorr`` x (1 - rawFactor) x mass)."""
    name = col.name.lower()
    named = name.startswith("mass") or name == "target_mass"
    return named and (col.unit == "GeV" or "mass" in (col.multiplies or ""))


def regressed_masses(outputs: Outputs) -> list[OutputColumn]:
    """The regression columns that are jet masses (:func:`is_mass`): what the response compares with the
    true mass."""
    return [c for c in outputs.others if c.role == "regression" and is_mass(c)]
