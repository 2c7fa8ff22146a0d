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
#: CMS NanoAOD's GenJetAK8 threshold; the gen jets a jet can be matched to are the ones written
GENJET_PT_MIN = 100.0


@dataclasses.dataclass
class GenJet:
    """A generator-level jet and its soft-drop mass."""

    p4: np.ndarray  # (4,) px, py, pz, E
    msoftdrop: float


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
    # mass-regression targets (CMS's fj_gen_mass, fj_genjet_*): defaults are "no resonance, no gen jet"
    gen_mass: float = 0.0  # the matched resonance's mass; 0 for QCD jets
    genjet_index: int = -1  # into the event's gen jets (GenJetAK8)
    genjet: GenJet | None = None


def pt_eta_phi(p4: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    px, py, pz = p4[..., 0], p4[..., 1], p4[..., 2]
    pt = np.hypot(px, py)
    eta = np.arcsinh(np.divide(pz, pt, out=np.zeros_like(pz), where=pt > 0))
    return pt, eta, np.arctan2(py, px)


def masses(p4: np.ndarray) -> np.ndarray:
    """Invariant masses (0 where rounding makes m^2 negative)."""
    m2 = p4[..., 3] ** 2 - (p4[..., :3] ** 2).sum(axis=-1)
    return np.sqrt(np.maximum(m2, 0.0))


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


def select_jets(
    event: Event, settings: GenerationSettings, rng: np.random.Generator
) -> tuple[list[Jet], list[GenJet]]:
    """Anti-kt jets of the particles inside the tracker in the pT/|eta| window (for signal processes only
    truth-matched ones), each with its regression targets; and, where any jet is selected, the event's
    generator-level jets (empty otherwise: nothing is written for such an event)."""
    import fastjet

    particles = _pseudojets(event.p4)  # built once: the reco and the generator-level clustering share them
    visible = [particles[i] for i in np.flatnonzero(event.in_tracker)]
    cs = fastjet.ClusterSequence(visible, fastjet.JetDefinition(fastjet.antikt_algorithm, settings.radius))
    jets = []
    for j in fastjet.sorted_by_pt(cs.inclusive_jets(settings.pt_min)):
        if not (settings.pt_min < j.pt() < settings.pt_max and abs(j.eta()) < settings.eta_max):
            continue
        resonance = _matched_resonance(j, event.truth, settings.radius)
        if settings.process != "qcd" and resonance is None:
            continue
        jet = _jet(j, event, settings, rng)
        jet.gen_mass = float(masses(resonance)) if resonance is not None else 0.0
        jets.append(jet)
    if not jets:
        return [], []
    genjets = gen_jets(particles, settings.radius)
    for jet in jets:
        jet.genjet_index = match_genjet(jet.p4, genjets, settings.radius)
        jet.genjet = genjets[jet.genjet_index] if jet.genjet_index >= 0 else None
    return jets, genjets


def _pseudojets(p4: np.ndarray) -> list:
    """FastJet inputs, the user index the row in ``p4``."""
    import fastjet

    particles = []
    for i, (px, py, pz, e) in enumerate(p4.tolist()):
        pj = fastjet.PseudoJet(px, py, pz, e)
        pj.set_user_index(i)
        particles.append(pj)
    return particles


def _jet(j, event: Event, settings: GenerationSettings, rng: np.random.Generator) -> Jet:
    """A clustered jet with its substructure and its constituents as the detector sees them."""
    cons = list(j.constituents())
    idx = np.array([c.user_index() for c in cons])
    c_p4 = event.p4[idx]
    order = np.argsort(-np.hypot(c_p4[:, 0], c_p4[:, 1]), kind="stable")
    idx, c_p4 = idx[order], c_p4[order]
    charge = event.charge[idx]
    d0, d0err, dz, dzerr = impact_parameters(c_p4, event.vertex[idx], charge, rng)
    return Jet(
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


def gen_jets(particles: list, radius: float) -> list[GenJet]:
    """Generator-level jets as CMS's GenJetAK8: anti-kt with the jets' R on all stable non-neutrino
    particles (no detector volume), pT > :data:`GENJET_PT_MIN`, pT-ordered; soft drop as for the jets."""
    import fastjet

    cs = fastjet.ClusterSequence(particles, fastjet.JetDefinition(fastjet.antikt_algorithm, radius))
    return [
        GenJet(
            p4=np.array([g.px(), g.py(), g.pz(), g.e()]),
            msoftdrop=softdrop_mass(list(g.constituents()), radius),
        )
        for g in fastjet.sorted_by_pt(cs.inclusive_jets(GENJET_PT_MIN))
    ]


def match_genjet(p4: np.ndarray, genjets: list[GenJet], radius: float) -> int:
    """Index of the gen jet closest in (eta, phi) to the jet ``p4`` within dR < R/2, -1 if none."""
    if not genjets:
        return -1
    _, eta, phi = pt_eta_phi(p4)
    _, geta, gphi = pt_eta_phi(np.array([g.p4 for g in genjets]))
    dr = np.hypot(geta - eta, delta_phi(gphi, phi))
    k = int(np.argmin(dr))
    return k if dr[k] < radius / 2 else -1


def _matched_resonance(jet, truth, radius: float) -> np.ndarray | None:
    """The four-momentum of the resonance (last copy) within dR < R of the jet with all of its decay quarks
    inside the jet; None if there is none."""
    jy, jphi = jet.rap(), jet.phi_std()
    for res, quarks in truth:
        objs = np.vstack([res[None, :], quarks])
        dr = np.hypot(rapidity(objs) - jy, delta_phi(np.arctan2(objs[:, 1], objs[:, 0]), jphi))
        if np.all(dr < radius):
            return res
    return None
