"""The main job's execution: a tagger bundle over a checked fileset on an executor (coffea's Runner with
iterative / futures / dask, or dask-awkward's ``apply_to_fileset``), then normalisation and the accounting
of every event that was not processed."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import JetTaggerError
from .analysis import cutflow
from .bundle import Bundle
from .columnar import configure_dask
from .fileset import check_fileset, preflight
from .nanoevents import PFNanoSchema
from .processor import ALL_FILES, TaggerProcessor
from .sources import Events, check_events

log = logging.getLogger(__name__)
EXECUTORS = ("iterative", "futures", "dask", "dask-awkward")
#: ``executor="auto"`` runs jobs up to this many events in one process
AUTO_ITERATIVE_EVENTS = 20_000


@dataclasses.dataclass(frozen=True)
class Execution:
    """Where and how the processor runs: the executor, its workers (or an external scheduler's address),
    events per chunk, whether failing files and chunks are skipped, and progress bars."""

    executor: str = "dask"
    workers: int = 2
    scheduler: str | None = None
    chunksize: int = 100_000
    skip_bad_files: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.executor not in (*EXECUTORS, "auto"):
            raise JetTaggerError(f"--executor {self.executor!r}: choose from auto, {', '.join(EXECUTORS)}")
        if self.workers < 1 or self.chunksize < 1:
            raise JetTaggerError(
                f"--workers and --chunksize must be >= 1 (got {self.workers}, {self.chunksize})"
            )

    def resolved(self, events: int) -> Execution:
        """``auto``: a small job is fastest in one process (no cluster start-up, no transfers)."""
        if self.executor != "auto":
            return self
        small = events <= AUTO_ITERATIVE_EVENTS or (self.scheduler is None and self.workers == 1)
        log.info("executor auto -> %s (%d events)", "iterative" if small else "dask", events)
        return dataclasses.replace(self, executor="iterative" if small else "dask")


def run_fileset(
    bundle: str | Path | Bundle | None,
    fileset: dict[str, Any],
    *,
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
    ``processor_options`` go to :class:`TaggerProcessor` (selection, backend, padding, ...).

    Stages: options and files checked before any work (:func:`.fileset.preflight`), the executor chosen
    by the job's size, the processor run (:func:`_execute`), then normalisation and accounting."""
    plan = Execution(executor, workers, scheduler, chunksize, skip_bad_files, progress)
    if lumi is not None and lumi <= 0:
        raise JetTaggerError(f"--lumi must be > 0 (pb^-1), got {lumi}")
    fileset = check_fileset(fileset)
    metadata = {ds: spec.get("metadata", {}) for ds, spec in fileset.items()}
    proc = TaggerProcessor(bundle, datasets=metadata, **processor_options)
    config, preset = proc.tagger.config, proc.tagger.preset
    fileset, skipped = preflight(
        fileset, skip_bad_files, check=lambda tree, path: check_events(Events(tree, path), config, preset)
    )
    expected = {ds: spec.pop("events") for ds, spec in fileset.items()}
    runs_sumw = {ds: spec.pop("sumw") for ds, spec in fileset.items()}
    sources = [
        f"{p.name} ({p.layout})" for spec in fileset.values() for p in spec.pop("sources").values() if p
    ]
    plan = plan.resolved(sum(sum(f.values()) for f in expected.values()))
    rntuples = [p for spec in fileset.values() for p in spec.pop("rntuple")]
    if rntuples and plan.executor == "dask-awkward":  # uproot.dask: RNTuple fields have no titles for docs
        raise JetTaggerError(
            f"{rntuples[0]} is an RNTuple, which the dask-awkward executor cannot read with this coffea and "
            "uproot: use --executor iterative, futures or dask"
        )
    for spec in fileset.values():
        spec.pop("metadata", None)
    if not fileset:
        raise JetTaggerError("no readable file in the fileset: " + "; ".join(s["file"] for s in skipped))
    start = time.perf_counter()
    out = _execute(proc, fileset, plan)
    _account(out, metadata, runs_sumw, lumi, expected, skipped)
    out["meta"] = _meta(proc, plan, expected, lumi, sources, time.perf_counter() - start)
    return out


def _meta(
    proc: TaggerProcessor,
    plan: Execution,
    expected: dict[str, dict[str, int]],
    lumi: float | None,
    sources: list[str],
    seconds: float,
) -> dict[str, Any]:
    """What ran: model, classes, executor, selection, working points, source presets, time."""
    return {
        "events_in_readable_files": {ds: sum(f.values()) for ds, f in expected.items()},
        "model": proc.tagger.bundle.name,
        "classes": proc.tagger.classes,
        "executor": plan.executor,
        "workers": plan.workers,
        "chunksize": plan.chunksize,
        "seconds": seconds,
        "discriminants": proc.tagger.bundle.discriminants,
        "working_points": proc.wps,
        "selection": dataclasses.asdict(proc.selection),
        "lumi": lumi,
        "sources": {name: sources.count(name) for name in dict.fromkeys(sources)},
    }


def _cluster(plan: Execution) -> tuple[Any, Any]:
    """A client of the external scheduler, or of a local cluster started here (one thread per worker)."""
    from distributed import Client, LocalCluster

    if plan.scheduler:
        return Client(plan.scheduler), None
    cluster = LocalCluster(
        n_workers=plan.workers, threads_per_worker=1, processes=True, dashboard_address=None
    )
    return Client(cluster), cluster


def _execute(proc: TaggerProcessor, fileset: dict[str, Any], plan: Execution) -> dict[str, Any]:
    """The processor's accumulated output under one executor (a local cluster is started and closed here)."""
    client = cluster = None
    try:
        if plan.executor in ("dask", "dask-awkward"):
            client, cluster = _cluster(plan)
        if plan.executor == "dask-awkward":
            return _apply_to_fileset(proc, fileset, plan, client)
        return _runner(proc, fileset, plan, client)
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()


def _apply_to_fileset(proc: TaggerProcessor, fileset: dict[str, Any], plan: Execution, client: Any) -> Any:
    """dask-awkward: coffea's preprocess and ``apply_to_fileset``, one graph computed on the cluster."""
    import dask
    from coffea import processor
    from coffea.dataset_tools import apply_to_fileset, preprocess

    configure_dask()  # preprocess's own graph needs it too
    # no saved form: coffea builds it with uproot.dask, which takes TTrees only (RNTuples fail there);
    # apply_to_fileset reads each file's form itself
    available, _ = preprocess(
        fileset, step_size=plan.chunksize, skip_bad_files=plan.skip_bad_files, save_form=False
    )
    graph = apply_to_fileset(proc, available, schemaclass=PFNanoSchema)
    if plan.progress:
        from distributed import progress as dprogress

        futures = client.compute(graph)
        dprogress(futures)
        per_ds = client.gather(futures)
    else:
        (per_ds,) = dask.compute(graph)
    return processor.accumulate(list(per_ds.values()))


def _runner(proc: TaggerProcessor, fileset: dict[str, Any], plan: Execution, client: Any) -> Any:
    """coffea's Runner on the iterative, futures or dask executor."""
    from coffea import processor

    if plan.executor == "iterative":
        ex: Any = processor.IterativeExecutor(status=plan.progress)
    elif plan.executor == "futures":
        ex = processor.FuturesExecutor(workers=plan.workers, status=plan.progress)
    else:
        ex = processor.DaskExecutor(client=client, status=plan.progress)
    # with skipping on, any failure of a chunk skips it; the accounting names the file
    skip = (Exception,) if plan.skip_bad_files else False
    runner = processor.Runner(ex, schema=PFNanoSchema, chunksize=plan.chunksize, skipbadfiles=skip)
    try:
        return runner(fileset, proc, treename="Events")
    except Exception as err:
        raise JetTaggerError(f"processing failed: {err}") from err


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
