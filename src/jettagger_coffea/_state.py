"""State that belongs to one process: inference sessions, server connections, loaded torch models."""

from __future__ import annotations

from typing import Any, ClassVar


class ProcessLocal:
    """Attributes named in ``_process_local`` are left behind when the object is pickled (to a dask worker,
    a futures process): each process rebuilds them lazily on first use, so nothing unpicklable travels
    and nothing expensive is made more than once per process."""

    _process_local: ClassVar[tuple[str, ...]] = ()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, **dict.fromkeys(self._process_local)}
