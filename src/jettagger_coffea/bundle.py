"""Tagger bundle: a folder with ``model.onnx`` (optionally ``model.pt``), the weaver data config,
``preprocess.json`` and ``tagger.yaml`` (name, network, classes, discriminants, provenance, metrics,
working points). Everything is validated when the bundle is loaded, naming the file at fault. Here too: the
shipped bundles (``models/``, :func:`resolve`) and the one writer (:func:`write_bundle`), which takes an
ONNX file already exported (torch networks: :func:`jettagger_coffea.nn.export.save_model`)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

from ._errors import JetTaggerError
from .dataconfig import DataConfig
from .inputs import (
    InputSpec,
    Outputs,
    card_inputs,
    default_outputs,
    default_source,
    infer_inputs,
    read_inputs,
    read_outputs,
)
from .metrics import unknown_classes
from .sources import Preset, load_preset

MODEL, CONFIG, PREPROCESS, CARD, STATE = (
    "model.onnx",
    "data_config.yaml",
    "preprocess.json",
    "tagger.yaml",
    "model.pt",
)


# -- shipped bundles -----------------------------------------------------------------------------------
def models_dir() -> Path:
    """The shipped bundles: ``models/`` of the repository, installed as ``jettagger_coffea/models``."""
    installed = Path(str(files("jettagger_coffea") / "models"))
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parents[2] / "models"  # editable checkout


def available() -> list[str]:
    """The names of the shipped bundles."""
    d = models_dir()
    return sorted(p.name for p in d.iterdir() if (p / CARD).is_file()) if d.is_dir() else []


def resolve(name_or_path: str | None = None) -> Path:
    """A bundle path from a folder path, a shipped bundle name, or None (``$JETTAGGER_MODEL``, else the
    default bundle named in ``models/DEFAULT``)."""
    name_or_path = name_or_path or os.environ.get("JETTAGGER_MODEL") or None
    if name_or_path and Path(name_or_path).is_dir():
        return Path(name_or_path)
    d = models_dir()
    default = d / "DEFAULT"
    name = name_or_path or (default.read_text().strip() if default.is_file() else None)
    if name and (d / name / CARD).is_file():
        return d / name
    if name_or_path and Path(name_or_path).exists():
        raise JetTaggerError(f"tagger bundle {name_or_path} is not a folder")
    raise JetTaggerError(
        f"no tagger bundle {name_or_path or '(default)'}: neither a folder nor a shipped name "
        f"({', '.join(available()) or 'none'})"
    )


# -- loading -------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Bundle:
    path: Path
    card: dict[str, Any]
    config: DataConfig
    preset: Preset  # the card's ``source`` (default: chosen from the variable names)
    inputs: dict[str, InputSpec]  # the card's ``inputs`` (default: inferred, see :func:`infer_inputs`)
    outputs: Outputs  # the card's ``outputs`` (default: from the labels, see :func:`default_outputs`)

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
        """The class columns of the outputs (probabilities or logits): argmax, metrics, working points."""
        return self.outputs.classes

    @property
    def discriminants(self) -> dict[str, dict[str, list[str]]]:
        return dict(self.card.get("discriminants") or {})

    @property
    def pairwise(self) -> bool:
        """Whether the network builds (N, C, P, P) pair tensors (their memory bounds the batch size): the
        card's ``pairwise``, written on export from the network class. A card without it (an imported ONNX
        of unknown architecture) counts as pairwise: smaller batches, bounded memory."""
        return bool(self.card.get("pairwise", True))

    @property
    def min_length(self) -> int:
        return int(self.card.get("min_length", 1))

    @property
    def onnx_path(self) -> Path:
        return self.path / MODEL

    @property
    def working_points(self) -> dict[str, Any]:
        return dict(self.card.get("working_points") or {})

    @property
    def served_model(self) -> str | None:
        """The Triton model name of a client-only bundle (no local weights), from its card."""
        served = self.card.get("served_model")
        return str(served) if served else None

    @property
    def default_backend(self) -> str:
        """onnx, or triton for a client-only bundle: the server's model is its network."""
        return "triton" if self.served_model and not self.onnx_path.is_file() else "onnx"

    @classmethod
    def load(cls, path: str | Path | None = None, check_model: bool = True) -> Bundle:
        """A bundle folder, a shipped bundle's name, or None for the default (see :func:`resolve`)."""
        path = resolve(None if path is None else str(path))
        for f in (CONFIG, CARD):
            if not (path / f).is_file():
                raise JetTaggerError(f"tagger bundle {path}: missing {f}")
        try:
            card = yaml.safe_load((path / CARD).read_text())
        except yaml.YAMLError as err:
            raise JetTaggerError(f"{path / CARD}: invalid YAML: {err}") from None
        if not isinstance(card, dict) or not ("classes" in card or "outputs" in card):
            raise JetTaggerError(f"{path / CARD}: needs at least `classes` (or `outputs`)")
        weights = (path / MODEL).is_file()
        if not weights and not card.get("served_model"):  # only a client-only bundle has no model.onnx
            raise JetTaggerError(f"tagger bundle {path}: missing {MODEL}")
        if not isinstance(card.get("pairwise", True), bool):
            raise JetTaggerError(f"{path / CARD}: pairwise must be true or false, not {card['pairwise']!r}")
        config = DataConfig.from_yaml(path / CONFIG)
        if (path / PREPROCESS).is_file():
            _check_preprocess(path / PREPROCESS, config)
        outputs = read_outputs(card, config.output_names, str(path / CARD))
        classes = outputs.classes
        if list(card.get("classes", classes)) != classes:
            raise JetTaggerError(
                f"{path / CARD}: classes {list(card['classes'])} disagree with the class outputs "
                f"{classes} of the data config labels ({path / CONFIG})"
            )
        for dname, d in (card.get("discriminants") or {}).items():
            unknown = unknown_classes(classes, d)
            if unknown or not d.get("signal"):
                raise JetTaggerError(f"{path / CARD}: discriminant {dname!r} names unknown classes {unknown}")
        preset = load_preset(card.get("source") or default_source(config))
        inputs = read_inputs(card, config, preset, str(path / CARD))
        bundle = cls(path, card, config, preset, inputs, outputs)
        if check_model and weights:
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
        self._check_outputs([(o.name, _width(o.shape)) for o in sess.get_outputs()])

    def _check_outputs(self, model: list[tuple[str, int | None]]) -> None:
        """Every output the card names is one of the model's, as wide as its columns (a symbolic width is
        checked on the first batch, see :func:`.backends.probe`)."""
        widths = dict(model)
        for t in self.outputs.tensors:
            name = t.name if t.name is not None else (model[0][0] if model else None)
            if name not in widths:
                raise JetTaggerError(
                    f"{self.path / CARD}: outputs.{name} is not an output of {self.onnx_path} "
                    f"({', '.join(widths) or 'none'})"
                )
            n = widths[name]
            if isinstance(n, int) and n != len(t.columns):
                what = "classes" if t.name is None else "columns"  # a card without outputs lists classes
                raise JetTaggerError(
                    f"{self.path}: model output {name!r} has {n} columns but {CARD} lists "
                    f"{len(t.columns)} {what}"
                )


