"""Map every input format onto the same ``part_*`` / ``jet_*`` names; the weaver expressions then run
unchanged on any source.

PFNano (coffea NanoEvents, ``FatJet -> FatJetPFCands -> PFCands``), per jet, constituents pT-descending:

=======================  ===============================================================
``part_px/py/pz``        momentum of ``PFCands_{pt,eta,phi,mass}`` (pT cos phi, pT sin phi, pT sinh eta)
``part_energy``          idem, sqrt((pT cosh eta)^2 + m^2)
``part_deta``            ``(pf.eta - jet.eta) * sign(jet.eta)``
``part_dphi``            ``pf.phi - jet.phi`` wrapped to [-pi, pi)
``part_charge``          ``PFCands_charge``
``part_is*``             from ``|PFCands_pdgId|``: 211 charged hadron, 130 (and 1, HF) neutral hadron,
                         22 (and 2, HF EM) photon, 11 electron, 13 muon
``part_d0val/dzval``     ``PFCands_d0`` / ``PFCands_dz``
``part_d0err/dzerr``     ``PFCands_d0Err`` / ``PFCands_dzErr``
``jet_pt/eta/phi/mass``  ``FatJet_*``; ``jet_energy`` as ``part_energy``
``jet_nparticles``       number of constituents; ``jet_sdmass``: ``FatJet_msoftdrop``
``jet_tau1..4``          ``FatJet_tau1..4``
``label_<class>``        ``FatJet_truthLabel == index`` (JetClass class order), when present
=======================  ===============================================================

JetClass-layout ntuples (one jet per entry) are used as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import awkward as ak
import numpy as np

from ._errors import JetTaggerError
from .generate.settings import JETCLASS_LABELS

#: The formulas of the official JetClass configs, used for a ``preprocess.json`` imported without its YAML.
JETCLASS_NEW_VARIABLES = {
    "part_mask": "ak.ones_like(part_energy)",
    "part_pt": "np.hypot(part_px, part_py)",
    "part_pt_log": "np.log(part_pt)",
    "part_e_log": "np.log(part_energy)",
    "part_logptrel": "np.log(part_pt/jet_pt)",
    "part_logerel": "np.log(part_energy/jet_energy)",
    "part_deltaR": "np.hypot(part_deta, part_dphi)",
    "part_d0": "np.tanh(part_d0val)",
    "part_dz": "np.tanh(part_dzval)",
}

Getter = Callable[[str], Any]


def _wrap_phi(x):
    return (x + np.pi) % (2 * np.pi) - np.pi


def is_pfnano(obj: Any) -> bool:
    fields = ak.fields(obj)
    return "constituents" in fields or ("pt" in fields and "msoftdrop" in fields)


def pfnano_columns(fatjets: ak.Array, where: str = "FatJet", pf: ak.Array | None = None) -> Getter:
    """Column getter for a flat (one entry per jet) coffea FatJet array with ``constituents.pf``
    (or the constituents given as ``pf``, as under dask where cross-references resolve outside tasks)."""
    cache: dict[str, Any] = {}
    given = pf

    def pf():
        if "pf" not in cache:
            try:
                cands = given if given is not None else fatjets.constituents.pf
            except AttributeError as err:
                raise JetTaggerError(f"{where}: FatJet has no constituents.pf (PFNano cross-references)") from err
            order = ak.argsort(cands.pt, axis=-1, ascending=False, stable=True)
            cache["pf"] = cands[order]
        return cache["pf"]

    def cand(name: str):
        """One constituent field as a plain jagged array (no option or index layers: the arithmetic after
        it runs ~6x faster); a missing candidate (index -1) reads NaN, or 0 for integer fields."""
        key = f"pf_{name}"
        if key not in cache:
            x = field(pf(), name, "PFCands")
            fill = np.float32(np.nan) if name not in ("pdgId", "charge") else 0
            cache[key] = ak.to_packed(ak.fill_none(x, fill, axis=-1))
        return cache[key]

    def p4(name: str):  # (px, py, pz, E) of the constituents ("pf") or the jets, computed once
        key = f"p4_{name}"
        if key not in cache:
            get = cand if name == "pf" else (lambda f: field(fatjets, f, "FatJet"))
            pt, eta, phi, mass = (get(f) for f in ("pt", "eta", "phi", "mass"))
            pz, p = pt * np.sinh(eta), pt * np.cosh(eta)
            cache[key] = (pt * np.cos(phi), pt * np.sin(phi), pz, np.sqrt(p * p + mass * mass))
        return cache[key]

    def field(obj, name, what):
        if name not in ak.fields(obj):
            raise JetTaggerError(f"{where}: missing branch {what}_{name}")
        return obj[name]

    def pid(*codes):
        def f():
            a = abs(cand("pdgId"))
            out = a == codes[0]
            for c in codes[1:]:
                out = out | (a == c)
            return ak.values_astype(out, np.float32)

        return f

    getters: dict[str, Callable[[], Any]] = {
        "part_px": lambda: p4("pf")[0],
        "part_py": lambda: p4("pf")[1],
        "part_pz": lambda: p4("pf")[2],
        "part_energy": lambda: p4("pf")[3],
        "part_deta": lambda: (cand("eta") - fatjets.eta) * np.sign(fatjets.eta),
        "part_dphi": lambda: _wrap_phi(cand("phi") - fatjets.phi),
        "part_charge": lambda: cand("charge"),
        "part_isChargedHadron": pid(211),
        "part_isNeutralHadron": pid(130, 1),
        "part_isPhoton": pid(22, 2),
        "part_isElectron": pid(11),
        "part_isMuon": pid(13),
        "part_d0val": lambda: cand("d0"),
        "part_d0err": lambda: cand("d0Err"),
        "part_dzval": lambda: cand("dz"),
        "part_dzerr": lambda: cand("dzErr"),
        "jet_pt": lambda: fatjets.pt,
        "jet_eta": lambda: fatjets.eta,
        "jet_phi": lambda: fatjets.phi,
        "jet_mass": lambda: fatjets.mass,
        "jet_energy": lambda: p4("jet")[3],
        "jet_nparticles": lambda: ak.num(pf(), axis=-1),
        "jet_sdmass": lambda: field(fatjets, "msoftdrop", "FatJet"),
        **{f"jet_tau{n}": (lambda n=n: field(fatjets, f"tau{n}", "FatJet")) for n in range(1, 5)},
        **{f"label_{lab}": (lambda i=i: ak.values_astype(field(fatjets, "truthLabel", "FatJet") == i, np.float32))
           for i, lab in enumerate(JETCLASS_LABELS)},
    }

    def get(name: str):
        if name not in getters:
            raise JetTaggerError(f"{where}: no PFNano mapping for variable {name!r}")
        return getters[name]()

    return get


def record_columns(arrays: Any, where: str) -> Getter:
    """Column getter for JetClass-layout records (awkward record array, dict of arrays or uproot TTree)."""
    import uproot

    if isinstance(arrays, uproot.TTree):
        tree = arrays
        keys = set(tree.keys())

        def get_tree(name: str):
            if name not in keys:
                raise JetTaggerError(f"{where}: missing branch {name!r}")
            return tree[name].array(library="ak")

        return get_tree
    fields = set(arrays.keys()) if isinstance(arrays, Mapping) else set(ak.fields(arrays))

    def get(name: str):
        if name not in fields:
            raise JetTaggerError(f"{where}: missing branch {name!r}")
        return arrays[name]

    return get


class Table(Mapping):
    """Lazily computed columns: base branches from a source, then the config's ``new_variables``.

    Only what is asked for is read or computed, once.
    """

    def __init__(self, base: Getter, new_variables: Mapping[str, Any], where: str) -> None:
        self._base = base
        self._exprs = dict(new_variables)
        self._cache: dict[str, Any] = {}
        self.where = where
        self._stack: list[str] = []

    def __getitem__(self, name: str) -> Any:
        if name in self._cache:
            return self._cache[name]
        if name in self._exprs:
            if name in self._stack:
                raise JetTaggerError(f"{self.where}: new_variables form a cycle through {name!r}")
            self._stack.append(name)
            try:
                value = self._exprs[name](self)
            finally:
                self._stack.pop()
        else:
            value = self._base(name)
        self._cache[name] = value
        return value

    def __iter__(self):
        return iter(self._cache)

    def __len__(self) -> int:
        return len(self._cache)
