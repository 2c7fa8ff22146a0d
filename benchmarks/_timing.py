"""Timing and worker clusters shared by the benchmark scripts."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


def best_of(fn: Callable[[], object], repeat: int = 2) -> float:
    """Best wall time of ``repeat`` calls (the first call also warms caches and sessions)."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


@contextmanager
def single_thread_workers(workers: int) -> Iterator[tuple]:
    """(LocalCluster, Client) of ``workers`` single-threaded worker processes, one inference thread each
    (else they inherit this process's JETTAGGER_THREADS)."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            env={"JETTAGGER_THREADS": "1"},
        ) as cl,
        Client(cl) as client,
    ):
        yield cl, client
