"""The main job's execution: a tagger bundle over a checked fileset on an executor (coffea's Runner with
iterative / futures / dask, or dask-awkward's ``apply_to_fileset``), then normalisation and the accounting
of every event that was not processed."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import JetTaggerError
from .analysis import cutflow
from .bundle import Bundle
from .columnar import configure_dask
from .fileset import check_fileset, preflight
from .nanoevents import PFNanoSchema
from .preparation import FileCache, ModelCheck, steps
from .processor import ALL_FILES, TaggerProcessor
from .shipping import models_of, shipped

log = logging.getLogger(__name__)
EXECUTORS = ("iterative", "futures", "dask", "dask-awkward")
#: the local workers' heap: buffers above 32 MB from mmap, not every one above dask's 128 KiB trim threshold
#: (an open of a wide PFNano file, ~3600 copies of metadata, cost 3x the CPU on a worker without it)
WORKER_ENV = {"MALLOC_MMAP_THRESHOLD_": "33554432"}
#: ``executor="auto"`` runs jobs up to this many events in one process
AUTO_ITERATIVE_EVENTS = 20_000


@dataclasses.dataclass(frozen=True)
class Execution:
    """Where and how the processor runs: the executor, its workers (or an existing cluster: a scheduler's
    address, or a ``distributed.Client`` — dask-gateway, coffea-casa, dask-jobqueue — which is left open),
    events per chunk, whether failing files and chunks are skipped, and progress bars."""

    executor: str = "dask"
    workers: int = 2
    scheduler: str | None = None
    chunksize: int = 100_000
    skip_bad_files: bool = False
    progress: bool = True
    client: Any = None

    def __post_init__(self) -> None:
        if self.executor not in (*EXECUTORS, "auto"):
            raise JetTaggerError(f"--executor {self.executor!r}: choose from auto, {', '.join(EXECUTORS)}")
        if self.workers < 1 or self.chunksize < 1:
            raise JetTaggerError(
                f"--workers and --chunksize must be >= 1 (got {self.workers}, {self.chunksize})"
            )

    def resolved(self, events: int) -> Execution:
        """``auto``: a small job is fastest in one process (no cluster start-up, no transfers), unless a
        cluster is given (a scheduler or a client): then it runs there, whatever its size."""
        if self.executor != "auto":
            return self
        external = self.scheduler is not None or self.client is not None
        small = not external and (events <= AUTO_ITERATIVE_EVENTS or self.workers == 1)
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
    client: Any = None,
    **processor_options: Any,
) -> dict[str, Any]:
    """Run :class:`TaggerProcessor` over ``fileset``; the same histograms in every mode. ``client``: a
    ``distributed.Client`` of an existing cluster (the dask executors run there; it is not closed); the
    model's bytes go once to each of its workers (:func:`.shipping.shipped`). With ``lumi``
    (pb^-1), simulated datasets with ``metadata.xsec`` are scaled to xsec x lumi / sum of genWeight.
    ``processor_options`` go to :class:`TaggerProcessor` (selection, backend, padding, ...).

    Stages: options and files checked before any work (:func:`.fileset.preflight`), the executor chosen
    by the job's size, the processor run (:func:`_execute`), then normalisation and accounting."""
    plan = Execution(executor, workers, scheduler, chunksize, skip_bad_files, progress, client)
    if client is not None and scheduler is not None:
        raise JetTaggerError("give a scheduler address or a client, not both")
    if lumi is not None and lumi <= 0:
        raise JetTaggerError(f"--lumi must be > 0 (pb^-1), got {lumi}")
    fileset = check_fileset(fileset)
    metadata = {ds: spec.get("metadata", {}) for ds, spec in fileset.items()}
    proc = TaggerProcessor(bundle, datasets=metadata, **processor_options)
    with _external(plan) as plan:
        on_cluster = plan.client is not None and plan.executor in ("auto", "dask", "dask-awkward")
        files = CheckedFiles.of(fileset, proc, plan, client=plan.client if on_cluster else None)
        plan = plan.resolved(sum(sum(f.values()) for f in files.expected.values()))
        if files.rntuples and plan.executor == "dask-awkward":  # uproot.dask: RNTuple fields have no titles
            raise JetTaggerError(
                f"{files.rntuples[0]} is an RNTuple, which the dask-awkward executor cannot read with this "
                "coffea and uproot: use --executor iterative, futures or dask"
            )
        start = time.perf_counter()
        out, shipping = _execute(proc, files.to_run(), plan)
    _account(out, metadata, files, lumi)
    out["meta"] = _meta(proc, plan, files.expected, lumi, files.sources, time.perf_counter() - start)
    out["meta"]["shipping"] = shipping
    return out


