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

import awkward as ak
import numpy as np

from .jets import Jet, delta_phi, pt_eta_phi
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


def _masses(p4: np.ndarray) -> np.ndarray:
    m2 = p4[..., 3] ** 2 - (p4[..., :3] ** 2).sum(axis=-1)
    return np.sqrt(np.maximum(m2, 0.0))


def write_nanoaod(path: Path, events: list[tuple[int, int, list[Jet], list]]) -> None:
    """PFNano-like ``Events`` in CMS conventions: FatJet, FatJetPFCands (jet by jet) and PFCands (the jets'
    constituents). Lengths in cm; d0/dz and their errors, trkChi2 and lostInnerHits are -1 for candidates
    without a track (neutrals), as CMS writes them; no pileup, so PUPPI weights are 1. No FatJetSVs / SV
    tables (the generator reconstructs no secondary vertices)."""
    fj: dict[str, list] = {
        k: []
        for k in (
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
        )
    }
    link: dict[str, list] = {"jetIdx": [], "pFCandsIdx": []}
    pf: dict[str, list] = {
        k: []
        for k in (
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
    }
    gen: dict[str, list] = {
        k: [] for k in ("pdgId", "pt", "eta", "phi", "mass", "genPartIdxMother", "statusFlags")
    }
    for _, _, jets, record in events:
        for k in gen:
            gen[k].append([])
        for pdg, gp4, mother, flags in record:
            gp4 = np.asarray(gp4, dtype=np.float64)
            gpt, geta, gphi = (float(x) for x in pt_eta_phi(gp4))
            gmass = float(np.sqrt(max(gp4[3] ** 2 - gp4[0] ** 2 - gp4[1] ** 2 - gp4[2] ** 2, 0.0)))
            for k, v in (
                ("pdgId", pdg),
                ("pt", gpt),
                ("eta", geta),
                ("phi", gphi),
                ("mass", gmass),
                ("genPartIdxMother", mother),
                ("statusFlags", flags),
            ):
                gen[k][-1].append(v)
        ev_fj: dict[str, list] = {k: [] for k in fj}
        ev_link: dict[str, list] = {k: [] for k in link}
        ev_pf: dict[str, list] = {k: [] for k in pf}
        offset = 0
        for ij, jet in enumerate(jets):
            pt, eta, phi = pt_eta_phi(jet.p4)
            for k, v in zip(
                ("pt", "eta", "phi", "mass", "msoftdrop"), (pt, eta, phi, _masses(jet.p4), jet.msoftdrop)
            ):
                ev_fj[k].append(float(v))  # type: ignore[arg-type]
            for n in range(4):
                ev_fj[f"tau{n + 1}"].append(float(jet.tau[n]))
            n = len(jet.c_p4)
            ev_fj["nConstituents"].append(n)
            ev_fj["truthLabel"].append(JETCLASS_LABELS.index(jet.label))
            ev_link["jetIdx"].extend([ij] * n)
            ev_link["pFCandsIdx"].extend(range(offset, offset + n))
            offset += n
            cpt, ceta, cphi = pt_eta_phi(jet.c_p4)
            ev_pf["pt"].append(cpt)
            ev_pf["eta"].append(ceta)
            ev_pf["phi"].append(cphi)
            ev_pf["mass"].append(jet.c_mass)
            ev_pf["pdgId"].append(jet.c_pdg)
            ev_pf["charge"].append(jet.c_charge)
            track = np.asarray(jet.c_charge) != 0
            for k, v in (("d0", jet.c_d0), ("d0Err", jet.c_d0err), ("dz", jet.c_dz), ("dzErr", jet.c_dzerr)):
                ev_pf[k].append(np.where(track, np.asarray(v) / 10, -1.0))  # mm -> cm; CMS's no-track -1
            ones = np.ones(n)
            ev_pf["puppiWeight"].append(ones)
            ev_pf["puppiWeightNoLep"].append(ones)
            ev_pf["trkChi2"].append(np.where(track, 1.0, -1.0))
            ev_pf["lostInnerHits"].append(np.where(track, 0, -1))
            ev_pf["pvAssocQuality"].append(np.full(n, 7))  # UsedInFitTight
            ev_pf["trkQuality"].append(np.where(track, 5, 0))  # loose | highPurity
        for k in fj:
            fj[k].append(ev_fj[k])
        for k in link:
            link[k].append(ev_link[k])
        for k in pf:
            pf[k].append(np.concatenate(ev_pf[k]) if ev_pf[k] else np.zeros(0))

    int_fields = {
        "nConstituents",
        "truthLabel",
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

    def jag(d):  # typed even when every event is empty (an untyped empty list would be written as float)
        def column(k, per_event):
            counts = np.array([len(x) for x in per_event], dtype=np.int64)
            flat = (
                np.concatenate([np.asarray(x, dtype=np.float64).ravel() for x in per_event])
                if len(per_event)
                else np.zeros(0)
            )
            return ak.unflatten(flat.astype(np.int32 if k in int_fields else np.float32), counts)

        return ak.zip({k: column(k, v) for k, v in d.items()})

    data = {
        "run": np.ones(len(events), dtype=np.uint32),
        "luminosityBlock": np.array([e[1] + 1 for e in events], dtype=np.uint32),
        "event": np.array([e[0] for e in events], dtype=np.uint64),
        "genWeight": np.ones(len(events), dtype=np.float32),
        "FatJet": jag(fj),
        "FatJetPFCands": jag(link),
        "PFCands": jag(pf),
        "GenPart": jag(gen),
    }
    _write_tree(path, "Events", data)


def write_jetclass(path: Path, events: list[tuple[int, int, list[Jet], list]]) -> None:
    """JetClass layout: one jet per entry, particles pT-descending, all ten one-hot label branches."""
    jets = [j for e in events for j in e[2]]
    part: dict[str, list] = {
        k: []
        for k in (
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
    }
    jet_cols: dict[str, list] = {
        k: [] for k in ("pt", "eta", "phi", "energy", "nparticles", "sdmass", "tau1", "tau2", "tau3", "tau4")
    }
    for jet in jets:
        jpt, jeta, jphi = pt_eta_phi(jet.p4)
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
        for k, v in cols.items():
            part[k].append(np.asarray(v, dtype=np.float64))
        for k, v in zip(jet_cols, (jpt, jeta, jphi, jet.p4[3], len(jet.c_p4), jet.msoftdrop, *jet.tau)):
            jet_cols[k].append(float(v))
    data: dict = {
        "part": ak.zip({k: ak.values_astype(ak.Array(v), np.float32) for k, v in part.items()}),
    }
    for k, v in jet_cols.items():
        data[f"jet_{k}"] = np.asarray(v, dtype=np.float32)
    for lab in JETCLASS_LABELS:
        data[f"label_{lab}"] = np.array([j.label == lab for j in jets], dtype=bool)
    _write_tree(path, "tree", data)
