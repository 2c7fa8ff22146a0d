"""Generator-level truth of FatJets from NanoAOD's ``GenPart`` (pdgId, genPartIdxMother, statusFlags).

The rule the project's generator uses, on any NanoAOD: a jet is
``Tbqq`` if a top (t -> b W, W -> q q') and its three decay quarks lie within dR < R of the jet axis,
else ``Wqq`` / ``Zqq`` for a W / Z and its two decay quarks, ``Hbb`` for an H and its two b quarks,
else ``QCD`` (rapidity-azimuth distances, as FastJet measures them). Resonances are the last copies
(statusFlags bit 13) of |pdgId| 6, 24, 23, 25; a decay quark is a quark whose mother is that copy (for a top,
also the quarks of the W it decays to, followed through the W's copies). Events without ``GenPart`` (data)
are labelled ``data``.

AK4 jets (source presets with ``truth: flavour``) take CMS's flavour definition instead: ``b`` / ``c`` for a
jet with hadronFlavour 5 / 4 (ghost-associated B / C hadrons), else ``g`` for partonFlavour 21, ``uds`` for
|partonFlavour| 1-3, ``undef`` where no parton was matched (pile-up and unmatched jets).
"""

from __future__ import annotations

from typing import Any

import awkward as ak
import numpy as np

from ._errors import JetTaggerError

LAST_COPY = 1 << 13
#: the truth classes, in the order the processor's truth axis lists them
TRUTH_CLASSES = ("QCD", "Wqq", "Zqq", "Tbqq", "Hbb", "data")
#: AK4 jets' truth classes (the flavour scheme)
FLAVOUR_CLASSES = ("b", "c", "uds", "g", "undef", "data")
#: every truth label, for columns that store an index (``truth_index`` of ``predict``'s ROOT output)
ALL_TRUTH = (*TRUTH_CLASSES, *FLAVOUR_CLASSES[:-1])
#: CMS ParticleNet-AK4 classes -> flavour truth
_AK4 = {"b": "b", "bb": "b", "c": "c", "cc": "c", "uds": "uds", "g": "g"}


def truth_classes(scheme: str) -> tuple[str, ...]:
    """The truth classes of a scheme: ``resonance`` (AK8) or ``flavour`` (AK4)."""
    return FLAVOUR_CLASSES if scheme == "flavour" else TRUTH_CLASSES


#: true masses below this (GeV) are left out of the response histograms: a ratio to a near-zero mass (a
#: QCD jet groomed to one particle) says nothing about a resolution
MIN_TRUE_MASS = 10.0

_RULES = ((6, "Tbqq", 3), (24, "Wqq", 2), (23, "Zqq", 2), (25, "Hbb", 2))


def _rapidity(pt: np.ndarray, eta: np.ndarray, mass: np.ndarray) -> np.ndarray:
    pt, eta, mass = (np.asarray(x, dtype=np.float64) for x in (pt, eta, mass))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # incoming partons: eta = +-inf
        pz, e = pt * np.sinh(eta), np.sqrt((pt * np.cosh(eta)) ** 2 + mass**2)
        return 0.5 * np.log((e + pz) / (e - pz))


def _flat(x: Any) -> np.ndarray:
    return np.asarray(ak.to_numpy(ak.flatten(x, axis=1)))


def _resonances(pdg: np.ndarray, mother: np.ndarray, flags: np.ndarray) -> list[tuple[int, str, list[int]]]:
    """(index, class, decay-quark indices) of every hadronically decaying resonance of one event."""
    apdg = np.abs(pdg)
    is_quark = (apdg >= 1) & (apdg <= 5)
    children: dict[int, list[int]] = {}
    for k, m in enumerate(mother):
        if m >= 0:
            children.setdefault(int(m), []).append(k)

    def last_copy(i: int) -> int:
        while True:
            same = [c for c in children.get(i, []) if pdg[c] == pdg[i]]
            if not same:
                return i
            i = int(same[0])

    out: list[tuple[int, str, list[int]]] = []
    for i in np.flatnonzero(np.isin(apdg, (6, 23, 24, 25)) & ((flags & LAST_COPY) != 0)):
        quarks = [c for c in children.get(int(i), []) if is_quark[c]]
        if apdg[i] == 6:
            for w in (c for c in children.get(int(i), []) if apdg[c] == 24):
                quarks += [q for q in children.get(last_copy(w), []) if is_quark[q]]
        cls, need = next((c, n) for p, c, n in _RULES if p == apdg[i])
        if cls == "Hbb":
            quarks = [q for q in quarks if apdg[q] == 5]
        if len(quarks) == need:
            out.append((int(i), cls, quarks))
    return out


def jet_truth(
    events: Any,
    *,
    scheme: str = "resonance",
    collection: str = "FatJet",
    radius: float = 0.8,
    jets: Any = None,
) -> np.ndarray:
    """Truth class name per jet of ``collection`` (flat, file order; of ``events[collection][jets]`` if a
    mask is given), by the preset's scheme."""
    if scheme == "flavour":
        return flavour_truth(events, collection, jets)
    return fatjet_truth(events, radius, jets, collection=collection)


