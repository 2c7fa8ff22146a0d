"""A batch-system dask cluster (HTCondor, SLURM) from a small YAML, through dask-jobqueue (the `jobqueue`
extra, imported only when a cluster or its job script is made).

The YAML is data: every key is known (an unknown one, or one of the other batch system, is refused naming the
key and the file), typed and bounded. Each job runs ``cores`` dask worker processes of one thread each (the
taggers' inference is one thread per process, as in :mod:`.execution`'s local cluster); ``memory`` is the
job's, shared by its workers. A worker needs only the core install (no torch, no dask-jobqueue); it opens
the bundle and the files at the paths they have here (docs/clusters.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from ._errors import JetTaggerError

log = logging.getLogger(__name__)

KINDS = ("htcondor", "slurm")
#: bounds on a cluster YAML: its size, the jobs it may ask for, the cores (= workers) per job, entries of
#: a list or map, characters of a text
MAX_FILE_BYTES = 64 * 1024
MAX_JOBS = 2000
MAX_CORES = 256
MAX_ITEMS = 64
MAX_TEXT = 2048
MAX_BYTES = 4 * 2**40  # memory or disk per job: 4 TiB
#: the scheduler address in a job script printed before any scheduler runs (dask-jobqueue's own)
PLACEHOLDER_ADDRESS = "tcp://<insert-scheduler-address-here>:8786"

_COMMON = (
    "kind",
    "jobs",
    "cores",
    "memory",
    "python",
    "job_script_prologue",
    "job_extra_directives",
    "log_directory",
    "local_directory",
    "interface",
    "scheduler_host",
    "scheduler_port",
)
_ONLY = {"htcondor": ("disk",), "slurm": ("walltime", "queue", "account")}
_REQUIRED = {
    "htcondor": ("kind", "jobs", "cores", "memory", "disk"),
    "slurm": ("kind", "jobs", "cores", "memory"),
}
#: HTCondor has no walltime, queue or account keyword: submit commands say it
_HTCONDOR_HINT = (
    "on HTCondor it is a submit command in job_extra_directives "
    "(e.g. +MaxRuntime: 3600, +JobFlavour: '\"longlunch\"', +AccountingGroup: '\"group_u_X.user\"')"
)
_WALLTIME = re.compile(r"^(\d{1,3}-)?\d{1,4}(:\d{2}){0,2}$")  # SLURM: MM, MM:SS, HH:MM:SS, D-HH[:MM[:SS]]
_CONDOR_NAME = re.compile(r"^[+A-Za-z_][A-Za-z0-9_.+]*$")


@dataclasses.dataclass(frozen=True)
class ClusterSpec:
    """A validated cluster YAML. ``job_extra_directives``: submit-file commands for HTCondor (name -> value,
    written as given: a ClassAd string keeps its quotes), ``#SBATCH`` lines for SLURM."""

    kind: str
    jobs: int
    cores: int
    memory: str
    disk: str | None = None
    walltime: str | None = None
    queue: str | None = None
    account: str | None = None
    python: str | None = None
    job_script_prologue: tuple[str, ...] = ()
    job_extra_directives: dict[str, str] | tuple[str, ...] = ()
    log_directory: str | None = None
    local_directory: str | None = None
    interface: str | None = None
    scheduler_host: str | None = None
    scheduler_port: int = 0
    source: str = "<dict>"

    @classmethod
    def from_dict(cls, opts: Any, source: str = "<dict>") -> ClusterSpec:
        """Every key checked against its kind, type and bounds; each error names ``source`` and the key."""
        if not isinstance(opts, Mapping):
            raise JetTaggerError(f"{source}: a cluster config is a mapping (kind, jobs, cores, memory, ...)")
        kind = opts.get("kind")
        if kind not in KINDS:
            raise JetTaggerError(f"{source}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
        _check_keys(opts, kind, source)
        field = _Fields(opts, source)
        directives: dict[str, str] | tuple[str, ...]
        if kind == "htcondor":
            directives = field.condor_directives("job_extra_directives")
        else:
            directives = field.lines("job_extra_directives")
        return cls(
            kind=kind,
            jobs=field.integer("jobs", 1, MAX_JOBS),
            cores=field.integer("cores", 1, MAX_CORES),
            memory=field.size("memory"),
            disk=field.size("disk") if "disk" in opts else None,
            walltime=field.walltime("walltime"),
            queue=field.text("queue"),
            account=field.text("account"),
            python=field.text("python"),
            job_script_prologue=field.lines("job_script_prologue"),
            job_extra_directives=directives,
            log_directory=field.text("log_directory"),
            local_directory=field.text("local_directory"),
            interface=field.text("interface"),
            scheduler_host=field.text("scheduler_host"),
            scheduler_port=field.integer("scheduler_port", 0, 65535) if "scheduler_port" in opts else 0,
            source=source,
        )

    @classmethod
    def from_yaml(cls, path: str | Path) -> ClusterSpec:
        path = Path(path)
        try:
            size = path.stat().st_size
            if size > MAX_FILE_BYTES:
                raise JetTaggerError(f"{path}: {size} bytes; a cluster config is at most {MAX_FILE_BYTES}")
            text = path.read_text()
        except OSError as err:
            raise JetTaggerError(f"cannot read cluster config {path}: {err.strerror}") from None
        try:
            opts = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise JetTaggerError(f"{path}: invalid YAML: {' '.join(str(err).split())}") from None
        return cls.from_dict(opts, source=str(path))

    @property
    def workers(self) -> int:
        """Dask workers once every job runs: ``cores`` one-thread workers per job."""
        return self.jobs * self.cores


def load_cluster_spec(path: str | Path) -> ClusterSpec:
    return ClusterSpec.from_yaml(path)


def _check_keys(opts: Mapping[str, Any], kind: str, source: str) -> None:
    """An unknown key, or one of the other batch system, refused naming it; a required one missing, too."""
    allowed = (*_COMMON, *_ONLY[kind])
    for key in opts:
        if key in allowed:
            continue
        other = next((k for k, keys in _ONLY.items() if key in keys), None)
        if other is not None:
            hint = f"; {_HTCONDOR_HINT}" if kind == "htcondor" else ""
            raise JetTaggerError(f"{source}: {key!r} is for kind {other}, not {kind}{hint}")
        raise JetTaggerError(f"{source}: unknown key {key!r} (allowed for {kind}: {', '.join(allowed)})")
    missing = [k for k in _REQUIRED[kind] if k not in opts]
    if missing:
        raise JetTaggerError(f"{source}: missing {', '.join(missing)} (required for kind {kind})")


@dataclasses.dataclass
class _Fields:
    """Typed, bounded reads of one cluster YAML's values (one error line naming the key each)."""

    opts: Mapping[str, Any]
    source: str

    def _bad(self, key: str, what: str, value: Any) -> JetTaggerError:
        shown = repr(value)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        return JetTaggerError(f"{self.source}: {key} must be {what}, got {shown}")

    def integer(self, key: str, low: int, high: int) -> int:
        value = self.opts.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise self._bad(key, f"an integer in {low}..{high}", value)
        return value

    def _string(self, key: str, value: Any, what: str = "a text") -> str:
        if not isinstance(value, str) or not value.strip() or len(value) > MAX_TEXT or "\n" in value.strip():
            raise self._bad(key, f"{what} of one line (at most {MAX_TEXT} characters)", value)
        return value.strip()

    def text(self, key: str) -> str | None:
        value = self.opts.get(key)
        return None if value is None else self._string(key, value)

    def size(self, key: str) -> str:
        """A size with its unit (``4GB``, ``2000MiB``): a bare number would be bytes, never what is meant."""
        from dask.utils import parse_bytes

        value = self.opts.get(key)
        what = "a size with its unit, e.g. '4GB'"
        if not isinstance(value, str):
            raise self._bad(key, what, value)
        try:
            n = parse_bytes(value)
        except ValueError:
            raise self._bad(key, what, value) from None
        if value.strip().isdigit() or not 0 < n <= MAX_BYTES:
            raise self._bad(key, f"{what}, above 0 and at most 4TiB", value)
        return value.strip()

    def walltime(self, key: str) -> str | None:
        """A SLURM time, quoted in the YAML (unquoted, YAML 1.1 reads ``2:00:00`` as the number 7200)."""
        raw = self.opts.get(key)
        value = None if raw is None or not isinstance(raw, str) else self.text(key)
        if raw is not None and (value is None or not _WALLTIME.match(value)):
            raise self._bad(key, "a quoted SLURM time, e.g. '02:00:00' (HH:MM:SS, MM or D-HH:MM:SS)", raw)
        return value

    def lines(self, key: str) -> tuple[str, ...]:
        value = self.opts.get(key)
        if value is None:
            return ()
        if not isinstance(value, list) or len(value) > MAX_ITEMS:
            raise self._bad(key, f"a list of at most {MAX_ITEMS} lines", value)
        return tuple(self._string(f"{key}[{i}]", line, "a line") for i, line in enumerate(value))

    def condor_directives(self, key: str) -> dict[str, str]:
        """Submit-file commands, ``name: value``; a value is written as given (numbers and booleans too)."""
        value = self.opts.get(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping) or len(value) > MAX_ITEMS:
            raise self._bad(key, f"a map of at most {MAX_ITEMS} submit commands (name: value)", value)
        out = {}
        for name, v in value.items():
            if not isinstance(name, str) or not _CONDOR_NAME.match(name):
                raise self._bad(f"{key} name", "a submit command or +Attribute name", name)
            if isinstance(v, (bool, int, float)):
                v = str(v)
            out[name] = self._string(f"{key}.{name}", v, "a value")
        return out


# -- dask-jobqueue ---------------------------------------------------------------------------------------
def _cluster_class(kind: str) -> Any:
    """dask-jobqueue's cluster class, imported here only: a missing package is one line naming the extra."""
    try:
        import dask_jobqueue
    except ModuleNotFoundError as err:
        if err.name != "dask_jobqueue":
            raise
        raise JetTaggerError(
            "a batch cluster needs the `jobqueue` extra (dask-jobqueue not installed): "
            "pip install 'jettagger-coffea[jobqueue]'"
        ) from None
    return dask_jobqueue.HTCondorCluster if kind == "htcondor" else dask_jobqueue.SLURMCluster


def job_kwargs(spec: ClusterSpec) -> dict[str, Any]:
    """The job's dask-jobqueue keywords: ``cores`` worker processes per job (``processes``), one thread
    each; what the YAML leaves out keeps dask-jobqueue's default (and a ``jobqueue.yaml`` of dask's
    config)."""
    kw: dict[str, Any] = {
        "cores": spec.cores,
        "processes": spec.cores,
        "memory": spec.memory,
        "job_script_prologue": list(spec.job_script_prologue),
        "job_extra_directives": (
            dict(spec.job_extra_directives)
            if isinstance(spec.job_extra_directives, dict)
            else list(spec.job_extra_directives)
        ),
    }
    optional = {
        "disk": spec.disk,
        "walltime": spec.walltime,
        "queue": spec.queue,
        "account": spec.account,
        "python": spec.python,
        "log_directory": spec.log_directory,
        "local_directory": spec.local_directory,
        "interface": spec.interface,
    }
    kw.update({k: v for k, v in optional.items() if v is not None})
    return kw


def job_script(spec: ClusterSpec) -> str:
    """The job script ``cluster.job_script()`` gives, with the scheduler address still a placeholder:
    built from the job class alone, so that printing it starts no scheduler and submits nothing."""
    job_cls = _cluster_class(spec.kind).job_cls
    return job_cls(PLACEHOLDER_ADDRESS, name="dummy-name", **job_kwargs(spec)).job_script()


def build_cluster(spec: ClusterSpec) -> Any:
    """The HTCondorCluster / SLURMCluster: its scheduler runs here, no job is submitted until ``scale``."""
    scheduler_options: dict[str, Any] = {"dashboard_address": ":0", "port": spec.scheduler_port}
    if spec.scheduler_host is not None:
        scheduler_options["host"] = spec.scheduler_host
    cls = _cluster_class(spec.kind)
    try:
        return cls(scheduler_options=scheduler_options, **job_kwargs(spec))
    except (ValueError, OSError, RuntimeError) as err:  # an interface or host this machine lacks, ...
        root: BaseException = err  # distributed wraps the cause ("Cluster failed to start: ...")
        while (inner := root.__cause__ or root.__context__) is not None:
            root = inner
        why = " ".join(str(root).split())
        raise JetTaggerError(
            f"{spec.source}: cannot start the {spec.kind} cluster's scheduler: {why}"
        ) from None


@contextlib.contextmanager
def cluster_client(spec: ClusterSpec) -> Iterator[Any]:
    """A ``distributed.Client`` of the cluster scaled to ``spec.jobs`` jobs; the jobs are cancelled and the
    scheduler closed on leaving (also on an error or Ctrl-C)."""
    from distributed import Client

    cluster = build_cluster(spec)
    try:
        cluster.scale(jobs=spec.jobs)
        log.info(
            "%s: %d %s jobs of %d one-thread workers; dashboard %s",
            spec.source,
            spec.jobs,
            spec.kind,
            spec.cores,
            cluster.dashboard_link,
        )
        with Client(cluster) as client:
            yield client
    finally:
        cluster.close()
