"""The main job: a tagger bundle over a coffea fileset on an executor, then histograms (pickle + ROOT),
a metrics JSON and plots written to a folder."""

from __future__ import annotations

import dataclasses
import json
import logging
import pickle
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import JetTaggerError
from .metrics import background_classes, figures_from_roc, metrics_document, roc_from_hist
from .nanoevents import PFNanoSchema
from .processor import (
    ALL_FILES,
    TaggerProcessor,
    cutflow,
    effective_counts,
    efficiency,
    merge_sparse_bins,
    wilson_interval,
)
from .sources import Events, check_events
from .tagger import configure_dask
from .truth import truth_of_class

log = logging.getLogger(__name__)
EXECUTORS = ("iterative", "futures", "dask", "dask-awkward")
#: ``executor="auto"`` runs jobs up to this many events in one process
AUTO_ITERATIVE_EVENTS = 20_000


def load_fileset(path: str | Path) -> dict[str, Any]:
    """A coffea JSON fileset: ``{dataset: {"files": {path: treename} | [paths], "metadata": {...}}}`` or
    ``{dataset: [paths]}``. Metadata (coffea's convention): ``xsec`` in pb, ``is_mc``."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise JetTaggerError(f"cannot read fileset {path}: {err}") from None
    return check_fileset(raw, str(path))


def check_fileset(raw: Any, where: str = "fileset") -> dict[str, Any]:
    if not isinstance(raw, dict) or not raw:
        raise JetTaggerError(f"{where}: a fileset maps dataset names to files; this one has no dataset")
    out = {}
    for ds, spec in raw.items():
        if isinstance(spec, dict):
            unknown = sorted(set(spec) - {"files", "metadata", "treename"})
            if unknown or "files" not in spec:
                raise JetTaggerError(
                    f'{where}: dataset {ds!r} needs "files" (and optional "metadata"); unknown keys {unknown}'
                )
            files, meta = spec["files"], dict(spec.get("metadata") or {})
        else:
            files, meta = spec, {}
        if not files:
            raise JetTaggerError(f"{where}: dataset {ds!r} has no files")
        if not isinstance(files, (dict, list)):
            raise JetTaggerError(f'{where}: dataset {ds!r}: "files" must be a list or a {{path: tree}} map')
        xsec = meta.get("xsec")
        if xsec is not None and (not isinstance(xsec, (int, float)) or xsec <= 0):
            raise JetTaggerError(f"{where}: dataset {ds!r}: metadata.xsec must be a positive number (pb)")
        out[ds] = {
            "files": files if isinstance(files, dict) else dict.fromkeys(files, "Events"),
            "metadata": meta,
        }
    return out


def preflight(
    fileset: dict[str, Any], skip_bad_files: bool, check: Any = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Open every file once: unreadable ones are skipped (and recorded with their error and, where the
    header still says, their event count) or, without skipping, named in the error. ``check(tree, path)``
    refuses a readable file that lacks what the model reads (a user error: never skipped)."""
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
                    if check is not None:
                        check(f[tree], path)
                    runs = f.get("Runs")
                    sumw = (
                        float(runs["genEventSumw"].array(library="np").sum())
                        if runs is not None and "genEventSumw" in runs
                        else None
                    )
            except JetTaggerError:
                raise
            except Exception as err:  # noqa: BLE001 - any failure to read makes the file bad
                if not skip_bad_files:
                    raise JetTaggerError(
                        f"cannot read {path} (dataset {ds!r}): {type(err).__name__}: {err}"
                    ) from None
                skipped.append(
                    {
                        "dataset": ds,
                        "file": path,
                        "error": f"{type(err).__name__}: {err}",
                        "events": _events_from_header(path, tree),
                    }
                )
                continue
            entry = good.setdefault(
                ds, {"files": {}, "metadata": spec.get("metadata", {}), "events": {}, "sumw": {}}
            )
            entry["files"][path] = tree
            entry["events"][path] = n
            entry["sumw"][path] = sumw
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


