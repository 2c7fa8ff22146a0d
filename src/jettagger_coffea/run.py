"""The main job: a tagger bundle over a coffea fileset on an executor, then histograms (pickle + ROOT),
a metrics JSON and plots written to a folder."""

from __future__ import annotations

import json
import logging
import pickle
import time
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import JetTaggerError
from .tagger import configure_dask
from .generate.settings import JETCLASS_LABELS
from .metrics import rejection_from_roc, roc_from_hist
from .nanoevents import PFNanoSchema
from .processor import TaggerProcessor, cutflow, efficiency

log = logging.getLogger(__name__)
EXECUTORS = ("iterative", "futures", "dask", "dask-awkward")


def load_fileset(path: str | Path) -> dict[str, Any]:
    """A coffea JSON fileset: ``{dataset: {"files": {path: treename}}}`` or ``{dataset: [paths]}``."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise JetTaggerError(f"cannot read fileset {path}: {err}") from None
    out = {}
    for ds, spec in raw.items():
        files = spec["files"] if isinstance(spec, dict) else spec
        out[ds] = {"files": files if isinstance(files, dict) else dict.fromkeys(files, "Events")}
    return out


def preflight(fileset: dict[str, Any], skip_bad_files: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Open every file once: unreadable ones are skipped (and recorded with their error and, where the
    header still says, their event count) or, without skipping, named in the error."""
    import uproot

    good: dict[str, Any] = {}
    skipped: list[dict[str, Any]] = []
    for ds, spec in fileset.items():
        for path, tree in spec["files"].items():
            tree = tree if isinstance(tree, str) else tree.get("object_path", "Events")
            try:
                with uproot.open(path) as f:
                    n = f[tree].num_entries
                    f[tree]["nFatJet"].array(entry_stop=1)  # the header alone can look fine
            except Exception as err:  # noqa: BLE001 - any failure to read makes the file bad
                if not skip_bad_files:
                    raise JetTaggerError(f"cannot read {path} (dataset {ds!r}): {type(err).__name__}: {err}") from None
                skipped.append({"dataset": ds, "file": path, "error": f"{type(err).__name__}: {err}",
                                "events": _events_from_header(path, tree)})
                continue
            good.setdefault(ds, {"files": {}, "events": {}})["files"][path] = tree
            good[ds]["events"][path] = n
    return good, skipped


def _events_from_header(path: str, tree: str) -> int | None:
    import uproot

    try:
        with uproot.open(path) as f:
            return int(f[tree].num_entries)
    except Exception:  # noqa: BLE001 - unknown: the file is unreadable
        return None


def _cluster(workers: int, scheduler: str | None):
    from distributed import Client, LocalCluster

    if scheduler:
        return Client(scheduler), None
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
    return Client(cluster), cluster


