"""weaver-like training: data config + network + files -> checkpoints, per-epoch log, best epoch by
validation loss, resumable. Uses the same featurization as inference (``datasets.load_features``)."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .config import DataConfig
from .datasets import load_features, subset
from .features import Features
from .nn import build, load_state

log = logging.getLogger(__name__)


class Lookahead(torch.optim.Optimizer):
    """Lookahead (k steps forward, 1 step back) around an inner optimizer; RAdam + Lookahead = Ranger."""

    def __init__(self, inner: torch.optim.Optimizer, k: int = 6, alpha: float = 0.5) -> None:
        self.inner, self.k, self.alpha, self._step = inner, k, alpha, 0
        self.param_groups = inner.param_groups
        self.defaults = inner.defaults
        self.state = inner.state
        self.slow = [[p.detach().clone() for p in g["params"]] for g in inner.param_groups]

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


def batches(
    n: int,
    batch_size: int,
    rng: np.random.Generator | None,
    counts: np.ndarray | None = None,
    bucket: int = 32,
):
    """Index batches; with ``counts``, shuffled jets are sorted by multiplicity within groups of ``bucket``
    batches (weaver's bucketing), so each batch pads to little more than its own longest jet."""
    idx = rng.permutation(n) if rng is not None else np.arange(n)
    if counts is None or rng is None:
        for i in range(0, n, batch_size):
            yield idx[i : i + batch_size]
        return
    group = batch_size * bucket
    out: list[np.ndarray] = []
    for g in range(0, n, group):
        chunk = idx[g : g + group]
        chunk = chunk[np.argsort(counts[chunk], kind="stable")]
        out.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    for j in rng.permutation(len(out)):
        yield out[j]


def to_tensors(
    f: Features,
    idx: np.ndarray,
    names: Sequence[str],
    min_length: int,
    trim_q: float | None = None,
    device: str = "cpu",
) -> list[torch.Tensor]:
    """A batch padded dynamically to its longest jet (masked slots never reach a real particle)."""
    n = int(f.counts[idx].max()) if trim_q is None else int(np.ceil(np.quantile(f.counts[idx], trim_q)))
    length = max(min(n, f.inputs[names[0]].shape[-1]), min_length)
    out = []
    for k in names:
        x = f.inputs[k][idx, :, :length]
        if x.shape[-1] < length:
            x = np.pad(x, ((0, 0), (0, 0), (0, length - x.shape[-1])))
        out.append(torch.from_numpy(np.ascontiguousarray(x)).to(device))
    return out


def logits(model, xs: list[torch.Tensor]) -> torch.Tensor:
    args = {r: x for r, x in zip(model.roles, xs) if r is not None}
    return model.mod(**{k: v for k, v in args.items() if k in model.mod.uses})


@torch.no_grad()
def predict(model, f: Features, batch_size: int = 256, device: str = "cpu") -> np.ndarray:
    model.eval()
    names = model.input_names
    order = np.argsort(f.counts, kind="stable")  # similar lengths together: less padding
    out = np.empty((len(f), 0), dtype=np.float32)
    chunks = []
    for idx in batches(len(f), batch_size, None):
        sel = order[idx]
        chunks.append(
            (sel, model(*to_tensors(f, sel, names, model.min_length, device=device)).float().cpu().numpy())
        )
    out = np.empty((len(f), chunks[0][1].shape[1]), dtype=np.float32)
    for sel, p in chunks:
        out[sel] = p
    return out


def evaluate_loss(model, f: Features, batch_size: int, device: str) -> tuple[float, float]:
    model.eval()
    tot, correct, n = 0.0, 0, 0
    with torch.no_grad():
        for idx in batches(len(f), batch_size, None):
            xs = to_tensors(f, idx, model.input_names, model.min_length, device=device)
            assert f.labels is not None
            y = torch.from_numpy(f.labels[idx]).long().to(device)
            out = logits(model, xs)
            tot += float(torch.nn.functional.cross_entropy(out, y, reduction="sum"))
            correct += int((out.argmax(1) == y).sum())
            n += len(idx)
    return tot / n, correct / n


def train(
    config_path: str | Path,
    network: str,
    train_files: Sequence[str | Path],
    output: str | Path,
    val_files: Sequence[str | Path] = (),
    val_fraction: float = 0.2,
    network_options: dict | None = None,
    epochs: int = 10,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 0.01,
    optimizer: str = "adamw",
    seed: int = 1,
    max_minutes: float | None = None,
    trim: bool = False,
    resume: bool = False,
    device: str | None = None,
    threads: int | None = None,
    max_train_jets: int | None = None,
    stop_after: int | None = None,
    progress: bool = True,
    init: str | Path | None = None,
) -> dict[str, Any]:
    """Train ``network`` on ``train_files``; returns the summary (also in ``output/summary.json``)."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    config = DataConfig.from_yaml(config_path)
    if config.needs_auto:
        from .datasets import open_jets
        from .features import make_table

        config = config.resolve_auto(make_table(open_jets(train_files[0]), config))
    config.dump_yaml(output / "data_config.yaml")

    data = load_features(train_files, config, drop_empty=True)
    if val_files:
        train_set, val_set = data, load_features(val_files, config, drop_empty=True)
    else:
        perm = rng.permutation(len(data))
        nval = int(len(data) * val_fraction)
        train_set, val_set = subset(data, perm[nval:]), subset(data, perm[:nval])
    if max_train_jets and len(train_set) > max_train_jets:
        train_set = subset(train_set, np.sort(rng.choice(len(train_set), max_train_jets, replace=False)))
    if max_train_jets and len(val_set) > max_train_jets // 4:
        val_set = subset(val_set, np.sort(rng.choice(len(val_set), max_train_jets // 4, replace=False)))
    dims = {k: v.shape[1] for k, v in data.inputs.items()}
    model = build(network, list(config.input_names), dims, len(config.class_names), **(network_options or {}))
    if init is not None:  # warm start: weights of an earlier run of the same network (strict)
        load_state(model, init)
    model.to(device)
    opt = make_optimizer(model.parameters(), optimizer, lr, weight_decay)
    steps_per_epoch = math.ceil(len(train_set) / batch_size)
    plan = [steps_per_epoch * epochs]  # total steps; shortened to fit ``max_minutes`` once steps are timed
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt.inner if isinstance(opt, Lookahead) else opt, lambda s: lr_factor(s, plan[0])
    )
    scaler = torch.amp.GradScaler(enabled=device == "cuda")
    start_epoch, best, history = 0, math.inf, []
    if resume and (output / "last.pt").exists():
        state = torch.load(output / "last.pt", map_location=device, weights_only=False)  # our own file
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start_epoch, best, history = state["epoch"] + 1, state["best"], state["history"]
        rng = np.random.default_rng(seed + start_epoch)
    t0 = time.perf_counter()
    marks: list[tuple[int, float]] = []
    for epoch in range(start_epoch, epochs):
        model.train()
        tl, tc, tn = 0.0, 0, 0
        ep_rng = np.random.default_rng([seed, epoch])
        bar = tqdm(
            batches(len(train_set), batch_size, ep_rng, train_set.counts),
            total=steps_per_epoch,
            desc=f"{network} epoch {epoch}",
            disable=not progress,
            leave=False,
        )
        for idx in bar:
            q = float(ep_rng.uniform(0.9, 1.0)) if trim else None
            xs = to_tensors(train_set, idx, model.input_names, model.min_length, trim_q=q, device=device)
            assert train_set.labels is not None
            y = torch.from_numpy(train_set.labels[idx]).long().to(device)
            with torch.autocast(device_type="cuda", enabled=device == "cuda"):
                out = logits(model, xs)
                loss = torch.nn.functional.cross_entropy(out, y)
            opt.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            tl += float(loss.detach()) * len(idx)
            tc += int((out.argmax(1) == y).sum())
            tn += len(idx)
            bar.set_postfix(loss=f"{tl / tn:.4f}", acc=f"{tc / tn:.3f}")
            step = sched.last_epoch
            if max_minutes and step % 50 == 0:  # re-plan from the recent step rate (first steps are slow)
                now = time.perf_counter()
                if marks:
                    per_step = (now - marks[-1][1]) / max(step - marks[-1][0], 1)
                    left = 0.85 * 60 * max_minutes - (now - t0)  # leave room for validation passes
                    plan[0] = max(step + int(left / per_step), step + 1)
                    log.debug("time budget: %.3f s/step, LR schedule over %d steps", per_step, plan[0])
                marks.append((step, now))
            if max_minutes and time.perf_counter() - t0 > 60 * max_minutes:
                break
        vl, va = evaluate_loss(model, val_set, 2 * batch_size, device)
        row = {
            "epoch": epoch,
            "train_loss": tl / tn,
            "train_acc": tc / tn,
            "val_loss": vl,
            "val_acc": va,
            "lr": sched.get_last_lr()[0],
            "seconds": time.perf_counter() - t0,
            "jets": tn,
        }
        history.append(row)
        log.info("epoch %d: %s", epoch, row)
        with (output / "log.jsonl").open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        torch.save(model.state_dict(), output / f"epoch-{epoch}_state.pt")
        if vl < best:
            best = vl
            torch.save(model.state_dict(), output / "best_state.pt")
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "epoch": epoch,
                "best": best,
                "history": history,
            },
            output / "last.pt",
        )
        if max_minutes and time.perf_counter() - t0 > 60 * max_minutes:
            log.info("time budget of %.1f min reached after epoch %d", max_minutes, epoch)
            break
        if stop_after is not None and epoch + 1 >= stop_after:  # split a long run across job slots
            break
    best_epoch = min(history, key=lambda r: r["val_loss"])["epoch"]
    summary = {
        "network": network,
        "network_options": network_options or {},
        "best_epoch": best_epoch,
        "history": history,
        "n_train": len(train_set),
        "n_val": len(val_set),
        "seed": seed,
        "optimizer": optimizer,
        "lr": lr,
        "batch_size": batch_size,
        "input_dims": dims,
        "train_files": [str(p) for p in train_files],
        "val_files": [str(p) for p in val_files],
        "parameters": sum(p.numel() for p in model.parameters()),
        **({"init": str(init)} if init is not None else {}),
    }
    (output / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def load_trained(output: str | Path, which: str = "best"):
    """The model of a training folder (``best`` or an epoch number) and its data config."""
    output = Path(output)
    summary = json.loads((output / "summary.json").read_text())
    config = DataConfig.from_yaml(output / "data_config.yaml")
    model = build(
        summary["network"],
        list(config.input_names),
        summary["input_dims"],
        len(config.class_names),
        **summary["network_options"],
    )
    name = "best_state.pt" if which == "best" else f"epoch-{which}_state.pt"
    model.load_state_dict(torch.load(output / name, map_location="cpu", weights_only=True))
    return model.eval(), config, summary


DEFAULT_DISCRIMINANTS = {
    "WvsQCD": {"signal": ["Wqq"], "background": ["QCD"]},
    "ZvsQCD": {"signal": ["Zqq"], "background": ["QCD"]},
    "TvsQCD": {"signal": ["Tbqq"], "background": ["QCD"]},
}


def export(
    train_dir: str | Path,
    bundle_dir: str | Path,
    name: str | None = None,
    reference_files: Sequence[str | Path] = (),
    discriminants: dict | None = None,
    card: dict | None = None,
) -> Path:
    """A trained folder -> bundle (ONNX + configs + model card); working points derived on
    ``reference_files`` (fixed mistag 0.5/1/2.5/5 %, fixed efficiency 30/50 %) and their metrics stored."""
    from .bundle import CARD, write_bundle
    from .evaluation import predict_files
    from .metrics import discriminant, summary
    from .tagger import JetTagger
    from .workingpoints import derive

    model, config, s = load_trained(train_dir)
    classes = config.class_names
    discs = {
        k: v
        for k, v in (discriminants or DEFAULT_DISCRIMINANTS).items()
        if all(c in classes for c in [*v["signal"], *v["background"]])
    }
    best = next(r for r in s["history"] if r["epoch"] == s["best_epoch"])
    info = {
        "name": name or Path(bundle_dir).name,
        "network": s["network"],
        "network_options": s["network_options"],
        "discriminants": discs,
        "provenance": {
            "train_files": s["train_files"],
            "n_train": s["n_train"],
            "n_val": s["n_val"],
            "seed": s["seed"],
            "epochs_run": len(s["history"]),
            "best_epoch": s["best_epoch"],
            "best_val_loss": best["val_loss"],
            "best_val_acc": best["val_acc"],
            "jets_seen": sum(r["jets"] for r in s["history"]),
            "optimizer": s["optimizer"],
            "lr": s["lr"],
            "batch_size": s["batch_size"],
            "parameters": s["parameters"],
        },
        **(card or {}),
    }
    bundle = write_bundle(bundle_dir, model, config, info, s["input_dims"])
    if reference_files:
        tagger = JetTagger(bundle)
        cols = predict_files(tagger, reference_files)
        scores = np.stack([cols[f"score_{c}"] for c in classes], axis=1)
        labels = cols["label"].astype(int)
        wps = {}
        for dname, d in discs.items():
            disc = discriminant(scores, classes, d)
            sig = np.isin(labels, [classes.index(c) for c in d["signal"]])
            bkg = np.isin(labels, [classes.index(c) for c in d["background"]])
            wps[dname] = derive(disc[sig], disc[bkg])
        full = yaml_load(Path(bundle_dir) / CARD)
        full["working_points"] = wps
        full["working_points_reference"] = [str(f) for f in reference_files]
        full["metrics"] = _plain(summary(labels, scores, classes, discs))
        full["metrics"]["files"] = [str(f) for f in reference_files]
        yaml_dump(full, Path(bundle_dir) / CARD)
    return Path(bundle_dir)


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
