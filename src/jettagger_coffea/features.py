"""Variables -> standardise / clip -> pad: the one featurization path of inference, training and export.

Values no file holds are replaced by 0 and counted, in one counter, ``nonfinite_inputs``, per jet:

* a raw value (a branch the inputs are computed from) that is NaN, +-inf or beyond
  :data:`sources.RAW_LIMIT` (1e10) is read as 0 (:class:`sources.RawColumns`), as if the file held 0 there:
  one count per replaced value, however many model variables it feeds;
* a model variable that is NaN or +-inf after standardisation (float32, as weaver), or beyond
  :data:`ABSURD` (1e32, CMSSW's ``catch_infs`` bound) before it, becomes 0: one count per value, except
  where it is computed from a raw value already counted (log(0) of a replaced pT is not counted again).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import awkward as ak
import numpy as np

from ._errors import JetTaggerError
from .batching import Padding, pad, padded_length
from .dataconfig import DataConfig, InputGroup, VarSpec
from .sources import (
    JET_COLLECTIONS,
    Events,
    Preset,
    RawColumns,
    Table,
    guess_preset,
    is_tree,
    load_preset,
    nano_columns,
    raw_columns,
    record_columns,
)


@dataclasses.dataclass
class Features:
    """Dense model inputs of N jets plus what the outputs need to be trusted."""

    inputs: dict[str, np.ndarray]  # group -> float32 [N, C, P]
    counts: np.ndarray  # real particles per jet (before truncation)
    length: int
    n_nonfinite: int = 0  # values replaced by 0 (the module's rule: raw and model variables)
    labels: np.ndarray | None = None
    observers: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.counts)

    @property
    def empty_jets(self) -> np.ndarray:
        """Jets without constituents: all-masked rows, their scores are NaN."""
        return self.counts == 0


#: an input value beyond this magnitude (before standardisation) is replaced by 0 and counted, as NaN and inf
#: are: CMSSW's ``catch_infs`` bound (a finite 1e33 would otherwise reach the model as a clipped value)
ABSURD = 1e32


def is_nanoaod(data: Any) -> bool:
    """NanoAOD events (coffea NanoEvents, an awkward record of collections, an uproot ``Events`` TTree or
    RNTuple)."""
    if isinstance(data, Events):
        return True
    if is_tree(data):
        return any(f"n{j}" in data for j in JET_COLLECTIONS) or data.name == "Events"
    return isinstance(data, ak.Array) and any(j in ak.fields(data) for j in JET_COLLECTIONS)


def make_table(
    data: Any, config: DataConfig, preset: Preset | str | None = None, where: str = "input", jets: Any = None
) -> Table:
    """A lazy column table: over the FatJets of NanoAOD events (all, or those selected by the [event][jet]
    mask ``jets``) through a source preset, or over JetClass records, a dict or an uproot TTree.

    For NanoAOD, ``table.ids`` holds (event, jet index) of each row."""
    ids, links = None, None
    if is_nanoaod(data):
        chosen = load_preset(preset if preset is not None else guess_preset(input_names(config)))
        links, ids = nano_columns(data, chosen, where, jets)
        base: RawColumns = links
    else:
        if jets is not None:
            raise JetTaggerError(f"{where}: a jet selection needs NanoAOD events")
        base = record_columns(data, where)
    base.inputs = set(raw_columns(input_names(config), config, base.preset))
    table = Table(base, config.new_variables, where)
    table.ids, table.links, table.raw = ids, links, base
    return table


def input_names(config: DataConfig) -> list[str]:
    return [v for g in config.inputs.values() for v in g.var_names]


def _standardise(values: np.ndarray, v: VarSpec) -> np.ndarray:
    x = values.astype(np.float32, copy=False)
    if v.center is None:
        return x
    if v.center == "auto":
        raise JetTaggerError(
            f"variable {v.name!r} has preprocess: auto but was not resolved (run resolve_auto)"
        )
    x = (x - np.float32(v.center)) * np.float32(v.scale)
    return np.clip(x, np.float32(v.clip_min), np.float32(v.clip_max))


def _flat(table: Table, name: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        arr = table[name]
    except JetTaggerError:
        raise
    except Exception as err:
        raise JetTaggerError(
            f"{table.where}: cannot compute variable {name!r}: {type(err).__name__}: {err}"
        ) from err
    arr = ak.Array(arr) if not isinstance(arr, (ak.Array, np.ndarray)) else arr
    if isinstance(arr, np.ndarray) or arr.ndim == 1:
        flat = ak.to_numpy(arr) if isinstance(arr, ak.Array) else arr
        return np.asarray(flat), np.ones(len(flat), dtype=np.int64)
    return ak.to_numpy(ak.flatten(arr, axis=1)), ak.to_numpy(ak.num(arr, axis=1))


def group_values(
    table: Table, group: InputGroup, counted: Callable[[str, np.ndarray], np.ndarray] | None = None
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Standardised flat values of each variable of a group, their shared counts, and per jet the number
    of values replaced by 0 (non-finite after standardisation, or beyond :data:`ABSURD` before it) that
    ``counted(variable, counts)`` (:func:`_counted`) does not tell as computed from a raw value
    already counted."""
    values: list[np.ndarray] = []
    counts: np.ndarray | None = None
    replaced = []  # per variable: which values were replaced and are counted here
    for v in group.vars:
        flat, c = _flat(table, v.name)
        if counts is None:
            counts = c
        elif len(c) != len(counts) or not np.array_equal(c, counts):
            raise JetTaggerError(
                f"{table.where}: variable {v.name!r} of input {group.name!r} is not aligned "
                f"with {group.vars[0].name!r}"
            )
        x = _standardise(flat, v)
        replace = ~np.isfinite(x)
        if flat.dtype.kind == "f":
            replace |= np.abs(flat) > ABSURD
        if replace.any():
            x = np.where(replace, np.float32(0), x)
            replaced.append(replace if counted is None else replace & ~counted(v.name, c))
        values.append(x)
    assert counts is not None
    bad = np.zeros(len(counts), dtype=np.int64)
    if replaced:
        jet_of = np.repeat(np.arange(len(counts)), counts)
        bad += np.bincount(jet_of, weights=np.sum(replaced, axis=0), minlength=len(counts)).astype(np.int64)
    return values, counts, bad


