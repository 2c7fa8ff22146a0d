"""Working points of a discriminant: thresholds at fixed background mistag or fixed signal efficiency,
derived on a reference sample and stored in the bundle's ``tagger.yaml``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import JetTaggerError

MISTAGS = (0.005, 0.01, 0.025, 0.05)
EFFICIENCIES = (0.3, 0.5)


def wp_name(kind: str, value: float) -> str:
    return f"{kind}{100 * value:g}%"


def derive(
    disc_signal: np.ndarray, disc_background: np.ndarray, *, mistags=MISTAGS, efficiencies=EFFICIENCIES
) -> dict[str, float]:
    """``{name: threshold}``; a jet passes when ``discriminant > threshold``."""
    s = np.asarray(disc_signal, dtype=np.float64)
    b = np.asarray(disc_background, dtype=np.float64)
    s, b = s[np.isfinite(s)], b[np.isfinite(b)]
    out = {}
    for m in mistags:
        if len(b):
            out[wp_name("mistag", m)] = float(np.quantile(b, 1 - m))
    for e in efficiencies:
        if len(s):
            out[wp_name("eff", e)] = float(np.quantile(s, 1 - e))
    return out


# -- correctionlib (schema v2): the format CMS analyses read working points and efficiencies from ----------
WP_CORRECTION = "working_points"


def _binning_content(values: np.ndarray) -> list[Any]:
    return [float(v) if np.isfinite(v) else 0.0 for v in np.ravel(values)]


def correction_set(bundle: Any, hists: dict[str, Any] | None = None) -> dict[str, Any]:
    """The bundle's thresholds (``working_points``: discriminant, wp -> threshold) and, from a run's
    histograms, tagging efficiency maps per working point (truth, pT, |eta|, systematic -> efficiency;
    ``up`` / ``down`` the 68 % Wilson interval on effective counts) as a correctionlib CorrectionSet."""
    import correctionlib.schemav2 as cs

    wps = bundle.working_points
    if not wps:
        raise JetTaggerError(f"tagger bundle {bundle.path}: no working points in its model card")
    corrections = [_thresholds(bundle.name, wps)]
    if hists is not None:
        corrections += _efficiency_maps(bundle.name, wps, hists["wp_pt"])
    cset = cs.CorrectionSet(
        schema_version=2,
        description=f"jettagger-coffea working points of {bundle.name}",
        corrections=corrections,
    )
    return json.loads(cset.model_dump_json(exclude_unset=True))


def _thresholds(name: str, wps: dict[str, dict[str, float]]) -> Any:
    """The ``working_points`` correction: (discriminant, wp) -> threshold."""
    import correctionlib.schemav2 as cs

    return cs.Correction(
        name=WP_CORRECTION,
        version=1,
        description=f"{name}: jet passes if discriminant > threshold",
        inputs=[
            cs.Variable(name="discriminant", type="string", description="e.g. WvsQCD"),
            cs.Variable(name="wp", type="string", description="e.g. mistag1%"),
        ],
        output=cs.Variable(name="threshold", type="real"),
        data=cs.Category(
            nodetype="category",
            input="discriminant",
            content=[
                cs.CategoryItem(
                    key=d,
                    value=cs.Category(
                        nodetype="category",
                        input="wp",
                        content=[cs.CategoryItem(key=w, value=float(t)) for w, t in points.items()],
                    ),
                )
                for d, points in wps.items()
            ],
        ),
    )


def _efficiency_maps(name: str, wps: dict[str, dict[str, float]], h: Any) -> list[Any]:
    """One ``<disc>_<wp>_efficiency`` correction per discriminant and working point of the ``wp_pt``
    histogram ``h``, over the truth classes it has jets of (none: no correction). A truth class without
    jets has no entry and no default (a default would be a value measured on other jets): correctionlib
    raises for it, and the descriptions name the classes there are — correctionlib's own message names only
    the value asked for, whatever the layout; :class:`EfficiencyMap` checks first and names them."""
    import correctionlib.schemav2 as cs

    corrections = []
    for d in h.axes["disc"]:
        for w in h.axes["wp"]:
            maps = {t: m for t in h.axes["truth"] if (m := _truth_efficiency(h, d, w, t)) is not None}
            if not maps:
                continue
            present = ", ".join(maps)
            ranges = "; ".join(f"{t}: {m[1]}" for t, m in maps.items())
            corrections.append(
                cs.Correction(
                    name=f"{d}_{w}_efficiency",
                    version=1,
                    description=f"{name}: efficiency of {d} > {wps.get(d, {}).get(w)} ({w}) per truth class "
                    f"({present}; any other is an error). Outside the range with jets an error ({ranges}); "
                    "a bin without jets inside it has the nearest filled bin's value (same |eta| row)",
                    inputs=[
                        cs.Variable(name="truth", type="string", description=f"one of {present}"),
                        cs.Variable(name="pt", type="real", description="FatJet pT [GeV]"),
                        cs.Variable(name="abseta", type="real", description="FatJet |eta|"),
                        cs.Variable(name="systematic", type="string", description="nominal, up, down"),
                    ],
                    output=cs.Variable(name="efficiency", type="real"),
                    data=cs.Category(
                        nodetype="category", input="truth", content=[m[0] for m in maps.values()]
                    ),
                )
            )
    return corrections


def _truth_efficiency(h: Any, d: str, w: str, t: str) -> tuple[Any, str] | None:
    """Truth class ``t``'s efficiency map (systematic -> pT x |eta| binning) and the range it covers, None
    without jets of it. The map spans the pT and |eta| bins that hold jets, with ``flow: error`` beyond
    (an efficiency where nothing was measured would be a guess, and a 0 a silent zero weight); an empty bin
    inside takes the nearest filled bin's values (:func:`_fill_from_nearest`)."""
    import correctionlib.schemav2 as cs

    from .analysis import binomial_interval, efficiency

    (edges_pt, edges_eta), p, n, _, vn = efficiency(h, d, w, axis=("pt", "abseta"), truth=t)
    if n.sum() <= 0:
        return None
    eff, lo, hi = binomial_interval(p, n, vn)
    filled = n > 0
    i, j = np.flatnonzero(filled.any(axis=1)), np.flatnonzero(filled.any(axis=0))
    cut = (slice(i[0], i[-1] + 1), slice(j[0], j[-1] + 1))
    pt, eta = np.asarray(edges_pt)[i[0] : i[-1] + 2], np.asarray(edges_eta)[j[0] : j[-1] + 2]
    systs = [
        cs.CategoryItem(
            key=name,
            value=cs.MultiBinning(
                nodetype="multibinning",
                inputs=["pt", "abseta"],
                edges=[list(map(float, pt)), list(map(float, eta))],
                content=_binning_content(_fill_from_nearest(values[cut], filled[cut])),
                flow="error",
            ),
        )
        for name, values in (("nominal", eff), ("up", hi), ("down", lo))
    ]
    item = cs.CategoryItem(
        key=str(t), value=cs.Category(nodetype="category", input="systematic", content=systs)
    )
    return item, _range_text(pt, eta)


