"""Write generated jets as ROOT TTrees: a PFNano-like ``Events`` tree and a JetClass-layout ``tree``.

Both are made from the same :class:`~.jets.Jet` objects, so the two files describe the same jets.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import types
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np

from .jets import GenJet, Jet, delta_phi, masses, pt_eta_phi
from .settings import JETCLASS_LABELS

_NAMESPACE = uuid.UUID("6a657474-6167-6765-7200-000000000000")


def _file_uuid(name: str, data: dict) -> uuid.UUID:
    """Deterministic (same seed, same bytes) but distinct per file: coffea keys its caches on it."""
    h = hashlib.sha256(name.encode())
    for k in sorted(data):
        v = data[k]
        cols = [v[f] for f in ak.fields(v)] if isinstance(v, ak.Array) and ak.fields(v) else [v]
        for c in cols:
            flat = ak.to_numpy(ak.flatten(c, axis=None)) if isinstance(c, ak.Array) else np.asarray(c)
            h.update(k.encode() + np.ascontiguousarray(flat).tobytes())
    return uuid.uuid5(_NAMESPACE, h.hexdigest())


@contextlib.contextmanager
def _fixed_clock() -> Iterator[None]:
    """uproot stamps ``datetime.now()`` into file headers and baskets; pin it (to SOURCE_DATE_EPOCH, or
    2026-01-01) while writing so that the same seed gives the same bytes."""
    from uproot.writing import _cascade, _cascadetree, writable

    stamp = datetime.datetime.fromtimestamp(int(os.environ.get("SOURCE_DATE_EPOCH", "1767225600")))

    class _Fixed(datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return stamp

    shim = types.SimpleNamespace(datetime=_Fixed)
    modules = (_cascade, _cascadetree, writable)
    saved = [m.datetime for m in modules]
    try:
        for m in modules:
            m.datetime = shim
        yield
    finally:
        for m, old in zip(modules, saved):
            m.datetime = old


def _write_tree(path: Path, name: str, data: dict) -> None:
    import uproot

    path.parent.mkdir(parents=True, exist_ok=True)
    file_uuid = _file_uuid(f"{path.name}/{name}", data)
    with (
        _fixed_clock(),
        uproot.recreate(path, uuid_function=lambda: file_uuid, compression=uproot.LZMA(6)) as f,
    ):
        tree = f.mktree(name, {k: v.type if isinstance(v, ak.Array) else v.dtype for k, v in data.items()})
        tree.extend(data)


#: PFNano collections' fields, in the order they are written
FATJET_FIELDS = (
    "pt",
    "eta",
    "phi",
    "mass",
    "msoftdrop",
    "nConstituents",
    "tau1",
    "tau2",
    "tau3",
    "tau4",
    "truthLabel",
    "genJetAK8Idx",
)
#: CMS's GenJetAK8 (pT > 100 GeV, pT-ordered) plus its soft-drop mass (CMS derives it from SubGenJetAK8)
GENJETAK8_FIELDS = ("pt", "eta", "phi", "mass", "msoftdrop")
FATJET_PFCANDS_FIELDS = ("jetIdx", "pFCandsIdx")
PFCANDS_FIELDS = (
    "pt",
    "eta",
    "phi",
    "mass",
    "pdgId",
    "charge",
    "d0",
    "d0Err",
    "dz",
    "dzErr",
    "puppiWeight",
    "puppiWeightNoLep",
    "trkChi2",
    "lostInnerHits",
    "pvAssocQuality",
    "trkQuality",
)
GENPART_FIELDS = ("pdgId", "pt", "eta", "phi", "mass", "genPartIdxMother", "statusFlags")
#: fields written as int32 (in any collection); all others are float32
_INT_FIELDS = frozenset(
    {
        "nConstituents",
        "truthLabel",
        "genJetAK8Idx",
        "jetIdx",
        "pFCandsIdx",
        "pdgId",
        "charge",
        "lostInnerHits",
        "pvAssocQuality",
        "trkQuality",
        "genPartIdxMother",
        "statusFlags",
    }
)


#: one generated event: (event number, block, its selected jets, its GenPart record[, its gen jets]);
#: hand-made events may leave out the gen jets
EventRecord = tuple


def _genjets(event: EventRecord) -> list[GenJet]:
    return event[4] if len(event) > 4 else []


def write_nanoaod(path: Path, events: list[EventRecord]) -> None:
    """PFNano-like ``Events`` in CMS conventions: FatJet, FatJetPFCands (jet by jet) and PFCands (the jets'
    constituents), GenPart, GenJetAK8 with FatJet_genJetAK8Idx. Lengths in cm; d0/dz and their errors,
    trkChi2 and lostInnerHits are -1 for candidates without a track (neutrals), as CMS writes them; no
    pileup, so PUPPI weights are 1. No FatJetSVs / SV tables (the generator reconstructs no secondary
    vertices)."""
    data = {
        "run": np.ones(len(events), dtype=np.uint32),
        "luminosityBlock": np.array([e[1] + 1 for e in events], dtype=np.uint32),
        "event": np.array([e[0] for e in events], dtype=np.uint64),
        "genWeight": np.ones(len(events), dtype=np.float32),
        "FatJet": _jagged([_fatjet_columns(e[2]) for e in events], FATJET_FIELDS),
        "FatJetPFCands": _jagged([_fatjet_pfcands_columns(e[2]) for e in events], FATJET_PFCANDS_FIELDS),
        "PFCands": _jagged([_pfcands_columns(e[2]) for e in events], PFCANDS_FIELDS),
        "GenPart": _jagged([_genpart_columns(e[3]) for e in events], GENPART_FIELDS),
        "GenJetAK8": _jagged([_genjetak8_columns(_genjets(e)) for e in events], GENJETAK8_FIELDS),
    }
    _write_tree(path, "Events", data)


def _fatjet_columns(jets: list[Jet]) -> dict[str, list]:
    """One event's FatJet fields, one entry per jet."""
    columns: dict[str, list] = {k: [] for k in FATJET_FIELDS}
    for jet in jets:
        pt, eta, phi = pt_eta_phi(jet.p4)
        for k, v in zip(
            ("pt", "eta", "phi", "mass", "msoftdrop"), (pt, eta, phi, masses(jet.p4), jet.msoftdrop)
        ):
            columns[k].append(float(v))  # type: ignore[arg-type]
        for n in range(4):
            columns[f"tau{n + 1}"].append(float(jet.tau[n]))
        columns["nConstituents"].append(len(jet.c_p4))
        columns["truthLabel"].append(JETCLASS_LABELS.index(jet.label))
        columns["genJetAK8Idx"].append(jet.genjet_index)
    return columns