def run_fileset(
    bundle: str | Path | None,
    fileset: dict[str, Any],
    executor: str = "dask",
    workers: int = 2,
    scheduler: str | None = None,
    chunksize: int = 100_000,
    skip_bad_files: bool = False,
    progress: bool = True,
    lumi: float | None = None,
    **processor_options: Any,
) -> dict[str, Any]:
    """Run :class:`TaggerProcessor` over ``fileset``; the same histograms in every mode. With ``lumi``
    (pb^-1), simulated datasets with ``metadata.xsec`` are scaled to xsec x lumi / sum of genWeight.

    Stages: options and files checked before any work (:func:`preflight`), the executor chosen by the job's
    size, the processor run (:func:`_execute`), then normalisation and accounting (:func:`_account`)."""
    if executor not in (*EXECUTORS, "auto"):
        raise JetTaggerError(f"--executor {executor!r}: choose from auto, {', '.join(EXECUTORS)}")
    if workers < 1 or chunksize < 1:
        raise JetTaggerError(f"--workers and --chunksize must be >= 1 (got {workers}, {chunksize})")
    if lumi is not None and lumi <= 0:
        raise JetTaggerError(f"--lumi must be > 0 (pb^-1), got {lumi}")
    fileset = check_fileset(fileset)
    metadata = {ds: spec.get("metadata", {}) for ds, spec in fileset.items()}
    proc = TaggerProcessor(bundle, datasets=metadata, **processor_options)
    config, preset = proc.tagger.config, proc.tagger.bundle.preset
    fileset, skipped = preflight(
        fileset, skip_bad_files, check=lambda tree, path: check_events(Events(tree, path), config, preset)
    )
    expected = {ds: spec.pop("events") for ds, spec in fileset.items()}
    runs_sumw = {ds: spec.pop("sumw") for ds, spec in fileset.items()}
    if executor == "auto":  # a small job is fastest in one process: no cluster start-up, no transfers
        total = sum(sum(f.values()) for f in expected.values())
        executor = (
            "iterative" if total <= AUTO_ITERATIVE_EVENTS or (scheduler is None and workers == 1) else "dask"
        )
        log.info("executor auto -> %s (%d events)", executor, total)
    for spec in fileset.values():
        spec.pop("metadata", None)
    if not fileset:
        raise JetTaggerError("no readable file in the fileset: " + "; ".join(s["file"] for s in skipped))
    start = time.perf_counter()
    out = _execute(proc, fileset, executor, workers, scheduler, chunksize, skip_bad_files, progress)
    _account(out, metadata, runs_sumw, lumi, expected, skipped)
    out["meta"] = {
        "events_in_readable_files": {ds: sum(f.values()) for ds, f in expected.items()},
        "model": proc.tagger.bundle.name,
        "classes": proc.tagger.classes,
        "executor": executor,
        "workers": workers,
        "chunksize": chunksize,
        "seconds": time.perf_counter() - start,
        "discriminants": proc.tagger.bundle.discriminants,
        "working_points": proc.wps,
        "selection": dataclasses.asdict(proc.selection),
        "lumi": lumi,
    }
    return out


def _execute(
    proc: TaggerProcessor,
    fileset: dict[str, Any],
    executor: str,
    workers: int,
    scheduler: str | None,
    chunksize: int,
    skip_bad_files: bool,
    progress: bool,
) -> dict[str, Any]:
    """The processor's accumulated output under one executor (a local cluster is started and closed here)."""
    from coffea import processor

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
            return processor.accumulate(list(per_ds.values()))
        if executor == "iterative":
            ex = processor.IterativeExecutor(status=progress)
        elif executor == "futures":
            ex = processor.FuturesExecutor(workers=workers, status=progress)
        else:
            client, cluster = _cluster(workers, scheduler)
            ex = processor.DaskExecutor(client=client, status=progress)
        # with skipping on, any failure of a chunk skips it; the accounting names the file
        skip = (Exception,) if skip_bad_files else False
        runner = processor.Runner(ex, schema=PFNanoSchema, chunksize=chunksize, skipbadfiles=skip)
        try:
            return runner(fileset, proc, treename="Events")
        except Exception as err:
            raise JetTaggerError(f"processing failed: {err}") from err
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()


def _account(
    out: dict[str, Any],
    metadata: dict[str, Any],
    runs_sumw: dict[str, Any],
    lumi: float | None,
    expected: dict[str, dict[str, int]],
    skipped: list[dict[str, Any]],
) -> None:
    """Normalisation, per-jet columns in file order, cutflow, warnings and every event not processed."""
    out["normalisation"] = normalise(out["hists"], metadata, runs_sumw, lumi)
    scale = {ds: n["factor"] for ds, n in out["normalisation"].items()}
    if "jets" in out:  # per-jet columns: chunks in file order, weights normalised like the histograms
        cols = {k: np.concatenate(v) for k, v in out["jets"].items()}
        order = np.lexsort((cols["jet_index"], cols["entry"], cols["file"], cols["dataset"]))
        cols = {k: v[order] for k, v in cols.items()}
        cols["weight"] = cols["weight"] * np.array([scale.get(d, 1.0) for d in cols["dataset"]])
        out["jets"] = cols
    out["cutflow"] = cutflow(out["hists"], scale)
    out["warnings"] = [
        f"dataset {ds!r}: the selection removed every jet ({c['fatjets']} FatJets in {c['events']} events)"
        for ds, c in out["cutflow"].items()
        if c["selected_jets"] == 0
    ]
    for w in out["warnings"]:
        log.warning(w)
    counts = out["hists"]["counts"]
    per_file = {
        f: round(counts[{"file": f, "step": "events", "quantity": "raw"}].sum(flow=True).value)
        for f in counts.axes["file"]
    }
    for ds, files in expected.items():
        if ALL_FILES in per_file:  # dask-awkward: per dataset only
            got, n = out["cutflow"].get(ds, {}).get("events", 0), sum(files.values())
            if got != n:
                skipped.append({"dataset": ds, "file": None, "error": "chunks failed", "events": n - got})
            continue
        for path, n in files.items():
            got = per_file.get(path, 0)
            if got != n:  # chunks that failed after the preflight, skipped by coffea
                skipped.append(
                    {
                        "dataset": ds,
                        "file": path,
                        "error": "chunk(s) failed during processing",
                        "events": n - got,
                    }
                )
    out["skipped"] = skipped


