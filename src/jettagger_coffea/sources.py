"""Sources: the collections of a file -> the named per-jet columns a model's data config asks for.

Two kinds of input:

* **NanoAOD** (CMS PFNano, or the project's generated files): each FatJet's constituents and secondary
  vertices are built from the link tables as CMS writes them — ``FatJetPFCands_{jetIdx,pFCandsIdx}`` ->
  ``PFCands`` and ``FatJetSVs_{jetIdx,sVIdx}`` -> ``SV`` — with or without ``FatJet_nConstituents``
  (a 2020-layout file, whose link table carries the candidates itself, works too). Raw columns are named
  ``fj_<FatJet field>`` and ``<collection>_<field>``; a **preset** (``presets/*.yaml``, data only: restricted
  expressions, never ``eval``) maps them onto a model's names (``part_*`` for JetClass, ``pfcand_*`` /
  ``sv_*`` for CMS ParticleNet-AK8), with units, sentinels, candidate selection and ordering explicit.
* **JetClass-layout ntuples** (one jet per entry): the branches are the names.

Then :class:`Table` evaluates the data config's ``new_variables`` on top, lazily and once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import yaml

from ._errors import JetTaggerError
from .expressions import Expression

Getter = Callable[[str], Any]
JETS = "FatJet"
#: the jet collections a NanoAOD source preset reads (AK8 and AK4)
JET_COLLECTIONS = ("FatJet", "Jet")


# -- presets ------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class CollectionSpec:
    """A per-jet collection read through a NanoAOD link table (``link`` rows -> ``target`` rows)."""

    name: str  # also the prefix of its raw columns
    link: str
    jet_index: str = "jetIdx"
    target: str | None = None
    target_index: str | None = None
    prefer: str = "target"  # which table wins for a field both carry
    select: Expression | None = None
    order: Expression | None = None  # descending; stable


@dataclasses.dataclass(frozen=True)
class Preset:
    """How a model's variable names are computed from NanoAOD collections (declared, not guessed)."""

    name: str
    collections: dict[str, CollectionSpec]
    particles: str  # the collection whose emptiness makes a jet "without constituents"
    variables: dict[str, Expression]
    description: str = ""
    jets: str = JETS
    #: presets of one family compute the same names from different layouts (PFNano, NanoAOD v15; AK8 or
    #: AK4 jets); the layout of a file picks the member (:func:`preset_for`)
    family: str = ""
    #: variable -> what this layout lacks to compute it (a model that needs one is refused, naming it)
    unavailable: dict[str, str] = dataclasses.field(default_factory=dict)
    #: how the jets' truth is read from the generator record (:mod:`.truth`): ``resonance`` (boosted W, Z,
    #: top, H and their decay quarks inside the jet) or ``flavour`` (AK4: hadron and parton flavour)
    truth: str = "resonance"

    def __post_init__(self) -> None:
        if not self.family:
            object.__setattr__(self, "family", self.name)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str) -> Preset:
        try:
            colls = {}
            for cname, c in d["collections"].items():
                prefer = str(c.get("prefer", "target"))
                if prefer not in ("target", "link"):
                    raise JetTaggerError(f"{where}: collections.{cname}.prefer must be target or link")
                colls[cname] = CollectionSpec(
                    cname,
                    str(c["link"]),
                    str(c.get("jet_index", "jetIdx")),
                    c.get("target"),
                    c.get("target_index"),
                    prefer,
                    Expression(c["select"], f"{where}: collections.{cname}.select")
                    if c.get("select")
                    else None,
                    Expression(c["order"], f"{where}: collections.{cname}.order") if c.get("order") else None,
                )
            variables = {
                str(k): Expression(str(v), f"{where}: variables.{k}")
                for k, v in (d.get("variables") or {}).items()
            }
            particles = str(d.get("particles", next(iter(colls))))
            unavailable = {str(k): str(v) for k, v in (d.get("unavailable") or {}).items()}
            truth = str(d.get("truth", "resonance"))
            if truth not in ("resonance", "flavour"):
                raise JetTaggerError(f"{where}: truth must be resonance or flavour, not {truth!r}")
        except (KeyError, TypeError, AttributeError, StopIteration) as err:
            raise JetTaggerError(f"{where}: malformed source preset ({type(err).__name__}: {err})") from None
        if particles not in colls:
            raise JetTaggerError(
                f"{where}: particles: {particles!r} is not one of the collections {list(colls)}"
            )
        return cls(
            str(d.get("name", where)),
            colls,
            particles,
            variables,
            str(d.get("description", "")),
            str(d.get("jets", JETS)),
            str(d.get("family") or d.get("name", where)),
            unavailable,
            truth,
        )

    def to_dict(self) -> dict[str, Any]:
        colls = {}
        for c in self.collections.values():
            colls[c.name] = {
                k: v
                for k, v in (
                    ("link", c.link),
                    ("jet_index", c.jet_index),
                    ("target", c.target),
                    ("target_index", c.target_index),
                    ("prefer", c.prefer),
                    ("select", c.select.source if c.select else None),
                    ("order", c.order.source if c.order else None),
                )
                if v is not None
            }
        out = {
            "name": self.name,
            "description": self.description,
            "jets": self.jets,
            "collections": colls,
            "particles": self.particles,
            "variables": {k: e.source for k, e in self.variables.items()},
        }
        if self.family != self.name:
            out["family"] = self.family
        if self.unavailable:
            out["unavailable"] = dict(self.unavailable)
        if self.truth != "resonance":
            out["truth"] = self.truth
        return out

    @property
    def layout(self) -> str:
        """The tables it reads, e.g. ``FatJet, FatJetPFCands -> PFCands``."""
        links = [f"{c.link} -> {c.target}" if c.target else c.link for c in self.collections.values()]
        return ", ".join([self.jets, *links])

    def collection_of(self, name: str, extra: Mapping[str, Expression] | None = None) -> str | None:
        """The collection a variable is computed from (None for per-jet quantities)."""
        exprs = {**self.variables, **(extra or {})}
        seen: set[str] = set()

        def walk(n: str) -> str | None:
            if n in seen:
                return None
            seen.add(n)
            prefix = n.split("_", 1)[0]
            if n not in exprs and prefix in self.collections:
                return prefix
            for m in sorted(exprs[n].names) if n in exprs else ():
                found = walk(m)
                if found:
                    return found
            return None

        return walk(name)


