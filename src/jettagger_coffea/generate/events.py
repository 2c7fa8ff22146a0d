"""Pythia 8 events -> stable visible particles (those the tracker sees flagged) and the truth resonances
with their decay quarks."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import awkward as ak
import numpy as np

from .detector import inside_tracker
from .settings import PROCESSES, GenerationSettings

NEUTRINOS = (12, 14, 16)


@dataclasses.dataclass
class Event:
    """One event: all stable non-neutrino particles (GeV, mm) and truth resonances.

    The detector sees only the particles born inside the tracker (``in_tracker``); the generator-level jets
    use them all, as CMS's GenJets do."""

    p4: np.ndarray  # (n, 4) px, py, pz, E
    mass: np.ndarray
    pdg: np.ndarray
    charge: np.ndarray
    vertex: np.ndarray  # (n, 3) production vertex in mm
    in_tracker: np.ndarray  # (n,) bool: born inside the tracker volume
    truth: list[tuple[np.ndarray, np.ndarray]]  # (resonance p4, decay-quark p4s (k, 4))
    #: pruned generator record as NanoAOD's GenPart: (pdgId, p4, mother index, statusFlags) per particle
    gen: list[tuple[int, np.ndarray, int, int]] = dataclasses.field(default_factory=list)


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Pythia prints banners on init through C++ stdout; keep the progress bar readable."""
    fd = os.dup(1)
    try:
        with Path(os.devnull).open("w") as devnull:
            os.dup2(devnull.fileno(), 1)
            yield
    finally:
        os.dup2(fd, 1)
        os.close(fd)


def _daughters(d1: int, d2: int) -> list[int]:
    if d1 > 0 and d2 >= d1:
        return list(range(d1, d2 + 1))
    if d1 > 0 and d2 == 0:
        return [d1]
    if d1 > 0 and 0 < d2 < d1:
        return [d1, d2]
    return []


def _last_copy(i: int, pid: np.ndarray, d1: np.ndarray, d2: np.ndarray) -> int:
    while True:
        same = [d for d in _daughters(int(d1[i]), int(d2[i])) if pid[d] == pid[i]]
        if not same:
            return i
        i = same[0]


def _decay_quarks(i: int, pid, d1, d2, p4) -> list[np.ndarray]:
    """Decay quarks of resonance i (for top: the b and the W's quarks)."""
    out = []
    for d in _daughters(int(d1[i]), int(d2[i])):
        a = abs(int(pid[d]))
        if 1 <= a <= 5:
            out.append(p4[d])
        elif a == 24:
            w = _last_copy(d, pid, d1, d2)
            out.extend(p4[q] for q in _daughters(int(d1[w]), int(d2[w])) if 1 <= abs(int(pid[q])) <= 5)
    return out


def _truth(resonance: int | None, pid, d1, d2, p4) -> list[tuple[np.ndarray, np.ndarray]]:
    if resonance is None:
        return []
    out = []
    for i in np.nonzero(np.abs(pid) == resonance)[0]:
        if _last_copy(int(i), pid, d1, d2) != i:
            continue
        quarks = _decay_quarks(int(i), pid, d1, d2, p4)
        if quarks:
            out.append((p4[i], np.asarray(quarks)))
    return out


LAST_COPY, FIRST_COPY, HARD = 1 << 13, 1 << 12, 1 << 7


def _gen_record(resonance: int | None, pid, d1, d2, p4) -> list[tuple[int, np.ndarray, int, int]]:
    """The resonances (last copies), the W of a top, and their decay quarks, as NanoAOD prunes GenPart:
    a decay quark's mother is the last copy of its resonance."""
    if resonance is None:
        return []
    out: list[tuple[int, np.ndarray, int, int]] = []

    def add(i: int, mother: int, flags: int) -> int:
        out.append((int(pid[i]), p4[i], mother, flags))
        return len(out) - 1

    for i in np.nonzero(np.abs(pid) == resonance)[0]:
        if _last_copy(int(i), pid, d1, d2) != i:
            continue
        r = add(int(i), -1, LAST_COPY | HARD)
        for d in _daughters(int(d1[i]), int(d2[i])):
            a = abs(int(pid[d]))
            if 1 <= a <= 5:
                add(d, r, FIRST_COPY | HARD)
            elif a == 24:
                w = add(_last_copy(d, pid, d1, d2), r, LAST_COPY | HARD)
                wl = _last_copy(d, pid, d1, d2)
                for q in _daughters(int(d1[wl]), int(d2[wl])):
                    if 1 <= abs(int(pid[q])) <= 5:
                        add(q, w, FIRST_COPY | HARD)
    return out


class EventSource:
    """A seeded Pythia instance that yields :class:`Event` objects in batches."""

    def __init__(self, settings: GenerationSettings, seed: int, batch: int = 50) -> None:
        import pythia8mc

        with _quiet_stdout():
            self.pythia = pythia8mc.Pythia("", False)
            for line in settings.pythia_settings(seed):
                if not self.pythia.readString(line):
                    raise RuntimeError(f"Pythia rejected setting {line!r}")
            if not self.pythia.init():
                raise RuntimeError(f"Pythia failed to initialise process {settings.process!r}")
        self.resonance = PROCESSES[settings.process]["resonance"]
        self.batch = batch
        self._charge: dict[int, float] = {}

    def _charges(self, pdg: np.ndarray) -> np.ndarray:
        for p in np.unique(pdg):
            if int(p) not in self._charge:
                self._charge[int(p)] = float(self.pythia.particleData.charge(int(p)))
        lut = self._charge
        return np.fromiter((lut[int(p)] for p in pdg), dtype=np.float64, count=len(pdg))

    def __iter__(self) -> Iterator[Event]:
        while True:
            with _quiet_stdout():
                batch = self.pythia.nextBatch(self.batch)
            prt = batch["prt"]
            counts = ak.to_numpy(ak.num(prt))
            flat = ak.flatten(prt)
            pid = ak.to_numpy(flat["id"])
            status = ak.to_numpy(flat["status"])
            d1 = ak.to_numpy(flat["daughter1"])
            d2 = ak.to_numpy(flat["daughter2"])
            p = flat["p"]
            p4 = np.stack([ak.to_numpy(p[c]) for c in ("px", "py", "pz", "e")], axis=1)
            mass = ak.to_numpy(flat["m"])
            vprod = ak.fill_none(flat["vProd"], {"px": 0.0, "py": 0.0, "pz": 0.0, "e": 0.0})
            vtx = np.stack([ak.to_numpy(vprod[c]) for c in ("px", "py", "pz")], axis=1)
            offsets = np.concatenate([[0], np.cumsum(counts)])
            for k in range(len(counts)):
                s = slice(offsets[k], offsets[k + 1])
                e_pid, e_status = pid[s], status[s]
                # Pythia's default decays (K0S, Lambda, ... decay in flight, as in JetClass); what is born
                # outside the tracker volume never reaches the detector simulation
                final = (e_status > 0) & ~np.isin(np.abs(e_pid), NEUTRINOS)
                e_vtx = vtx[s][final]
                yield Event(
                    p4=p4[s][final],
                    mass=mass[s][final],
                    pdg=e_pid[final],
                    charge=self._charges(e_pid[final]),
                    vertex=e_vtx,
                    in_tracker=inside_tracker(e_vtx),
                    truth=_truth(self.resonance, e_pid, d1[s], d2[s], p4[s]),
                    gen=_gen_record(self.resonance, e_pid, d1[s], d2[s], p4[s]),
                )