@dataclasses.dataclass
class CheckedFiles:
    """The fileset after :func:`.fileset.preflight`: per dataset the readable files and their events
    (``expected``, files with 0 events included), Runs' genEventSumw per file, the ROOT file UUIDs, the
    source presets, the RNTuples, the files skipped and the warnings (files listed twice), and the
    events per chunk the files are cut into (:meth:`to_run`)."""

    trees: dict[str, dict[str, str]]
    expected: dict[str, dict[str, int]]
    runs_sumw: dict[str, dict[str, float | None]]
    uuids: dict[str, dict[str, str | None]]
    sources: list[str]
    rntuples: list[str]
    skipped: list[dict[str, Any]]
    warnings: list[str]
    chunksize: int = 100_000

    @classmethod
    def of(
        cls,
        fileset: dict[str, Any],
        proc: TaggerProcessor,
        plan: Execution,
        *,
        client: Any = None,
        cache: bool = True,
    ) -> CheckedFiles:
        """Every file prepared once (on ``client``'s workers when given, see :func:`.fileset.preflight`),
        from the user's file cache where a file is unchanged (:class:`.preparation.FileCache`; ``cache``
        False, or ``JETTAGGER_CACHE=off``: every file opened)."""
        check = ModelCheck(proc.tagger.config, proc.tagger.preset)
        good, skipped = preflight(
            fileset,
            plan.skip_bad_files,
            check=check,
            client=client,
            cache=FileCache.user() if cache else None,
        )
        checked = cls(
            trees={ds: spec["files"] for ds, spec in good.items()},
            expected={ds: spec["events"] for ds, spec in good.items()},
            runs_sumw={ds: spec["sumw"] for ds, spec in good.items()},
            uuids={ds: spec["uuid"] for ds, spec in good.items()},
            sources=[f"{p.name} ({p.layout})" for s in good.values() for p in s["sources"].values() if p],
            rntuples=[p for spec in good.values() for p in spec["rntuple"]],
            skipped=skipped,
            warnings=[w for spec in good.values() for w in spec["duplicates"]],
            chunksize=plan.chunksize,
        )
        if not good:
            raise JetTaggerError("no readable file in the fileset: " + "; ".join(s["file"] for s in skipped))
        if not checked.to_run():
            raise JetTaggerError(
                "no events to process: every readable file has 0 events ("
                + ", ".join(p for files in checked.trees.values() for p in files)
                + ")"
            )
        for w in checked.warnings:
            log.warning(w)
        return checked

    def to_run(self) -> dict[str, dict[str, Any]]:
        """What the executor reads, in coffea's preprocessed layout (``dataset_tools``: per file its
        ``object_path``, ``steps``, ``num_entries`` and ``uuid``), so that neither the Runner nor
        ``apply_to_fileset`` opens a file to prepare it again. Files with events only (a file with 0
        events has no chunk; it is counted with 0 events by :func:`_account`)."""
        run = {
            ds: {
                p: {
                    "object_path": t,
                    "steps": steps(self.expected[ds][p], self.chunksize),
                    "num_entries": self.expected[ds][p],
                    "uuid": self.uuids[ds][p] or "",
                }
                for p, t in files.items()
                if self.expected[ds][p] > 0
            }
            for ds, files in self.trees.items()
        }
        return {ds: {"files": files} for ds, files in run.items() if files}


def _uuid_bytes(text: str) -> bytes:
    """A ROOT file UUID as the Runner's chunks carry it (empty where the file has none)."""
    return uuid.UUID(text).bytes if text else b""


def _work_items(fileset: dict[str, dict[str, Any]]) -> list[Any]:
    """The Runner's chunks of a preprocessed fileset (:meth:`CheckedFiles.to_run`), in file order: with
    pre-made chunks coffea's Runner opens no file for metadata."""
    from coffea.processor.executor import WorkItem

    return [
        WorkItem(ds, path, f["object_path"], start, stop, _uuid_bytes(f["uuid"]), {})
        for ds, spec in fileset.items()
        for path, f in spec["files"].items()
        for start, stop in f["steps"]
    ]


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


@contextlib.contextmanager
def _external(plan: Execution) -> Iterator[Execution]:
    """The plan with a client of its external scheduler, connected before the files are prepared (they
    are prepared on its workers, where the job reads them) and closed at the end; else as it is."""
    if plan.scheduler is None or plan.executor not in ("auto", "dask", "dask-awkward"):
        yield plan
        return
    from distributed import Client

    try:
        client = Client(plan.scheduler, timeout="30s")
    except OSError as err:
        raise JetTaggerError(f"cannot reach the dask scheduler {plan.scheduler}: {err}") from None
    try:
        yield dataclasses.replace(plan, client=client, scheduler=None)
    finally:
        client.close()


