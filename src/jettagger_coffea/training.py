"""weaver-like training: data config + network + files -> checkpoints, per-epoch log, best epoch by
validation loss, resumable. Uses the same featurization, padding and batching as inference
(``datasets.load_jets``, :mod:`batching`).

A config with ``targets`` trains regression (no ``labels``) or classification and regression in one
network (:class:`Objective`): the head gives the class logits and one standardised output per target,
the exported model each target in its unit."""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import logging
import math
import signal
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ._errors import JetTaggerError
from .batching import batch_length, shuffled_batches, sorted_batches
from .dataconfig import DataConfig, Target
from .features import Standardised
from .inputs import default_inputs
from .jetfiles import load_jets
from .nn import build_for
from .nn.losses import masked_mean, regression_loss
from .nn.model import load_pretrained, target_scales

if TYPE_CHECKING:
    from .bundle import Bundle

log = logging.getLogger(__name__)


class Lookahead(torch.optim.Optimizer):
    """Lookahead (k steps forward, 1 step back) around an inner optimizer; RAdam + Lookahead = Ranger."""

    def __init__(self, inner: torch.optim.Optimizer, k: int = 6, alpha: float = 0.5) -> None:
        self.inner, self.k, self.alpha, self._step = inner, k, alpha, 0
        self.defaults = inner.defaults
        self.slow = [[p.detach().clone() for p in g["params"]] for g in inner.param_groups]

    # the inner optimiser's, looked up each time: its load_state_dict replaces its lists
    param_groups = property(lambda self: self.inner.param_groups)  # type: ignore[assignment]
    state = property(lambda self: self.inner.state)  # type: ignore[assignment]

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.inner.zero_grad(set_to_none=set_to_none)

    def step(self, closure=None):
        loss = self.inner.step(closure)
        self._step += 1
        if self._step % self.k == 0:
            with torch.no_grad():
                for group, slow in zip(self.inner.param_groups, self.slow):
                    for p, s in zip(group["params"], slow):
                        s.add_(p - s, alpha=self.alpha)
                        p.copy_(s)
        return loss

    def state_dict(self) -> dict[str, Any]:
        return {"inner": self.inner.state_dict(), "slow": self.slow, "step": self._step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state["inner"])
        self.slow, self._step = state["slow"], state["step"]


