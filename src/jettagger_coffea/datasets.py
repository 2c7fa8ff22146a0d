"""Jets from files (JetClass ntuples or PFNano) -> features + labels, through the one featurization path."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ._errors import JetTaggerError
from .config import DataConfig
from .features import Features, featurize, make_table, selection_mask
from .sources import Events


def open_jets(path: str | Path):
    """The jets of a file: a JetClass-layout ``tree`` (one jet per entry) or a NanoAOD ``Events`` tree
    (its FatJets, read lazily branch by branch through a source preset)."""
    import uproot

    path = Path(path)
    try:
        f = uproot.open(path)
    except Exception as err:  # noqa: BLE001 - corrupt or missing file: name it
        raise JetTaggerError(f"cannot open {path}: {type(err).__name__}: {err}") from None
    if "tree" in f:
        return f["tree"]
    if "Events" in f:
        return Events(f["Events"], str(path))
    raise JetTaggerError(f"{path}: neither a JetClass `tree` nor a NanoAOD `Events` tree")


def load_features(
    files: Sequence[str | Path], config: DataConfig, with_labels: bool = True, drop_empty: bool = False
) -> Features:
    """Featurize every jet of ``files`` (weaver's fixed length) and concatenate, in file order."""
    parts = []
    for path in files:
        data = open_jets(path)
        table = make_table(data, config, where=str(path))
        f = featurize(data, config, where=str(path), table=table, with_labels=with_labels)
        keep = selection_mask(table, config)
        if drop_empty:
            keep = ~f.empty_jets if keep is None else keep & ~f.empty_jets
        if keep is not None:
            f = subset(f, np.flatnonzero(keep))
        parts.append(f)
    if not parts:
        raise JetTaggerError("no input files")
    return concatenate(parts)


def subset(f: Features, idx: np.ndarray) -> Features:
    return dataclasses.replace(
        f,
        inputs={k: v[idx] for k, v in f.inputs.items()},
        counts=f.counts[idx],
        labels=None if f.labels is None else f.labels[idx],
        observers={k: v[idx] for k, v in f.observers.items()},
    )


def concatenate(parts: Sequence[Features]) -> Features:
    first = parts[0]
    return dataclasses.replace(
        first,
        inputs={k: np.concatenate([p.inputs[k] for p in parts]) for k in first.inputs},
        counts=np.concatenate([p.counts for p in parts]),
        labels=None if first.labels is None else np.concatenate([p.labels for p in parts]),
        observers={k: np.concatenate([p.observers[k] for p in parts]) for k in first.observers},
        n_nonfinite=sum(p.n_nonfinite for p in parts),
    )
