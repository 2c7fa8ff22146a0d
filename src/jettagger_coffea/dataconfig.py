"""weaver data config (YAML or exported ``preprocess.json``) -> one typed :class:`DataConfig`.

This one object travels from features to padding to the model's input names; nothing re-derives feature
lists or their order elsewhere.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ._errors import JetTaggerError
from .batching import above_cap
from .expressions import Expression, translate_legacy

PAD_MODES = ("constant", "wrap")
#: regression losses (:mod:`.nn.losses`): squared error (weaver's default), log-cosh (CMS's mass
#: regression) and the pinball loss of a quantile (CMS's ``target_pt_q16`` / ``q84``)
TARGET_LOSSES = ("mse", "logcosh", "quantile")
#: how a target is standardised for training: (x - median) / IQR, (x - mean) / std, or not at all
TARGET_SCALINGS = ("median_iqr", "mean_std", "none")
#: the name of the class-probability output; no target may take it
CLASS_OUTPUT = "softmax"

#: The formulas of the official JetClass configs, for a ``preprocess.json`` imported without its YAML.
JETCLASS_NEW_VARIABLES = {
    "part_mask": "ak.ones_like(part_energy)",
    "part_pt": "np.hypot(part_px, part_py)",
    "part_pt_log": "np.log(part_pt)",
    "part_e_log": "np.log(part_energy)",
    "part_logptrel": "np.log(part_pt/jet_pt)",
    "part_logerel": "np.log(part_energy/jet_energy)",
    "part_deltaR": "np.hypot(part_deta, part_dphi)",
    "part_d0": "np.tanh(part_d0val)",
    "part_dz": "np.tanh(part_dzval)",
}


@dataclasses.dataclass(frozen=True)
class VarSpec:
    """One input variable: ``clip((x - center) * scale, clip_min, clip_max)`` unless ``center`` is None."""

    name: str
    center: float | str | None = None  # "auto" until resolved
    scale: float = 1.0
    clip_min: float = -5.0
    clip_max: float = 5.0
    pad_value: float = 0.0


@dataclasses.dataclass(frozen=True)
class InputGroup:
    name: str
    length: int | None
    pad_mode: str
    vars: tuple[VarSpec, ...]
    min_length: int = 1  # CMSSW's preprocess.json: shorter jets are padded to it

    @property
    def var_names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.vars)


@dataclasses.dataclass(frozen=True)
class Target:
    """A regression target (the config's ``targets``): an expression of the jet's fields, the loss it is
    trained with (``quantile`` for the pinball loss), its ``weight`` in the joint loss (cross entropy +
    sum of weight x loss), its unit, and the affine map the network's output is trained in: value =
    ``center + width * output`` (``None`` until resolved on the training jets by ``standardise``).

    ``per_class``: one value per class hypothesis (as GloParT's per-hypothesis mass corrections), each
    trained on the jets of its class only, the output their mean weighted by the class probabilities: a
    jet's W and top masses are not averaged into one regression pulled between them. ``multiplies``: the
    target is a factor of that expression of the NanoAOD jet's fields (GloParT's massCorr: ``(1 -
    rawFactor) * mass``), written into the card, so that the processor multiplies it out."""

    name: str
    expr: Expression
    loss: str = "mse"
    quantile: float | None = None
    weight: float = 1.0
    unit: str = "GeV"
    standardise: str = "median_iqr"
    center: float | None = None
    width: float | None = None
    per_class: bool = False
    multiplies: str | None = None

    @property
    def resolved(self) -> bool:
        return self.center is not None and self.width is not None


@dataclasses.dataclass
class DataConfig:
    """A parsed weaver data config."""

    inputs: dict[str, InputGroup]
    new_variables: dict[str, Expression] = dataclasses.field(default_factory=dict)
    selection: Expression | None = None
    label_type: str = "simple"
    label_value: list[str] | dict[str, Expression] = dataclasses.field(default_factory=list)
    observers: tuple[str, ...] = ()
    targets: dict[str, Target] = dataclasses.field(default_factory=dict)
    preprocess_method: str = "manual"
    data_fraction: float = 0.1
    source: str = "<dict>"
    raw: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)

    # -- construction -------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, opts: Mapping[str, Any], source: str = "<dict>") -> DataConfig:
        """Validate and type a parsed config; every error names ``source`` and the offending section."""
        opts = copy.deepcopy(dict(opts))
        pre = opts.get("preprocess") or {}
        method = str(pre.get("method", "manual")).lower()
        new_vars = _new_variables(opts.get("new_variables") or {}, source)
        groups = _input_groups(opts.get("inputs"), source, method.startswith("auto"), pre.get("params") or {})
        ltype, lvalue = _labels(opts.get("labels") or {}, source)
        sel = opts.get("selection")
        observers = tuple(opts.get("observers") or ()) or tuple(opts.get("monitor_variables") or ())
        taken = {"classes": _class_names(ltype, lvalue), "input groups": list(groups)}
        targets = _targets(opts.get("targets") or {}, source, taken)
        return cls(
            inputs=groups,
            new_variables=new_vars,
            selection=Expression(translate_legacy(str(sel)), where=f"{source}: selection") if sel else None,
            label_type=ltype,
            label_value=lvalue,
            observers=observers,
            targets=targets,
            preprocess_method=method,
            data_fraction=float(pre.get("data_fraction") or 0.1),
            source=source,
            raw=dict(opts),
        )

    @classmethod
    def from_yaml(cls, path: str | Path) -> DataConfig:
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as err:
            raise JetTaggerError(f"cannot read data config {path}: {err.strerror}") from None
        try:
            opts = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise JetTaggerError(f"{path}: invalid YAML: {err}") from None
        if not isinstance(opts, Mapping):
            raise JetTaggerError(f"{path}: a data config must be a mapping")
        return cls.from_dict(opts, source=str(path))

    @classmethod
    def from_preprocess_json(cls, path: str | Path, base: DataConfig | None = None) -> DataConfig:
        """weaver's exported ``preprocess.json`` (``var_length``) or CMSSW's (``min_length`` /
        ``max_length``). It carries neither ``pad_mode`` nor ``new_variables``: they come from ``base`` (the
        training YAML) when given; else masks are ones on their collection and JetClass names get the
        official JetClass formulas, with ``pad_mode: constant`` (only the mask matters to a masked
        network)."""
        path = Path(path)
        try:
            j = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise JetTaggerError(f"cannot read preprocess.json {path}: {err}") from None
        try:
            inputs = {gname: _preprocess_group(path, gname, j[gname], base) for gname in j["input_names"]}
            output_names = list(j["output_names"])
        except JetTaggerError:
            raise
        except (KeyError, TypeError, ValueError) as err:
            raise JetTaggerError(f"{path}: malformed preprocess.json ({type(err).__name__}: {err})") from None
        new_vars, observers = _preprocess_formulas([v[0] for g in inputs.values() for v in g["vars"]], base)
        opts = {
            "inputs": inputs,
            "new_variables": new_vars,
            "observers": observers,
            "labels": {"type": "simple", "value": output_names},
        }
        return cls.from_dict(opts, source=str(path))

    # -- queries --------------------------------------------------------------------------------------
    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(self.inputs)

    @property
    def class_names(self) -> list[str]:
        return _class_names(self.label_type, self.label_value)

    @property
    def output_names(self) -> list[str]:
        """The model's output columns: the class labels, then the regression targets (weaver's
        ``output_names``, as CMS's preprocess.json lists ``target_*`` after the labels)."""
        return [*self.label_value, *self.targets]

    def target_values(self, table: Any) -> Any:
        """(jets, targets) float32: each target's expression over the table, one value per jet."""
        import awkward as ak
        import numpy as np

        cols = []
        for t in self.targets.values():
            try:
                v = np.asarray(ak.to_numpy(t.expr(table)), dtype=np.float32)
            except (ValueError, TypeError) as err:  # jagged or not numeric
                raise JetTaggerError(
                    f"{self.source}: targets.{t.name}: not one number per jet ({err})"
                ) from None
            if v.ndim != 1:
                raise JetTaggerError(
                    f"{self.source}: targets.{t.name}: not one number per jet (shape {v.shape})"
                )
            cols.append(v)
        n = len(cols[0]) if cols else 0
        return np.stack(cols, axis=1) if cols else np.zeros((n, 0), dtype=np.float32)

    def resolve_targets(self, values: Any) -> DataConfig:
        """The config with every target's ``center`` / ``width`` that the config does not give computed
        on ``values`` (the training jets' targets, (jets, targets); non-finite values left out) by its
        ``standardise`` rule: recorded in the run's data config, and so in the bundle."""
        import numpy as np

        opts = copy.deepcopy(self.raw)
        for i, t in enumerate(self.targets.values()):
            if t.resolved:
                continue
            x = np.asarray(values[:, i], dtype=np.float64)
            x = x[np.isfinite(x)]
            if not len(x):
                raise JetTaggerError(f"{self.source}: targets.{t.name}: no finite value on the training jets")
            center, width = _scaling(x, t.standardise)
            spec = opts["targets"][t.name]
            spec = {"expr": spec} if isinstance(spec, str) else spec
            opts["targets"][t.name] = {**spec, "center": center, "width": width}
        return DataConfig.from_dict(opts, source=self.source)

    @property
    def input_shapes(self) -> dict[str, tuple[int, int, int | None]]:
        return {k: (-1, len(g.vars), g.length) for k, g in self.inputs.items()}

    @property
    def max_length(self) -> int | None:
        lengths = [g.length for g in self.inputs.values() if g.length is not None]
        return max(lengths) if lengths else None

    @property
    def needs_auto(self) -> bool:
        return any(v.center == "auto" for g in self.inputs.values() for v in g.vars)

    def resolve_auto(self, table: Mapping[str, Any]) -> DataConfig:
        """weaver's ``preprocess: auto``: centre = median, scale = 1 / max(p84 - median, median - p16)."""
        import awkward as ak
        import numpy as np

        params = {}
        for g in self.inputs.values():
            for v in g.vars:
                if v.center == "auto":
                    if v.name.endswith("_mask"):
                        center, scale = None, 1.0
                    else:
                        a = np.nan_to_num(ak.to_numpy(ak.flatten(table[v.name], axis=None)))
                        low, center, high = np.percentile(a, [16, 50, 84])
                        width = max(high - center, center - low)
                        scale = 1.0 if width == 0 else 1.0 / width
                        center = float(center)
                else:
                    center, scale = v.center, v.scale
                params[v.name] = {
                    "length": g.length,
                    "pad_mode": g.pad_mode,
                    "center": center,
                    "scale": float(scale),
                    "min": v.clip_min,
                    "max": v.clip_max,
                    "pad_value": v.pad_value,
                }
        opts = copy.deepcopy(self.raw)
        opts.setdefault("preprocess", {})
        opts["preprocess"]["method"] = "manual"
        opts["preprocess"]["params"] = params
        return DataConfig.from_dict(opts, source=self.source)

    # -- output ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        opts = copy.deepcopy(self.raw)
        opts["inputs"] = {
            g.name: {
                "length": g.length,
                **({"min_length": g.min_length} if g.min_length > 1 else {}),
                "pad_mode": g.pad_mode,
                "vars": [[v.name, v.center, v.scale, v.clip_min, v.clip_max, v.pad_value] for v in g.vars],
            }
            for g in self.inputs.values()
        }
        opts.setdefault("preprocess", {})["method"] = "manual"
        opts["preprocess"].pop("params", None)
        return opts

    def dump_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    def preprocess_json(self) -> dict[str, Any]:
        """The ``preprocess.json`` weaver writes next to an exported ONNX model."""
        j: dict[str, Any] = {"output_names": self.output_names, "input_names": list(self.input_names)}
        for g in self.inputs.values():
            j[g.name] = {
                "var_names": list(g.var_names),
                "var_length": g.length,
                **({"min_length": g.min_length, "max_length": g.length} if g.min_length > 1 else {}),
                "var_infos": {
                    v.name: {
                        "median": 0 if v.center is None else v.center,
                        "norm_factor": v.scale,
                        "replace_inf_value": 0,
                        "lower_bound": -1e32 if v.center is None else v.clip_min,
                        "upper_bound": 1e32 if v.center is None else v.clip_max,
                        "pad": v.pad_value,
                    }
                    for v in g.vars
                },
            }
        return j


# -- the steps of DataConfig.from_dict ---------------------------------------------------------------------
def _new_variables(formulas: Mapping[str, Any], source: str) -> dict[str, Expression]:
    """Parsed (and so checked) at load; ``name: name`` is weaver's way to say "read the branch" and is no
    formula."""
    return {
        str(k): Expression(translate_legacy(str(v)), where=f"{source}: new_variables.{k}")
        for k, v in formulas.items()
        if str(k) != str(v)
    }


def _input_groups(
    inputs: Mapping[str, Any] | None, source: str, auto: bool, params: Mapping[str, Any]
) -> dict[str, InputGroup]:
    if not inputs:
        raise JetTaggerError(f"{source}: no `inputs` section")
    return {str(gname): _input_group(gname, g, source, auto, params) for gname, g in inputs.items()}


def _input_group(gname: str, g: Any, source: str, auto: bool, params: Mapping[str, Any]) -> InputGroup:
    """One ``inputs`` entry, refused here (not at padding time) when its padding or lengths make no sense."""
    if not isinstance(g, Mapping) or "vars" not in g:
        raise JetTaggerError(f"{source}: input group {gname!r} has no `vars`")
    pad_mode = str(g.get("pad_mode", "constant")).lower()
    if pad_mode not in PAD_MODES:
        raise JetTaggerError(f"{source}: input group {gname!r}: unknown pad_mode {pad_mode!r}")
    if gname.endswith("_mask") and pad_mode != "constant":
        raise JetTaggerError(f"{source}: mask input {gname!r} must use pad_mode: constant")
    length = g.get("length")
    if length is not None and (not isinstance(length, int) or isinstance(length, bool) or length <= 0):
        raise JetTaggerError(f"{source}: input group {gname!r}: length must be a positive int")
    if length is not None and (why := above_cap(length)) is not None:
        raise JetTaggerError(f"{source}: input group {gname!r}: length {why}")
    min_length = g.get("min_length", 1)
    if not isinstance(min_length, int) or min_length < 1 or (length is not None and min_length > length):
        raise JetTaggerError(f"{source}: input group {gname!r}: min_length must be an int in 1..length")
    if not g["vars"]:
        raise JetTaggerError(f"{source}: input group {gname!r} has no variables")
    vs = tuple(_var_spec(v, auto, params) for v in g["vars"])
    return InputGroup(str(gname), length, pad_mode, vs, min_length)


def _var_spec(v: Any, auto: bool, params: Mapping[str, Any]) -> VarSpec:
    """``name`` or ``[name, center, scale, min, max, pad_value]`` (weaver's positional form); a resolved
    (auto) config carries the variable's explicit ``params`` instead."""
    v = list(v) if isinstance(v, (list, tuple)) else [v]
    name = str(v[0])
    if name in params:
        p = params[name]
        return VarSpec(
            name,
            p.get("center"),
            float(p.get("scale", 1)),
            float(p.get("min", -5)),
            float(p.get("max", 5)),
            float(p.get("pad_value", 0)),
        )

    def get(i, default):
        return v[i] if len(v) > i else default

    center = get(1, "auto" if auto else None)
    if center is not None and center != "auto":
        center = float(center)
    return VarSpec(name, center, float(get(2, 1)), float(get(3, -5)), float(get(4, 5)), float(get(5, 0)))


def _labels(labels: Mapping[str, Any], source: str) -> tuple[str, list[str] | dict[str, Expression]]:
    """``simple``: the one-hot label branches; ``custom``: a formula per class."""
    ltype = str(labels.get("type", "simple"))
    lvalue: list[str] | dict[str, Expression]
    if ltype == "simple":
        lvalue = [str(x) for x in labels.get("value") or []]
    elif ltype == "custom":
        lvalue = {str(k): Expression(v, where=f"{source}: labels.{k}") for k, v in labels["value"].items()}
    else:
        raise JetTaggerError(f"{source}: unknown labels type {ltype!r} (simple or custom)")
    return ltype, lvalue


def _class_names(ltype: str, lvalue: list[str] | dict[str, Expression]) -> list[str]:
    if ltype == "simple":
        return [n.removeprefix("label_") for n in lvalue]
    return list(lvalue)


_TARGET_KEYS = (
    "expr",
    "loss",
    "quantile",
    "weight",
    "unit",
    "standardise",
    "center",
    "width",
    "per_class",
    "multiplies",
)


def _targets(section: Any, source: str, taken: Mapping[str, list[str]]) -> dict[str, Target]:
    """The ``targets`` section: name -> ``{expr, loss, quantile, weight, unit, standardise, center,
    width}`` (or just the expression), each refused in one line naming the config and the target."""
    if not isinstance(section, Mapping):
        raise JetTaggerError(f"{source}: targets must map each target name to its expression and loss")
    return {str(name): _target(str(name), spec, source, taken) for name, spec in section.items()}


def _target(name: str, spec: Any, source: str, taken: Mapping[str, list[str]]) -> Target:
    where = f"{source}: targets.{name}"
    if not name.isidentifier() or name == CLASS_OUTPUT:
        raise JetTaggerError(f"{where}: a target name must be an identifier other than {CLASS_OUTPUT!r}")
    for what, names in taken.items():
        if name in names or f"label_{name}" in names:
            raise JetTaggerError(
                f"{where}: the name is taken by one of the config's {what} ({', '.join(names)})"
            )
    spec = {"expr": spec} if isinstance(spec, str) else spec
    if not isinstance(spec, Mapping) or "expr" not in spec:
        raise JetTaggerError(f"{where}: needs `expr` (an expression of the jet's fields)")
    unknown = sorted(set(spec) - set(_TARGET_KEYS))
    if unknown:
        raise JetTaggerError(f"{where}: unknown keys {unknown}; allowed: {', '.join(_TARGET_KEYS)}")
    loss = str(spec.get("loss", "mse")).lower()
    if loss not in TARGET_LOSSES:
        raise JetTaggerError(f"{where}: unknown loss {loss!r} ({', '.join(TARGET_LOSSES)})")
    q = spec.get("quantile")
    if (loss == "quantile") != (q is not None):
        raise JetTaggerError(f"{where}: `quantile` goes with loss: quantile, and that loss needs it")
    if q is not None and not (isinstance(q, (int, float)) and not isinstance(q, bool) and 0 < q < 1):
        raise JetTaggerError(f"{where}: quantile {q!r} must be a number in (0, 1)")
    scaling = str(spec.get("standardise", "median_iqr")).lower()
    if scaling not in TARGET_SCALINGS:
        raise JetTaggerError(f"{where}: unknown standardise {scaling!r} ({', '.join(TARGET_SCALINGS)})")
    per_class = spec.get("per_class", False)
    if not isinstance(per_class, bool):
        raise JetTaggerError(f"{where}: per_class must be true or false (got {per_class!r})")
    if per_class and not taken.get("classes"):
        raise JetTaggerError(f"{where}: per_class needs classes (the config has no labels)")
    factor = spec.get("multiplies")
    if factor is not None:  # checked as an expression here; its fields where a processor applies it
        Expression(str(factor), where=f"{where}.multiplies")
    numbers = {k: _number(where, k, spec.get(k)) for k in ("weight", "center", "width")}
    weight = 1.0 if numbers["weight"] is None else numbers["weight"]
    if not weight >= 0 or (numbers["width"] is not None and not numbers["width"] > 0):
        raise JetTaggerError(f"{where}: weight must be >= 0 and width > 0")
    if (numbers["center"] is None) != (numbers["width"] is None):
        raise JetTaggerError(
            f"{where}: give both `center` and `width`, or neither (computed on training jets)"
        )
    return Target(
        name,
        Expression(translate_legacy(str(spec["expr"])), where=f"{where}.expr"),
        loss,
        None if q is None else float(q),
        weight,
        str(spec.get("unit", "GeV")),
        scaling,
        numbers["center"],
        numbers["width"],
        per_class,
        None if factor is None else str(factor),
    )


def _number(where: str, key: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise JetTaggerError(f"{where}: {key} {value!r} must be a number")
    return float(value)


def _scaling(x: Any, rule: str) -> tuple[float, float]:
    """(center, width) of a target's training values by ``rule`` (a zero width becomes 1)."""
    import numpy as np

    if rule == "none":
        return 0.0, 1.0
    if rule == "mean_std":
        center, width = float(np.mean(x)), float(np.std(x))
    else:
        q25, center, q75 = (float(v) for v in np.percentile(x, [25, 50, 75]))
        width = q75 - q25
    return center, width if width > 0 else 1.0


# -- the steps of DataConfig.from_preprocess_json ----------------------------------------------------------
def _preprocess_group(
    path: Path, gname: str, g: Mapping[str, Any], base: DataConfig | None
) -> dict[str, Any]:
    """One input group of a ``preprocess.json`` as a YAML ``inputs`` entry (pad_mode from ``base``). Its
    lengths are refused naming the field when they are not integers, above the length cap, or a
    ``min_length`` outside 0..max_length (CMSSW's 0 means no minimum: 1)."""
    vars_ = [_preprocess_var(vname, g["var_infos"][vname]) for vname in g["var_names"]]
    pad_mode = base.inputs[gname].pad_mode if base and gname in base.inputs else "constant"
    if "var_length" in g:
        length, min_length = _json_length(path, gname, "var_length", g["var_length"], 1), 1
    elif "max_length" in g:
        length = _json_length(path, gname, "max_length", g["max_length"], 1)
        min_length = _json_length(path, gname, "min_length", g.get("min_length", 1), 0)
        if min_length > length:
            raise JetTaggerError(
                f"{path}: {gname}.min_length = {min_length} is above {gname}.max_length = {length}"
            )
    else:
        raise KeyError(f"{gname}.var_length (or min_length / max_length)")
    return {"length": length, "min_length": max(1, min_length), "pad_mode": pad_mode, "vars": vars_}


def _json_length(path: Path, gname: str, field: str, value: Any, lowest: int) -> int:
    """A length of a ``preprocess.json``: an integer from ``lowest`` up to the length cap, else refused."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < lowest:
        raise JetTaggerError(f"{path}: {gname}.{field} = {value!r}: must be an integer >= {lowest}")
    if (why := above_cap(value)) is not None:
        raise JetTaggerError(f"{path}: {gname}.{field} = {why}")
    return value


def _preprocess_var(vname: str, info: Mapping[str, Any]) -> list[Any]:
    """``[name, center, scale, min, max, pad]``; infinite bounds with scale 1 mean "no transform" (center
    None)."""
    lo, hi = float(info["lower_bound"]), float(info["upper_bound"])
    identity = lo <= -1e31 and hi >= 1e31 and float(info["norm_factor"]) == 1.0
    return [
        vname,
        None if identity else float(info["median"]),
        float(info["norm_factor"]),
        lo,
        hi,
        float(info.get("pad", 0)),
    ]


def _preprocess_formulas(all_vars: list[str], base: DataConfig | None) -> tuple[dict[str, str], list[str]]:
    """The ``new_variables`` and observers a ``preprocess.json`` lacks: ``base``'s, else JetClass's formulas
    for JetClass names; a mask still without a formula is ones on another variable of its collection."""
    if base is not None:
        new_vars = {k: e.source for k, e in base.new_variables.items()}
        observers = list(base.observers)
    else:
        jetclass = any(v.startswith("part_") for v in all_vars)
        new_vars = dict(JETCLASS_NEW_VARIABLES) if jetclass else {}
        observers = []
    for name in all_vars:
        stem = name.removesuffix("_mask")
        if name.endswith("_mask") and name not in new_vars:
            sibling = next((v for v in all_vars if v.startswith(f"{stem}_") and v != name), None)
            if sibling is not None:
                new_vars[name] = f"ak.ones_like({sibling})"
    return new_vars, observers