def _genjetak8_columns(genjets: list[GenJet]) -> dict[str, list]:
    """One event's GenJetAK8 fields, one entry per gen jet."""
    p4 = np.array([g.p4 for g in genjets]).reshape(-1, 4)
    pt, eta, phi = pt_eta_phi(p4)
    return {
        "pt": list(pt),
        "eta": list(eta),
        "phi": list(phi),
        "mass": list(masses(p4)),
        "msoftdrop": [g.msoftdrop for g in genjets],
    }


def _fatjet_pfcands_columns(jets: list[Jet]) -> dict[str, list]:
    """One event's jet -> candidate links: an event's PFCands are its jets' constituents, jet after jet."""
    counts = [len(jet.c_p4) for jet in jets]
    return {
        "jetIdx": [ij for ij, n in enumerate(counts) for _ in range(n)],
        "pFCandsIdx": list(range(sum(counts))),
    }


def _pfcands_columns(jets: list[Jet]) -> dict[str, np.ndarray]:
    """One event's PFCands fields: the constituents of all its jets, concatenated."""
    per_jet = [_jet_pfcands(jet) for jet in jets]
    return {k: np.concatenate([c[k] for c in per_jet]) if per_jet else np.zeros(0) for k in PFCANDS_FIELDS}


def _jet_pfcands(jet: Jet) -> dict[str, np.ndarray]:
    """A jet's constituents as PF candidates; the track fields hold CMS's -1 (0 for the quality bits) where
    there is no track."""
    n = len(jet.c_p4)
    cpt, ceta, cphi = pt_eta_phi(jet.c_p4)
    track = np.asarray(jet.c_charge) != 0
    ones = np.ones(n)
    return {
        "pt": cpt,
        "eta": ceta,
        "phi": cphi,
        "mass": jet.c_mass,
        "pdgId": jet.c_pdg,
        "charge": jet.c_charge,
        **{  # mm -> cm
            k: np.where(track, np.asarray(v) / 10, -1.0)
            for k, v in (("d0", jet.c_d0), ("d0Err", jet.c_d0err), ("dz", jet.c_dz), ("dzErr", jet.c_dzerr))
        },
        "puppiWeight": ones,
        "puppiWeightNoLep": ones,
        "trkChi2": np.where(track, 1.0, -1.0),
        "lostInnerHits": np.where(track, 0, -1),
        "pvAssocQuality": np.full(n, 7),  # UsedInFitTight
        "trkQuality": np.where(track, 5, 0),  # loose | highPurity
    }


def _genpart_columns(record: list) -> dict[str, list]:
    """One event's GenPart fields from its generator record of (pdg id, four-momentum, mother, flags)."""
    columns: dict[str, list] = {k: [] for k in GENPART_FIELDS}
    for pdg, gp4, mother, flags in record:
        gp4 = np.asarray(gp4, dtype=np.float64)
        gpt, geta, gphi = (float(x) for x in pt_eta_phi(gp4))
        gmass = float(np.sqrt(max(gp4[3] ** 2 - gp4[0] ** 2 - gp4[1] ** 2 - gp4[2] ** 2, 0.0)))
        for k, v in zip(GENPART_FIELDS, (pdg, gpt, geta, gphi, gmass, mother, flags)):
            columns[k].append(v)
    return columns


