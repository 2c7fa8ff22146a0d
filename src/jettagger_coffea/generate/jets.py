"""FastJet clustering, selection, truth matching, soft-drop mass, N-subjettiness, detector-like particle
info."""

from __future__ import annotations

import dataclasses

import numpy as np

from .detector import impact_parameters
from .events import Event
from .settings import GenerationSettings

SOFTDROP_ZCUT = 0.1
SOFTDROP_BETA = 0.0


@dataclasses.dataclass
class Jet:
    """A selected jet and its constituents (pT-descending)."""

    p4: np.ndarray  # (4,) px, py, pz, E
    msoftdrop: float
    tau: np.ndarray  # (4,) tau1..tau4 (beta = 1)
    label: str
    # constituents
    c_p4: np.ndarray  # (n, 4)
    c_mass: np.ndarray
    c_pdg: np.ndarray  # PF-candidate id (211, 130, 22, 11, 13 with sign of charge)
    c_charge: np.ndarray
    c_d0: np.ndarray
    c_d0err: np.ndarray
    c_dz: np.ndarray
    c_dzerr: np.ndarray


def pt_eta_phi(p4: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    px, py, pz = p4[..., 0], p4[..., 1], p4[..., 2]
    pt = np.hypot(px, py)
    eta = np.arcsinh(np.divide(pz, pt, out=np.zeros_like(pz), where=pt > 0))
    return pt, eta, np.arctan2(py, px)


def rapidity(p4: np.ndarray) -> np.ndarray:
    e, pz = p4[..., 3], p4[..., 2]
    return 0.5 * np.log(np.maximum(e + pz, 1e-12) / np.maximum(e - pz, 1e-12))


def delta_phi(a, b):
    return (a - b + np.pi) % (2 * np.pi) - np.pi


def pf_id(pdg: np.ndarray, charge: np.ndarray) -> np.ndarray:
    """Map true PDG ids onto the CMS particle-flow candidate ids that PFNano stores."""
    a = np.abs(pdg)
    sign = np.where(charge < 0, -1, 1)
    out = np.where(charge != 0, 211 * sign, 130)
    out = np.where(a == 22, 22, out)
    out = np.where(a == 11, -11 * np.sign(charge).astype(int), out)
    return np.where(a == 13, -13 * np.sign(charge).astype(int), out)


def softdrop_mass(constituents, radius: float) -> float:
    """Soft drop (zcut 0.1, beta 0) on the C/A reclustered jet."""
    import fastjet

    cs = fastjet.ClusterSequence(constituents, fastjet.JetDefinition(fastjet.cambridge_algorithm, 999.0))
    j = max(cs.inclusive_jets(), key=lambda x: x.pt())
    j1, j2 = fastjet.PseudoJet(), fastjet.PseudoJet()
    while j.has_parents(j1, j2):
        pt1, pt2 = j1.pt(), j2.pt()
        z = min(pt1, pt2) / (pt1 + pt2)
        if z > SOFTDROP_ZCUT * (j1.delta_R(j2) / radius) ** SOFTDROP_BETA:
            break
        j = j1 if pt1 > pt2 else j2
        j1, j2 = fastjet.PseudoJet(), fastjet.PseudoJet()
    m2 = j.m2()
    return float(np.sqrt(m2)) if m2 > 0 else 0.0


def nsubjettiness(constituents, c_p4: np.ndarray, radius: float, nmax: int = 4) -> np.ndarray:
    """tau_N (beta = 1, exclusive-kt axes, normalised by sum pT * R0)."""
    import fastjet

    pt = np.hypot(c_p4[:, 0], c_p4[:, 1])
    y, phi = rapidity(c_p4), np.arctan2(c_p4[:, 1], c_p4[:, 0])
    norm = pt.sum() * radius
    cs = fastjet.ClusterSequence(constituents, fastjet.JetDefinition(fastjet.kt_algorithm, 999.0))
    taus = np.zeros(nmax)
    for n in range(1, nmax + 1):
        if len(pt) < n:
            break
        axes = cs.exclusive_jets(n)
        ay = np.array([a.rap() for a in axes])
        aphi = np.array([a.phi_std() for a in axes])
        dr = np.hypot(y[:, None] - ay[None, :], delta_phi(phi[:, None], aphi[None, :]))
        taus[n - 1] = float((pt * dr.min(axis=1)).sum() / norm)
    return taus


def select_jets(event: Event, settings: GenerationSettings, rng: np.random.Generator) -> list[Jet]:
    """Anti-kt jets in the pT/|eta| window; for signal processes only truth-matched ones."""
    import fastjet

    particles = []
    for i, (px, py, pz, e) in enumerate(event.p4):
        pj = fastjet.PseudoJet(float(px), float(py), float(pz), float(e))
        pj.set_user_index(i)
        particles.append(pj)
    cs = fastjet.ClusterSequence(particles, fastjet.JetDefinition(fastjet.antikt_algorithm, settings.radius))
    jets = []
    for j in fastjet.sorted_by_pt(cs.inclusive_jets(settings.pt_min)):
        if not (settings.pt_min < j.pt() < settings.pt_max and abs(j.eta()) < settings.eta_max):
            continue
        if settings.process != "qcd" and not _matched(j, event.truth, settings.radius):
            continue
        cons = list(j.constituents())
        idx = np.array([c.user_index() for c in cons])
        c_p4 = event.p4[idx]
        order = np.argsort(-np.hypot(c_p4[:, 0], c_p4[:, 1]), kind="stable")
        idx, c_p4 = idx[order], c_p4[order]
        charge = event.charge[idx]
        d0, d0err, dz, dzerr = impact_parameters(c_p4, event.vertex[idx], charge, rng)
        jets.append(
            Jet(
                p4=np.array([j.px(), j.py(), j.pz(), j.e()]),
                msoftdrop=softdrop_mass(cons, settings.radius),
                tau=nsubjettiness(cons, c_p4, settings.radius),
                label=settings.label,
                c_p4=c_p4,
                c_mass=event.mass[idx],
                c_pdg=pf_id(event.pdg[idx], charge),
                c_charge=charge,
                c_d0=d0,
                c_d0err=d0err,
                c_dz=dz,
                c_dzerr=dzerr,
            )
        )
    return jets


def _matched(jet, truth, radius: float) -> bool:
    """The resonance within dR < R of the jet and all of its decay quarks inside the jet."""
    jy, jphi = jet.rap(), jet.phi_std()
    for res, quarks in truth:
        objs = np.vstack([res[None, :], quarks])
        dr = np.hypot(rapidity(objs) - jy, delta_phi(np.arctan2(objs[:, 1], objs[:, 0]), jphi))
        if np.all(dr < radius):
            return True
    return False
