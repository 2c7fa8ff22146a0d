"""IRC-perturbed copies of JetClass-layout files: the seed's test of IRC safety, applied to the product.

* **collinear splits**: a fraction of each jet's particles is split into two with four-momenta
  lambda * p and (1 - lambda) * p, lambda uniform in [0.1, 0.9]; every other particle field is copied;
* **soft emissions**: photons carrying ``epsilon`` x the jet energy, at random directions within
  ``radius`` of the jet axis.

Particles are re-sorted by pT (descending) as JetClass stores them; the jet's four-vector branches are the
new sum (unchanged by splits), ``jet_nparticles`` / ``npart`` the new count. Scores of an IRC-safe model
on the copy must equal those on the original.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import uproot

from ._errors import JetTaggerError

P4 = ("part_px", "part_py", "part_pz", "part_energy")


def perturb_jetclass(
    source: str | Path,
    output: str | Path,
    *,
    split_fraction: float = 0.0,
    n_soft: int = 0,
    epsilon: float = 1e-6,
    radius: float = 0.8,
    seed: int = 0,
    max_particles: int | None = None,
) -> Path:
    """Write an IRC-perturbed copy of ``source`` (a JetClass ``tree``) to ``output``; jets with more than
    ``max_particles`` particles are dropped from both (keep the selection to compare with the original)."""
    if not 0 <= split_fraction <= 1 or n_soft < 0 or epsilon <= 0:
        raise JetTaggerError("perturb: split_fraction in [0, 1], n_soft >= 0, epsilon > 0")
    arrays = _read_jets(source, max_particles)
    rng = np.random.default_rng(seed)
    counts: np.ndarray = ak.to_numpy(ak.num(arrays["part_px"]))
    flat = {
        f: ak.to_numpy(ak.flatten(arrays[f])).astype(np.float64)
        for f in arrays.fields
        if f.startswith("part_")
    }
    jet_of = np.repeat(np.arange(len(counts)), counts)
    particles, jets = _collinear_splits(flat, jet_of, split_fraction, rng)
    if n_soft:
        soft, soft_jet = _soft_photons(flat, jet_of, len(counts), n_soft, epsilon, radius, rng)
        particles = {f: np.concatenate([particles[f], soft[f]]) for f in flat}
        jets = np.concatenate([jets, soft_jet])
    part, new_counts = _jetclass_order(particles, jets, len(counts))
    data = {"part": part, **_jet_branches(arrays, particles, jets, new_counts)}  # counter branch: npart
    output = Path(output)
    with uproot.recreate(output) as f:
        f.mktree("tree", {k: v.type if isinstance(v, ak.Array) else v.dtype for k, v in data.items()}).extend(
            data
        )
    return output


def _read_jets(source: str | Path, max_particles: int | None) -> ak.Array:
    arrays = uproot.open(source)["tree"].arrays()
    if max_particles is not None:
        arrays = arrays[ak.num(arrays["part_px"]) <= max_particles]
    return arrays


def _collinear_splits(
    flat: dict[str, np.ndarray], jet_of: np.ndarray, split_fraction: float, rng: np.random.Generator
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Duplicate the chosen particles (appended after all originals) and share their four-momentum
    lambda : 1 - lambda; returns the particle fields and each particle's jet."""
    split = rng.random(len(jet_of)) < split_fraction
    lam = rng.uniform(0.1, 0.9, size=int(split.sum()))
    scale = np.ones(len(jet_of))
    scale[split] = lam
    particles = {f: np.concatenate([v, v[split]]) for f, v in flat.items()}
    factor = np.concatenate([scale, 1 - lam])
    for f in P4:
        particles[f] = particles[f] * factor
    return particles, np.concatenate([jet_of, jet_of[split]])


def _soft_photons(
    flat: dict[str, np.ndarray],
    jet_of: np.ndarray,
    njets: int,
    n_soft: int,
    epsilon: float,
    radius: float,
    rng: np.random.Generator,
) -> tuple[dict[str, Any], np.ndarray]:
    """``n_soft`` photons per jet at ``epsilon`` x the (original) jet energy, uniform in the disc of
    ``radius`` around the jet axis; fields a photon has no value for are 0."""
    jpx, jpy, jpz, je = (np.bincount(jet_of, weights=flat[f], minlength=njets) for f in P4)
    jpt = np.hypot(jpx, jpy)
    jeta, jphi = np.arcsinh(jpz / jpt), np.arctan2(jpy, jpx)
    sj = np.repeat(np.arange(njets), n_soft)
    r, a = radius * np.sqrt(rng.random(len(sj))), rng.uniform(-np.pi, np.pi, len(sj))
    eta, phi = jeta[sj] + r * np.cos(a), jphi[sj] + r * np.sin(a)
    e_soft = epsilon * je[sj]
    pt = e_soft / np.cosh(eta)
    soft: dict[str, Any] = {f: np.zeros(len(sj)) for f in flat}
    soft |= {
        "part_px": pt * np.cos(phi),
        "part_py": pt * np.sin(phi),
        "part_pz": pt * np.sinh(eta),
        "part_energy": e_soft,
        "part_deta": (eta - jeta[sj]) * np.sign(jeta[sj]),
        "part_dphi": (phi - jphi[sj] + np.pi) % (2 * np.pi) - np.pi,
    }
    if "part_isPhoton" in soft:
        soft["part_isPhoton"] = np.ones(len(sj))
    return soft, sj