def _jagged(per_event: list[dict[str, Any]], fields: tuple[str, ...]) -> ak.Array:
    """One collection as a jagged record array (one list per event), each field int32 or float32."""
    return ak.zip({k: _jagged_column(k, [columns[k] for columns in per_event]) for k in fields})


def _jagged_column(field: str, per_event: list) -> ak.Array:
    """Typed even when every event is empty (an untyped empty list would be written as float)."""
    counts = np.array([len(x) for x in per_event], dtype=np.int64)
    flat = (
        np.concatenate([np.asarray(x, dtype=np.float64).ravel() for x in per_event])
        if len(per_event)
        else np.zeros(0)
    )
    return ak.unflatten(flat.astype(np.int32 if field in _INT_FIELDS else np.float32), counts)


#: JetClass branches: ``part_<field>`` (jagged) and ``jet_<field>`` (one per jet)
JETCLASS_PART_FIELDS = (
    "px",
    "py",
    "pz",
    "energy",
    "deta",
    "dphi",
    "charge",
    "isChargedHadron",
    "isNeutralHadron",
    "isPhoton",
    "isElectron",
    "isMuon",
    "d0val",
    "d0err",
    "dzval",
    "dzerr",
)
JETCLASS_JET_FIELDS = (
    "pt",
    "eta",
    "phi",
    "energy",
    "nparticles",
    "sdmass",
    "tau1",
    "tau2",
    "tau3",
    "tau4",
    # mass-regression targets (CMS ntuples: fj_gen_mass, fj_genjet_pt, fj_genjet_mass, fj_genjet_sdmass)
    "gen_mass",
    "genjet_pt",
    "genjet_mass",
    "genjet_sdmass",
)


def write_jetclass(path: Path, events: list[EventRecord]) -> None:
    """JetClass layout: one jet per entry, particles pT-descending, all ten one-hot label branches."""
    jets = [j for e in events for j in e[2]]
    particles = [_jetclass_particles(jet) for jet in jets]
    rows = [_jetclass_jet(jet) for jet in jets]
    data: dict = {
        "part": ak.zip(
            {
                k: ak.values_astype(ak.Array([p[k] for p in particles]), np.float32)
                for k in JETCLASS_PART_FIELDS
            }
        ),
    }
    for i, k in enumerate(JETCLASS_JET_FIELDS):
        data[f"jet_{k}"] = np.asarray([r[i] for r in rows], dtype=np.float32)
    for lab in JETCLASS_LABELS:
        data[f"label_{lab}"] = np.array([j.label == lab for j in jets], dtype=bool)
    _write_tree(path, "tree", data)


def _jetclass_particles(jet: Jet) -> dict[str, np.ndarray]:
    """A jet's particles in JetClass's fields: deta multiplied by the sign of the jet's eta (JetClass's
    convention), the particle-type flags from the PF id."""
    _, jeta, jphi = pt_eta_phi(jet.p4)
    _, ceta, cphi = pt_eta_phi(jet.c_p4)
    apdg = np.abs(jet.c_pdg)
    cols = {
        "px": jet.c_p4[:, 0],
        "py": jet.c_p4[:, 1],
        "pz": jet.c_p4[:, 2],
        "energy": jet.c_p4[:, 3],
        "deta": (ceta - jeta) * np.sign(jeta),
        "dphi": delta_phi(cphi, jphi),
        "charge": jet.c_charge,
        "isChargedHadron": apdg == 211,
        "isNeutralHadron": apdg == 130,
        "isPhoton": apdg == 22,
        "isElectron": apdg == 11,
        "isMuon": apdg == 13,
        "d0val": jet.c_d0,
        "d0err": jet.c_d0err,
        "dzval": jet.c_dz,
        "dzerr": jet.c_dzerr,
    }
    return {k: np.asarray(v, dtype=np.float64) for k, v in cols.items()}


def _jetclass_jet(jet: Jet) -> tuple[float, ...]:
    """A jet's ``jet_*`` values, in :data:`JETCLASS_JET_FIELDS` order; the gen-jet ones 0 without one."""
    jpt, jeta, jphi = pt_eta_phi(jet.p4)
    g = jet.genjet
    genjet = (pt_eta_phi(g.p4)[0], masses(g.p4), g.msoftdrop) if g is not None else (0.0, 0.0, 0.0)
    return tuple(
        float(v)
        for v in (jpt, jeta, jphi, jet.p4[3], len(jet.c_p4), jet.msoftdrop, *jet.tau, jet.gen_mass, *genjet)
    )