def run_fileset(bundle: str | Path, fileset: dict[str, Any], executor: str = "dask", workers: int = 2,
                scheduler: str | None = None, chunksize: int = 100_000, skip_bad_files: bool = False,
                progress: bool = True, **processor_options: Any) -> dict[str, Any]:
    """Run :class:`TaggerProcessor` over ``fileset``; the same histograms in every mode."""
    from coffea import processor

    if executor not in EXECUTORS:
        raise JetTaggerError(f"unknown executor {executor!r}; choose from {', '.join(EXECUTORS)}")
    proc = TaggerProcessor(bundle, **processor_options)
    fileset, skipped = preflight(fileset, skip_bad_files)
    expected = {ds: spec.pop("events") for ds, spec in fileset.items()}
    if not fileset:
        raise JetTaggerError("no readable file in the fileset: " + "; ".join(s["file"] for s in skipped))
    start = time.perf_counter()
    client = cluster = None
    try:
        if executor == "dask-awkward":
            import dask
            from coffea.dataset_tools import apply_to_fileset, preprocess

            configure_dask()  # preprocess's own graph needs it too
            client, cluster = _cluster(workers, scheduler)
            available, _ = preprocess(fileset, step_size=chunksize, skip_bad_files=skip_bad_files)
            graph = apply_to_fileset(proc, available, schemaclass=PFNanoSchema)
            if progress:
                from distributed import progress as dprogress

                futures = client.compute(graph)
                dprogress(futures)
                per_ds = client.gather(futures)
            else:
                (per_ds,) = dask.compute(graph)
            out = processor.accumulate(list(per_ds.values()))
        else:
            if executor == "iterative":
                ex = processor.IterativeExecutor(status=progress)
            elif executor == "futures":
                ex = processor.FuturesExecutor(workers=workers, status=progress)
            else:
                client, cluster = _cluster(workers, scheduler)
                ex = processor.DaskExecutor(client=client, status=progress)
            # with skipping on, any failure of a chunk skips it; the accounting below names the file
            skip = (Exception,) if skip_bad_files else False
            runner = processor.Runner(ex, schema=PFNanoSchema, chunksize=chunksize, skipbadfiles=skip)
            try:
                out = runner(fileset, proc, treename="Events")
            except Exception as err:
                raise JetTaggerError(f"processing failed: {err}") from err
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    out["cutflow"] = cutflow(out["hists"])
    counts = out["hists"]["counts"]
    per_file = {f: round(counts[{"file": f, "step": "events"}].sum(flow=True)) for f in counts.axes["file"]}
    for ds, files in expected.items():
        if "(all files)" in per_file:  # dask-awkward: per dataset only
            got, n = out["cutflow"].get(ds, {}).get("events", 0), sum(files.values())
            if got != n:
                skipped.append({"dataset": ds, "file": None, "error": "chunks failed", "events": n - got})
            continue
        for path, n in files.items():
            got = per_file.get(path, 0)
            if got != n:  # chunks that failed after the preflight, skipped by coffea
                skipped.append({"dataset": ds, "file": path, "error": "chunk(s) failed during processing",
                                "events": n - got})
    out["skipped"] = skipped
    out["meta"] = {"events_in_readable_files": {ds: sum(f.values()) for ds, f in expected.items()}, "model": proc.tagger.bundle.name, "classes": proc.tagger.classes, "executor": executor,
                   "workers": workers, "chunksize": chunksize, "seconds": time.perf_counter() - start,
                   "discriminants": proc.tagger.bundle.discriminants, "working_points": proc.wps}
    return out


def class_truth_index(classes: list[str]) -> dict[str, int]:
    """Bundle class -> JetClass truth index (the generator's FatJet_truthLabel)."""
    return {c: JETCLASS_LABELS.index(c) for c in classes if c in JETCLASS_LABELS}


def metrics_from_hists(out: dict[str, Any]) -> dict[str, Any]:
    """AUC and 1/eps_b at 50 / 30 % per discriminant (binned ROC), accuracy and confusion matrix."""
    h = out["hists"]
    meta = out["meta"]
    classes = meta["classes"]
    truth_of = class_truth_index(classes)
    res: dict[str, Any] = {"model": meta["model"], "cutflow": out["cutflow"], "discriminants": {}}
    truths = list(h["discriminant"].axes["truth"])
    for name, d in meta["discriminants"].items():
        hd = h["discriminant"][{"disc": name}].project("truth", "score")

        def counts(cls_list, hd=hd):
            idx = [truths.index(truth_of[c]) for c in cls_list if c in truth_of and truth_of[c] in truths]
            return hd.values()[idx].sum(axis=0) if idx else None

        s, b = counts(d["signal"]), counts(d["background"])
        if s is None or b is None or s.sum() == 0 or b.sum() == 0:
            continue
        eb, es = roc_from_hist(s, b)
        res["discriminants"][name] = {"auc": float(np.trapezoid(es, eb)), "rej50": rejection_from_roc(eb, es, 0.5),
                                      "rej30": rejection_from_roc(eb, es, 0.3), "n_signal": int(s.sum()),
                                      "n_background": int(b.sum())}
    hp = h["predicted"].project("truth", "predicted")
    ptruths = list(hp.axes["truth"])
    cm = np.zeros((len(classes), len(classes)))
    for i, c in enumerate(classes):
        if c in truth_of and truth_of[c] in ptruths:
            cm[i] = hp.values()[ptruths.index(truth_of[c])]
    total = cm.sum()
    res["accuracy"] = float(np.trace(cm) / total) if total else float("nan")
    res["confusion"] = (cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)).tolist()
    res["skipped"] = out.get("skipped", [])
    res["seconds"] = meta["seconds"]
    jets = sum(c["selected_jets"] for c in out["cutflow"].values())
    res["jets_per_second"] = jets / meta["seconds"] if meta["seconds"] else None
    return res