def _cluster(plan: Execution) -> tuple[Any, Any, bool]:
    """A client (the caller's or the external scheduler's, see :func:`_external`, or one of a local
    cluster started here, one thread per worker), the cluster started here, and whether the client is
    someone else's (left open)."""
    from distributed import Client, LocalCluster

    if plan.client is not None:
        return plan.client, None, True
    # the workers are started ignoring SIGINT (inherited): Ctrl-C in a terminal reaches the whole process
    # group, and only this process handles it (one line, the cluster closed in order)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main_thread else None
    try:
        cluster = LocalCluster(  # no dashboard; its HTTP server on a free port (no "8787 in use" warning)
            n_workers=plan.workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            scheduler_kwargs={"dashboard_address": ":0"},
            env=WORKER_ENV,
        )
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, previous)
    return Client(cluster), cluster, False


def _execute(
    proc: TaggerProcessor, fileset: dict[str, Any], plan: Execution
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The processor's accumulated output under one executor (a local cluster is started and closed
    here), and what was shipped: on a cluster the model's bytes once per worker, the processor per task."""
    if plan.executor not in ("dask", "dask-awkward"):
        return _run_on(proc, fileset, plan, None), _shipping(proc, None, plan.executor == "futures")
    client, cluster, callers = _cluster(plan)
    try:
        with shipped(client, proc) as sent:
            report = _shipping(proc, sent, True)
            return _run_on(proc, fileset, plan, client), report
    finally:
        if not callers:
            client.close()
        if cluster is not None:
            cluster.close()


def _run_on(proc: TaggerProcessor, fileset: dict[str, Any], plan: Execution, client: Any) -> Any:
    if plan.executor == "dask-awkward":
        return _apply_to_fileset(proc, fileset, plan, client)
    return _runner(proc, fileset, plan, client)


def _shipping(proc: TaggerProcessor, sent: dict[str, Any] | None, tasks: bool) -> dict[str, Any]:
    """Bytes that travel to other processes: the processor as pickled for a task (the model inside it,
    unless it went to each worker once: ``model_bytes_per_worker``); none in one process."""
    import cloudpickle

    return {
        "processor_bytes_per_task": len(cloudpickle.dumps(proc)) if tasks else None,
        "model_bytes_per_worker": None if sent is None else sent["model_bytes"],
        "models": [m.name for m in models_of(proc)],
    }


def _apply_to_fileset(proc: TaggerProcessor, fileset: dict[str, Any], plan: Execution, client: Any) -> Any:
    """dask-awkward: coffea's ``apply_to_fileset`` on the preprocessed fileset (:meth:`CheckedFiles.to_run`,
    as coffea's ``DataGroupSpec``), one graph computed on the cluster.

    The graph is a dict of datasets, each a dict of dask-histogram and dask-awkward collections: they are
    unpacked into one list of collections (each optimised by its own library) before ``client.compute``;
    the dict itself would become one ``Delayed``, whose graph cull fails on dask-histogram's layers
    (``KeyError: 'empty-histogram-...'``)."""
    from coffea import processor
    from coffea.dataset_tools import apply_to_fileset
    from dask.base import unpack_collections

    configure_dask()
    # no saved form: apply_to_fileset reads the first file's form itself (coffea's form comes from
    # uproot.dask, which takes TTrees only)
    try:
        from coffea.dataset_tools import DataGroupSpec
    except ImportError:  # coffea before its pydantic filesets takes the preprocessed dict itself
        available: Any = fileset
    else:
        available = DataGroupSpec.model_validate(fileset)
    graph = apply_to_fileset(proc, available, schemaclass=PFNanoSchema)
    collections, repack = unpack_collections(graph)
    futures = client.compute(list(collections))
    if plan.progress:
        from distributed import progress as dprogress

        dprogress(futures)
    (per_ds,) = repack(client.gather(futures))
    return processor.accumulate(list(per_ds.values()))


#: retries of a failing chunk: none (a deterministic failure fails, or with --skip-bad-files is skipped,
#: once); a worker that dies is replaced by dask's scheduler (``distributed.scheduler.allowed-failures``)
RETRIES = 0