def make_optimizer(params, name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "ranger":
        return Lookahead(
            torch.optim.RAdam(params, lr=lr, betas=(0.95, 0.999), eps=1e-5, weight_decay=weight_decay)
        )
    raise ValueError(f"unknown optimizer {name!r} (adamw or ranger)")


def lr_factor(step: int, total: int, warmup: float = 0.05, flat: float = 0.7) -> float:
    """Linear warm-up, flat, then exponential decay to 1 % (weaver's flat+decay with a warm-up)."""
    if step < warmup * total:
        return (step + 1) / max(1.0, warmup * total)
    start = flat * total
    if step < start:
        return 1.0
    return math.exp(math.log(0.01) * (step - start) / max(1.0, total - start))


def to_tensors(
    jets: Standardised,
    names: Sequence[str],
    min_length: int,
    quantile: float | None = None,
    device: str = "cpu",
    rows: tuple[int, int | None] = (0, None),
) -> list[torch.Tensor]:
    """Jets ``rows`` (start, stop) as one batch, padded as inference pads it (:meth:`Standardised.dense`,
    dynamic length; ``quantile``: weaver's random trimming), as tensors in the network's input order."""
    dense = jets.dense(*rows, length="dynamic", min_length=min_length, quantile=quantile)
    return [torch.from_numpy(dense[k]).to(device) for k in names]


def sorted_tensor_batches(
    model, jets: Standardised, batch_size: int, device: str
) -> Iterator[tuple[np.ndarray, list[torch.Tensor]]]:
    """(indices, inputs) of evaluation batches, cut as inference cuts them (:func:`batching.sorted_batches`;
    at most ``batch_size`` jets of the config's length in slots)."""
    groups = list(jets.config.inputs.values())
    length_of = batch_length(groups, "dynamic", model.min_length)
    order, ranges = sorted_batches(jets.counts, length_of, max_slots=batch_size * length_of(1 << 30))
    ordered = jets.take(order)
    for start, stop in ranges:  # row ranges of the sorted copy: no further gather per batch
        xs = to_tensors(ordered, model.input_names, model.min_length, device=device, rows=(start, stop))
        yield order[start:stop], xs


@torch.no_grad()
def torch_raw(model, jets: Standardised, batch_size: int = 256, device: str = "cpu") -> torch.Tensor:
    """The head's outputs (:meth:`~.nn.model.Tagger.raw`: logits, standardised targets) of jets with
    particles, in input order, on the CPU."""
    model.eval()
    out = torch.zeros((len(jets), model.n_outputs), dtype=torch.float32)
    for idx, xs in sorted_tensor_batches(model, jets, batch_size, device):
        out[torch.from_numpy(idx)] = model.raw(*xs).float().cpu()
    return out


@torch.no_grad()
def torch_outputs(model, jets: Standardised, batch_size: int = 256, device: str = "cpu") -> list[np.ndarray]:
    """The torch model's outputs (:attr:`~.nn.model.Tagger.output_names`: class probabilities, each target
    in its unit) of standardised jets, in input order (NaN for jets without particles, which never reach
    the model); :func:`jettagger_coffea.evaluation.predict_files` scores files with a bundle."""
    model.eval()
    outs: list[np.ndarray] = []
    for idx, xs in sorted_tensor_batches(model, jets, batch_size, device):
        got = model(*xs)
        got = got if isinstance(got, tuple) else (got,)
        if not outs:
            outs = [np.full((len(jets), g.shape[1]), np.nan, dtype=np.float32) for g in got]
        for o, g in zip(outs, got):
            o[idx] = g.float().cpu().numpy()
    return outs


def torch_scores(model, jets: Standardised, batch_size: int = 256, device: str = "cpu") -> np.ndarray:
    """The class probabilities of :func:`torch_outputs` (a regression-only model: its targets)."""
    if not len(jets):
        return np.zeros((0, max(len(jets.config.class_names), 1)), dtype=np.float32)
    return torch_outputs(model, jets, batch_size, device)[0]


@dataclasses.dataclass(frozen=True)
class Objective:
    """What a run minimises: the cross entropy over the classes (where the config has some) plus, for each
    regression target, ``weight`` x its loss (:mod:`.nn.losses`) on the standardised target, over the jets
    whose target is finite. The best epoch is the one of least validation objective: the quantity
    trained, each term on the scale of a standardised quantity, so no term is favoured by its units."""

    n_classes: int
    targets: tuple[Target, ...]

    @classmethod
    def of(cls, config: DataConfig) -> Objective:
        return cls(len(config.class_names), tuple(config.targets.values()))

    def terms(
        self, model, raw: torch.Tensor, labels: np.ndarray | None, targets: np.ndarray | None
    ) -> dict[str, torch.Tensor]:
        """The mean loss of each term over the head's outputs ``raw`` (on any device): ``ce`` (classes) and
        each target's name (standardised by the ``model``'s center and width)."""
        raw = raw.float()
        logits, heads = model.split(raw)
        out = {}
        label = None if labels is None else torch.from_numpy(labels).long().to(raw.device)
        if self.n_classes:
            assert label is not None
            out["ce"] = torch.nn.functional.cross_entropy(logits, label)
        if self.targets:
            assert targets is not None
            center, width = model.target_center.to(raw.device), model.target_width.to(raw.device)
            t = (torch.from_numpy(targets).to(raw.device) - center) / width
            ok = torch.isfinite(t)
            t = torch.where(ok, t, torch.zeros_like(t))
            for i, (tg, head) in enumerate(zip(self.targets, heads)):
                # a per-class target: each jet trains the hypothesis of its own class only
                pred = head[:, 0] if head.shape[1] == 1 else head.gather(1, label[:, None])[:, 0]  # type: ignore[index]
                per_jet = regression_loss(pred, t[:, i], tg.loss, tg.quantile)
                out[tg.name] = masked_mean(per_jet, ok[:, i])
        return out

    def total(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        loss = terms.get("ce", torch.zeros(()))
        for tg in self.targets:
            loss = loss + tg.weight * terms[tg.name]
        return loss


def response(pred: np.ndarray, true: np.ndarray) -> dict[str, float | int | None]:
    """The median and half the inter-quartile range of pred / true over jets with a finite, non-zero true
    value (``n`` of them): the scale and the resolution of a regression."""
    ok = np.isfinite(true) & (true != 0) & np.isfinite(pred)
    if not ok.any():
        return {"median": None, "half_iqr": None, "n": 0}
    q25, q50, q75 = np.percentile(pred[ok] / true[ok], [25, 50, 75])
    return {"median": float(q50), "half_iqr": float(q75 - q25) / 2, "n": int(ok.sum())}


@torch.no_grad()
def evaluate(model, jets: Standardised, objective: Objective, batch_size: int, device: str) -> dict[str, Any]:
    """Validation metrics: the objective (``val_loss``), the accuracy (``val_acc``, where there are
    classes) and, per target, its loss and :func:`response` in ``val_targets``."""
    raw = torch_raw(model, jets, batch_size, device)
    terms = objective.terms(model, raw, jets.labels, jets.targets)
    row: dict[str, Any] = {"val_loss": float(objective.total(terms))}
    if objective.n_classes:
        assert jets.labels is not None
        row["val_acc"] = float(np.mean(raw[:, : objective.n_classes].argmax(1).numpy() == jets.labels))
    if objective.targets:
        assert jets.targets is not None
        values = (model.target_center.cpu() + model.target_width.cpu() * model.standardised(raw)).numpy()
        row["val_targets"] = {
            t.name: {"loss": float(terms[t.name]), **response(values[:, i], jets.targets[:, i])}
            for i, t in enumerate(objective.targets)
        }
    return row


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """How a network is trained (weaver's options that matter on one machine); recorded in the summary."""

    epochs: int = 10
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.01
    optimizer: str = "adamw"
    seed: int = 1
    val_fraction: float = 0.2
    max_minutes: float | None = None  #: wall-time budget: the LR schedule is re-planned to end in it
    max_train_jets: int | None = None  #: random subset of the training jets (validation: a quarter)
    max_val_jets: int | None = None  #: random subset of the validation jets (default: max_train_jets / 4)
    curve_points: int = 0  #: learning curve: validation metrics at this many counts of distinct jets
    stop_after: int | None = None  #: stop after this many epochs (resume later)
    stop_after_jets: int | None = None  #: stop this run after this many jets, mid-pass (resume later)
    checkpoint_minutes: float = 10.0  #: a resumable mid-pass checkpoint at least this often
    trim: bool = False  #: weaver's random trimming of the padded length
    freeze: tuple[str, ...] = ()  #: fnmatch patterns of parameter names kept fixed (not in the optimiser)
    lr_mult: tuple[tuple[str, float], ...] = ()  #: (fnmatch pattern, factor): those parameters at lr x factor
    threads: int | None = None
    device: str | None = None


def train(
    config_path: str | Path,
    network: str,
    train_files: Sequence[str | Path],
    output: str | Path,
    *,
    settings: TrainSettings | None = None,
    val_files: Sequence[str | Path] = (),
    network_options: dict | None = None,
    resume: bool = False,
    init: str | Path | None = None,
    progress: bool = True,
    **overrides: Any,
) -> dict[str, Any]:
    """Train ``network`` on ``train_files``; returns the summary (also in ``output/summary.json``).

    ``init``: start from these weights (a weaver checkpoint, a run's ``best_state.pt``; fine-tuning: where
    only the class count differs the head is new, see :func:`~jettagger_coffea.nn.model.load_pretrained`).
    ``overrides`` are :class:`TrainSettings` fields (``epochs=4``, ``lr=3e-3``,
    ``freeze=["mod.edge_convs.0.*"]``, ``lr_mult={"mod.fc.*": 50}``, ...)."""
    s = _settings(settings, overrides)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    device = s.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if s.threads:
        torch.set_num_threads(s.threads)
    torch.manual_seed(s.seed)
    rng = np.random.default_rng(s.seed)
    config = _config(config_path, train_files)
    inputs = _run_inputs(network, train_files, val_files, s, init)
    state = _last_state(output, inputs) if resume else None
    model = build_for(network, config, default_inputs(config), **(network_options or {})).to(device)
    started = _warm_start(model, init, inputs["init"], model.n_outputs) if init is not None else None
    groups = param_groups(model, s.lr, s.freeze, s.lr_mult)  # checked before any jet is read
    train_set, val_set = _datasets(config, train_files, val_files, s, rng)
    nonfinite = {}
    if config.targets:  # standardised on the training jets; the run's data config records it
        assert train_set.targets is not None
        config = config.resolve_targets(train_set.targets)
        model.scale_targets(target_scales(config))
        nonfinite = _count_nonfinite(config, train_set)
    config.dump_yaml(output / "data_config.yaml")
    inputs["n_train"] = len(train_set)
    if state is not None:
        _check_resume(output, inputs, state)
    run = _Run.start(model, groups, s, device, len(train_set), output, inputs, progress, Objective.of(config))
    start_epoch, partial = run.restore(state)
    curve = None  # the first pass only: a resumed run keeps the curve it has
    if s.curve_points and start_epoch == 0:
        done = partial["jets"] if partial else 0
        curve = _Curve(output / "curve.jsonl", val_set, s, len(train_set), device, done)
    row = run.passes(train_set, val_set, start_epoch, partial, curve)
    summary = _summary(run, config, network_options or {}, started, row, len(val_set), nonfinite)
    (output / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _count_nonfinite(config: DataConfig, jets: Standardised) -> dict[str, int]:
    """Training jets whose target is not finite count in the other terms only: said once per target."""
    assert jets.targets is not None
    out = {}
    for i, name in enumerate(config.targets):
        out[name] = bad = int((~np.isfinite(jets.targets[:, i])).sum())
        if bad:
            log.warning(
                "targets.%s: %d of %d training jets have no finite value; left out of its loss",
                name,
                bad,
                len(jets),
            )
    return out


def _target_record(t: Target, nonfinite: int) -> dict[str, Any]:
    """A target as the summary records it: its expression, loss, weight, unit and standardisation."""
    out = {"expr": t.expr.source, "loss": t.loss, "quantile": t.quantile, "weight": t.weight, "unit": t.unit}
    return out | {
        "per_class": t.per_class,
        "multiplies": t.multiplies,
        "standardise": t.standardise,
        "center": t.center,
        "width": t.width,
        "nonfinite_train": nonfinite,
    }


def _settings(settings: TrainSettings | None, overrides: dict[str, Any]) -> TrainSettings:
    """The settings with ``overrides``; ``freeze`` as a tuple, ``lr_mult`` (a mapping or pairs) as checked
    (pattern, factor) pairs."""
    try:
        s = dataclasses.replace(settings or TrainSettings(), **overrides)
    except TypeError:
        allowed = ", ".join(f.name for f in dataclasses.fields(TrainSettings))
        raise JetTaggerError(f"unknown training option in {sorted(overrides)}; allowed: {allowed}") from None
    given: dict[str, Any] = {"lr_mult": s.lr_mult, "freeze": s.freeze}  # as the caller gave them
    pairs = given["lr_mult"].items() if isinstance(given["lr_mult"], Mapping) else given["lr_mult"]
    lr_mult = tuple((str(k), float(f)) for k, f in pairs)
    for pattern, f in lr_mult:
        if not 0 < f <= MAX_LR_MULT:  # also NaN
            raise JetTaggerError(f"--lr-mult {pattern}={f:g}: the factor must be > 0 and <= {MAX_LR_MULT:g}")
    freeze = (given["freeze"],) if isinstance(given["freeze"], str) else tuple(map(str, given["freeze"]))
    return dataclasses.replace(s, freeze=freeze, lr_mult=lr_mult)


MAX_LR_MULT = 1000.0  #: the largest --lr-mult factor (ParT's fine-tuning uses 50 on the new head)


def param_groups(
    model: torch.nn.Module, lr: float, freeze: Sequence[str], lr_mult: Sequence[tuple[str, float]]
) -> list[dict[str, Any]]:
    """The optimiser's parameter groups: parameters matched by a ``freeze`` pattern get no gradient and stay
    out; those matched by an ``lr_mult`` pattern form a group at ``lr`` x factor (``mult``: the schedule
    scales every group alike); the rest one group at ``lr``. Patterns are :func:`fnmatch.fnmatchcase`
    patterns over ``named_parameters`` names (``mod.fc.*``); one that matches nothing, or a parameter two
    patterns match, is an error naming them."""
    names = [n for n, _ in model.named_parameters()]
    owner: dict[str, str] = {}
    rules = [("--freeze", p, 0.0) for p in freeze] + [("--lr-mult", p, f) for p, f in lr_mult]
    for option, pattern, _ in rules:
        hit = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not hit:
            raise JetTaggerError(
                f"{option} {pattern!r} matches no parameter (fnmatch over names like {names[0]}, {names[-1]})"
            )
        for n in hit:
            if n in owner:
                raise JetTaggerError(f"{n} is matched by both {owner[n]} and {option} {pattern!r}; give one")
            owner[n] = f"{option} {pattern!r}"
    params = dict(model.named_parameters())
    base = [n for n in names if n not in owner]
    groups = [{"params": [params[n] for n in base], "lr": lr, "mult": 1.0}] if base else []
    for option, pattern, f in rules:
        mine = [n for n in names if owner.get(n) == f"{option} {pattern!r}"]
        if option == "--freeze":
            for n in mine:
                params[n].requires_grad_(False)
        else:
            groups.append({"params": [params[n] for n in mine], "lr": lr * f, "mult": f})
    if not groups:
        raise JetTaggerError("--freeze: every parameter is frozen; nothing is left to train")
    return groups


def _file_sha256(path: str | Path) -> str:
    """The hex SHA-256 of a weights file (the card's record of what a run started from)."""
    if not Path(path).is_file():
        raise JetTaggerError(f"--init: no such file {path}")
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _warm_start(model: torch.nn.Module, init: str | Path, sha256: str, num_classes: int) -> dict[str, Any]:
    """Load ``init`` (:func:`~jettagger_coffea.nn.model.load_pretrained`: a new head where only the class
    count differs, said in one line); the record that goes into the summary and the card."""
    misfit = load_pretrained(model, init, num_classes)  # type: ignore[arg-type]
    if misfit:
        shapes = ", ".join(f"{k} {tuple(a)} -> {tuple(b)}" for k, (a, b) in misfit.items())
        log.warning("--init %s: new head, not loaded (shape in the checkpoint -> here): %s", init, shapes)
    return {"path": str(init), "sha256": sha256, "not_loaded": list(misfit)}


def _config(config_path: str | Path, train_files: Sequence[str | Path]) -> DataConfig:
    """The data config, its ``auto`` bounds resolved on the first training file; one with neither classes
    nor targets is refused."""
    config = DataConfig.from_yaml(config_path)
    if not config.class_names and not config.targets:
        raise JetTaggerError(f"{config_path}: neither `labels` nor `targets`: nothing to train")
    if config.needs_auto:
        from .features import make_table
        from .jetfiles import open_jets

        config = config.resolve_auto(make_table(open_jets(train_files[0]), config))
    return config


def _summary(
    run: _Run,
    config: DataConfig,
    network_options: dict,
    init: dict | None,
    row: dict,
    n_val: int,
    nonfinite: dict[str, int],
) -> dict[str, Any]:
    """summary.json: the epochs run and the best one, the settings, the jets and the network."""
    s, history, inputs = run.s, run.history, run.inputs
    return {
        "network": inputs["network"],
        "network_options": network_options,
        "classes": config.class_names,
        "targets": {t.name: _target_record(t, nonfinite.get(t.name, 0)) for t in config.targets.values()},
        "best_epoch": min(history, key=lambda r: r["val_loss"])["epoch"] if history else None,
        "history": history,
        **({"interrupted": {"epoch": row["epoch"], "jets": row["jets"]}} if row.get("interrupted") else {}),
        "n_train": inputs["n_train"],
        "n_val": n_val,
        "seed": s.seed,
        "optimizer": s.optimizer,
        "lr": s.lr,
        "batch_size": s.batch_size,
        "settings": dataclasses.asdict(s),
        "input_dims": {g.name: len(g.vars) for g in config.inputs.values()},
        "train_files": inputs["train_files"],
        "val_files": inputs["val_files"],
        "parameters": sum(p.numel() for p in run.model.parameters()),
        "trainable_parameters": sum(p.numel() for p in run.model.parameters() if p.requires_grad),
        **({"init": init} if init is not None else {}),
    }


def _run_inputs(
    network: str,
    train_files: Sequence[str | Path],
    val_files: Sequence[str | Path],
    s: TrainSettings,
    init: str | Path | None,
) -> dict[str, Any]:
    """What a resumed run must share with the run it continues, or its batches are other jets (``n_train``
    is added once the jets are read)."""
    kept = ("seed", "batch_size", "val_fraction", "max_train_jets", "max_val_jets")
    return {
        "network": network,
        "train_files": [str(f) for f in train_files],
        "val_files": [str(f) for f in val_files],
        **{k: getattr(s, k) for k in kept},
        "init": None if init is None else _file_sha256(init),  # the weights' identity, not their path
        "freeze": list(s.freeze),  # the parameter groups of the optimiser state
        "lr_mult": [list(x) for x in s.lr_mult],
    }


def _last_state(output: Path, inputs: dict[str, Any]) -> dict[str, Any] | None:
    """The last.pt a resumed run goes on from (None: none yet), read once and checked before the jets are
    read; its tensors land on their devices when loaded."""
    if not (output / "last.pt").exists():
        return None
    state = torch.load(output / "last.pt", map_location="cpu", weights_only=False)  # our own file
    _check_resume(output, inputs, state)
    return state


def _check_resume(output: Path, inputs: dict[str, Any], state: dict[str, Any]) -> None:
    """A resumed run must see the jets, in the batches, of the run it continues."""
    saved = state.get("inputs") or {}
    differ = sorted(k for k in inputs if k in saved and saved[k] != inputs[k])
    if differ:
        raise JetTaggerError(
            f"--resume: {output / 'last.pt'} was trained with other {', '.join(differ)} than this run's; "
            "give the same ones, or a new --output"
        )


def _datasets(
    config: DataConfig,
    train_files: Sequence[str | Path],
    val_files: Sequence[str | Path],
    s: TrainSettings,
    rng: np.random.Generator,
) -> tuple[Standardised, Standardised]:
    """Training and validation jets (a random ``val_fraction`` of the training files without ``val_files``),
    each cut to ``max_train_jets`` (validation: a quarter of it)."""
    data = load_jets(train_files, config, drop_empty=True)
    if val_files:
        train_set, val_set = data, load_jets(val_files, config, drop_empty=True)
    else:
        perm = rng.permutation(len(data))
        nval = int(len(data) * s.val_fraction)
        train_set, val_set = data.take(perm[nval:]), data.take(perm[:nval])
    if s.max_train_jets and len(train_set) > s.max_train_jets:
        train_set = train_set.take(np.sort(rng.choice(len(train_set), s.max_train_jets, replace=False)))
    max_val = s.max_val_jets or (s.max_train_jets // 4 if s.max_train_jets else None)
    if max_val and len(val_set) > max_val:
        val_set = val_set.take(np.sort(rng.choice(len(val_set), max_val, replace=False)))
    return train_set, val_set


class _Curve:
    """A learning curve: in the first pass every jet is new, so the validation metrics after n steps' jets are
    those of n distinct jets (at the learning rate of that moment). Rows go to ``curve.jsonl``."""

    def __init__(
        self, path: Path, val_set: Standardised, s: TrainSettings, n_train: int, device: str, done: int = 0
    ) -> None:
        self.path, self.val_set, self.device, self.batch = path, val_set, device, 2 * s.batch_size
        first = max(s.batch_size, n_train / 64)
        points = sorted({int(x) for x in np.geomspace(first, n_train, s.curve_points)})
        self.points = [n for n in points if n > done]  # a pass resumed after ``done`` jets keeps its rows
        if not done:
            path.unlink(missing_ok=True)

    def __call__(self, model, jets: int, lr: float, last: bool) -> None:
        if not self.points or (jets < self.points[0] and not last):
            return
        while self.points and self.points[0] <= jets:
            self.points.pop(0)
        from .metrics import summary

        outs = torch_outputs(model, self.val_set, self.batch, self.device)
        row: dict[str, Any] = {"jets": jets, "lr": lr, "n_jets": len(self.val_set)}
        classes = self.val_set.config.class_names
        if classes:  # the class probabilities come first
            assert self.val_set.labels is not None
            doc = summary(
                self.val_set.labels.astype(int), outs.pop(0), classes, usable_discriminants(classes)
            )
            row |= {"n_jets": doc["n_jets"], "accuracy": doc["accuracy"], "auc_macro": doc["auc_macro"]}
            row["discriminants"] = {
                k: {m: d[m] for m in ("auc", "rej50", "rej30", "n_signal", "n_background")}
                for k, d in doc["discriminants"].items()
            }
        if outs:  # one output per target, in its unit
            assert self.val_set.targets is not None
            names = list(self.val_set.config.targets)
            row["targets"] = {
                n: response(o[:, 0], self.val_set.targets[:, i]) for i, (n, o) in enumerate(zip(names, outs))
            }
        with self.path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        model.train()


class _Clock:
    """The wall-time budget: re-plans the LR schedule's length from the recent step rate."""

    def __init__(self, max_minutes: float | None, plan: list[int]) -> None:
        self.max_minutes, self.plan = max_minutes, plan
        self.t0 = time.perf_counter()
        self.marks: list[tuple[int, float]] = []

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def over(self) -> bool:
        return bool(self.max_minutes) and self.elapsed() > 60 * self.max_minutes  # type: ignore[operator]

    def replan(self, step: int) -> None:
        if not self.max_minutes or step % 50:
            return
        now = time.perf_counter()
        if self.marks:  # the first steps are slow: measure from the last mark
            per_step = (now - self.marks[-1][1]) / max(step - self.marks[-1][0], 1)
            left = 0.85 * 60 * self.max_minutes - (now - self.t0)  # leave room for validation passes
            self.plan[0] = max(step + int(left / per_step), step + 1)
            log.debug("time budget: %.3f s/step, LR schedule over %d steps", per_step, self.plan[0])
        self.marks.append((step, now))


@dataclasses.dataclass
class _Run:
    """A training run in progress: what a pass needs (model, optimiser, LR schedule, AMP scaler, settings,
    device, wall-time clock) and what its checkpoints hold (history, best validation loss, ``inputs``)."""

    model: Any
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    s: TrainSettings
    device: str
    plan: list[int]  #: the LR schedule's length in steps (re-planned by the clock to fit ``max_minutes``)
    clock: _Clock
    output: Path
    inputs: dict[str, Any]  #: what a resumed run must share with this one (see :func:`_check_resume`)
    progress: bool
    objective: Objective = Objective(0, ())
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    best: float = math.inf
    stop: _Stop | None = None  #: when to leave a pass in the middle (set while :meth:`passes` runs)

    @classmethod
    def start(
        cls,
        model,
        groups: list[dict[str, Any]],
        s: TrainSettings,
        device: str,
        n_train: int,
        output: Path,
        inputs: dict,
        progress: bool,
        objective: Objective,
    ) -> _Run:
        """The optimiser over ``groups`` (:func:`param_groups`), the LR schedule planned over all epochs
        (shortened to fit ``max_minutes`` once steps are timed; every group scaled alike) and AMP's loss
        scaler."""
        opt = make_optimizer(groups, s.optimizer, s.lr, s.weight_decay)
        plan = [math.ceil(n_train / s.batch_size) * s.epochs]
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt.inner if isinstance(opt, Lookahead) else opt, lambda step: lr_factor(step, plan[0])
        )
        scaler = torch.amp.GradScaler(enabled=device == "cuda")
        clock = _Clock(s.max_minutes, plan)
        return cls(model, opt, sched, scaler, s, device, plan, clock, output, inputs, progress, objective)

    def lr(self) -> float:
        """The learning rate now, of the parameters without a ``--lr-mult``."""
        group = self.opt.param_groups[0]
        return float(group["lr"]) / group.get("mult", 1.0)

    @property
    def parts(self) -> dict[str, Any]:
        return {"model": self.model, "optimizer": self.opt, "scheduler": self.sched, "scaler": self.scaler}

    def restore(self, state: dict[str, Any] | None) -> tuple[int, dict[str, Any] | None]:
        """Go on from a last.pt (None: from the start); the epoch to start in and, for a pass left in the
        middle, its counts."""
        if state is None:
            return 0, None
        for name, part in self.parts.items():
            if name in state:
                part.load_state_dict(state[name])
        self.best, self.history, partial = state["best"], state["history"], state.get("partial")
        self.plan[0] = state.get("plan", self.plan[0])
        if "torch_rng" in state:
            torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        return state["epoch"] + (partial is None), partial  # a pass left in the middle goes on from there

    def passes(
        self,
        train_set: Standardised,
        val_set: Standardised,
        start_epoch: int,
        partial: dict[str, Any] | None,
        curve: _Curve | None,
    ) -> dict[str, Any]:
        """The epochs from ``start_epoch``, each validated and checkpointed, until the settings, the time
        budget or a stop (jets, signal) end them; the last pass's row."""
        s, row = self.s, {}
        self.stop = _Stop(s.stop_after_jets, s.checkpoint_minutes)
        with self.stop:
            for epoch in range(start_epoch, s.epochs):
                probe = curve if epoch == 0 else None
                row = self.epoch(train_set, epoch, probe, partial if epoch == start_epoch else None)
                if row.get("interrupted"):
                    log.info("stopped in epoch %d after %d jets: resume with --resume", epoch, row["jets"])
                    break
                row |= evaluate(self.model, val_set, self.objective, 2 * s.batch_size, self.device)
                row |= {"lr": self.lr(), "seconds": self.clock.elapsed()}
                self.history.append(row)
                log.info("epoch %d: %s", epoch, row)
                self.checkpoint()
                if self.clock.over():
                    log.info("time budget of %.1f min reached after epoch %d", s.max_minutes, epoch)
                    break
                if (
                    s.stop_after is not None and epoch + 1 >= s.stop_after
                ):  # split a long run across job slots
                    break
        return row

    def epoch(
        self,
        train_set: Standardised,
        epoch: int,
        probe: _Curve | None = None,
        partial: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """One pass over the shuffled training batches (seeded by (seed, epoch): resumable exactly, also from
        ``partial``, a pass left after some batches); ``probe`` records the learning curve as it goes;
        :attr:`stop` says when to leave mid-pass, with a resumable checkpoint."""
        self.model.train()
        p = partial or {"batches": 0, "loss": 0.0, "correct": 0, "jets": 0}
        k, tl, tc, tn = p["batches"], p["loss"], p["correct"], p["jets"]
        ep_rng = np.random.default_rng([self.s.seed, epoch])
        bar = tqdm(
            shuffled_batches(len(train_set), self.s.batch_size, ep_rng, train_set.counts),
            total=math.ceil(len(train_set) / self.s.batch_size),
            desc=f"{self.inputs['network']} epoch {epoch}",
            disable=not self.progress,
            leave=False,
        )
        for i, idx in enumerate(bar):
            q = float(ep_rng.uniform(0.9, 1.0)) if self.s.trim else None  # drawn for skipped batches too
            if i < k:
                continue
            loss, correct = self.step(train_set.take(idx), q)
            tl, tc, tn, k = tl + loss * len(idx), tc + correct, tn + len(idx), i + 1
            bar.set_postfix(loss=f"{tl / tn:.4f}", acc=f"{tc / tn:.3f}")
            self.clock.replan(self.sched.last_epoch)
            over = self.clock.over()
            if probe is not None:
                probe(self.model, tn, self.lr(), last=over or tn == len(train_set))
            if over:
                break
            if self.stop is not None and tn < len(train_set):
                self.stop.count(len(idx))
                if self.stop.now or self.stop.due():
                    self.save_last(epoch, partial={"batches": k, "loss": tl, "correct": tc, "jets": tn})
                    if self.stop.now:
                        return {"epoch": epoch, "jets": tn, "interrupted": True}
        row = {"epoch": epoch, "train_loss": tl / tn, "train_acc": tc / tn, "jets": tn}
        return row if self.objective.n_classes else {k: v for k, v in row.items() if k != "train_acc"}

    def step(self, batch: Standardised, quantile: float | None) -> tuple[float, int]:
        """One optimiser step on a batch (``quantile``: weaver's random trimming); its mean loss (the
        :class:`Objective`) and the jets it called right."""
        model, device, objective = self.model, self.device, self.objective
        xs = to_tensors(batch, model.input_names, model.min_length, quantile=quantile, device=device)
        with torch.autocast(device_type="cuda", enabled=device == "cuda"):
            out = model.raw(*xs)
            loss = objective.total(objective.terms(model, out, batch.labels, batch.targets))
        self.opt.zero_grad()
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()
        if not objective.n_classes:
            return float(loss.detach()), 0
        y = torch.from_numpy(batch.labels).long().to(device)  # type: ignore[arg-type]
        return float(loss.detach()), int((out[:, : objective.n_classes].argmax(1) == y).sum())

    def checkpoint(self) -> None:
        """Per-epoch weights, the best so far (by validation loss) and a resumable last.pt."""
        epoch = self.history[-1]["epoch"]
        torch.save(self.model.state_dict(), self.output / f"epoch-{epoch}_state.pt")
        if self.history[-1]["val_loss"] < self.best:
            self.best = self.history[-1]["val_loss"]
            torch.save(self.model.state_dict(), self.output / "best_state.pt")
        with (self.output / "log.jsonl").open("a") as fh:
            fh.write(json.dumps(self.history[-1]) + "\n")
        self.save_last(epoch)

    def save_last(self, epoch: int, partial: dict[str, Any] | None = None) -> None:
        """last.pt: everything a resumed run needs to go on exactly as this one would have: weights,
        optimiser, schedule and its planned length, AMP's loss scale, torch's RNGs, and for a pass left in
        the middle (``partial``) the batches done and the pass's running sums. Written to a temporary file
        first: a kill never leaves half of one."""
        state = {name: part.state_dict() for name, part in self.parts.items()}
        state |= {
            "epoch": epoch,
            "best": self.best,
            "history": self.history,
            "plan": self.plan[0],
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "inputs": self.inputs,
            "partial": partial,
        }
        torch.save(state, self.output / "last.pt.tmp")
        (self.output / "last.pt.tmp").replace(self.output / "last.pt")


class _Stop:
    """When a run leaves a pass in the middle, with a resumable checkpoint: after ``jets`` training jets (a
    job slot's share), on SIGTERM or SIGINT (batch systems send one before the kill; Ctrl-C), and a save
    every ``minutes`` in case the process is killed outright."""

    def __init__(self, jets: int | None, minutes: float) -> None:
        self.left, self.every, self.signalled = jets, 60 * minutes, False
        self.last = time.perf_counter()
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> None:
        if threading.current_thread() is threading.main_thread():  # handlers live in the main thread only
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._on_signal)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: Any) -> None:
        log.warning("signal %d: saving a resumable checkpoint after this step", signum)
        self.signalled = True

    def count(self, jets: int) -> None:
        if self.left is not None:
            self.left -= jets

    @property
    def now(self) -> bool:
        return self.signalled or (self.left is not None and self.left <= 0)

    def due(self) -> bool:
        if time.perf_counter() - self.last < self.every:
            return False
        self.last = time.perf_counter()
        return True


def load_trained(output: str | Path, which: str = "best"):
    """The model of a training folder (``best`` or an epoch number) and its data config."""
    output = Path(output)
    summary = json.loads((output / "summary.json").read_text())
    config = DataConfig.from_yaml(output / "data_config.yaml")
    model = build_for(summary["network"], config, default_inputs(config), **summary["network_options"])
    name = "best_state.pt" if which == "best" else f"epoch-{which}_state.pt"
    model.load_state_dict(torch.load(output / name, map_location="cpu", weights_only=True))
    return model.eval(), config, summary


DEFAULT_DISCRIMINANTS = {
    "WvsQCD": {"signal": ["Wqq"], "background": ["QCD"]},
    "ZvsQCD": {"signal": ["Zqq"], "background": ["QCD"]},
    "TvsQCD": {"signal": ["Tbqq"], "background": ["QCD"]},
    "HbbvsQCD": {"signal": ["Hbb"], "background": ["QCD"]},
}


def usable_discriminants(classes: Sequence[str], discriminants: dict | None = None) -> dict:
    """The discriminants (default: :data:`DEFAULT_DISCRIMINANTS`) whose classes the model has."""
    from .metrics import unknown_classes

    return {
        k: v for k, v in (discriminants or DEFAULT_DISCRIMINANTS).items() if not unknown_classes(classes, v)
    }


def export(
    train_dir: str | Path,
    bundle_dir: str | Path,
    *,
    name: str | None = None,
    reference_files: Sequence[str | Path] = (),
    discriminants: dict | None = None,
    card: dict | None = None,
) -> Path:
    """A trained folder -> bundle (ONNX + configs + model card); working points derived on
    ``reference_files`` (fixed mistag 0.5/1/2.5/5 %, fixed efficiency 30/50 %) and their metrics stored.
    The card's ``outputs``: :func:`~.inputs.trained_outputs` (``softmax`` and one output per target, in
    its unit)."""
    from .inputs import trained_outputs
    from .nn.export import write_torch_bundle

    model, config, s = load_trained(train_dir)
    discs = usable_discriminants(config.class_names, discriminants)
    info = {**_card(s, name or Path(bundle_dir).name, discs), "outputs": trained_outputs(config).card()}
    info |= card or {}
    bundle = write_torch_bundle(bundle_dir, model, s["input_dims"], config=config, card=info)
    if reference_files and config.class_names:
        _add_working_points(bundle, reference_files, discs)
    return Path(bundle_dir)


def _card(s: dict[str, Any], name: str, discriminants: dict) -> dict[str, Any]:
    """The model card of a training run (its summary ``s``): network, discriminants, provenance and, for a
    warm start, ``init`` (the weights' path, SHA-256 and the tensors not loaded: a new head)."""
    best = next(r for r in s["history"] if r["epoch"] == s["best_epoch"])
    return {
        "name": name,
        "network": s["network"],
        "network_options": s["network_options"],
        "discriminants": discriminants,
        "provenance": {
            "train_files": s["train_files"],
            "n_train": s["n_train"],
            "n_val": s["n_val"],
            "seed": s["seed"],
            "epochs_run": len(s["history"]),
            "best_epoch": s["best_epoch"],
            "best_val_loss": best["val_loss"],
            **{f"best_{k}": best[k] for k in ("val_acc", "val_targets") if k in best},
            "jets_seen": sum(r["jets"] for r in s["history"]),
            "optimizer": s["optimizer"],
            "lr": s["lr"],
            "batch_size": s["batch_size"],
            "parameters": s["parameters"],
            **_fine_tuning(s),
        },
        **({"init": s["init"]} if s.get("init") else {}),  # what the run started from
    }


def _fine_tuning(s: dict[str, Any]) -> dict[str, Any]:
    """The card's record of frozen and lr-multiplied parameters (none: nothing)."""
    settings = s.get("settings", {})
    out = {k: settings[k] for k in ("freeze", "lr_mult") if settings.get(k)}
    if out:
        out["trainable_parameters"] = s["trainable_parameters"]
    return out


def _add_working_points(bundle: Bundle, reference_files: Sequence[str | Path], discriminants: dict) -> None:
    """Working points and metrics of the exported bundle (onnxruntime's scores of ``reference_files``),
    added to its card."""
    from .bundle import CARD
    from .evaluation import predict_files
    from .metrics import discriminant, signal_background, summary
    from .tagger import JetTagger
    from .workingpoints import derive

    classes = bundle.classes
    cols = predict_files(JetTagger(bundle), reference_files)
    scores = np.stack([cols[f"score_{c}"] for c in classes], axis=1)
    labels = cols["label"].astype(int)
    wps = {}
    for dname, d in discriminants.items():
        disc = discriminant(scores, classes, d)
        sig, bkg = signal_background(labels, classes, d)
        wps[dname] = derive(disc[sig], disc[bkg])
    full = yaml_load(bundle.path / CARD)
    full["working_points"] = wps
    full["working_points_reference"] = [str(f) for f in reference_files]
    full["metrics"] = _plain(summary(labels, scores, classes, discriminants))
    full["metrics"]["files"] = [str(f) for f in reference_files]
    yaml_dump(full, bundle.path / CARD)


def _plain(x):
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return x


def yaml_load(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def yaml_dump(obj: dict, path: Path) -> None:
    import yaml

    path.write_text(yaml.safe_dump(_plain(obj), sort_keys=False))