def write_outputs(out: dict[str, Any], folder: str | Path) -> dict[str, Path]:
    """hists.pkl (hist objects), hists.root (1-D projections), metrics.json, PNG plots."""
    from . import plotting

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"pickle": folder / "hists.pkl", "root": folder / "hists.root", "metrics": folder / "metrics.json"}
    with paths["pickle"].open("wb") as f:
        pickle.dump(out, f)
    _write_root(out, paths["root"])
    metrics = metrics_from_hists(out)
    paths["metrics"].write_text(json.dumps(metrics, indent=2))
    h, meta = out["hists"], out["meta"]
    classes, truth_of = meta["classes"], class_truth_index(meta["classes"])
    truths = list(h["discriminant"].axes["truth"])
    curves = {}
    for name, d in meta["discriminants"].items():
        hd = h["discriminant"][{"disc": name}].project("truth", "score")
        idx_s = [truths.index(truth_of[c]) for c in d["signal"] if truth_of.get(c) in truths]
        idx_b = [truths.index(truth_of[c]) for c in d["background"] if truth_of.get(c) in truths]
        if idx_s and idx_b:
            curves[name] = roc_from_hist(hd.values()[idx_s].sum(0), hd.values()[idx_b].sum(0))
    if curves:
        paths["roc"] = plotting.roc_from_counts_plot(curves, folder / "roc.png", title=meta["model"])
    paths["confusion"] = plotting.confusion_plot(np.asarray(metrics["confusion"]), classes, folder / "confusion.png",
                                                 title=f"{meta['model']}: accuracy {metrics['accuracy']:.3f}")
    for name, wps in meta["working_points"].items():
        d = meta["discriminants"][name]
        for axis, xlabel in (("pt", r"Jet $p_T$ [GeV]"), ("msd", "Soft-drop mass [GeV]")):
            eff = {}
            for wp in wps:
                for role in ("signal", "background"):
                    t = truth_of.get(d[role][0])
                    if t is None or t not in list(h[f"wp_{axis}"].axes["truth"]):
                        continue
                    edges, e, _ = efficiency(h[f"wp_{axis}"], name, wp, axis=axis, truth=t)
                    eff[f"{wp} {d[role][0]}"] = (edges, e)
            if eff:
                paths[f"eff_{axis}_{name}"] = plotting.efficiency_plot(
                    eff, folder / f"eff_{axis}_{name}.png", xlabel, title=name)
    paths["msoftdrop"] = plotting.mass_plot(h["msoftdrop"], folder / "msoftdrop.png")
    return paths


def _write_root(out: dict[str, Any], path: Path) -> None:
    """1-D projections (uproot writes TH1s) per dataset, truth label, class / discriminant / working point."""
    import uproot

    h = out["hists"]
    with uproot.recreate(path) as f:
        for ds in h["scores"].axes["dataset"]:
            for t in h["scores"].axes["truth"]:
                tname = JETCLASS_LABELS[t] if 0 <= t < len(JETCLASS_LABELS) else "none"
                sub = {"dataset": ds, "truth": hist_loc(t)}
                f[f"{ds}/msoftdrop_{tname}"] = h["msoftdrop"][sub]
                for c in h["scores"].axes["cls"]:
                    f[f"{ds}/score_{c}_{tname}"] = h["scores"][{**sub, "cls": c}].project("score")
                for d in h["discriminant"].axes["disc"]:
                    f[f"{ds}/disc_{d}_{tname}"] = h["discriminant"][{**sub, "disc": d}].project("score")
                    for wp in h["wp_pt"].axes["wp"]:
                        w = h["wp_pt"][{**sub, "disc": d, "wp": wp}]
                        f[f"{ds}/{d}_{wp}_{tname}_pass_pt"] = w[{"passed": hist_loc(1)}]
                        f[f"{ds}/{d}_{wp}_{tname}_total_pt"] = w.project("pt")


def hist_loc(value: int):
    import hist

    return hist.loc(value)