PRESETS = ("jetclass", "jetclass-v15", "cms-pfnano", "cms-pfnano-ak4")


@cache
def _builtin(name: str) -> Preset:
    text = resources.files("jettagger_coffea.presets").joinpath(f"{name}.yaml").read_text()
    return Preset.from_dict(yaml.safe_load(text), f"preset {name}")


def load_preset(spec: str | Path | Mapping[str, Any] | Preset) -> Preset:
    """A built-in preset by name, a preset YAML file, or a preset mapping (as stored in a bundle)."""
    if isinstance(spec, Preset):
        return spec
    if isinstance(spec, Mapping):
        return Preset.from_dict(spec, "bundle source")
    if str(spec) in PRESETS:
        return _builtin(str(spec))
    path = Path(spec)
    if not path.is_file():
        raise JetTaggerError(
            f"unknown source preset {str(spec)!r} (built in: {', '.join(PRESETS)}; or a YAML file)"
        )
    return Preset.from_dict(yaml.safe_load(path.read_text()), str(path))


def preset_for(preset: Preset, has: Callable[[str], bool], jets: str | None = None) -> Preset:
    """The member of ``preset``'s family for a file whose collections ``has`` tells, reading the same jet
    collection (or, with ``jets``, that one): ``preset`` itself where the file has its jets and particle
    link table, else the one built-in member that fits. Where none fits, the first candidate (the errors
    then name what is missing)."""
    jets = jets or preset.jets
    family = [p for p in map(_builtin, PRESETS) if p.family == preset.family and p != preset]
    members = [p for p in [preset, *family] if p.jets == jets]
    if not members:
        raise JetTaggerError(f"--jets {jets}: no source preset of family {preset.family!r} reads {jets}")
    fits = [p for p in members if has(p.jets) and has(p.collections[p.particles].link)]
    if fits and (fits[0] is preset or len(fits) == 1):
        return fits[0]
    if len(fits) > 1:
        raise JetTaggerError(
            f"the file fits several source presets ({', '.join(p.name for p in fits)}): "
            "choose one with --source"
        )
    return members[0]


def guess_preset(names: Any) -> str:
    """``cms-pfnano`` for models whose inputs are CMS names (``pfcand_*``, ``sv_*``), else ``jetclass``."""
    return "cms-pfnano" if any(str(n).startswith(("pfcand_", "sv_")) for n in names) else "jetclass"


