"""Preparation where the files are: the pre-run check of a 200-file PFNano-like fileset (each file opened
once: events, source preset, Runs, UUID) in this process, on LocalClusters of 1 and 2 single-threaded
worker processes, and from the per-file cache, side by side in one run.

    python benchmarks/preparation.py [--files 200] [--branches 1802] [--output F.json]

The files are generated once into samples/bench-prep/ (uncommitted, ~1 min): the bundled qcd sample's
first 100 events with dummy branches up to ``--branches`` (a CMS PFNano file has 1802; opening one costs
its TTree's metadata, not its data), copied ``--files`` times, each copy with its own ROOT file UUID
(else the copies are one file, read once). Cluster start-up and the workers' imports are excluded (one
file prepared first); each time is one pass (the cache's best of 3).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from _timing import single_thread_workers  # benchmarks/ is on sys.path when a script here runs

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent / "samples" / "bench-prep"
EVENTS = 100


def template(branches: int) -> Path:
    """The bundled qcd sample's first events plus flat trigger bits and one wide jagged collection, up to
    ``branches`` TTree branches (made once)."""
    path = BENCH / f"template-{branches}.root"
    if path.is_file():
        return path
    import awkward as ak
    import numpy as np
    import uproot

    from jettagger_coffea.data import sample_path

    arr = uproot.open(sample_path("qcd"))["Events"].arrays(entry_stop=EVENTS)
    groups: dict[str, dict] = {}
    data: dict = {}
    for name in arr.fields:
        coll, _, field = name.partition("_")
        if field:
            groups.setdefault(coll, {})[field] = arr[name]
        elif not name.startswith("n"):
            data[name] = arr[name]
    data |= {c: ak.zip(fields) for c, fields in groups.items()}
    have = len(arr.fields)
    extra = max(branches - have - 1, 0)  # the wide collection's counter is a branch too
    bits, floats = extra // 2, extra - extra // 2
    data |= {f"HLT_Bench{i}": ak.Array(np.zeros(EVENTS, bool)) for i in range(bits)}
    counts = np.arange(EVENTS) % 6
    data["Jet"] = ak.zip(
        {f"f{i}": ak.unflatten(np.zeros(counts.sum(), np.float32), counts) for i in range(floats)}
    )
    BENCH.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with uproot.recreate(tmp) as f:
        f.mktree("Events", {k: v.type for k, v in data.items()}).extend(data)
    tmp.rename(path)
    return path


def copies(src: Path, n: int) -> list[Path]:
    """``n`` byte copies of ``src``, each with another ROOT file UUID (the header's 16 bytes patched)."""
    import uproot

    with uproot.open(src) as f:
        old = f.file.fUUID
    head = src.read_bytes()[:1024]
    at = head.find(old)
    assert at > 0 and head.count(old) == 1, "the UUID is not in the file header once"
    out = []
    for i in range(n):
        path = BENCH / src.stem / f"file{i:04d}.root"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, path)
            with path.open("r+b") as f:
                f.seek(at)
                f.write(uuid.uuid5(uuid.NAMESPACE_URL, str(path)).bytes)
        out.append(path)
    with uproot.open(out[0]) as f:
        assert f.file.fUUID != old and f["Events"].num_entries == EVENTS
    return out


def prepare(fs: dict, client=None, cache=None) -> tuple[float, dict]:
    from jettagger_coffea.bundle import Bundle
    from jettagger_coffea.fileset import preflight
    from jettagger_coffea.preparation import ModelCheck

    b = Bundle.load("pfn")
    t = time.perf_counter()
    good, skipped = preflight(fs, False, ModelCheck(b.config, b.preset), client=client, cache=cache)
    seconds = time.perf_counter() - t
    assert not skipped
    return seconds, {ds: sum(e["events"].values()) for ds, e in good.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=200)
    p.add_argument("--branches", type=int, default=1802)
    p.add_argument("--output", type=Path, default=HERE / "preparation.json")
    args = p.parse_args()
    from jettagger_coffea.fileset import check_fileset
    from jettagger_coffea.preparation import FileCache

    src = template(args.branches)
    paths = copies(src, args.files)
    half = len(paths) // 2
    fs = check_fileset({"a": [str(x) for x in paths[:half]], "b": [str(x) for x in paths[half:]]})
    warm = check_fileset({"w": [str(src)]})
    cache = FileCache(tempfile.mkdtemp(prefix="jettagger-prep-"))
    res: dict = {}
    res["here"], events = prepare(fs)
    for w in (1, 2):
        with single_thread_workers(w) as (_, client):
            prepare(warm, client)  # the workers' imports
            res[f"{w} worker{'s' if w > 1 else ''}"], got = prepare(fs, client)
            assert got == events
            if w == 2:
                prepare(fs, client, cache)  # fills the cache
                res["cached, 2 workers"] = min(prepare(fs, client, cache)[0] for _ in range(3))
    res["cached, here"] = min(prepare(fs, None, cache)[0] for _ in range(3))
    shutil.rmtree(cache.root)
    base = res["1 worker"]
    print(f"{args.files} files of {args.branches} branches, {sum(events.values())} events")
    print("| preparation | seconds | per file (ms) | vs 1 worker |")
    print("| --- | --- | --- | --- |")
    for name, s in res.items():
        print(f"| {name} | {s:.2f} | {1000 * s / args.files:.1f} | {base / s:.2f}x |")
    args.output.write_text(
        json.dumps({"files": args.files, "branches": args.branches, "seconds": res}, indent=1) + "\n"
    )


if __name__ == "__main__":
    main()