def flavour_truth(events: Any, collection: str = "Jet", jets: Any = None) -> np.ndarray:
    """CMS's AK4 flavour: b, c (hadronFlavour), g, uds (partonFlavour), undef; ``data`` without GenPart."""
    from .sources import Events

    ev = events if isinstance(events, Events) else Events(events, "truth")
    n_jets = ev.counts(collection)
    rows = np.arange(int(n_jets.sum())) if jets is None else np.flatnonzero(_flat(ak.Array(jets)))
    if not ev.has("GenPart") or "hadronFlavour" not in ev.fields(collection):
        return np.full(len(rows), "data", dtype=object)
    for f in ("hadronFlavour", "partonFlavour"):
        if f not in ev.fields(collection):
            raise JetTaggerError(
                f"{ev.where}: missing branch {collection}_{f} (needed for the flavour truth)"
            )
    hadron = _flat(ev.get(collection, "hadronFlavour"))[rows]
    parton = np.abs(_flat(ev.get(collection, "partonFlavour")))[rows]
    labels = np.full(len(rows), "undef", dtype=object)
    labels[(parton >= 1) & (parton <= 3)] = "uds"
    labels[parton == 21] = "g"
    labels[hadron == 4] = "c"
    labels[hadron == 5] = "b"
    return labels


def fatjet_truth(
    events: Any, radius: float = 0.8, jets: Any = None, collection: str = "FatJet"
) -> np.ndarray:
    """Truth class name per FatJet (flat, file order; of ``events.FatJet[jets]`` if a mask is given)."""
    labels, _, rows = _resonance_match(events, radius, jets, collection)
    return labels[rows]


def fatjet_true_mass(
    events: Any, radius: float = 0.8, jets: Any = None, collection: str = "FatJet"
) -> np.ndarray:
    """The mass a mass regression is trained to give, per FatJet, as CMS defines it: the generated mass of
    the matched resonance (GenPart) for W, Z, top and H jets, the soft-drop mass of the matched generated
    jet for QCD jets (:func:`genjet_softdrop_mass`); NaN where neither is known (data, unmatched jets)."""
    labels, res_mass, rows = _resonance_match(events, radius, jets, collection)
    from .sources import Events

    ev = events if isinstance(events, Events) else Events(events, "truth")
    out = np.where(np.isnan(res_mass), genjet_softdrop_mass(ev, collection, radius), res_mass)
    out[labels == "data"] = np.nan
    return out[rows]


def genjet_softdrop_mass(events: Any, collection: str = "FatJet", radius: float = 0.8) -> np.ndarray:
    """Per jet (flat): the soft-drop mass of its generated jet (``<collection>_genJetAK8Idx``): CMS's
    SubGenJetAK8 (the generated jet's two soft-drop subjets) within dR < R of it, summed; where a file has
    ``GenJetAK8_msoftdrop`` instead, that. NaN without a matched generated jet."""
    from .sources import Events

    ev = events if isinstance(events, Events) else Events(events, "truth")
    n_jets = int(ev.counts(collection).sum())
    if "genJetAK8Idx" not in ev.fields(collection) or not ev.has("GenJetAK8"):
        return np.full(n_jets, np.nan)
    idx = ev.get(collection, "genJetAK8Idx")
    gen_counts = ev.counts("GenJetAK8")
    if ev.has("SubGenJetAK8"):
        sd = _subjet_mass(ev, gen_counts, radius)
    elif "msoftdrop" in ev.fields("GenJetAK8"):
        sd = _flat(ev.get("GenJetAK8", "msoftdrop")).astype(np.float64)
    else:
        return np.full(n_jets, np.nan)
    local = _flat(idx).astype(np.int64)
    start = np.repeat(np.r_[0, np.cumsum(gen_counts)][:-1], ev.counts(collection))
    ok = (local >= 0) & (local < np.repeat(gen_counts, ev.counts(collection)))
    out = np.full(n_jets, np.nan)
    out[ok] = sd[(start + local)[ok]]
    return out