def _range_text(pt: Any, eta: Any) -> str:
    return f"pT {pt[0]:g}-{pt[-1]:g} GeV, |eta| {eta[0]:g}-{eta[-1]:g}"


def _fill_from_nearest(values: np.ndarray, filled: np.ndarray) -> np.ndarray:
    """Each bin without jets gets the value of the nearest bin with jets: in the same |eta| row (columns)
    nearest in pT first, then the nearest row."""
    out = np.array(values, dtype=np.float64)
    where = np.argwhere(filled)
    for a, b in np.argwhere(~filled):
        k = np.lexsort((np.abs(where[:, 0] - a), np.abs(where[:, 1] - b)))[0]
        out[a, b] = out[tuple(where[k])]
    return out


def write_correction_set(path: str | Path, bundle: Any, hists: dict[str, Any] | None = None) -> Path:
    path = Path(path)
    path.write_text(json.dumps(correction_set(bundle, hists), indent=1))
    return path


def _load(path: Path, where: str) -> tuple[Any, dict[str, Any]]:
    """correctionlib's evaluator of a file and its JSON (one line naming ``where`` if it is not one)."""
    import correctionlib

    try:
        return correctionlib.CorrectionSet.from_file(str(path)), json.loads(path.read_text())
    except Exception as err:  # noqa: BLE001 - any failure: the file is not a correction set
        raise JetTaggerError(f"{where}: not a correctionlib file ({type(err).__name__}: {err})") from None