def _replaced_raw(table: Table, config: DataConfig, names: list[str]) -> dict[str, Any]:
    """Raw column -> mask of its values replaced by 0 (:class:`sources.RawColumns`), for the raw columns
    (:func:`sources.raw_columns`: the selection and ordering of a collection included) that ``names`` are
    computed from; a mask has the column's layout: the jets' selected rows."""
    raw = table.raw
    if raw is None:
        return {}
    out = {}
    for name in raw_columns(names, config, raw.preset):
        table[name]  # a selection / ordering column is read through the jets' rows here
        if name in raw.replaced:
            out[name] = raw.replaced[name]
    return out


def _counted(table: Table, config: DataConfig) -> Callable[[str, np.ndarray], np.ndarray]:
    """``counted(variable, counts)``: which of a variable's flat values are computed from a raw value that
    was replaced (the same particle's, or the jet's; any of the jet's where the variable's rows are not
    the raw column's), so that their replacement is not counted a second time."""

    def counted(name: str, counts: np.ndarray) -> np.ndarray:
        done = np.zeros(int(counts.sum()), dtype=bool)
        for m in _replaced_raw(table, config, [name]).values():
            if m.ndim == 1:
                done |= np.repeat(np.asarray(m, dtype=bool), counts)
            elif np.array_equal(ak.to_numpy(ak.num(m, axis=1)), counts):
                done |= ak.to_numpy(ak.flatten(m))
            else:
                done |= np.repeat(ak.to_numpy(ak.any(m, axis=1)), counts)
        return done

    return counted


def _jet_raw_replaced(table: Table, config: DataConfig, n_jets: int) -> np.ndarray:
    """Per jet, the raw values the inputs read that were replaced by 0: one count per value."""
    out = np.zeros(n_jets, dtype=np.int64)
    for m in _replaced_raw(table, config, input_names(config)).values():
        out += np.asarray(ak.to_numpy(ak.sum(m, axis=1) if m.ndim > 1 else m), dtype=np.int64)
    return out


