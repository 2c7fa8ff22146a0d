"""The model a bundle holds: a registered network wrapped as a :class:`Tagger` (data-config groups in, class
probabilities and regression targets in their units out), built from its name and the roles of its inputs,
and its weights loaded."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import nn

from .._errors import JetTaggerError
from ..dataconfig import CLASS_OUTPUT, DataConfig
from ..inputs import InputSpec
from . import NETWORKS, network_class


class Tagger(nn.Module):
    """Inference wrapper: data-config groups in; class probabilities and regression targets out.

    Takes the groups positionally in data-config order (the ONNX input names), each in its role, pads to
    the network's minimum length (k-NN needs k + 1 points; exported models rely on the runtime for it),
    and returns NaN for jets without constituents. The network's head has ``n_classes`` logits, then per
    target (``targets``: name, center, width) one output, or one per class for a target in ``per_class``
    (:attr:`~jettagger_coffea.dataconfig.Target.per_class`), trained standardised: the softmax of the
    logits is the output ``softmax``, each target ``center + width * output`` (its unit: the affine map is
    in the exported graph; a per-class target's hypotheses weighted by the class probabilities) the output
    named as it, (N, 1). One output: a tensor; several: a tuple, in :attr:`output_names` order.
    """

    def __init__(
        self,
        net: nn.Module,
        input_names: list[str],
        roles: list[str],
        min_length: int = 1,
        *,
        n_classes: int | None = None,
        targets: Sequence[tuple[str, float, float]] = (),
        per_class: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.mod = net
        self.input_names = list(input_names)
        self.roles = list(roles)
        if "mask" not in self.roles:
            raise ValueError(f"no mask input among {self.input_names}")
        self.min_length = int(min_length)
        self.target_names = [str(t[0]) for t in targets]
        self.n_classes = -1 if n_classes is None else int(n_classes)  # -1: every output is a class logit
        unknown = sorted(set(per_class) - set(self.target_names))
        if unknown or (per_class and self.n_classes < 1):
            raise ValueError(f"per-class targets {list(per_class)}: no such target, or no classes")
        #: the head's width of each target: one, or one per class hypothesis
        self.target_widths = [self.n_classes if n in per_class else 1 for n in self.target_names]
        self.target_center: torch.Tensor
        self.target_width: torch.Tensor
        # the targets' map to their units: not weights (the data config records it), but in the graph
        self.register_buffer("target_center", torch.tensor([float(t[1]) for t in targets]), persistent=False)
        self.register_buffer("target_width", torch.tensor([float(t[2]) for t in targets]), persistent=False)

    @property
    def pairwise(self) -> bool:
        """Whether the network builds (N, C, P, P) pair tensors (written into the bundle's card)."""
        return bool(self.mod.pairwise)

    @property
    def output_names(self) -> list[str]:
        """The model's outputs: ``softmax`` where it has classes, then one per target."""
        return ([CLASS_OUTPUT] if self.n_classes != 0 else []) + self.target_names

    def scale_targets(self, targets: Sequence[tuple[str, float, float]]) -> None:
        """Set the targets' center and width (known once the training jets are read)."""
        assert [str(t[0]) for t in targets] == self.target_names
        self.target_center.copy_(torch.tensor([float(t[1]) for t in targets]))
        self.target_width.copy_(torch.tensor([float(t[2]) for t in targets]))

    def raw(self, *inputs: torch.Tensor) -> torch.Tensor:
        """The network's head, (N, classes + targets): logits, then standardised targets (training's
        view; no padding to the minimum length)."""
        uses: tuple[str, ...] = self.mod.uses  # type: ignore[assignment]
        return self.mod(**{r: x for r, x in zip(self.roles, inputs) if r in uses})

    def split(self, raw: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(logits, each target's standardised head outputs: (N, 1), or (N, classes) per hypothesis)."""
        k = raw.shape[1] - sum(self.target_widths)
        bounds = [k + sum(self.target_widths[:i]) for i in range(len(self.target_widths) + 1)]
        return raw[:, :k], [raw[:, a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    def heads(self, raw: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(class probabilities, or None without classes; (N, targets) each standardised target, a
        per-class one as its hypotheses weighted by those probabilities)."""
        logits, heads = self.split(raw)
        p = torch.softmax(logits, dim=1) if logits.shape[1] else None
        cols = [h if p is None or h.shape[1] == 1 else (p * h).sum(dim=1, keepdim=True) for h in heads]
        return p, torch.cat(cols, dim=1) if cols else raw[:, :0]

    def standardised(self, raw: torch.Tensor) -> torch.Tensor:
        """(N, targets): :meth:`heads`' standardised targets (training's validation view)."""
        return self.heads(raw)[1]

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        args = dict(zip(self.roles, inputs))
        short = self.min_length - args["mask"].shape[-1]
        if not torch.onnx.is_in_onnx_export() and short > 0:  # the runtime pads to min_length itself
            args = {k: nn.functional.pad(x, (0, short)) for k, x in args.items()}
        probs, std = self.heads(self.raw(*(args[r] for r in self.roles)))
        outs = [] if probs is None else [probs]
        if self.target_names:
            values = self.target_center + self.target_width * std
            outs += [values[:, i : i + 1] for i in range(len(self.target_names))]
        empty = (args["mask"].sum(dim=(1, 2)) == 0).unsqueeze(1)
        outs = [torch.where(empty, torch.full_like(o, float("nan")), o) for o in outs]
        return outs[0] if len(outs) == 1 else tuple(outs)

    @property
    def n_outputs(self) -> int:
        """The head's width: classes + targets (what a fine-tuning checkpoint's head is compared with)."""
        head = [m for m in self.mod.modules() if isinstance(m, nn.Linear)]
        return head[-1].out_features if self.n_classes < 0 else self.n_classes + sum(self.target_widths)


def network_options(cls: type) -> set[str]:
    """The options a network class takes (its and its bases' keyword parameters)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" in vars(klass) and klass is not nn.Module and klass is not object:
            params = inspect.signature(vars(klass)["__init__"]).parameters.values()
            names |= {p.name for p in params if p.kind is p.KEYWORD_ONLY or p.default is not p.empty}
    return names


def build(
    network: str,
    input_names: list[str],
    input_dims: dict[str, int],
    num_classes: int,
    *,
    roles: Mapping[str, str],
    targets: Sequence[tuple[str, float, float]] = (),
    per_class: Sequence[str] = (),
    **options: Any,
) -> Tagger:
    """A :class:`Tagger` around ``network`` fed by the data-config groups ``input_names`` in the given
    ``roles`` (group -> role: the bundle's input spec, :mod:`jettagger_coffea.inputs`), its head
    ``num_classes`` logits and one output per regression target (name, center, width), one per class for
    those in ``per_class``."""
    cls = network_class(network)
    allowed = network_options(cls) - {"sv_input_dims"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise JetTaggerError(f"network {network!r}: unknown option(s) {unknown}; allowed: {sorted(allowed)}")
    no_role = [n for n in input_names if n not in roles]
    if no_role:
        raise JetTaggerError(f"network {network!r}: no role given for input group(s) {no_role}")
    opts = {**NETWORKS[network][1], **options}
    role_list = [roles[n] for n in input_names]
    by_role = dict(zip(role_list, input_names))
    if "sv_features" in by_role:
        if "sv_input_dims" not in network_options(cls):
            raise JetTaggerError(
                f"network {network!r} takes no secondary-vertex inputs ({by_role['sv_features']})"
            )
        opts["sv_input_dims"] = input_dims[by_role["sv_features"]]
    in_dim = input_dims[by_role["features"]] if "features" in by_role else 0
    width = num_classes + sum(num_classes if t[0] in per_class else 1 for t in targets)
    net = cls(in_dim, width, **opts)  # type: ignore[call-arg]
    missing = [r for r in net.uses if r not in by_role]  # type: ignore[union-attr]
    if missing:
        raise JetTaggerError(
            f"network {network!r} needs input groups for {missing}; the config has {input_names}"
        )
    min_length = getattr(net, "min_length", 1)
    return Tagger(
        net, input_names, role_list, min_length, n_classes=num_classes, targets=targets, per_class=per_class
    )


def build_for(network: str, config: DataConfig, inputs: Mapping[str, InputSpec], **options: Any) -> Tagger:
    """:func:`build` for the groups of a data config, in the roles of its input spec (a bundle's ``inputs``,
    or :func:`~jettagger_coffea.inputs.default_inputs` for a config not yet in a bundle), with its classes
    and regression targets (:func:`target_scales`)."""
    dims = {k: v[1] for k, v in config.input_shapes.items()}
    roles = {g: s.role for g, s in inputs.items()}
    n = len(config.class_names)
    targets = target_scales(config)
    hyp = [t.name for t in config.targets.values() if t.per_class]
    return build(
        network, list(config.input_names), dims, n, roles=roles, targets=targets, per_class=hyp, **options
    )


def target_scales(config: DataConfig) -> list[tuple[str, float, float]]:
    """(name, center, width) of each target of a config (0 and 1 where not yet resolved)."""
    return [
        (t.name, 0.0 if t.center is None else t.center, 1.0 if t.width is None else t.width)
        for t in config.targets.values()
    ]


def read_state(path: str | Path | BinaryIO, *, name: str | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a weaver (``mod.``-prefixed) or our own checkpoint (a state dict, or a last.pt's
    ``model``), never unpickling code, named as the :class:`Tagger`'s ``state_dict`` names them."""
    name = name or str(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is the file's fault
        raise JetTaggerError(f"cannot load checkpoint {name}: {type(err).__name__}: {err}") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise JetTaggerError(f"checkpoint {name} is not a state dict (names -> tensors)")
    if not any(k.startswith("mod.") for k in state):
        state = {f"mod.{k}": v for k, v in state.items()}
    return state


def load_state(model: Tagger, path: str | Path | BinaryIO, *, name: str | None = None) -> None:
    """Load a checkpoint (:func:`read_state`) strictly; ``path`` may be an open file of the checkpoint's
    bytes (then ``name`` names it in errors)."""
    name = name or str(path)
    try:
        model.load_state_dict(read_state(path, name=name), strict=True)
    except RuntimeError as err:
        raise JetTaggerError(f"checkpoint {name} does not fit this network: {err}") from None


def head_names(model: nn.Module, num_outputs: int) -> list[str]:
    """The parameters of the head: every ``nn.Linear`` with ``num_outputs`` outputs (classes + regression
    targets: the layer that makes the logits; no network has another that narrow)."""
    return [
        f"{prefix}.{p}" if prefix else p
        for prefix, mod in model.named_modules()
        if isinstance(mod, nn.Linear) and mod.out_features == num_outputs
        for p, _ in mod.named_parameters(recurse=False)
    ]


def load_pretrained(
    model: Tagger, path: str | Path, num_outputs: int, *, name: str | None = None
) -> dict[str, tuple[list[int], list[int]]]:
    """Load a checkpoint for fine-tuning: strictly where every tensor fits; where only the head's shapes
    differ (another class count, or targets added: ``num_outputs`` is the head's width here), every other
    tensor, the head staying as built (freshly initialised). Returns the tensors not loaded, each with
    (checkpoint shape, network shape); any other misfit (a missing or extra tensor, another width) is an
    error naming the tensor."""
    name = name or str(path)
    state, own = read_state(path, name=name), model.state_dict()
    common = [k for k in own if k in state]
    misfit = {k: (list(state[k].shape), list(own[k].shape)) for k in common if state[k].shape != own[k].shape}
    head = set(head_names(model, num_outputs))
    other = [k for k in misfit if k not in head or misfit[k][0][1:] != misfit[k][1][1:]]
    if other:
        k = other[0]
        raise JetTaggerError(
            f"checkpoint {name} does not fit this network: {k} is {tuple(misfit[k][0])} there, "
            f"{tuple(misfit[k][1])} here (only the classifier head may differ: {sorted(head)})"
        )
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    for what, keys in (("has no tensor", missing), ("has a tensor the network lacks:", extra)):
        if keys:
            raise JetTaggerError(
                f"checkpoint {name} does not fit this network: it {what} {keys[0]}"
                + (f" (and {len(keys) - 1} more)" if len(keys) > 1 else "")
            )
    model.load_state_dict({k: v for k, v in state.items() if k not in misfit}, strict=False)
    return misfit