def _jetclass_order(
    particles: dict[str, np.ndarray], jets: np.ndarray, njets: int
) -> tuple[ak.Array, np.ndarray]:
    """The ``part`` record (JetClass order: by jet, then pT descending) and the new particle counts."""
    order = np.lexsort((-np.hypot(particles["part_px"], particles["part_py"]), jets))
    new_counts = np.bincount(jets, minlength=njets).astype(np.int64)
    out = {f: ak.unflatten(v[order].astype(np.float32), new_counts) for f, v in particles.items()}
    return ak.zip({k[5:]: v for k, v in out.items()}), new_counts


def _jet_branches(
    arrays: ak.Array, particles: dict[str, np.ndarray], jets: np.ndarray, new_counts: np.ndarray
) -> dict[str, np.ndarray]:
    """The source's jet branches, with the four-vector the new sum and the counts the new ones, in the
    source's dtypes (``npart`` is left to uproot, the counter of ``part``)."""
    njets = len(new_counts)
    px, py, pz, e = (np.bincount(jets, weights=particles[f], minlength=njets) for f in P4)
    jet = {f: ak.to_numpy(arrays[f]) for f in arrays.fields if not f.startswith("part_")}
    pt = np.hypot(px, py)
    jet |= {"jet_pt": pt, "jet_eta": np.arcsinh(pz / pt), "jet_phi": np.arctan2(py, px), "jet_energy": e}
    for name in ("jet_nparticles", "npart"):
        if name in jet:
            jet[name] = new_counts.astype(jet[name].dtype)
    return {k: np.asarray(v).astype(ak.to_numpy(arrays[k]).dtype) for k, v in jet.items() if k != "npart"}


#: the seed's test: 30 % collinear splits; two soft photons at these fractions of the jet energy
SPLIT_FRACTION = 0.3
EPSILONS = (1e-3, 1e-6, 1e-9)


def irc_figures(
    model: Any,
    sources: Sequence[str | Path],
    workdir: str | Path,
    *,
    max_particles: int = 90,
    backend: str = "onnx",
    dtype: str = "float32",
    seed: int = 7,
    truncated: bool = False,
) -> dict[str, dict[str, float]]:
    """Max and median |delta score| (over jets and classes) between each source file and its IRC-perturbed
    copies, through the tagger's whole path (features, padding, model): ``{"split 30%": {...},
    "soft 1e-06": {...}}``, over the jets whose perturbed copy still fits the model's particle length
    (``n_jets``); with ``truncated``, over the jets whose copy does not (they lose their softest particles
    to the truncation)."""
    from .tagger import JetTagger

    tagger = JetTagger(model, backend=backend, dtype=dtype)
    workdir = Path(workdir)
    cases = _irc_cases()
    diffs: dict[str, list[np.ndarray]] = {name: [] for name in cases}
    length = tagger.config.max_length or 10**9
    for i, src in enumerate(sources):
        base = perturb_jetclass(src, workdir / f"irc_{i}.root", max_particles=max_particles)
        ref = tagger.score_jets(uproot.open(base)["tree"]).scores
        for name, kw in cases.items():
            path = perturb_jetclass(
                src,
                workdir / f"irc_{i}_{name.replace(' ', '_')}.root",
                seed=seed,
                max_particles=max_particles,
                **kw,
            )
            tree = uproot.open(path)["tree"]
            fits = tree["npart"].array(library="np") <= length
            keep = ~fits if truncated else fits
            diffs[name].append(np.abs(tagger.score_jets(tree).scores - ref).max(axis=1)[keep])
    return {name: _max_median(np.concatenate(d)) for name, d in diffs.items()}


def _irc_cases() -> dict[str, dict[str, Any]]:
    """The seed's perturbations by name, as :func:`perturb_jetclass` options."""
    cases: dict[str, dict[str, Any]] = {
        f"split {100 * SPLIT_FRACTION:g}%": {"split_fraction": SPLIT_FRACTION}
    }
    cases |= {f"soft {e:g}": {"n_soft": 2, "epsilon": e} for e in EPSILONS}
    return cases


def _max_median(x: np.ndarray) -> dict[str, float]:
    """NaN (not an error) where no jet is left to compare."""
    return {
        "max": float(x.max()) if len(x) else float("nan"),
        "median": float(np.median(x)) if len(x) else float("nan"),
        "n_jets": len(x),
    }
