"""What a run leaves on disk: hists.pkl (hist objects), hists.root (filled 1-D projections), metrics.json,
the per-jet table and PNG plots; and the per-jet table of ``jettagger predict``."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import JetTaggerError
from .analysis import efficiency_curves, metrics_from_hists, roc_curves, signal_missing, truth_groups


def write_outputs(out: dict[str, Any], folder: str | Path) -> dict[str, Path]:
    """hists.pkl (hist objects), hists.root (1-D projections), metrics.json, jets.parquet (with
    ``--per-jet``), PNG plots."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "pickle": folder / "hists.pkl",
        "root": folder / "hists.root",
        "metrics": folder / "metrics.json",
    }
    with paths["pickle"].open("wb") as f:
        pickle.dump({k: v for k, v in out.items() if k != "jets"}, f)
    _write_root(out, paths["root"])
    metrics = metrics_from_hists(out)
    paths["metrics"].write_text(json.dumps(metrics, indent=2, allow_nan=False))
    if "jets" in out:
        paths["jets"] = write_jet_table(out["jets"], folder / "jets.parquet")
    return {**paths, **_plots(out, metrics, folder)}


def _plots(out: dict[str, Any], metrics: dict[str, Any], folder: Path) -> dict[str, Path]:
    """ROC, confusion, working-point efficiencies vs pT and soft-drop mass (not for a discriminant without
    signal jets: metrics.json's warnings say so), soft-drop mass, stored scores."""
    from . import plotting

    h, meta = out["hists"], out["meta"]
    paths: dict[str, Path] = {}
    no_signal = signal_missing(out)
    curves = roc_curves(out)
    if curves:
        signals = {n: truth_groups(meta["classes"], meta["discriminants"][n])["signal"] for n in curves}
        paths["roc"] = plotting.roc_from_counts_plot(
            curves, folder / "roc.png", title=meta["model"], colours=plotting.signal_colours(signals)
        )
    if metrics["accuracy"] is not None:
        paths["confusion"] = plotting.confusion_plot(
            np.asarray(metrics["confusion"]),
            meta["classes"],
            folder / "confusion.png",
            title=f"{meta['model']}: accuracy {metrics['accuracy']:.3f}",
        )
    for name, wps in meta["working_points"].items():
        if name in no_signal:
            continue
        groups = truth_groups(meta["classes"], meta["discriminants"][name])
        truths = [*groups["signal"], *groups["background"]]
        for axis, xlabel in (("pt", r"Jet $p_T$ [GeV]"), ("msd", h["wp_msd"].axes["msd"].label)):
            eff = efficiency_curves(h[f"wp_{axis}"], name, list(wps), truths, axis)
            if eff:
                paths[f"eff_{axis}_{name}"] = plotting.efficiency_plot(
                    eff, folder / f"eff_{axis}_{name}.png", xlabel, title=name
                )
    hm = h["msoftdrop"].project("truth", "msd")
    view = hm.view()
    per_truth = {
        t: (hm.axes["msd"].edges, view["value"][i], view["variance"][i])
        for i, t in enumerate(hm.axes["truth"])
        if view["value"][i].sum() > 0
    }
    paths["msoftdrop"] = plotting.mass_plot(per_truth, folder / "msoftdrop.png", xlabel=hm.axes["msd"].label)
    hs = h["stored"]
    for name in hs.axes["disc"]:
        sub = hs[{"disc": name}].project("recomputed", "stored")
        if sub.values().sum() > 0:
            paths[f"stored_{name}"] = plotting.stored_plot(
                sub.values(), sub.axes[0].edges, sub.axes[1].edges, folder / f"stored_{name}.png", name
            )
    return paths


def write_jet_table(cols: dict[str, np.ndarray], path: str | Path) -> Path:
    """One row per jet as a ROOT TTree (``Events``; truth as ``truth_index`` into ``truth.ALL_TRUTH``, since
    trees take numbers) or a parquet file, chosen by the suffix."""
    path = Path(path)
    if path.suffix == ".root":
        import uproot

        from .truth import ALL_TRUTH

        cols = dict(cols)
        if "truth" in cols:
            cols["truth_index"] = np.array([ALL_TRUTH.index(t) for t in cols.pop("truth")], dtype=np.int32)
        with uproot.recreate(path) as f:
            f.mktree("Events", {k: v.dtype for k, v in cols.items()}).extend(cols)
    elif path.suffix == ".parquet":
        import awkward as ak

        ak.to_parquet(
            ak.Array({k: v.astype(str) if v.dtype.kind in "OU" else v for k, v in cols.items()}), path
        )
    else:
        raise JetTaggerError(f"--output must end in .root or .parquet, got {path}")
    return path


def _root_name(text: str) -> str:
    """A ROOT-friendly key: no '%', '.', spaces or slashes."""
    return "".join(ch if ch.isalnum() or ch in "_-" else {"%": "pct", ".": "p"}.get(ch, "_") for ch in text)


def _write_root(out: dict[str, Any], path: Path) -> None:
    """Filled 1-D projections (uproot writes TH1s) per dataset, truth class, class / discriminant / working
    point, with ROOT-style titles. A working point's ``_pass_pt`` and ``_total_pt`` are written together
    (where the total has jets; an empty pass is an efficiency of 0) or not at all."""
    import uproot

    h = out["hists"]

    def put(f: Any, key: str, hh: Any, title: str, always: bool = False) -> None:
        if hh.values().sum() <= 0 and not always:  # only filled histograms
            return
        hh = hh.copy()
        hh.label = title
        for ax in hh.axes:
            ax.label = ax.label.replace("$p_T$", "p_{T}").replace("$", "")
        f[_root_name(key)] = hh

    def put_working_points(f: Any, sub: dict[str, str], d: str) -> None:
        ds, t = sub["dataset"], sub["truth"]
        for wp in h["wp_pt"].axes["wp"] if ds in h["wp_pt"].axes["dataset"] else ():
            w = h["wp_pt"][{**sub, "disc": d, "wp": wp}].project("passed", "pt")
            total = w.project("pt")
            if total.values().sum() > 0:
                put(f, f"{ds}_{d}_{wp}_{t}_pass_pt", w[{"passed": 1}], f"{ds} {t}: {d} {wp} passing", True)
                put(f, f"{ds}_{d}_{wp}_{t}_total_pt", total, f"{ds} {t}: {d} {wp} all", True)

    with uproot.recreate(path) as f:
        for ds in h["msoftdrop"].axes["dataset"]:
            for t in h["msoftdrop"].axes["truth"]:
                sub = {"dataset": ds, "truth": t}
                put(f, f"{ds}_msoftdrop_{t}", h["msoftdrop"][sub], f"{ds} {t}: soft-drop mass")
                if ds not in h["scores"].axes["dataset"]:
                    continue
                for c in h["scores"].axes["cls"]:
                    put(
                        f,
                        f"{ds}_score_{c}_{t}",
                        h["scores"][{**sub, "cls": c}].project("score"),
                        f"{ds} {t}: score {c}",
                    )
                for d in h["discriminant"].axes["disc"] if ds in h["discriminant"].axes["dataset"] else ():
                    put(
                        f,
                        f"{ds}_disc_{d}_{t}",
                        h["discriminant"][{**sub, "disc": d}].project("score"),
                        f"{ds} {t}: {d}",
                    )
                    put_working_points(f, sub, d)
