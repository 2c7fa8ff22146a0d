"""Files read over the network: ``root://`` (XRootD, through fsspec-xrootd) and ``http(s)://`` (fsspec's
aiohttp filesystem), opened by uproot through fsspec as every file is. What this adds: one timeout for each
open or read, and transient failures (a server down, restarting or not answering in time, a connection
refused or lost) retried a bounded number of times with backoff, in the preflight and in every chunk.
A server's answer (no such file, not allowed) and anything that is not I/O (a damaged basket) fail at
once: retrying them gives the same failure.

:func:`uproot_options` go to every ``uproot.open`` of a fileset's file (local files are read as
before: the retrying applies to URLs only)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from uproot.source.fsspec import FSSpecSource

log = logging.getLogger(__name__)
T = TypeVar("T")


def _env_int(name: str, default: int, least: int) -> int:
    try:
        value = int(os.environ.get(name, default))
    except ValueError:
        value = default
    return max(value, least)


#: seconds one open or read of a remote file may take (XRootD's and HTTP's per-request timeout; an int,
#: as XRootD wants). Environment: ``JETTAGGER_REMOTE_TIMEOUT``
REMOTE_TIMEOUT = _env_int("JETTAGGER_REMOTE_TIMEOUT", 30, 1)
#: further tries of an open or read that failed transiently. Environment: ``JETTAGGER_REMOTE_RETRIES``
REMOTE_RETRIES = _env_int("JETTAGGER_REMOTE_RETRIES", 2, 0)
#: seconds before the first retry, doubled for each next one (1 s, 2 s, ...)
REMOTE_BACKOFF = 1.0


def xrootd_client_settings() -> dict[str, int]:
    """XRootD client settings (an ``XRD_*`` variable in the environment wins): timeouts enforced to the
    second (the client's default checks every 15 s), a lost server dialled again every second for as
    long as the timeout (default: one try per 120 s, so a restarted server is not seen for minutes), and
    a server given up on dialled again a second later (default: after 30 minutes, so that a retry would
    fail at once). A server back within the timeout is then no error at all: the client re-opens its
    files itself."""
    return {
        "TimeoutResolution": 1,
        "ConnectionWindow": 1,
        "ConnectionRetry": REMOTE_TIMEOUT + 1,
        "StreamErrorWindow": 1,
    }


def is_remote(path: str) -> bool:
    """A URL read over the network (``file://`` and plain paths are local)."""
    return "://" in path and not path.startswith("file://")


def transient(err: BaseException) -> bool:
    """Whether retrying ``err`` can succeed: I/O that did not reach an answer (refused, reset, timed
    out). A missing or forbidden file, or a server that answered with an error, is final."""
    if isinstance(err, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return False
    if "Server responded with an error" in str(err):  # XRootD: the server's own answer (e.g. [3011])
        return False
    if isinstance(err, (OSError, asyncio.TimeoutError)):  # ConnectionError, XRootD's "Operation expired"
        return True
    try:
        import aiohttp
    except ImportError:
        return False
    return isinstance(err, (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError))


def _delay(err: BaseException, attempt: int, url: str, forget: Callable[[], None]) -> float:
    """Seconds to wait before the next try of ``url``, or the error to raise (final, or the tries used
    up). After a transient failure the file's connection is forgotten (a fresh one for the next try)."""
    if not transient(err):
        raise err
    forget()
    if attempt >= REMOTE_RETRIES:
        _GAVE_UP.add(url)
        raise OSError(f"{err} (tried {attempt + 1} times)") from err
    wait = REMOTE_BACKOFF * 2**attempt
    log.warning("%s: %s: %s; trying again in %.0f s", url, type(err).__name__, err, wait)
    return wait


def _first_error(results: list[Any]) -> list[Any]:
    """fsspec's ``cat_ranges`` returns a failed range's exception in its place: raise it."""
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results


def _retried(url: str, read: Callable[[], T], forget: Callable[[], None]) -> T:
    attempt = 0
    while True:
        try:
            return read()
        except Exception as err:  # noqa: BLE001 - _delay re-raises what is not retried
            wait = _delay(err, attempt, url, forget)
        time.sleep(wait)
        attempt += 1


async def _retried_async(url: str, read: Callable[[], Awaitable[T]], forget: Callable[[], None]) -> T:
    attempt = 0
    while True:
        try:
            return await read()
        except Exception as err:  # noqa: BLE001 - _delay re-raises what is not retried
            wait = _delay(err, attempt, url, forget)
        await asyncio.sleep(wait)
        attempt += 1


class _RetryingFilesystem:
    """The fsspec filesystem of one remote file with its reads retried (uproot reads through
    ``cat_file`` for the header and ``_cat_ranges`` / ``cat_ranges`` for baskets); the rest delegated."""

    def __init__(self, fs: Any, url: str) -> None:
        self._fs, self._url = fs, url

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fs, name)

    def cat_file(self, *args: Any, **kwargs: Any) -> Any:
        return _retried(self._url, lambda: self._fs.cat_file(*args, **kwargs), self._forget)

    def cat_ranges(self, *args: Any, **kwargs: Any) -> Any:
        return _retried(self._url, lambda: _first_error(self._fs.cat_ranges(*args, **kwargs)), self._forget)

    async def _cat_ranges(self, *args: Any, **kwargs: Any) -> Any:
        async def read() -> Any:
            return _first_error(await self._fs._cat_ranges(*args, **kwargs))

        return await _retried_async(self._url, read, self._forget)

    def _forget(self) -> None:
        """XRootD closes a file whose request expired: take it out of fsspec-xrootd's cache of open
        files (keyed by URL), so that the next try opens the file again (and no dead handle is left for
        fsspec-xrootd to close, with a traceback, when the process exits)."""
        cache = getattr(getattr(self._fs, "_readonly_filehandle_cache", None), "_cache", None)
        item = cache.pop(self._url, None) if isinstance(cache, dict) else None
        if item is not None:
            item.handle.close(callback=lambda *_: None)  # without waiting: the server may be away


def configure_xrootd_client() -> None:
    """:func:`xrootd_client_settings` into this process's XRootD client (where XRootD is installed)."""
    try:
        from XRootD import client
    except ImportError:
        return
    for key, value in xrootd_client_settings().items():
        client.EnvPutInt(key, value)  # refused (False) where XRD_<KEY> is set: the user's value stays


class RemoteSource(FSSpecSource):
    """uproot's fsspec source (its default for every path) whose remote reads are retried: give it as
    ``handler`` to ``uproot.open`` (it pickles by name, so dask workers use it too)."""

    def _open(self) -> None:
        url: str = self._file_path_orig
        if url.startswith("root://"):
            configure_xrootd_client()
        super()._open()
        if is_remote(url) and not url.startswith("simplecache::"):  # (uproot reads a cache another way)
            self._fs = _RetryingFilesystem(self._fs, url)  # type: ignore[has-type]  # (uproot's is untyped)


def uproot_options() -> dict[str, Any]:
    """Options for every ``uproot.open`` of a fileset's file: :class:`RemoteSource` and
    :data:`REMOTE_TIMEOUT` (coffea's Runner takes the timeout as its ``xrootdtimeout``; for HTTP it is
    aiohttp's total time for one request)."""
    return {"handler": RemoteSource, "timeout": REMOTE_TIMEOUT}


def open_file(path: str) -> Any:
    """``uproot.open(path, **uproot_options())``: the file's root directory (a context manager)."""
    import uproot

    return uproot.open(path, **uproot_options())


def gave_up(url: str) -> bool:
    """Whether this process gave up on ``url`` (its tries used up) since the last call asked: then a
    second look at the file (its event count for the skipped list) need not wait through them again."""
    try:
        _GAVE_UP.remove(url)
    except KeyError:
        return False
    return True


_GAVE_UP: set[str] = set()