# -- raw values no file holds ----------------------------------------------------------------------------
#: a raw float value (a NanoAOD branch, a JetClass-ntuple branch) beyond this magnitude, NaN or +-inf is no
#: measurement: it is replaced by 0 and counted (:class:`RawColumns`). No PF candidate, SV or jet quantity
#: in GeV, cm, rad or a significance / chi2 comes near it: in the reference PFNano files every such branch
#: is below ~2e3 (FatJet_pt 1752 GeV, significances ~1e3) but for the n2b1 / n3b1 sentinel 99968, beam
#: energies are ~7e3 GeV and CMS is ~2e3 cm long; what does exceed it there is garbage (PFNano's
#: Jet_DeepCSV_track* hold uninitialised ~1e32 for missing tracks). A value of 1e30 passes CMSSW's 1e32
#: bound on the model variables (:data:`features.ABSURD`) as log(1e30) = 69: the bound is on the raw value.
RAW_LIMIT = 1e10


def replace_absurd(values: Any) -> tuple[Any, Any]:
    """``values`` (numpy or awkward) with NaN, +-inf and values beyond :data:`RAW_LIMIT` replaced by 0, and
    the boolean mask of those (None where there were none, or for non-float columns).

    0, as if the file held 0 there: it is what CMSSW's ``catch_infs`` and weaver put in place of a
    non-finite input, a neutral value for momenta, distances and weights alike, and it makes a hostile file
    score exactly as the same file with 0 written there (selection and ordering of candidates included)."""
    is_ak = isinstance(values, ak.Array)
    flat = np.asarray(ak.to_numpy(ak.flatten(values, axis=None))) if is_ak else np.asarray(values)
    if flat.dtype.kind != "f" or not len(flat) or (np.abs(flat) <= RAW_LIMIT).all():
        return values, None
    bad = ~(np.abs(values) <= RAW_LIMIT)
    zero = flat.dtype.type(0)
    return (ak.where(bad, zero, values) if is_ak else np.where(bad, zero, flat)), bad


class RawColumns:
    """The raw column getter of a source (``columns(name)``): values no file holds replaced by 0
    (:func:`replace_absurd`), and per raw column read so far where (:attr:`replaced`, a mask of the
    column's layout; only columns with a replaced value). ``preset``: how a NanoAOD source computes the
    model's names (None for JetClass-layout records, whose branches are the names). ``inputs``: the raw
    columns the model's inputs read (features.make_table sets them); others (observers, labels) are left
    as the file has them. None: every raw column."""

    def __init__(self, get: Getter, preset: Preset | None = None) -> None:
        self._get, self.preset = get, preset
        self.replaced: dict[str, Any] = {}
        self.inputs: set[str] | None = None

    def __call__(self, name: str) -> Any:
        return self._get(name)

    def cleans(self, name: str) -> bool:
        return self.inputs is None or name in self.inputs

    def clean(self, name: str, values: Any) -> Any:
        """``values`` of raw column ``name`` with the values no file holds replaced by 0, noted."""
        if not self.cleans(name):
            return values
        values, bad = replace_absurd(values)
        if bad is not None:
            self.replaced[name] = bad
        return values


# -- raw access to NanoAOD collections --------------------------------------------------------------------
def is_tree(x: Any) -> bool:
    """An uproot TTree or RNTuple: NanoAOD is moving to RNTuple, and both are read field by field."""
    import uproot
    from uproot.behaviors.RNTuple import RNTuple

    return isinstance(x, (uproot.TTree, RNTuple))