def normalise(
    hists: dict[str, Any],
    metadata: dict[str, dict[str, Any]],
    runs_sumw: dict[str, dict[str, Any]],
    lumi: float | None,
) -> dict[str, dict[str, Any]]:
    """Scale each simulated dataset's histograms (values by f, variances by f^2) by
    f = xsec x lumi / sum of genWeight over *all* its events: the Runs trees' genEventSumw where every file
    has one (a file may hold part of a dataset), else the sum this job saw before any selection."""
    counts = hists["counts"]
    out: dict[str, dict[str, Any]] = {}
    for ds in counts.axes["dataset"]:
        meta = metadata.get(ds, {})
        sums = list((runs_sumw.get(ds) or {}).values())
        job = float(counts[{"dataset": ds, "step": "events", "quantity": "sumw"}].sum(flow=True).value)
        if sums and all(s is not None for s in sums):
            sumw, source = float(sum(sums)), "Runs.genEventSumw"
        else:
            sumw, source = job, "job"
        xsec = meta.get("xsec")
        mc = bool(meta.get("is_mc", True))
        factor = xsec * lumi / sumw if (mc and xsec is not None and lumi is not None and sumw > 0) else 1.0
        out[ds] = {
            "is_mc": mc,
            "xsec": xsec,
            "lumi": lumi,
            "sumw": sumw,
            "sumw_source": source,
            "factor": factor,
        }
        if factor != 1.0:
            for name, h in hists.items():
                if name == "counts" or "dataset" not in h.axes.name or ds not in h.axes["dataset"]:
                    continue
                i = list(h.axes["dataset"]).index(ds)
                view = h.view(flow=True)
                sl = tuple(i if a.name == "dataset" else slice(None) for a in h.axes)
                view["value"][sl] *= factor
                view["variance"][sl] *= factor * factor
    return out


def _truth_rows(h: Any, classes: Sequence[str]) -> list[int]:
    """Positions on a histogram's truth axis of the truth classes behind these model classes."""
    truths = list(h.axes["truth"])
    wanted = {truth_of_class(c) for c in classes} - {None}
    return [i for i, t in enumerate(truths) if t in wanted]


def binned_roc(h: Any, name: str, d: dict[str, Any], classes: Sequence[str]):
    """(eps_b, eps_s, n_signal, n_background) of one discriminant from the ``discriminant`` histogram."""
    hd = h[{"disc": name}].project("truth", "score")
    values = hd.values()
    s_rows = _truth_rows(hd, d["signal"])
    b_rows = [i for i in _truth_rows(hd, background_classes(classes, d)) if i not in s_rows]
    if not s_rows or not b_rows:
        return None
    s, b = values[s_rows].sum(axis=0), values[b_rows].sum(axis=0)
    if s.sum() <= 0 or b.sum() <= 0:
        return None
    eb, es = roc_from_hist(s, b)
    return eb, es, float(s.sum()), float(b.sum())


def metrics_from_hists(out: dict[str, Any]) -> dict[str, Any]:
    """Binned front end of :func:`metrics.metrics_document`: ROCs from the run's discriminant histograms,
    accuracy and confusion from its predicted-class histogram, plus the cutflow and timing."""
    h = out["hists"]
    meta = out["meta"]
    classes = meta["classes"]
    figures = {}
    for name, d in meta["discriminants"].items():
        roc = binned_roc(h["discriminant"], name, d, classes)
        if roc is not None:
            figures[name] = figures_from_roc(*roc)
    hp = h["predicted"].project("truth", "predicted")
    truths = list(hp.axes["truth"])
    cm = np.zeros((len(classes), len(classes)))
    for i, c in enumerate(classes):
        t = truth_of_class(c)
        if t == c and t in truths:  # the confusion matrix needs model classes that are truth classes
            cm[i] = hp.values()[truths.index(t)]
    jets = sum(c["selected_jets"] for c in out["cutflow"].values())
    return metrics_document(
        "binned",
        meta["model"],
        classes,
        figures,
        cm,
        cutflow=out["cutflow"],
        normalisation=out.get("normalisation", {}),
        selection=meta.get("selection"),
        skipped=out.get("skipped", []),
        warnings=out.get("warnings", []),
        seconds=meta["seconds"],
        jets_per_second=jets / meta["seconds"] if meta["seconds"] else None,
    )


