"""Run generation in seeded blocks (one process per core), so the output does not depend on --jobs."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .settings import PROCESSES, GenerationSettings

log = logging.getLogger(__name__)

FORMATS = ("nanoaod", "jetclass")


def block_seed(seed: int, process: str, block: int) -> int:
    """Pythia seed of one block, derived from the user seed (Pythia accepts 1..900 000 000)."""
    state = np.random.SeedSequence([seed, list(PROCESSES).index(process), block]).generate_state(1)[0]
    return int(state % 899_999_999) + 1


def _run_block(args: tuple[GenerationSettings, int, int]):
    import fastjet

    from .events import EventSource, _quiet_stdout
    from .jets import select_jets

    with _quiet_stdout():  # FastJet prints its banner to C++ stdout at the first clustering of a process
        fastjet.ClusterSequence(
            [fastjet.PseudoJet(1.0, 0.0, 0.0, 1.0)], fastjet.JetDefinition(fastjet.antikt_algorithm, 0.4)
        ).inclusive_jets()

    settings, block, nwanted = args
    seed = block_seed(settings.seed, settings.process, block)
    rng = np.random.default_rng(seed)
    events, njets = [], 0
    for ievent, event in enumerate(EventSource(settings, seed)):
        jets, genjets = select_jets(event, settings, rng)
        jets = jets[: nwanted - njets]
        if jets:
            events.append((block * 1_000_000 + ievent, block, jets, event.gen, genjets))
            njets += len(jets)
        if njets >= nwanted:
            break
    return events


def generate(
    settings: GenerationSettings,
    output_dir: str | Path,
    *,
    formats: tuple[str, ...] = FORMATS,
    jobs: int = 1,
    progress: bool = True,
) -> dict[str, Path]:
    """Generate ``settings.njets`` selected jets and write them in ``formats``; returns the paths.

    Input is checked (formats, a writable folder) before any event is generated, so that a bad call fails
    in a second rather than after the generation."""
    _check_formats(formats)
    output_dir = _writable_dir(Path(output_dir))
    events = _generate_events(settings, jobs, progress)
    return _write_formats(events, settings.process, output_dir, formats)


def _check_formats(formats: tuple[str, ...]) -> None:
    for fmt in formats:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")


def _writable_dir(output_dir: Path) -> Path:
    """Create ``output_dir`` and prove it writable with a probe file (mkdir alone succeeds on a read-only
    mount that already has the folder)."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / ".jettagger-write-test"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise OSError(f"output directory {output_dir} is not writable: {err.strerror}") from err
    return output_dir


def _block_tasks(settings: GenerationSettings) -> list[tuple[GenerationSettings, int, int]]:
    """One task per seeded block of ``block_size`` jets (the last one shorter): the blocks, not the
    workers, fix the seeds."""
    nblocks = -(-settings.njets // settings.block_size)
    return [
        (settings, b, min(settings.block_size, settings.njets - b * settings.block_size))
        for b in range(nblocks)
    ]


def _generate_events(settings: GenerationSettings, jobs: int, progress: bool) -> list:
    """All blocks' events in block order, whether run in this process or ``jobs`` worker processes."""
    tasks = _block_tasks(settings)
    start = time.perf_counter()
    events = []
    bar = tqdm(total=settings.njets, desc=f"generate {settings.process}", unit="jet", disable=not progress)
    if jobs > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            for block_events in pool.map(_run_block, tasks):
                events.extend(block_events)
                bar.update(sum(len(e[2]) for e in block_events))
    else:
        for task in tasks:
            block_events = _run_block(task)
            events.extend(block_events)
            bar.update(sum(len(e[2]) for e in block_events))
    bar.close()
    elapsed = time.perf_counter() - start
    log.info(
        "%s: %d jets in %.1f s (%.1f jets/s)",
        settings.process,
        settings.njets,
        elapsed,
        settings.njets / elapsed,
    )
    return events


def _write_formats(events: list, process: str, output_dir: Path, formats: tuple[str, ...]) -> dict[str, Path]:
    from .writers import write_jetclass, write_nanoaod

    writers = {"nanoaod": write_nanoaod, "jetclass": write_jetclass}
    paths = {}
    for fmt in formats:
        path = output_dir / f"{process}_{fmt}.root"
        writers[fmt](path, events)
        paths[fmt] = path
    return paths