class Events:
    """Per-event jagged branches ``<collection>_<field>`` of a NanoAOD chunk: coffea NanoEvents, an awkward
    record array or an uproot ``Events`` tree (read lazily, one branch at a time)."""

    def __init__(
        self, events: Any, where: str, entry_start: int | None = None, entry_stop: int | None = None
    ):
        self.where = where
        self._tree = events if is_tree(events) else None
        self._events: Any = None if self._tree is not None else events
        self._range = (entry_start, entry_stop)
        self._cache: dict[tuple[str, str], Any] = {}
        if self._tree is not None:
            self._fields: dict[str, set[str]] = {}
            keys = self._tree.keys(recursive=False)
            for key in keys:
                coll, _, field = key.partition("_")
                if field:
                    self._fields.setdefault(coll, set()).add(field)
            self.scalars = {k for k in keys if "_" not in k and not k.startswith("n")}
        else:
            top = ak.fields(events)
            self._fields = {c: set(ak.fields(events[c])) for c in top if ak.fields(events[c])}
            self.scalars = {c for c in top if not ak.fields(events[c])}

    def __len__(self) -> int:
        if self._tree is not None:
            start, stop = self._range
            return len(range(self._tree.num_entries)[slice(start, stop)])
        return len(self._events)

    def has(self, coll: str) -> bool:
        return coll in self._fields

    def fields(self, coll: str) -> set[str]:
        return self._fields.get(coll, set())

    def get(self, coll: str, field: str) -> ak.Array:
        key = (coll, field)
        if key not in self._cache:
            if field not in self.fields(coll):
                raise JetTaggerError(f"{self.where}: missing branch {coll}_{field}")
            if self._tree is not None:
                start, stop = self._range
                self._cache[key] = self._tree[f"{coll}_{field}"].array(
                    entry_start=start, entry_stop=stop, library="ak"
                )
            else:
                self._cache[key] = self._events[coll][field]
        return self._cache[key]

    def scalar(self, name: str) -> np.ndarray:
        """A per-event branch (``run``, ``luminosityBlock``, ``event``)."""
        if self._tree is not None:
            start, stop = self._range
            return self._tree[name].array(entry_start=start, entry_stop=stop, library="np")
        return np.asarray(ak.to_numpy(self._events[name]))

    def counts(self, coll: str) -> np.ndarray:
        some = next(iter(sorted(self.fields(coll))))
        return np.asarray(ak.to_numpy(ak.num(self.get(coll, some), axis=1)), dtype=np.int64)


def _offsets(counts: np.ndarray) -> np.ndarray:
    out = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
    return out


def _flat(x: ak.Array) -> np.ndarray:
    return np.asarray(ak.to_numpy(ak.flatten(x, axis=1)))