#: efficiency plots merge neighbouring bins until each holds this many (effective) jets
MIN_JETS_PER_BIN = 20.0


def write_outputs(out: dict[str, Any], folder: str | Path) -> dict[str, Path]:
    """hists.pkl (hist objects), hists.root (1-D projections), metrics.json, PNG plots."""
    from . import plotting

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
        import awkward as ak

        paths["jets"] = folder / "jets.parquet"
        ak.to_parquet(
            ak.Array({k: v.astype(str) if v.dtype.kind in "OU" else v for k, v in out["jets"].items()}),
            paths["jets"],
        )
    h, meta = out["hists"], out["meta"]
    classes = meta["classes"]
    curves = {}
    for name, d in meta["discriminants"].items():
        roc = binned_roc(h["discriminant"], name, d, classes)
        if roc is not None:
            curves[name] = (roc[0], roc[1], roc[3])
    if curves:
        paths["roc"] = plotting.roc_from_counts_plot(curves, folder / "roc.png", title=meta["model"])
    if metrics["accuracy"] is not None:
        paths["confusion"] = plotting.confusion_plot(
            np.asarray(metrics["confusion"]),
            classes,
            folder / "confusion.png",
            title=f"{meta['model']}: accuracy {metrics['accuracy']:.3f}",
        )
    for name, wps in meta["working_points"].items():
        d = meta["discriminants"][name]
        sig = {t for t in map(truth_of_class, d["signal"]) if t is not None}
        bkg = {t for t in map(truth_of_class, background_classes(classes, d)) if t is not None} - sig
        groups = {"signal": sorted(sig), "background": sorted(bkg)}
        for axis, xlabel in (("pt", r"Jet $p_T$ [GeV]"), ("msd", "Soft-drop mass [GeV]")):
            eff: dict[str, dict[str, tuple]] = {}
            for wp in wps:
                for truths in groups.values():
                    for t in truths:
                        counts = efficiency(h[f"wp_{axis}"], name, wp, axis=axis, truth=t)
                        if counts[2].sum() <= 0:
                            continue
                        edges, p, n, _, vn = merge_sparse_bins(*counts, min_jets=MIN_JETS_PER_BIN)
                        pe, ne = effective_counts(p, n, vn)
                        lo, hi = wilson_interval(pe, ne)
                        eff.setdefault(wp, {})[t] = (edges, p, n, lo, hi)
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
    paths["msoftdrop"] = plotting.mass_plot(per_truth, folder / "msoftdrop.png")
    hs = h["stored"]
    for name in hs.axes["disc"]:
        sub = hs[{"disc": name}].project("recomputed", "stored")
        if sub.values().sum() > 0:
            paths[f"stored_{name}"] = plotting.stored_plot(
                sub.values(), sub.axes[0].edges, sub.axes[1].edges, folder / f"stored_{name}.png", name
            )
    return paths


def _root_name(text: str) -> str:
    """A ROOT-friendly key: no '%', '.', spaces or slashes."""
    return "".join(ch if ch.isalnum() or ch in "_-" else {"%": "pct", ".": "p"}.get(ch, "_") for ch in text)


def _write_root(out: dict[str, Any], path: Path) -> None:
    """Filled 1-D projections (uproot writes TH1s) per dataset, truth class, class / discriminant / working
    point, with ROOT-style titles."""
    import uproot

    h = out["hists"]

    def put(f: Any, key: str, hh: Any, title: str) -> None:
        if hh.values().sum() <= 0:  # only filled histograms
            return
        hh = hh.copy()
        hh.label = title
        for ax in hh.axes:
            ax.label = ax.label.replace("$p_T$", "p_{T}").replace("$", "")
        f[_root_name(key)] = hh

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
                    for wp in h["wp_pt"].axes["wp"] if ds in h["wp_pt"].axes["dataset"] else ():
                        w = h["wp_pt"][{**sub, "disc": d, "wp": wp}].project("passed", "pt")
                        put(f, f"{ds}_{d}_{wp}_{t}_pass_pt", w[{"passed": 1}], f"{ds} {t}: {d} {wp} passing")
                        put(f, f"{ds}_{d}_{wp}_{t}_total_pt", w.project("pt"), f"{ds} {t}: {d} {wp} all")