def read_thresholds(path: str | Path) -> dict[str, dict[str, float]]:
    """{discriminant: {wp: threshold}} from a correctionlib file written by :func:`write_correction_set`
    (checked by correctionlib itself)."""
    path = Path(path)
    cset, raw = _load(path, f"--working-points {path}")
    if WP_CORRECTION not in [c.get("name") for c in raw.get("corrections", [])]:
        raise JetTaggerError(f"--working-points {path}: no correction named {WP_CORRECTION!r}")
    node = next(c for c in raw["corrections"] if c["name"] == WP_CORRECTION)["data"]
    out = {
        item["key"]: {w["key"]: float(w["value"]) for w in item["value"]["content"]}
        for item in node["content"]
    }
    for d, wps in out.items():  # the evaluator agrees with what we parsed
        for w, t in wps.items():
            assert abs(cset[WP_CORRECTION].evaluate(d, w) - t) <= 1e-12 * max(1.0, abs(t))
    return out


class EfficiencyMap:
    """A ``<disc>_<wp>_efficiency`` map of a file written by :func:`write_correction_set`, evaluated by
    correctionlib after the checks its messages cannot make: correctionlib's errors carry no text of the
    file, only the value asked for ("Index not available in Category for input argument 0 val: Hbb"), so a
    truth class without a map here names the classes that have one, and a pT or |eta| outside a class's
    range with jets names that range (each a :class:`JetTaggerError`)."""

    def __init__(self, path: str | Path, name: str) -> None:
        path = Path(path)
        cset, raw = _load(path, str(path))
        corrections = raw.get("corrections", [])
        maps = {c["name"]: c for c in corrections if str(c.get("name")).endswith("_efficiency")}
        if name not in maps:
            there = ", ".join(maps) or "none: written without --hists"
            raise JetTaggerError(f"{path}: no efficiency map {name!r} (maps: {there})")
        self.where, self._correction = f"{name} ({path})", cset[name]
        #: truth class -> (systematics, range with jets)
        self.maps = {
            item["key"]: (
                tuple(s["key"] for s in item["value"]["content"]),
                _range_text(*item["value"]["content"][0]["value"]["edges"]),
            )
            for item in maps[name]["data"]["content"]
        }

    @property
    def classes(self) -> tuple[str, ...]:
        """The truth classes with a map (those the run had jets of)."""
        return tuple(self.maps)

    def evaluate(self, truth: Any, pt: Any, abseta: Any, systematic: str = "nominal") -> Any:
        """The efficiency of jets of class ``truth`` (a name, or an array of names, one per jet, of pt's
        shape) at ``pt``, ``abseta`` (numbers, numpy or awkward arrays, as correctionlib takes them)."""
        if not isinstance(truth, str):
            names = np.asarray(truth)
            out = np.full(names.shape, np.nan)
            pt, abseta = np.broadcast_arrays(np.asarray(pt, float), np.asarray(abseta, float))
            for t in self._checked(np.unique(names), systematic):
                sel = names == t
                out[sel] = self.evaluate(str(t), pt[sel], abseta[sel], systematic)
            return out
        self._checked([truth], systematic)
        try:
            return self._correction.evaluate(truth, pt, abseta, systematic)
        except RuntimeError as err:
            raise JetTaggerError(
                f"{self.where}: {truth} jets were measured only in {self.maps[truth][1]} ({err})"
            ) from None

    def _checked(self, classes: Any, systematic: str) -> Any:
        absent = [str(t) for t in classes if str(t) not in self.maps]
        if absent:
            raise JetTaggerError(
                f"{self.where}: no efficiency for truth class {', '.join(map(repr, absent))} (the run had no "
                f"such jets); the classes with one: {', '.join(self.maps)}"
            )
        for t in classes:
            if systematic not in self.maps[str(t)][0]:
                raise JetTaggerError(
                    f"{self.where}: systematic {systematic!r} is not one of {', '.join(self.maps[str(t)][0])}"
                )
        return classes
