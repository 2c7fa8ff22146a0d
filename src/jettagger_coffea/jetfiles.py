"""Jets from files (JetClass ntuples or PFNano) -> standardised jets + labels, through the one featurization
path."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ._errors import JetTaggerError
from .dataconfig import DataConfig
from .features import Standardised, make_table, selection_mask, standardise
from .features import labels as label_values
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


def load_jets(
    files: Sequence[str | Path], config: DataConfig, with_labels: bool = True, drop_empty: bool = False
) -> Standardised:
    """Standardised (unpadded) jets of ``files`` with their labels, in file order, after the config's
    selection: what training and evaluation batch from (padded per batch, as inference is)."""
    parts = []
    for path in files:
        table = make_table(open_jets(path), config, where=str(path))
        std = standardise(table, config)
        if with_labels:
            std.labels = label_values(table, config) if config.label_value else None
            std.targets = config.target_values(table) if config.targets else None
        keep = selection_mask(table, config)
        if drop_empty:
            keep = std.counts > 0 if keep is None else keep & (std.counts > 0)
        if keep is not None:
            std = std.take(np.flatnonzero(keep))
        parts.append(std)
    if not parts:
        raise JetTaggerError("no input files")
    return Standardised.concatenate(parts)
