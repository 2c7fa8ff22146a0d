"""Many files, many workers: `jettagger run` over a 20-file, 100k-jet NanoAOD fileset on LocalClusters of 1
and 2 single-threaded worker processes, side by side in one run.

    python benchmarks/scaling.py [--models pfn particlenet-lite] [--chunksize 2500] [--output F.json]

The fileset (5 seeds x qcd, wqq, zqq, tbqq, 5000 jets each) is generated once into samples/bench/
(uncommitted; ~30 min on 2 cores, 109 MB) and reused. Reported per worker count: wall time of a second
pass (cluster start-up and model loading excluded), jets/s, per-worker peak RSS (the kernel's VmHWM),
tasks per file, the workers' busy fraction from dask's task stream, and the CPU of this process (the
scheduler, the client and coffea's accumulation), which shares the cores with the workers.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from _timing import single_thread_workers  # benchmarks/ is on sys.path when a script here runs

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent / "samples" / "bench"
PROCESSES = ("qcd", "wqq", "zqq", "tbqq")
SEEDS = 5


def fileset() -> dict:
    """{dataset: {files: {path: "Events"}}}, generating missing files (seeded, 5000 jets each)."""
    out: dict = {p: {"files": {}} for p in PROCESSES}
    for i in range(SEEDS):
        for p in PROCESSES:
            path = BENCH / str(i) / f"{p}_nanoaod.root"
            if not path.is_file():
                tmp = path.parent / ".tmp"
                subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "jettagger_coffea.cli",
                        "generate",
                        "--process",
                        p,
                        "--njets",
                        "5000",
                        "--seed",
                        str(3000 + i),
                        "--jobs",
                        "2",
                        "--format",
                        "nanoaod",
                        "-o",
                        str(tmp),
                    ],
                    check=True,
                )
                (tmp / path.name).rename(path)
            out[p]["files"][str(path)] = "Events"
    return out


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(model: str, fs: dict, workers: int, chunksize: int) -> dict:
    from distributed import get_task_stream

    from jettagger_coffea.execution import run_fileset

    with single_thread_workers(workers) as (cl, client):
        first = {ds: {"files": dict(list(s["files"].items())[:1])} for ds, s in fs.items()}
        run_fileset(
            model, first, executor="dask", scheduler=cl.scheduler_address, chunksize=chunksize, progress=False
        )  # warm-up: imports, sessions and slot budgets on every worker
        with get_task_stream(client) as ts:
            cpu = resource.getrusage(resource.RUSAGE_SELF)
            t = time.perf_counter()
            out = run_fileset(
                model,
                fs,
                executor="dask",
                scheduler=cl.scheduler_address,
                chunksize=chunksize,
                progress=False,
            )
            wall = time.perf_counter() - t
            after = resource.getrusage(resource.RUSAGE_SELF)
        rss = client.run(_peak_rss_mb)
    tasks = ts.data
    compute = sum(
        s["stop"] - s["start"] for t_ in tasks for s in t_["startstops"] if s["action"] == "compute"
    )
    transfer = sum(
        s["stop"] - s["start"] for t_ in tasks for s in t_["startstops"] if s["action"] == "transfer"
    )
    prefixes: dict[str, int] = {}
    for t_ in tasks:
        name = t_["key"][0] if isinstance(t_["key"], tuple) else str(t_["key"])
        prefix = name.rsplit("-", 1)[0]
        prefixes[prefix] = prefixes.get(prefix, 0) + 1
    n_files = sum(len(s["files"]) for s in fs.values())
    jets = sum(c["selected_jets"] for c in out["cutflow"].values())
    return {
        "workers": workers,
        "seconds": wall,
        "jets": jets,
        "jets_per_s": jets / wall,
        "peak_rss_mb_per_worker": sorted(rss.values()),
        "tasks": len(tasks),
        "tasks_per_file": len(tasks) / n_files,
        "task_prefixes": prefixes,
        "busy_fraction": compute / (wall * workers),
        # this process runs the scheduler, the client and coffea's accumulation, on the same cores
        "main_process_cpu_fraction": (after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime) / wall,
        "transfer_seconds": transfer,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["pfn", "particlenet-lite"])
    p.add_argument("--chunksize", type=int, default=2500)
    p.add_argument("--output", type=Path, default=HERE / "scaling.json")
    args = p.parse_args()
    fs = fileset()
    n_files = sum(len(s["files"]) for s in fs.values())
    res = {m: {w: measure(m, fs, w, args.chunksize) for w in (1, 2)} for m in args.models}
    print(f"{n_files} files, {res[args.models[0]][1]['jets']} jets, chunks of {args.chunksize} events")
    print(
        "| model | workers | seconds | jets/s | speed-up | peak RSS per worker (MB) | tasks per file | "
        "workers busy | scheduler + client CPU |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for m, per in res.items():
        for w, r in per.items():
            print(
                f"| {m} | {w} | {r['seconds']:.1f} | {r['jets_per_s']:.0f} | "
                f"{per[1]['seconds'] / r['seconds']:.2f}x | "
                f"{', '.join(f'{x:.0f}' for x in r['peak_rss_mb_per_worker'])} | {r['tasks_per_file']:.1f} | "
                f"{100 * r['busy_fraction']:.0f} % | {100 * r['main_process_cpu_fraction']:.0f} % of a core |"
            )
    args.output.write_text(
        json.dumps({"chunksize": args.chunksize, "files": n_files, "results": res}, indent=1) + "\n"
    )


if __name__ == "__main__":
    main()
