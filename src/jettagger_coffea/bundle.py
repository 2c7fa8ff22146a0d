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

MODEL, CONFIG, PREPROCESS, CARD, STATE = "model.onnx", "data_config.yaml", "preprocess.json", "tagger.yaml", "model.pt"
#: networks whose attention carries (N, C, P, P) pair features
PAIRWISE_NETWORKS = ("part", "part-irc")


@dataclasses.dataclass
class Bundle:
    path: Path
    card: dict[str, Any]
    config: DataConfig

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
    def load(cls, path: str | Path, check_model: bool = True) -> Bundle:
        path = Path(path)
        if not path.is_dir():
            raise JetTaggerError(f"tagger bundle {path} is not a folder")
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
            raise JetTaggerError(f"{path / CARD}: classes {classes} disagree with the data config labels "
                                 f"{config.class_names} ({path / CONFIG})")
        for dname, d in (card.get("discriminants") or {}).items():
            unknown = [c for c in [*d.get("signal", []), *d.get("background", [])] if c not in classes]
            if unknown or not d.get("signal"):
                raise JetTaggerError(f"{path / CARD}: discriminant {dname!r} names unknown classes {unknown}")
        bundle = cls(path, card, config)
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
                raise JetTaggerError(f"{self.onnx_path}: model input {inp.name!r} is not an input group of "
                                     f"{self.path / CONFIG} ({list(shapes)})")
            model_c = inp.shape[1] if len(inp.shape) == 3 else None
            if model_c != shapes[inp.name][1]:
                raise JetTaggerError(
                    f"{self.path}: model input {inp.name!r} has shape {inp.shape} but the data config gives "
                    f"{list(shapes[inp.name])} (N, variables, length)")
        outs = sess.get_outputs()
        n_out = outs[0].shape[-1] if outs and outs[0].shape else None
        if isinstance(n_out, int) and n_out != len(self.classes):
            raise JetTaggerError(f"{self.path}: model has {n_out} outputs but {CARD} lists "
                                 f"{len(self.classes)} classes")


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
                if not isinstance(a, (int, float)) or not math.isclose(float(a), float(b), rel_tol=1e-6,
                                                                        abs_tol=1e-9):
                    raise JetTaggerError(f"{path}: {g}.{v}.{key} = {a!r} disagrees with {config.source} ({b})")


def write_bundle(path: str | Path, model: Any, config: DataConfig, card: dict[str, Any],
                 input_dims: dict[str, int]) -> Bundle:
    """Export a torch :class:`~jettagger_coffea.nn.Tagger` as a bundle (ONNX + configs + model card)."""
    import torch

    from .nn.export import export_onnx

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    export_onnx(model, input_dims, path / MODEL)
    torch.save(model.state_dict(), path / STATE)
    config.dump_yaml(path / CONFIG)
    (path / PREPROCESS).write_text(json.dumps(config.preprocess_json(), indent=2))
    card = {**card, "classes": config.class_names, "min_length": int(model.min_length),
            "inputs": {k: list(v) for k, v in config.input_shapes.items()}}
    (path / CARD).write_text(yaml.safe_dump(card, sort_keys=False))
    return Bundle.load(path)