def _width(shape: Any) -> int | None:
    """The columns of an output of shape (N, columns): its last axis where fixed."""
    return shape[-1] if shape and isinstance(shape[-1], int) else None


def onnx_outputs(onnx: str | Path | bytes) -> list[tuple[str, int | None]]:
    """An ONNX model's outputs: name and width (None where symbolic), in order."""
    import onnxruntime as ort

    data = onnx if isinstance(onnx, bytes) else str(onnx)
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return [(o.name, _width(o.shape)) for o in sess.get_outputs()]


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
        group = config.inputs[g]  # lengths: weaver's var_length, CMSSW's max_length / min_length
        for key, want in (("var_length", group.length), ("max_length", group.length)):
            if key in got and got[key] != want:
                raise JetTaggerError(
                    f"{path}: {g}.{key} = {got[key]!r} disagrees with {config.source} (length {want})"
                )
        low = got.get("min_length", 1)
        if not isinstance(low, int) or max(low, 1) != group.min_length:
            raise JetTaggerError(
                f"{path}: {g}.min_length = {low!r} disagrees with {config.source} "
                f"(min_length {group.min_length})"
            )
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


# -- writing -------------------------------------------------------------------------------------------
def write_bundle(
    path: str | Path,
    *,
    onnx: str | Path | bytes | None,
    config: DataConfig,
    card: dict[str, Any],
    state: str | Path | None = None,
    min_length: int | None = None,
    pairwise: bool | None = None,
) -> Bundle:
    """The one bundle writer: ``onnx`` (an exported file or its bytes; None for a client-only bundle,
    whose card names its ``served_model``) as model.onnx, ``state`` (torch
    weights, optional) as model.pt, the data config, preprocess.json and tagger.yaml. The card gets its
    output spec (the card's ``outputs``, else :func:`.inputs.default_outputs` of the config's labels over
    the model's outputs) and the classes it gives (where the card already lists them, in that place), then
    the network's ``min_length`` and ``pairwise`` where given, and its source preset and input spec made
    explicit. Returns the bundle, loaded and validated."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if isinstance(onnx, bytes):
        (path / MODEL).write_bytes(onnx)
    elif onnx is not None:
        shutil.copyfile(onnx, path / MODEL)
    if state is not None:
        shutil.copyfile(state, path / STATE)
    config.dump_yaml(path / CONFIG)
    (path / PREPROCESS).write_text(json.dumps(config.preprocess_json(), indent=2))
    outputs = card.get("outputs")
    if not isinstance(outputs, dict):  # the default roles, over the model's outputs
        spec = default_outputs(config.output_names, onnx_outputs(path / MODEL) if onnx else None)
        outputs = spec.card() if spec.names is not None else None
    card = {**card, "classes": None, "outputs": outputs}  # classes: where the card lists them
    card["classes"] = read_outputs(card, config.output_names, str(path / CARD)).classes
    card = {k: v for k, v in card.items() if v is not None}
    traits = {"min_length": min_length, "pairwise": pairwise}
    card |= {k: v for k, v in traits.items() if v is not None}
    _write_card(path, card, config)
    return Bundle.load(path)


def _write_card(path: Path, card: dict[str, Any], config: DataConfig) -> None:
    """``tagger.yaml`` with the source preset and the input spec made explicit."""
    source = card.get("source") or default_source(config)
    preset = load_preset(source)
    inputs = infer_inputs(config, preset) if not isinstance(card.get("inputs"), dict) else None
    card = {**card, "source": source}
    if inputs is not None:
        card["inputs"] = card_inputs(config, inputs)
    (path / CARD).write_text(yaml.safe_dump(card, sort_keys=False))


def update_card(path: str | Path, entries: dict[str, Any]) -> Bundle:
    """``entries`` merged into a bundle's tagger.yaml (a reduced precision's record, see
    :mod:`.precision`); returns the bundle, loaded and validated."""
    path = Path(path)
    card = yaml.safe_load((path / CARD).read_text())
    _write_card(path, {**card, **entries}, DataConfig.from_yaml(path / CONFIG))
    return Bundle.load(path)
