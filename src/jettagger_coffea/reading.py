"""Files kept open between the chunks of one worker. coffea's Runner opens a file for every chunk, and a
PFNano ``Events`` tree is ~1800 TBranch objects to deserialise (~0.4 s an open): here each process keeps
its last few files open (:data:`OPEN_FILES`), so that a file's later chunks take its TTree from uproot's
object cache. :class:`ReusingRunner` is coffea's Runner with a work function that opens files through
:func:`directory`; the processor says which branches it reads (``iteritems_options``), which shrinks
the per-chunk NanoEvents form to those.

A handle is reused only for the same file: path, ROOT file UUID and, for a local file, its modification
time and size (a rewritten file is opened again). A chunk that fails closes its file's handle, so that
the next chunk (or coffea's retry) opens it afresh: a remote file's reads are retried where they happen
(:mod:`.remote`), and a handle that failed is never trusted again."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import threading
import uuid
from pathlib import Path
from typing import Any

import uproot
from coffea import processor
from coffea.nanoevents import NanoEventsFactory

from .remote import is_remote

#: open files per thread of a process (a dask worker's thread, the caller of the iterative executor);
#: the least recently used one is closed when another is opened
OPEN_FILES = 4

_LOCK = threading.Lock()
#: per thread: (path, file UUID, local file stamp, options) -> open ReadOnlyDirectory, oldest first
_OPEN: dict[int, collections.OrderedDict[tuple[Any, ...], Any]] = {}


def _stamp(path: str) -> tuple[int, int] | None:
    """A local file's (mtime in ns, size): a rewritten file gets a new handle. None for a URL, or a file
    that cannot be stat-ed (its open then names the error)."""
    if is_remote(path):
        return None
    try:
        st = Path(path.removeprefix("file://")).stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def acquire(path: str, fileuuid: str, options: dict[str, Any]) -> tuple[tuple[Any, ...], Any]:
    """The file's key and root directory, open: this thread's handle where it has one for this file (it
    is taken out of the cache until :func:`release`), else ``uproot.open(path, **options)``."""
    key = (path, fileuuid, _stamp(path), tuple(sorted((k, repr(v)) for k, v in options.items())))
    with _LOCK:
        handle = _OPEN.setdefault(threading.get_ident(), collections.OrderedDict()).pop(key, None)
    if handle is None or handle.closed:
        handle = uproot.open({path: None}, **options)
    return key, handle


def release(key: tuple[Any, ...], handle: Any, keep: bool) -> None:
    """After a chunk: the handle kept for the file's next chunk (the thread's oldest one closed beyond
    :data:`OPEN_FILES`), or closed (``keep`` False: the chunk failed; or :data:`OPEN_FILES` is 0)."""
    if not keep or OPEN_FILES < 1:
        _close(handle)
        return
    with _LOCK:
        mine = _OPEN.setdefault(threading.get_ident(), collections.OrderedDict())
        mine[key] = handle
        while len(mine) > OPEN_FILES:
            _close(mine.popitem(last=False)[1])


def close_all() -> int:
    """Close every handle this process keeps (at the end of a run in the caller's process); how many
    there were."""
    with _LOCK:
        handles = [h for mine in _OPEN.values() for h in mine.values()]
        _OPEN.clear()
    for h in handles:
        _close(h)
    return len(handles)


def open_count() -> int:
    """Handles open in this process."""
    with _LOCK:
        return sum(len(mine) for mine in _OPEN.values())


def _close(handle: Any) -> None:
    with contextlib.suppress(Exception):  # a dead remote handle: nothing left to release
        handle.close()


class ChunkFailed(Exception):
    """A chunk that could not be opened or processed, worded as coffea's Runner words it (the chunk, then
    the error), with the error as its cause (coffea's ``skipbadfiles`` looks along the chain)."""


@dataclasses.dataclass
class ReusingRunner(processor.Runner):
    """coffea's Runner whose chunks open their file through :func:`acquire` (TTree or RNTuple, local or
    URL). Options this project does not use (parquet, dataframes, metrics, a checkpointer) are refused."""

    def __post_init__(self) -> None:
        super().__post_init__()
        unused = {
            "format": self.format != "root",
            "use_dataframes": self.use_dataframes,
            "savemetrics": self.savemetrics,
            "checkpointer": self.checkpointer is not None,
        }
        if any(unused.values()):
            raise ValueError(f"ReusingRunner does not take {', '.join(k for k, v in unused.items() if v)}")

    @staticmethod
    def _work_function(
        format: str,
        xrootdtimeout: int,
        schema: Any,
        use_dataframes: bool,
        savemetrics: bool,
        item: Any,
        processor_instance: Any,
        uproot_options: dict[str, Any],
        iteritems_options: dict[str, Any],
        checkpointer: Any,
        cache_function: Any,
    ) -> dict[str, Any]:
        """One chunk (the Runner's contract: the same arguments; ``"heavy"``: dask's item is the pair
        (chunk, processor); a processor as bytes is lz4-compressed cloudpickle), its output and the chunk
        as processed."""
        _ = (format, use_dataframes, savemetrics, checkpointer)  # (the contract's; refused at construction)
        if isinstance(processor_instance, str) and processor_instance == "heavy":
            item, processor_instance = item
        if isinstance(processor_instance, bytes):
            import cloudpickle
            import lz4.frame

            processor_instance = cloudpickle.loads(lz4.frame.decompress(processor_instance))
        # no array cache: a kept file's arrays of one chunk are never asked for again
        options = {"timeout": xrootdtimeout, "array_cache": None, **uproot_options}
        fileuuid = str(uuid.UUID(bytes=item.fileuuid)) if item.fileuuid else ""
        try:
            key, file = acquire(item.filename, fileuuid, options)
        except Exception as e:
            raise ChunkFailed(f"Failed to open file: {item!r}. The error was: {e!r}.") from e
        done, buffers = False, cache_function()
        try:
            out = _process(file, item, fileuuid, schema, processor_instance, iteritems_options, buffers)
            done = True
        except Exception as e:
            raise ChunkFailed(f"Failed processing file: {item!r}. The error was: {e!r}.") from e
        finally:
            release(key, file, keep=done)
        if out is None:
            raise ValueError(f"{type(processor_instance).__name__}.process returned None, not an accumulator")
        return {"out": out, "processed": {item}}


def _process(
    file: Any,
    item: Any,
    fileuuid: str,
    schema: Any,
    proc: Any,
    iteritems_options: dict[str, Any],
    buffer_cache: Any,
) -> Any:
    """The chunk's virtual NanoEvents from the open file, processed."""
    metadata = {
        "dataset": item.dataset,
        "filename": item.filename,
        "treename": item.treename,
        "entrystart": item.entrystart,
        "entrystop": item.entrystop,
        "fileuuid": fileuuid,
        **(item.usermeta or {}),
    }
    events = NanoEventsFactory.from_root(
        file=file,
        treepath=item.treename,
        schemaclass=schema,
        metadata=metadata,
        mode="virtual",
        entry_start=item.entrystart,
        entry_stop=item.entrystop,
        iteritems_options=iteritems_options,
        preload=item.preload,
        buffer_cache=buffer_cache,
    ).events()
    return proc.process(events) if isinstance(proc, processor.ProcessorABC) else proc(events)
