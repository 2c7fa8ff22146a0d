"""Tagger bundle: a folder with ``model.onnx`` (optionally ``model.pt``), the weaver data config,
``preprocess.json`` and ``tagger.yaml`` (name, network, classes, discriminants, provenance, metrics,
working points). Everything is validated when the bundle is loaded, naming the file at fault."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import yaml

from ._errors import JetTaggerError
from .config import DataConfig
from .sources import Preset, guess_preset, load_preset

MODEL, CONFIG, PREPROCESS, CARD, STATE = (
    "model.onnx",
    "data_config.yaml",
    "preprocess.json",
    "tagger.yaml",
    "model.pt",
)
#: networks whose attention carries (N, C, P, P) pair features
PAIRWISE_NETWORKS = ("part", "part-irc")


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


@dataclasses.dataclass
class Bundle:
    path: Path
    card: dict[str, Any]
    config: DataConfig
    preset: Preset  # the card's ``source`` (default: chosen from the variable names)
    inputs: dict[str, InputSpec]  # the card's ``inputs`` (default: inferred, see :func:`infer_inputs`)

    @property
    def primary(self) -> str:
        """The group whose particle count is a jet's: the particle collection's mask."""
        ps = [s for s in self.inputs.values() if s.collection == self.preset.particles]
        ps = ps or list(self.inputs.values())
        return next((s.group for s in ps if s.role == "mask"), ps[0].group)

    @property
    def name(self) -> str:
        return str(self.card.get("name", self.path.name))

    @property
    def classes(self) -> list[str]:
        return list(self.card["classes"])

    @property
    def discriminants(self) -> dict[str, dict[str, list[str]]]:
        return dict(self.card.get("discriminants") or {})

    @property
    def pairwise(self) -> bool:
        """Whether the network builds (N, C, P, P) pair tensors (their memory bounds the batch size). An
        imported ONNX of unknown architecture counts as pairwise: smaller batches, bounded memory."""
        return self.card.get("network") in (*PAIRWISE_NETWORKS, "onnx", None)

    @property
    def min_length(self) -> int:
        return int(self.card.get("min_length", 1))

    @property
    def onnx_path(self) -> Path:
        return self.path / MODEL

    @property
    def working_points(self) -> dict[str, Any]:
        return dict(self.card.get("working_points") or {})

    @classmethod
    def load(cls, path: str | Path | None = None, check_model: bool = True) -> Bundle:
        """A bundle folder, a shipped bundle's name, or None for the default (see :func:`models.resolve`)."""
        from .models import resolve

        path = resolve(None if path is None else str(path))
        for f in (MODEL, CONFIG, CARD):
            if not (path / f).is_file():
                raise JetTaggerError(f"tagger bundle {path}: missing {f}")
        try:
            card = yaml.safe_load((path / CARD).read_text())
        except yaml.YAMLError as err:
            raise JetTaggerError(f"{path / CARD}: invalid YAML: {err}") from None
        if not isinstance(card, dict) or "classes" not in card:
            raise JetTaggerError(f"{path / CARD}: needs at least `classes`")
        config = DataConfig.from_yaml(path / CONFIG)
        if (path / PREPROCESS).is_file():
            _check_preprocess(path / PREPROCESS, config)
        classes = list(card["classes"])
        if config.label_type == "simple" and config.class_names != classes:
            raise JetTaggerError(
                f"{path / CARD}: classes {classes} disagree with the data config labels "
                f"{config.class_names} ({path / CONFIG})"
            )
        for dname, d in (card.get("discriminants") or {}).items():
            unknown = [c for c in [*d.get("signal", []), *d.get("background", [])] if c not in classes]
            if unknown or not d.get("signal"):
                raise JetTaggerError(f"{path / CARD}: discriminant {dname!r} names unknown classes {unknown}")
        names = [v for g in config.inputs.values() for v in g.var_names]
        preset = load_preset(card.get("source") or guess_preset(names))
        bundle = cls(path, card, config, preset, _input_spec(card, config, preset, path))
        if check_model:
            bundle.check_model()
        return bundle

    def check_model(self) -> None:
        """The ONNX inputs must be data-config groups with the same number of variables."""
        import onnxruntime as ort

        try:
            sess = ort.InferenceSession(str(self.onnx_path), providers=["CPUExecutionProvider"])
        except Exception as err:  # noqa: BLE001 - whatever onnxruntime says, the file is at fault
            raise JetTaggerError(f"{self.onnx_path}: not a loadable ONNX model ({err})") from None
        shapes = self.config.input_shapes
        for inp in sess.get_inputs():
            if inp.name not in shapes:
                raise JetTaggerError(
                    f"{self.onnx_path}: model input {inp.name!r} is not an input group of "
                    f"{self.path / CONFIG} ({list(shapes)})"
                )
            model_c = inp.shape[1] if len(inp.shape) == 3 else None
            if model_c != shapes[inp.name][1]:
                raise JetTaggerError(
                    f"{self.path}: model input {inp.name!r} has shape {inp.shape} but the data config gives "
                    f"{list(shapes[inp.name])} (N, variables, length)"
                )
        outs = sess.get_outputs()
        n_out = outs[0].shape[-1] if outs and outs[0].shape else None
        if isinstance(n_out, int) and n_out != len(self.classes):
            raise JetTaggerError(
                f"{self.path}: model has {n_out} outputs but {CARD} lists {len(self.classes)} classes"
            )


