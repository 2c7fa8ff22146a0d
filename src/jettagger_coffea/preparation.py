"""Preparation where the files are: each file's pre-run check (:func:`.fileset.preflight`) as one task per
file on the dask workers when a client is given (else in this process), and a per-file cache on disk, so
that a second run over unchanged files opens none of them to prepare.

The cache lives in the user cache (:mod:`.cache`: ``$JETTAGGER_CACHE``, ``off`` turns it off), under
``files/``: one small JSON file per (file, tree, model check). An entry holds what
one open told (events, Runs' genEventSumw, RNTuple or not, ROOT file UUID, source preset) and the file's
stamp when it was opened: size, mtime, ctime and inode for a local file (``os.stat``), size and mtime for
a remote one (``fsspec`` info, taken where the files are). An entry is used only while the stamp is the
same; a file without a stamp (a remote store that tells no mtime) is opened every time. Entries are
written whole (a temporary file renamed into place); one that does not parse, or holds other fields, is
ignored and the file is opened again. Files that failed to open are never cached.

The chunking (``steps``) is not cached: it is computed from the cached event count by coffea's rule
(:func:`steps`), so another ``--chunksize`` needs no open either.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Generator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cache import cache_dir

if TYPE_CHECKING:
    from .sources import Preset

#: the layout of a cache entry; another value is a cache miss
FORMAT = 1


# -- what a file is checked against -------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ModelCheck:
    """``check(tree, path)`` for :func:`.fileset.preflight`: the file holds what the model reads through
    its source preset (:func:`.sources.check_events`); returns the preset member the file is read with.
    ``key`` names what the answer depends on, so that another model (or preset) re-checks a cached file."""

    config: Any
    preset: Preset

    def __call__(self, tree: Any, path: str) -> Preset:
        from .sources import Events, check_events

        return check_events(Events(tree, path), self.config, self.preset)

    @property
    def key(self) -> str:
        from . import __version__
        from .sources import _input_names, needed_branches, raw_columns

        what = {
            "version": __version__,
            "preset": self.preset.to_dict(),
            "raw": raw_columns(_input_names(self.config), self.config, self.preset),
            "branches": sorted(needed_branches(self.config, self.preset)),
        }
        return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:32]


def check_key(check: Any) -> str | None:
    """The cache key of a check: ``check.key``, ``"none"`` without a check, None (not cacheable) for a
    callable that does not say what it depends on."""
    if check is None:
        return "none"
    return getattr(check, "key", None)


# -- one file -------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Outcome:
    """What preparing one file gave: ``info`` (events, preset, sumw, rntuple, uuid) from an open, or
    ``cached`` (the stamp matched: not opened), or ``error`` (a file that cannot be read, with
    ``header_events`` where its header still says) or ``user_error`` (a readable file the model cannot
    read: never skipped)."""

    stamp: list[Any] | None = None
    info: tuple[int, Any, float | None, bool, str | None] | None = None
    cached: bool = False
    error: str | None = None
    user_error: str | None = None
    header_events: int | None = None


def stamp(path: str) -> list[Any] | None:
    """What changes when a file changes, read where the file is; None where it cannot be told."""
    try:
        if "://" not in path:
            st = Path(path).stat()
            return ["local", st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        import fsspec

        from . import remote

        # the remote timeout: an unreachable file costs one timeout here (then not cacheable; the open
        # names it), not a longer wait of its own
        remote.configure_xrootd_client()
        options = {"timeout": remote.REMOTE_TIMEOUT} if path.startswith(("root:", "roots:")) else {}
        fs, inner = fsspec.core.url_to_fs(path, **options)
        info = fs.info(inner)
    except Exception:  # noqa: BLE001 - no stamp: not cacheable; the open reports what is wrong
        return None
    if info.get("size") is None or info.get("mtime") is None:
        return None
    return ["remote", int(info["size"]), str(info["mtime"])]


def steps(num_entries: int, chunksize: int) -> list[list[int]]:
    """coffea's chunking of a file (``dataset_tools.preprocess`` and the Runner alike): the number of
    chunks nearest ``num_entries / chunksize`` (at least one), of equal size but the last."""
    if num_entries == 0:
        return [[0, 0]]
    n = max(round(num_entries / chunksize), 1)
    size = math.ceil(num_entries / n)
    return [[i * size, min((i + 1) * size, num_entries)] for i in range(n)]


@contextmanager
def heap_for_metadata() -> Generator[None, None, None]:
    """Large buffers from the heap while a file's metadata is read, where the process has glibc's
    adaptive mmap threshold switched off: dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_``
    set, and then every buffer over 128 KiB is a fresh ``mmap``; uproot copies the rest of a TTree's
    metadata buffer for each class name it reads (3600 times for a 1802-branch PFNano file), which
    tripled the CPU of an open on a worker (0.6 -> 1.8 s). The process's settings are restored after,
    and the heap trimmed. Elsewhere (other C libraries, the threshold adaptive) nothing is changed."""
    libc = _libc() if any(k in os.environ for k in _MALLOC_ENV) else None
    if libc is None:
        yield
        return
    libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
    libc.mallopt(_M_TRIM_THRESHOLD, 256 << 20)
    try:
        yield
    finally:
        libc.mallopt(_M_MMAP_THRESHOLD, _env_int("MALLOC_MMAP_THRESHOLD_", 128 << 10))
        libc.mallopt(_M_TRIM_THRESHOLD, _env_int("MALLOC_TRIM_THRESHOLD_", 128 << 10))
        libc.malloc_trim(0)


_MALLOC_ENV = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def _libc() -> Any:
    """glibc, where this process runs on it (``mallopt`` and ``malloc_trim``), else None."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