def _runner(proc: TaggerProcessor, fileset: dict[str, Any], plan: Execution, client: Any) -> Any:
    """coffea's Runner on the iterative, futures or dask executor, over pre-made chunks
    (:func:`_work_items`: no file is opened again for its metadata). A file is opened once per worker
    and kept for its next chunks (:class:`.reading.ReusingRunner`), with only the branches the processor
    reads in its events (:meth:`.TaggerProcessor.branch_filter`), and with :func:`.remote.uproot_options`:
    a URL's reads have a timeout and only their transient failures are retried, per read, where they
    happen (dask workers unpickle the same source class); a chunk that fails otherwise is not retried
    (``RETRIES``). The iterative executor's files are closed at the end (they were this process's)."""
    from coffea import processor

    from . import reading
    from .remote import uproot_options

    if plan.executor == "iterative":
        ex: Any = processor.IterativeExecutor(status=plan.progress, retries=RETRIES)
    elif plan.executor == "futures":
        ex = processor.FuturesExecutor(workers=plan.workers, status=plan.progress, retries=RETRIES)
    else:
        ex = processor.DaskExecutor(client=client, status=plan.progress, retries=RETRIES)
    # with skipping on, any failure of a chunk skips it; the accounting names the file
    skip = (Exception,) if plan.skip_bad_files else False
    options = uproot_options()
    runner = reading.ReusingRunner(
        ex,
        schema=PFNanoSchema,
        chunksize=plan.chunksize,
        skipbadfiles=skip,
        xrootdtimeout=options.pop("timeout"),
    )
    names = proc.branch_filter()
    try:
        return runner(
            _work_items(fileset),
            proc,
            uproot_options=options,
            iteritems_options={} if names is None else {"filter_name": names},
        )
    except Exception as err:
        raise JetTaggerError(f"processing failed: {' '.join(str(err).split())}") from err  # one line
    finally:
        if plan.executor == "iterative":
            reading.close_all()


def _account(out: dict[str, Any], metadata: dict[str, Any], files: CheckedFiles, lumi: float | None) -> None:
    """Normalisation, per-jet columns in file order, cutflow, warnings and every event not processed."""
    _count_every_file(out["hists"]["counts"], files.expected)
    out["normalisation"] = normalise(out["hists"], metadata, files.runs_sumw, lumi)
    scale = {ds: n["factor"] for ds, n in out["normalisation"].items()}
    if "jets" in out:  # per-jet columns: chunks in file order, weights normalised like the histograms
        cols = {k: np.concatenate(v) for k, v in out["jets"].items()}
        order = np.lexsort((cols["jet_index"], cols["entry"], cols["file"], cols["dataset"]))
        cols = {k: v[order] for k, v in cols.items()}
        cols["weight"] = cols["weight"] * np.array([scale.get(d, 1.0) for d in cols["dataset"]])
        out["jets"] = cols
    out["cutflow"] = cutflow(out["hists"], scale)
    empty = [
        _no_jets(ds, c, files.expected[ds]) for ds, c in out["cutflow"].items() if c["selected_jets"] == 0
    ]
    for w in empty:
        log.warning(w)
    out["warnings"] = [*files.warnings, *empty]
    out["skipped"] = files.skipped + _not_processed(out["hists"]["counts"], out["cutflow"], files.expected)


def _no_jets(ds: str, row: dict[str, float], events: dict[str, int]) -> str:
    """The warning for a dataset without selected jets: no events in its files, none processed, or the
    selection."""
    if not sum(events.values()):
        return f"dataset {ds!r}: no events (its {len(events)} readable file(s) hold 0 events)"
    if not row["events"]:
        return f"dataset {ds!r}: no events processed (its chunks failed, see skipped)"
    jets = f"{row['fatjets']} FatJets in {row['events']} events"
    return f"dataset {ds!r}: the selection removed every jet ({jets})"


def _count_every_file(counts: Any, expected: dict[str, dict[str, int]]) -> None:
    """Every readable file in the counts histogram, files with 0 events (never read) included, so that
    the cutflow has a row for every dataset (zeros for one without events)."""
    files = set(counts.axes["file"])
    per_file = ALL_FILES not in files  # dask-awkward counts per dataset only
    for ds, events in expected.items():
        for path in events if per_file else [ALL_FILES]:
            counts.fill(dataset=ds, file=path, step="events", quantity="raw", unit=0.5, weight=0.0)


def _not_processed(
    counts: Any, rows: dict[str, dict[str, float]], expected: dict[str, dict[str, int]]
) -> list[dict[str, Any]]:
    """Per file (per dataset under dask-awkward) the events of chunks that failed after the preflight and
    were skipped by coffea."""
    lost = []
    for ds, files in expected.items():
        if ALL_FILES in counts.axes["file"]:  # dask-awkward: per dataset only
            got, n = rows[ds]["events"], sum(files.values())
            if got != n:
                lost.append({"dataset": ds, "file": None, "error": "chunks failed", "events": n - got})
            continue
        for path, n in files.items():
            sel = {"dataset": ds, "file": path, "step": "events", "quantity": "raw"}
            got = round(counts[sel].sum(flow=True).value)
            if got != n:
                lost.append(
                    {
                        "dataset": ds,
                        "file": path,
                        "error": "chunk(s) failed during processing",
                        "events": n - got,
                    }
                )
    return lost


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