class _Linked:
    """One collection's rows grouped by (selected) jet, then selected and ordered as its spec says.

    A link row is *invalid* when its jet index is outside the event's jets (the row belongs to no jet),
    or its target index is outside the event's target rows, except ``-1`` in a link table that carries
    its own values (``prefer: link``): CMS writes ``FatJetSVs_sVIdx = -1`` for an SV the SV table dropped.
    Invalid rows are handled as before (a row of no jet is left out; a row whose target is missing takes
    the link table's own values where it has the field) and counted per event in :attr:`invalid_rows`,
    over every row of the chunk: a broken file says so whichever jets are selected."""

    def __init__(
        self,
        ev: Events,
        spec: CollectionSpec,
        jet_rows: np.ndarray,
        n_jets: np.ndarray,
        lookup: Getter,
        cleans: Callable[[str], bool] | None = None,
    ) -> None:
        if not ev.has(spec.link):
            raise JetTaggerError(
                f"{ev.where}: no {spec.link} collection, which the model's {spec.name}_* "
                f"inputs are read from (a PFNano file with {spec.link} is needed)"
            )
        self.ev, self.spec, self._lookup, self._cleans = ev, spec, lookup, cleans
        n_link = ev.counts(spec.link)
        row_event = np.repeat(np.arange(len(n_link)), n_link)
        jidx = _flat(ev.get(spec.link, spec.jet_index)).astype(np.int64)
        valid = (jidx >= 0) & (jidx < n_jets[row_event])
        gjet = np.where(valid, _offsets(n_jets)[row_event] + jidx, 0)
        position = np.full(int(n_jets.sum()) + 1, -1, dtype=np.int64)
        position[jet_rows] = np.arange(len(jet_rows))
        pos = np.where(valid, position[gjet], -1)
        keep = np.flatnonzero(pos >= 0)
        keep = keep[np.argsort(pos[keep], kind="stable")]  # rows jet by jet, stored order within a jet
        self.n_out = len(jet_rows)
        self._rows, self._pos = keep, pos[keep]
        self._target_rows: np.ndarray | None = None
        invalid = ~valid
        if (
            spec.target
            and spec.target_index
            and ev.has(spec.target)
            and spec.target_index in ev.fields(spec.link)
        ):
            n_target = ev.counts(spec.target)
            tidx = _flat(ev.get(spec.link, spec.target_index)).astype(np.int64)
            ok = (tidx >= 0) & (tidx < n_target[row_event])
            invalid |= ~ok & ~((tidx == -1) & (spec.prefer == "link"))
            self._target_rows = np.where(ok, _offsets(n_target)[row_event] + tidx, -1)[keep]
        elif spec.target and spec.target_index and spec.target_index in ev.fields(spec.link):
            raise JetTaggerError(
                f"{ev.where}: {spec.link}_{spec.target_index} points to a {spec.target} "
                f"collection that the file does not have"
            )
        #: per event of the chunk: link rows whose jet or target index is out of range
        self.invalid_rows = np.bincount(row_event[invalid], minlength=len(n_link)).astype(np.int64)
        self._final: np.ndarray | None = None
        self._counts: np.ndarray | None = None

    def _file_flat(self, coll: str, field: str) -> tuple[np.ndarray, np.ndarray]:
        """A branch's flat values, those no file holds replaced by 0 (:func:`replace_absurd`) where the
        column is one the inputs read (``cleans``), and where."""
        values, bad = _flat(self.ev.get(coll, field)), None
        if self._cleans is None or self._cleans(f"{self.spec.name}_{field}"):
            values, bad = replace_absurd(values)
        return values, np.zeros(len(values), dtype=bool) if bad is None else bad

    def _raw_flat(self, field: str) -> tuple[np.ndarray, np.ndarray]:
        """A field for the kept rows (before selection/ordering), and which of its values were replaced by
        0. A row whose target is missing is NaN (not replaced: presets test for it, e.g. ``vtx_eta``)."""
        ev, spec = self.ev, self.spec
        in_link = field in ev.fields(spec.link)
        in_target = (
            self._target_rows is not None and spec.target is not None and field in ev.fields(spec.target)
        )
        if in_target and not (in_link and spec.prefer == "link"):
            assert spec.target is not None and self._target_rows is not None
            values, bad = self._file_flat(spec.target, field)
            rows = self._target_rows
            fill = np.nan if values.dtype.kind == "f" else 0
            out = np.full(len(rows), fill, dtype=values.dtype)
            out_bad = np.zeros(len(rows), dtype=bool)
            ok = rows >= 0
            out[ok], out_bad[ok] = values[rows[ok]], bad[rows[ok]]
            if in_link and (~ok).any():  # a row whose target was dropped: the link still knows it
                link, link_bad = self._file_flat(spec.link, field)
                out[~ok], out_bad[~ok] = link[self._rows][~ok], link_bad[self._rows][~ok]
            return out, out_bad
        if in_link:
            values, bad = self._file_flat(spec.link, field)
            return values[self._rows], bad[self._rows]
        tables = spec.link if spec.target is None else f"{spec.link} or {spec.target}"
        raise JetTaggerError(
            f"{ev.where}: missing branch {spec.target or spec.link}_{field} (no field {field!r} in {tables})"
        )

    def _structure(self) -> tuple[np.ndarray, np.ndarray]:
        if self._final is None:
            pos = self._pos
            counts0 = np.bincount(pos, minlength=self.n_out).astype(np.int64)
            sel = np.ones(len(pos), dtype=bool)
            raw = self._raw_getter(counts0)
            if self.spec.select is not None:
                sel = _flat(ak.values_astype(self.spec.select(raw), bool)) if len(pos) else sel
            key = np.zeros(len(pos))
            if self.spec.order is not None and len(pos):
                key = np.asarray(_flat(ak.Array(self.spec.order(raw))), dtype=np.float64)
            idx = np.flatnonzero(sel)
            idx = idx[np.lexsort((-key[idx], pos[idx]))]  # by jet, then descending key; stable
            self._final, self._counts = idx, np.bincount(pos[idx], minlength=self.n_out).astype(np.int64)
        assert self._counts is not None
        return self._final, self._counts

    def _raw_getter(self, counts0: np.ndarray) -> Getter:
        prefix = f"{self.spec.name}_"

        def get(name: str) -> Any:
            if name.startswith(prefix):
                return ak.unflatten(self._raw_flat(name[len(prefix) :])[0], counts0)
            return self._lookup(name)

        return get

    def column(self, field: str) -> tuple[ak.Array, ak.Array | None]:
        """A field of the jets' selected, ordered rows, and which values were replaced by 0 (None: none)."""
        idx, counts = self._structure()
        values, bad = self._raw_flat(field)
        return ak.unflatten(values[idx], counts), ak.unflatten(bad[idx], counts) if bad[idx].any() else None