def _subjet_mass(ev: Any, gen_counts: np.ndarray, radius: float) -> np.ndarray:
    """Per generated jet (flat): the mass of the sum of its SubGenJetAK8 (NanoAOD links none to its jet: a
    subjet belongs to the nearest generated jet, within dR < R; the leading two are taken)."""
    gj = ak.zip({f: ev.get("GenJetAK8", f) for f in ("eta", "phi")})
    # float64: a light jet's mass from its subjets' four-momenta cancels most of the digits of float32
    sj = ak.zip(
        {f: ak.values_astype(ev.get("SubGenJetAK8", f), np.float64) for f in ("pt", "eta", "phi", "mass")}
    )
    pairs = ak.cartesian({"s": sj, "g": gj}, axis=1, nested=True)  # [event][subjet][gen jet]
    dr = np.hypot(pairs.s.eta - pairs.g.eta, (pairs.s.phi - pairs.g.phi + np.pi) % (2 * np.pi) - np.pi)
    nearest = ak.fill_none(ak.argmin(dr, axis=2), -1)
    within = ak.fill_none(ak.min(dr, axis=2), np.inf) < radius
    owner = ak.where(within, nearest, -1)
    by_jet = ak.cartesian({"g": ak.local_index(gj, axis=1), "s": sj}, axis=1, nested=True)
    owned = ak.cartesian({"g": ak.local_index(gj, axis=1), "o": owner}, axis=1, nested=True)
    mine = by_jet.s[owned.o == owned.g]  # [event][gen jet][its subjets]
    mine = mine[ak.argsort(mine.pt, axis=2, ascending=False)][:, :, :2]
    pt, eta, phi, m = (mine[f] for f in ("pt", "eta", "phi", "mass"))
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    e = np.sqrt(px**2 + py**2 + pz**2 + m**2)
    e, px, py, pz = (ak.sum(x, axis=2) for x in (e, px, py, pz))
    m2 = ak.to_numpy(ak.flatten(e**2 - px**2 - py**2 - pz**2, axis=1)).astype(np.float64)
    if len(m2) != int(gen_counts.sum()):
        raise JetTaggerError(f"{ev.where}: GenJetAK8 fields of different lengths")
    return np.sqrt(np.maximum(m2, 0.0))


def _resonance_match(
    events: Any, radius: float, jets: Any, collection: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(class name, matched resonance's generated mass or NaN) of every jet of ``collection`` (flat), and
    the rows ``jets`` selects: one walk of GenPart for the labels and the mass targets."""
    from .sources import Events

    ev = events if isinstance(events, Events) else Events(events, "truth")
    n_jets = ev.counts(collection)
    jet_rows = np.arange(int(n_jets.sum())) if jets is None else np.flatnonzero(_flat(ak.Array(jets)))
    res_mass = np.full(int(n_jets.sum()), np.nan)
    if not ev.has("GenPart"):
        return np.full(len(res_mass), "data", dtype=object), res_mass, jet_rows
    for f in ("pdgId", "genPartIdxMother", "statusFlags", "pt", "eta", "phi", "mass"):
        if f not in ev.fields("GenPart"):
            raise JetTaggerError(f"{ev.where}: missing branch GenPart_{f} (needed for the truth labels)")
    g = {
        f: _flat(ev.get("GenPart", f))
        for f in ("pdgId", "genPartIdxMother", "statusFlags", "pt", "eta", "phi", "mass")
    }
    n_gen = ev.counts("GenPart")
    goff = np.r_[0, np.cumsum(n_gen)]
    grap = _rapidity(g["pt"], g["eta"], g["mass"])
    jpt, jeta, jphi, jmass = (_flat(ev.get(collection, f)) for f in ("pt", "eta", "phi", "mass"))
    jrap = _rapidity(jpt, jeta, jmass)
    joff = np.r_[0, np.cumsum(n_jets)]
    labels = np.full(int(n_jets.sum()), "QCD", dtype=object)
    resonant = np.isin(np.abs(g["pdgId"]), (6, 23, 24, 25))
    events_with = np.unique(np.repeat(np.arange(len(n_gen)), n_gen)[resonant])
    for e in events_with:
        s = slice(goff[e], goff[e + 1])
        found = _resonances(g["pdgId"][s], g["genPartIdxMother"][s].astype(np.int64), g["statusFlags"][s])
        if not found or n_jets[e] == 0:
            continue
        js = slice(joff[e], joff[e + 1])
        for idx, cls, quarks in sorted(found, key=lambda r: [c for _, c, _ in _RULES].index(r[1])):
            objs = np.array([idx, *quarks]) + goff[e]
            dphi = (g["phi"][objs][None, :] - jphi[js][:, None] + np.pi) % (2 * np.pi) - np.pi
            dr = np.hypot(grap[objs][None, :] - jrap[js][:, None], dphi)
            claimed = np.all(dr < radius, axis=1) & (labels[js] == "QCD")
            labels[js] = np.where(claimed, cls, labels[js])
            res_mass[js] = np.where(claimed, g["mass"][idx + goff[e]], res_mass[js])
    return labels, res_mass, jet_rows


def truth_of_class(name: str) -> str | None:
    """The truth class a model class belongs to: JetClass names as they are, CMS ParticleNet names by
    their group (``Top_*`` -> Tbqq, ``W_*`` -> Wqq, ``Z_*`` -> Zqq, ``H_bb`` -> Hbb, ``QCD_*`` -> QCD), CMS
    ParticleNet-AK4's by flavour (b, bb -> b; c, cc -> c; uds; g; undef and pu have none)."""
    if name in TRUTH_CLASSES:
        return name
    if name in _AK4:
        return _AK4[name]
    for prefix, truth in (("Top", "Tbqq"), ("W_", "Wqq"), ("Z_", "Zqq"), ("H_bb", "Hbb"), ("QCD", "QCD")):
        if name.startswith(prefix):
            return truth
    return None