def _input_spec(card: dict[str, Any], config: DataConfig, preset: Preset, path: Path) -> dict[str, InputSpec]:
    declared = card.get("inputs")
    if not isinstance(declared, dict) or not all(isinstance(v, dict) for v in declared.values()):
        return infer_inputs(config, preset)  # older cards: shapes only
    out = {}
    for g in config.inputs:
        d = declared.get(g)
        if d is None:
            raise JetTaggerError(f"{path / CARD}: inputs: no entry for data-config group {g!r}")
        role, coll = str(d.get("role")), str(d.get("collection", preset.particles))
        if role not in ROLES:
            raise JetTaggerError(f"{path / CARD}: inputs.{g}.role {role!r} is not one of {', '.join(ROLES)}")
        out[g] = InputSpec(g, coll, role)
    unknown = sorted(set(declared) - set(config.inputs))
    if unknown:
        raise JetTaggerError(f"{path / CARD}: inputs {unknown} are not groups of {config.source}")
    return out


def card_inputs(config: DataConfig, inputs: dict[str, InputSpec]) -> dict[str, Any]:
    """The ``inputs`` section of a model card: shape, collection and role of each group."""
    return {
        g: {"shape": list(config.input_shapes[g]), "collection": s.collection, "role": s.role}
        for g, s in inputs.items()
    }


def _check_preprocess(path: Path, config: DataConfig) -> None:
    """A preprocess.json that disagrees with the data config (tampered or stale) is refused."""
    try:
        j = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise JetTaggerError(f"{path}: invalid JSON: {err}") from None
    expected = config.preprocess_json()
    for g in config.input_names:
        got = j.get(g)
        if not isinstance(got, dict) or got.get("var_names") != expected[g]["var_names"]:
            raise JetTaggerError(f"{path}: input {g!r} variables disagree with {config.source}")
        for v, info in expected[g]["var_infos"].items():
            theirs = got.get("var_infos", {}).get(v, {})
            for key in ("median", "norm_factor", "lower_bound", "upper_bound", "pad"):
                a, b = theirs.get(key), info[key]
                if not isinstance(a, (int, float)) or not math.isclose(
                    float(a), float(b), rel_tol=1e-6, abs_tol=1e-9
                ):
                    raise JetTaggerError(
                        f"{path}: {g}.{v}.{key} = {a!r} disagrees with {config.source} ({b})"
                    )


def write_bundle(
    path: str | Path, model: Any, config: DataConfig, card: dict[str, Any], input_dims: dict[str, int]
) -> Bundle:
    """Export a torch :class:`~jettagger_coffea.nn.Tagger` as a bundle (ONNX + configs + model card)."""
    import torch

    from .nn.export import export_onnx

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    export_onnx(model, input_dims, path / MODEL)
    torch.save(model.state_dict(), path / STATE)
    config.dump_yaml(path / CONFIG)
    (path / PREPROCESS).write_text(json.dumps(config.preprocess_json(), indent=2))
    card = {**card, "classes": config.class_names, "min_length": int(model.min_length)}
    write_card(path, card, config)
    return Bundle.load(path)


def write_card(path: Path, card: dict[str, Any], config: DataConfig) -> None:
    """``tagger.yaml`` with the source preset and the input spec made explicit."""
    names = [v for g in config.inputs.values() for v in g.var_names]
    source = card.get("source") or guess_preset(names)
    preset = load_preset(source)
    inputs = infer_inputs(config, preset) if not isinstance(card.get("inputs"), dict) else None
    card = {**card, "source": source}
    if inputs is not None:
        card["inputs"] = card_inputs(config, inputs)
    (path / CARD).write_text(yaml.safe_dump(card, sort_keys=False))