class NanoColumns(RawColumns):
    """The column getter of a NanoAOD chunk's jets (``columns(name)``), which also tells the invalid rows
    of the link tables read so far (:meth:`invalid_link_rows`)."""

    def __init__(self, get: Getter, linked: dict[str, _Linked], n_events: int, preset: Preset) -> None:
        super().__init__(get, preset)
        self._linked, self.n_events = linked, n_events

    def invalid_link_rows(self) -> dict[str, np.ndarray]:
        """Link table -> invalid rows per event (see :class:`_Linked`), for the tables read so far."""
        return {lk.spec.link: lk.invalid_rows for lk in self._linked.values()}


def nano_columns(events: Any, preset: Preset, where: str, jets: Any = None) -> tuple[NanoColumns, np.ndarray]:
    """Column getter for the FatJets of a NanoAOD chunk (all of them, or those where the [event][jet]
    boolean ``jets`` is true), plus (event, jet index) of each jet in file order."""
    ev = events if isinstance(events, Events) else Events(events, where)
    preset = preset_for(preset, ev.has)
    if not ev.has(preset.jets):
        raise JetTaggerError(f"{where}: no {preset.jets} collection in this NanoAOD")
    n_jets = ev.counts(preset.jets)
    if jets is None:
        jet_rows = np.arange(int(n_jets.sum()), dtype=np.int64)
    else:
        mask = _flat(ak.Array(jets)).astype(bool)
        if len(mask) != int(n_jets.sum()):
            raise JetTaggerError(f"{where}: the jet mask does not match {preset.jets}")
        jet_rows = np.flatnonzero(mask)
    event_of_jet = np.repeat(np.arange(len(n_jets)), n_jets)[jet_rows]
    jet_index = (np.arange(int(n_jets.sum())) - _offsets(n_jets)[:-1].repeat(n_jets))[jet_rows]
    linked: dict[str, _Linked] = {}

    def get(name: str) -> Any:
        prefix, _, field = name.partition("_")
        if prefix == "fj" and field:
            return columns.clean(name, _flat(ev.get(preset.jets, field))[jet_rows])
        if prefix in preset.collections and field:
            if prefix not in linked:
                spec = preset.collections[prefix]
                linked[prefix] = _Linked(ev, spec, jet_rows, n_jets, table_get, columns.cleans)
            values, bad = linked[prefix].column(field)
            if bad is not None:
                columns.replaced[name] = bad
            return values
        raise JetTaggerError(
            f"{where}: no source for variable {name!r} (preset {preset.name}: neither one of "
            f"its variables nor a raw column fj_*, " + ", ".join(f"{c}_*" for c in preset.collections) + ")"
        )

    base = Table(get, preset.variables, where)

    def table_get(name: str) -> Any:
        return base[name]

    columns = NanoColumns(table_get, linked, len(n_jets), preset)
    return columns, np.stack([event_of_jet, jet_index], axis=1)


def raw_columns(names: Iterable[str], config: Any, preset: Preset | None) -> list[str]:
    """The raw columns (``fj_*``, ``<collection>_*``, or names with no source at all) that ``names`` are
    computed from, following the config's and the preset's expressions as the table evaluates them, and the
    selection and ordering of every collection they read; in the order first met. Without a preset
    (JetClass-layout records): the branches the config's expressions read."""
    out: list[str] = []
    todo, seen = list(names), set()
    while todo:
        name = todo.pop(0)
        if name in seen:
            continue
        seen.add(name)
        expr = config.new_variables.get(name) or (preset.variables.get(name) if preset else None)
        if expr is not None:
            todo.extend(sorted(expr.names))
            continue
        out.append(name)
        c = preset.collections.get(name.partition("_")[0]) if preset else None
        if c is not None:
            todo.extend(n for e in (c.select, c.order) if e is not None for n in sorted(e.names))
    return out


def _input_names(config: Any) -> list[str]:
    return [v for g in config.inputs.values() for v in g.var_names]


def needed_branches(config: Any, preset: Preset) -> set[tuple[str, str]]:
    """(collection, field) of every NanoAOD branch the config's inputs read through the preset: what a
    typetracer pass touches (:func:`raw_columns`)."""
    out: set[tuple[str, str]] = set()
    for name in raw_columns(_input_names(config), config, preset):
        prefix, _, field = name.partition("_")
        if prefix == "fj":
            out.add((preset.jets, field))
        elif prefix in preset.collections:
            c = preset.collections[prefix]
            out |= {(c.link, field), (c.link, c.jet_index), (preset.jets, "pt")}
            if c.target and c.target_index:
                out |= {(c.target, field), (c.link, c.target_index)}
    return out