# -- the map ------------------------------------------------------------------------------------------
def ordered_map(
    task: Any, items: Sequence[tuple[Any, ...]], client: Any = None, **shared: Any
) -> Generator[Outcome, None, None]:
    """``task(*item, **shared)`` per item, results in the items' order: in this process one after the
    other (an error stops the rest unopened), or one dask task per item on ``client``'s workers (those
    not yet needed are cancelled when the caller stops early). ``shared`` is sent to the workers once."""
    if client is None:
        for item in items:
            yield task(*item, **shared)
        return
    sent = {
        k: v if isinstance(v, (bool, int, str, type(None))) else client.scatter(v, broadcast=True, hash=False)
        for k, v in shared.items()
    }
    futures = client.map(task, *zip(*items), pure=False, **sent) if items else []
    try:
        for fut in futures:
            try:
                yield fut.result()
            except Exception as err:  # noqa: BLE001 - a worker lost while opening the file: a bad file
                yield Outcome(error=f"{type(err).__name__}: {err}")
    finally:
        client.cancel(futures)


# -- the cache ----------------------------------------------------------------------------------------
class FileCache:
    """Per-file preparation results on disk (the module's docstring says where and when one is used)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @classmethod
    def user(cls) -> FileCache | None:
        """The user's cache (:func:`.cache.cache_dir`: ``$JETTAGGER_CACHE``, ``$XDG_CACHE_HOME``,
        ``~/.cache``); None where it is off."""
        folder = cache_dir("files")
        return None if folder is None else cls(folder.parent)

    def _file(self, path: str, tree: str, key: str) -> Path:
        name = hashlib.sha256(f"{path}\0{tree}\0{key}".encode()).hexdigest()
        return self.root / "files" / name[:2] / f"{name}.json"

    def get(self, path: str, tree: str, key: str) -> dict[str, Any] | None:
        """The entry for this file, tree and check, or None (absent, unreadable or not an entry)."""
        try:
            entry = json.loads(self._file(path, tree, key).read_text())
        except (OSError, ValueError):
            return None
        return entry if _is_entry(entry, path, tree, key) else None

    def put(self, path: str, tree: str, key: str, outcome: Outcome) -> None:
        """Keep an opened file's outcome (a cache that cannot be written is only slower next time)."""
        if outcome.info is None or outcome.stamp is None:
            return
        n, preset, sumw, rntuple, uuid = outcome.info
        entry = {
            "format": FORMAT,
            "file": path,
            "tree": tree,
            "check": key,
            "stamp": outcome.stamp,
            "events": n,
            "sumw": sumw,
            "rntuple": rntuple,
            "uuid": uuid,
            "preset": preset.to_dict() if preset is not None else None,
        }
        target = self._file(path, tree, key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".", suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                json.dump(entry, f)
            Path(tmp).replace(target)
        except OSError:
            return

    def info(self, entry: dict[str, Any]) -> tuple[int, Any, float | None, bool, str | None]:
        """An entry as :func:`.fileset._open_one` returns it (one Preset per distinct preset)."""
        from .sources import Preset

        raw = entry["preset"]
        preset = None
        if raw is not None:
            text = json.dumps(raw, sort_keys=True)
            preset = _PRESETS.get(text) or _PRESETS.setdefault(
                text, Preset.from_dict(raw, f"cached preset of {entry['file']}")
            )
        return entry["events"], preset, entry["sumw"], entry["rntuple"], entry["uuid"]


_PRESETS: dict[str, Preset] = {}


def _is_entry(entry: Any, path: str, tree: str, key: str) -> bool:
    """Whether ``entry`` is a whole entry of this format for this file, tree and check."""
    if not isinstance(entry, dict):
        return False
    types: dict[str, type | tuple[type, ...]] = {
        "stamp": list,
        "events": int,
        "sumw": (float, int, type(None)),
        "rntuple": bool,
        "uuid": (str, type(None)),
        "preset": (dict, type(None)),
    }
    return (
        entry.get("format") == FORMAT
        and (entry.get("file"), entry.get("tree"), entry.get("check")) == (path, tree, key)
        and all(isinstance(entry.get(k, ...), t) for k, t in types.items())
        and not isinstance(entry["events"], bool)
        and entry["events"] >= 0
    )
