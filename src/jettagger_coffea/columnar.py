"""The one place where eager arrays (coffea Runner chunks: plain awkward, filled through numpy) and lazy
dask-awkward arrays (``apply_to_fileset``) differ. Everything above this module writes one code path and
asks :func:`ops_for` for the operations, or hands a per-chunk function to :func:`map_chunks`."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable
from typing import Any

import awkward as ak
import hist
import numpy as np

from ._errors import JetTaggerError


def is_dask(x: Any) -> bool:
    return type(x).__module__.startswith("dask_awkward")


def configure_dask() -> None:
    """Keep dask-awkward's column projection but skip its layer-chain rewrite, which fails on coffea's
    cross-referenced collections with dask >= 2025.4 ("Cannot fuse tasks with multiple outputs"). Set
    globally: it must hold when the graph is computed."""
    import dask

    dask.config.set({"awkward.optimization.which": ["columns"]})


@dataclasses.dataclass(frozen=True)
class Ops:
    """Flatten [event][jet] to jets, count per event, cast, argmax and the histogram class, for one kind of
    array. Eager results are numpy from the first flatten on (fills and masks are several times faster)."""

    lazy: bool
    flat: Callable[[Any], Any]
    num: Callable[..., Any]
    as_int: Callable[[Any, Any], Any]
    argmax: Callable[..., Any]
    Hist: type

    def require_eager(self, what: str) -> None:
        if self.lazy:
            raise JetTaggerError(f"{what} needs a coffea Runner executor (iterative, futures, dask)")


@functools.cache
def _ops(lazy: bool) -> Ops:
    if lazy:
        import dask_awkward as dak
        import hist.dask as hda

        return Ops(True, lambda a: dak.flatten(a, axis=1), dak.num, dak.values_astype, dak.argmax, hda.Hist)
    return Ops(
        False,
        lambda a: ak.to_numpy(ak.flatten(a, axis=1)),
        ak.num,
        lambda a, t: a.astype(t),
        np.argmax,
        hist.Hist,
    )


def ops_for(x: Any) -> Ops:
    """The operations for arrays like ``x`` (eager or dask-awkward)."""
    return _ops(is_dask(x))


def map_chunks(
    fn: Callable[..., ak.Array],
    *arrays: Any,
    touches: Callable[..., Iterable[Any]],
    empty: Callable[[], ak.Array],
    label: str,
    **kwargs: Any,
) -> Any:
    """``fn(*arrays, **kwargs)`` chunk by chunk: called directly on eager arrays, through
    ``dak.map_partitions`` on dask-awkward ones. On dask's typetracer pass ``fn`` is not run: the columns
    ``touches(*arrays, **kwargs)`` returns are marked as read (so exactly those branches are loaded) and the
    form of ``empty()`` is returned."""
    if not is_dask(arrays[0]):
        return fn(*arrays, **kwargs)
    import dask_awkward as dak

    configure_dask()
    chunk = functools.partial(_chunk, fn, touches, empty)
    return dak.map_partitions(chunk, *arrays, label=label, **kwargs)


def _chunk(
    fn: Callable[..., ak.Array],
    touches: Callable[..., Iterable[Any]],
    empty: Callable[[], ak.Array],
    *arrays: Any,
    **kwargs: Any,
) -> ak.Array:
    if ak.backend(arrays[0]) != "typetracer":
        return fn(*arrays, **kwargs)
    for column in touches(*arrays, **kwargs):
        ak.typetracer.touch_data(column)
    return ak.Array(empty().layout.to_typetracer(forget_length=True))


def empty_jagged(width: int | None = None, dtype: Any = np.int64) -> ak.Array:
    """An empty [event][jet] array (of ``width``-wide rows of float32 when given): a typetracer's form."""
    flat = np.zeros(0, dtype=dtype) if width is None else np.zeros((0, width), dtype=np.float32)
    return ak.unflatten(ak.Array(flat), np.zeros(0, dtype=np.int64))