def check_events(ev: Events, config: Any, preset: Preset) -> Preset:
    """Fail before any work on a NanoAOD that lacks a collection or branch the config reads, or whose
    layout cannot make one of its inputs. Returns the member of the preset's family the file is read with."""
    preset = preset_for(preset, ev.has)
    if not ev.has(preset.jets):
        raise JetTaggerError(f"{ev.where}: no {preset.jets} collection in this NanoAOD")
    _check_sources(ev.where, config, preset)
    needed = needed_branches(config, preset)
    for c in preset.collections.values():
        if any(coll == c.link for coll, _ in needed) and not ev.has(c.link):
            raise JetTaggerError(
                f"{ev.where}: no {c.link} collection, which the model's {c.name}_* "
                f"inputs are read from (a PFNano file with {c.link} is needed)"
            )
    for c in preset.collections.values():
        fields = {f for coll, f in needed if coll == c.link}
        have = ev.fields(c.link) | (ev.fields(c.target) if c.target and ev.has(c.target) else set())
        for f in sorted(fields - have - {c.target_index}):
            raise JetTaggerError(
                f"{ev.where}: missing branch {c.target or c.link}_{f} "
                f"(read by the model's inputs through preset {preset.name})"
            )
    for coll, f in sorted(needed):
        if coll == preset.jets and f not in ev.fields(coll):
            raise JetTaggerError(f"{ev.where}: missing branch {coll}_{f}")
    return preset


def _check_sources(where: str, config: Any, preset: Preset) -> None:
    """Every input variable has a source in this layout: a config or preset expression, or a raw column
    (``fj_*``, ``<collection>_*``). Those that have none are named together, with what the layout lacks."""
    missing = [
        n
        for n in raw_columns(_input_names(config), config, preset)
        if n.partition("_")[0] not in ("fj", *preset.collections) or n in preset.unavailable
    ]
    if missing:
        why = sorted({preset.unavailable[m] for m in missing if m in preset.unavailable})
        raise JetTaggerError(
            f"{where}: the model's inputs {', '.join(missing)} cannot be made from this file's "
            f"{preset.layout} (preset {preset.name}"
            + (f": no {', '.join(why)} in this layout" if why else "")
            + ")"
        )


def record_columns(arrays: Any, where: str) -> RawColumns:
    """Column getter for JetClass-layout records (awkward record array, dict of arrays, uproot TTree or
    RNTuple)."""
    tree = arrays if is_tree(arrays) else None
    fields = set(arrays.keys()) if tree is not None or isinstance(arrays, Mapping) else set(ak.fields(arrays))

    def get(name: str) -> Any:
        if name not in fields:
            raise JetTaggerError(f"{where}: missing branch {name!r}")
        return columns.clean(name, tree[name].array(library="ak") if tree is not None else arrays[name])

    columns = RawColumns(get)
    return columns


class Table(Mapping):
    """Lazily computed columns: base columns from a source, then expressions on top.

    Only what is asked for is read or computed, once; a missing branch names the variable that needed it.
    """

    def __init__(self, base: Getter, new_variables: Mapping[str, Any], where: str) -> None:
        self._base = base
        self._exprs = dict(new_variables)
        self._cache: dict[str, Any] = {}
        self.where = where
        self._stack: list[str] = []
        self.ids: np.ndarray | None = None  # (event, jet index) per row, for NanoAOD sources
        self.links: NanoColumns | None = None  # NanoAOD sources: what counts invalid link rows
        self.raw: RawColumns | None = None  # the raw columns and their replaced values (make_table)

    def __getitem__(self, name: str) -> Any:
        if name in self._cache:
            return self._cache[name]
        if name in self._exprs:
            if name in self._stack:
                raise JetTaggerError(f"{self.where}: variables form a cycle through {name!r}")
            self._stack.append(name)
            try:
                value = self._exprs[name](self)
            finally:
                self._stack.pop()
        else:
            value = self._base(name)
        self._cache[name] = value
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._cache)

    def __len__(self) -> int:
        return len(self._cache)