@dataclasses.dataclass
class Standardised:
    """Standardised flat per-particle values of every input group (before padding), and the jets' labels
    where known: what inference, training and evaluation batch from.

    Batches are built by ordering jets (:meth:`take`, e.g. by multiplicity) and densifying row ranges of
    similar lengths (:meth:`dense`); :func:`featurize` densifies everything at once, as weaver does.
    """

    config: DataConfig
    groups: dict[str, tuple[list[np.ndarray], np.ndarray]]  # group -> (values per var, counts per jet)
    counts: np.ndarray  # real particles per jet
    n_nonfinite: int = 0
    labels: np.ndarray | None = None
    #: per jet: values replaced by 0 (raw, or model variables: the module's rule); sums to n_nonfinite
    jet_nonfinite: np.ndarray | None = None
    #: (jets, targets) float32: the config's regression targets, in their units, where known
    targets: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.counts)

    def take(self, order: np.ndarray) -> Standardised:
        """These jets, in this order (a gather of every group's flat values)."""
        groups = {}
        for name, (values, counts) in self.groups.items():
            starts = np.zeros(len(counts), dtype=np.int64)
            np.cumsum(counts[:-1], out=starts[1:])
            c = counts[order]
            new_starts = np.zeros(len(c), dtype=np.int64)
            np.cumsum(c[:-1], out=new_starts[1:])
            idx = np.repeat(starts[order] - new_starts, c) + np.arange(int(c.sum()))
            groups[name] = ([v[idx] for v in values], c)
        labels = None if self.labels is None else self.labels[order]
        bad = None if self.jet_nonfinite is None else self.jet_nonfinite[order]
        targets = None if self.targets is None else self.targets[order]
        return Standardised(self.config, groups, self.counts[order], self.n_nonfinite, labels, bad, targets)

    @staticmethod
    def concatenate(parts: list[Standardised]) -> Standardised:
        first = parts[0]
        groups = {
            name: (
                [np.concatenate([p.groups[name][0][i] for p in parts]) for i in range(len(values))],
                np.concatenate([p.groups[name][1] for p in parts]),
            )
            for name, (values, _) in first.groups.items()
        }
        labels = None if any(p.labels is None for p in parts) else np.concatenate([p.labels for p in parts])  # type: ignore[misc]
        bad = [p.jet_nonfinite for p in parts]
        targets = (
            None if any(p.targets is None for p in parts) else np.concatenate([p.targets for p in parts])
        )  # type: ignore[misc]
        return Standardised(
            first.config,
            groups,
            np.concatenate([p.counts for p in parts]),
            sum(p.n_nonfinite for p in parts),
            labels,
            None if any(b is None for b in bad) else np.concatenate(bad),  # type: ignore[arg-type]
            targets,
        )

    def dense(
        self,
        start: int = 0,
        stop: int | None = None,
        length: Padding | None = None,
        min_length: int = 1,
        quantile: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Padded float32 [n, C, P] of jets ``start:stop``, each group at its own length
        (:func:`batching.padded_length`): ``None`` or "fixed" -> the config's length (weaver); "dynamic" ->
        the longest jet of these rows, at least the group's (and the network's) minimum, at most the
        config's length; an int -> that length."""
        stop = len(self) if stop is None else stop
        out = {}
        for g in self.config.inputs.values():
            values, counts = self.groups[g.name]
            lo = int(counts[:start].sum())
            c = counts[start:stop]
            hi = lo + int(c.sum())
            glen = padded_length(c, g, length, min_length, quantile)
            arr = np.empty((len(c), len(g.vars), glen), dtype=np.float32)
            for i, (x, v) in enumerate(zip(values, g.vars)):
                arr[:, i, :] = pad(x[lo:hi], c, glen, g.pad_mode, v.pad_value)
            out[g.name] = arr
        return out


def standardise(table: Table, config: DataConfig, primary: str | None = None) -> Standardised:
    """Standardised values of every group; a jet's particle count is that of group ``primary`` (the
    particle mask, as the bundle declares it; default: the group with most entries)."""
    if config.needs_auto:
        raise JetTaggerError(
            f"{config.source}: preprocess: auto is not resolved; resolve it on training data"
        )
    groups, bad = {}, []
    counted = _counted(table, config)
    for g in config.inputs.values():
        values, counts, group_bad = group_values(table, g, counted)
        groups[g.name] = (values, counts)
        bad.append(group_bad)
    if bad:
        bad.append(_jet_raw_replaced(table, config, len(bad[0])))
    if primary is None:
        sized = [n for n, g in config.inputs.items() if g.length is not None] or list(groups)
        primary = max(sized, key=lambda n: int(groups[n][1].sum()))
    jet_bad = np.asarray(np.sum(bad, axis=0, dtype=np.int64)) if bad else np.zeros(0, dtype=np.int64)
    return Standardised(config, groups, groups[primary][1], int(jet_bad.sum()), jet_nonfinite=jet_bad)


def featurize(
    data: Any,
    config: DataConfig,
    length: Padding | None = None,
    where: str = "input",
    table: Table | None = None,
    with_labels: bool = False,
) -> Features:
    """Dense float32 [N, C, P] inputs of every group.

    ``length``: None -> the config's length per group (weaver); "dynamic" -> the longest real jet of this
    chunk capped at the config length; an int -> that length.
    """
    table = table if table is not None else make_table(data, config, where=where)
    std = standardise(table, config)
    inputs = std.dense(length=length)
    plen = max((v.shape[-1] for k, v in inputs.items() if config.inputs[k].length is not None), default=1)
    feats = Features(inputs=inputs, counts=std.counts, length=plen, n_nonfinite=std.n_nonfinite)
    if with_labels:
        feats.labels = labels(table, config)
    for name in config.observers:
        try:
            feats.observers[name] = np.asarray(ak.to_numpy(table[name]))
        except JetTaggerError:
            continue
    return feats


def labels(table: Table, config: DataConfig) -> np.ndarray:
    """Class index per jet (``simple``: argmax of the one-hot branches; ``custom``: the expression)."""
    if config.label_type == "simple":
        onehot = np.stack(
            [np.asarray(ak.to_numpy(table[n]), dtype=np.float32) for n in config.label_value], axis=1
        )
        return onehot.argmax(axis=1)
    _, expr = next(iter(config.label_value.items()))  # type: ignore[union-attr]
    return np.asarray(ak.to_numpy(expr(table)))


def selection_mask(table: Table, config: DataConfig) -> np.ndarray | None:
    if config.selection is None:
        return None
    return np.asarray(ak.to_numpy(config.selection(table)), dtype=bool)
