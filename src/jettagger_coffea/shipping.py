"""The model travels with the job. A backend holds its model file's bytes (:class:`ModelBytes`), never a
path of the client's disk: a tagger pickled to a dask worker on another host, in a container or in a
batch job runs there without seeing the client's files. Sessions are cached per process by the bytes'
sha256 (``backends``), so a model is loaded once per worker however many chunks it tags.

On a dask cluster the bytes go once per worker: :func:`shipped` registers a ``WorkerPlugin`` that holds
them (the scheduler hands it to every worker, and to workers that join or are restarted later), and while
it is open the models pickle as their hash alone, so a task carries kilobytes, not the model. Outside it
(a futures pool, coffea's Runner on a user's own client) the bytes travel inside the pickle."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._errors import JetTaggerError

#: this process: model bytes by sha256 (filled by a plugin or by unpickling a model with its bytes)
_BLOBS: dict[str, bytes] = {}
#: this process: how many times each model's bytes arrived (a measure of what was shipped)
_RECEIVED: dict[str, int] = {}
#: the client: models that are on the workers of the cluster in use (pickled as their hash alone)
_ON_WORKERS: set[str] = set()
_LOCK = threading.Lock()


def _remember(digest: str, data: bytes) -> None:
    with _LOCK:
        _BLOBS.setdefault(digest, data)
        _RECEIVED[digest] = _RECEIVED.get(digest, 0) + 1


class ModelBytes:
    """A model file's bytes, addressed by sha256 and named (bundle and file) for errors."""

    def __init__(self, data: bytes, name: str) -> None:
        self.digest = hashlib.sha256(data).hexdigest()
        self.name = name
        self.size = len(data)
        self._data: bytes | None = data

    @classmethod
    def read(cls, path: str | Path) -> ModelBytes:
        try:
            return cls(Path(path).read_bytes(), str(path))
        except OSError as err:
            raise JetTaggerError(f"cannot read model file {path}: {err.strerror or err}") from None

    @property
    def data(self) -> bytes:
        """The bytes, from the pickle or from this process's plugin store; a process they never reached
        (a worker without the plugin) is named in one line."""
        if self._data is None:
            self._data = _BLOBS.get(self.digest)
        if self._data is None:
            raise JetTaggerError(
                f"model {self.name} (sha256 {self.digest[:12]}) has not reached this worker "
                f"({socket.gethostname()}, pid {os.getpid()}): it was sent as a hash for a cluster whose "
                "workers hold it; run the job through jettagger_coffea.shipped(client, tagger)"
            )
        return self._data

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        data = None if self.digest in _ON_WORKERS else self.data
        return _restore, (self.digest, self.name, self.size, data)

    def __repr__(self) -> str:
        return f"ModelBytes({self.name!r}, {self.size} bytes, sha256 {self.digest[:12]})"


def _restore(digest: str, name: str, size: int, data: bytes | None) -> ModelBytes:
    if data is not None:
        _remember(digest, data)
    obj = ModelBytes.__new__(ModelBytes)
    obj.digest, obj.name, obj.size, obj._data = digest, name, size, data
    return obj


def models_of(*objects: Any) -> list[ModelBytes]:
    """The model files of taggers, processors or backends (``payloads`` of their backend)."""
    out: dict[str, ModelBytes] = {}
    for obj in objects:
        obj = getattr(obj, "tagger", obj)
        backend = getattr(obj, "backend", obj)
        for m in getattr(backend, "payloads", ()):
            out.setdefault(m.digest, m)
    return list(out.values())


def _plugin(blobs: dict[str, bytes]) -> Any:
    from distributed.diagnostics.plugin import WorkerPlugin

    class ModelPlugin(WorkerPlugin):
        """Puts the job's model bytes into each worker process's store, once."""

        def __init__(self) -> None:
            self.blobs = blobs

        def setup(self, worker: Any) -> None:
            for digest, data in self.blobs.items():
                _remember(digest, data)

    return ModelPlugin()


@contextlib.contextmanager
def shipped(client: Any, *objects: Any) -> Iterator[dict[str, Any]]:
    """Send the models of ``objects`` (taggers, processors) once to every worker of ``client``; while open
    they pickle as their hash alone. Yields what was sent: ``model_bytes`` (per worker) and ``models``."""
    models = [m for m in models_of(*objects) if m.digest not in _ON_WORKERS]
    name = "jettagger-models-" + "-".join(sorted(m.digest[:16] for m in models))
    report = {"models": [m.name for m in models], "model_bytes": sum(m.size for m in models)}
    if not models:
        yield report
        return
    client.register_plugin(_plugin({m.digest: m.data for m in models}), name=name)
    _ON_WORKERS.update(m.digest for m in models)
    try:
        yield report
    finally:
        _ON_WORKERS.difference_update(m.digest for m in models)
        with contextlib.suppress(Exception):  # a cluster already gone keeps nothing to free
            client.unregister_worker_plugin(name)


def received() -> dict[str, int]:
    """This process: how many times each model's bytes arrived (sha256 -> count)."""
    with _LOCK:
        return dict(_RECEIVED)
