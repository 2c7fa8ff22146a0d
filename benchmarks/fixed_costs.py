"""Fixed costs, side by side in one run.

Of a process (``--part process``): time to the first score of a first process (slot budget measured) and
of a second one (budget read from the user cache), start-up times of the CLI, and the import profile of
`jettagger predict`. Every process is a fresh interpreter; the cache is a temporary folder.

Of a file (``--part files``): the Runner over many distinct copies of the real PFNano file (1802 branches),
a few chunks each, with coffea's work function (every chunk opens its file and builds NanoEvents of every
branch) and with ours (a file opened once per worker, NanoEvents of the processor's branches only:
:mod:`jettagger_coffea.reading`), on the iterative executor and on dask with 2 local workers; then the
profile of what remains (iterative, ours).

    python benchmarks/fixed_costs.py [--part process|files|all] [--models pfn particlenet-lite part]
                                     [--repeat 3] [--files 200] [--chunks 2]

Writes benchmarks/fixed_costs.json (a part not measured keeps its earlier numbers) and regenerates the
"Fixed costs" section of docs/performance.md (between its markers).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
DOC = HERE.parent / "docs" / "performance.md"
BEGIN, END = "<!-- fixed-costs:begin -->", "<!-- fixed-costs:end -->"

#: a fresh process: `jettagger predict` with the time to the end of its first scored batch set and the time
#: spent in tuned_budget reported (argv: the parent's clock at spawn, then the CLI's arguments)
CHILD = """
import json, sys, time
spawned = float(sys.argv[1])
from jettagger_coffea import tagger
from jettagger_coffea.cli import main

marks = {}
run_model, tune = tagger.JetTagger.run_model, tagger.tuned_budget

def first_score(self, std):
    out = run_model(self, std)
    marks.setdefault("first_score_s", time.time() - spawned)
    return out

def timed_tune(*a, **k):
    t = time.perf_counter()
    try:
        return tune(*a, **k)
    finally:
        marks["tune_s"] = marks.get("tune_s", 0.0) + time.perf_counter() - t

init = tagger.JetTagger.__init__

def timed_init(self, *a, **k):
    marks["tagger_start_s"] = time.time() - spawned  # interpreter, imports, parsing
    init(self, *a, **k)
    marks["tagger_ready_s"] = time.time() - spawned  # + bundle, session, probe

tagger.JetTagger.run_model, tagger.tuned_budget = first_score, timed_tune
tagger.JetTagger.__init__ = timed_init
rc = main(sys.argv[2:])
marks["command_s"] = time.time() - spawned
print(json.dumps({"rc": rc, **marks}))
"""


def spawn(args: list[str], env: dict[str, str]) -> dict:
    """One fresh process running :data:`CHILD`; its marks."""
    r = subprocess.run(
        [sys.executable, "-c", CHILD, repr(time.time()), *args],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    if r.returncode != 0:
        raise SystemExit(f"jettagger {' '.join(args)} failed:\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.splitlines()[-1])


def budget_cache(models: list[str], small: Path, repeat: int) -> dict:
    """Per model, best of ``repeat`` pairs: a first process on an empty cache, then a second one."""
    out = {}
    for model in models:
        pairs = []
        for _ in range(repeat):
            with tempfile.TemporaryDirectory() as tmp:
                env = {**os.environ, "JETTAGGER_CACHE": f"{tmp}/cache"}
                cmd = ["predict", "--model", model, "--input", str(small), "-o", f"{tmp}/jets.parquet"]
                first = spawn(cmd, env)
                Path(f"{tmp}/jets.parquet").unlink()
                second = spawn(cmd, env)
                pairs.append((first, second))
        out[model] = {
            "measured": {k: min(p[0][k] for p in pairs) for k in pairs[0][0] if k != "rc"},
            "cached": {k: min(p[1][k] for p in pairs) for k in pairs[0][1] if k != "rc"},
            "runs": [list(p) for p in pairs],
        }
    return out


def wall(cmd: list[str], repeat: int) -> float:
    """Best wall time of a fresh process, seconds."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        times.append(time.perf_counter() - t)
    return min(times)


def import_profile(args: list[str]) -> dict:
    """``python -X importtime``: the self time of every module summed per top-level package (what each
    package costs, children of other packages included), and the total."""
    env = {**os.environ, "JETTAGGER_CACHE": "off"}  # (imports only: the user's cache left alone)
    r = subprocess.run(
        [sys.executable, "-X", "importtime", *args], capture_output=True, text=True, check=True, env=env
    )
    per: dict[str, float] = defaultdict(float)
    for line in r.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+\d+ \|( *)(\S+)", line)
        if m:
            per[m.group(3).split(".")[0]] += int(m.group(1)) / 1e6
    top = sorted(per.items(), key=lambda kv: -kv[1])
    return {"total_s": sum(per.values()), "packages": dict(top)}


def avoided(repeat: int) -> dict[str, float]:
    """What the inference path no longer imports, timed here as one import each on top of the cli's
    (distributed: `default_threads` asked for a dask worker; matplotlib / mplhep: `plotting`)."""
    base = [sys.executable, "-c", "import jettagger_coffea.cli, numpy, awkward"]
    t0 = wall(base, repeat)
    out = {}
    for name, mod in (
        ("distributed", "distributed"),
        ("plotting (matplotlib, mplhep)", "jettagger_coffea.plotting"),
    ):
        out[name] = wall([*base[:2], f"{base[2]}, {mod}"], repeat) - t0
    return out


def measure(models: list[str], repeat: int) -> dict:
    from jettagger_coffea.data import sample_path

    small = sample_path("wqq")  # 1000 FatJets: enough to tune on (backends.TUNE_JETS = 512)
    cli = [sys.executable, "-m", "jettagger_coffea.cli"]
    res: dict = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_before": os.getloadavg(),
        },
        "threads": os.environ["JETTAGGER_THREADS"],
        "small_file": small.name,
    }
    res["startup_s"] = {
        "python -c pass": wall([sys.executable, "-c", "pass"], repeat),
        "import jettagger_coffea.cli": wall([sys.executable, "-c", "import jettagger_coffea.cli"], repeat),
        "jettagger --help": wall([*cli, "--help"], repeat),
        "jettagger predict --help": wall([*cli, "predict", "--help"], repeat),
    }
    res["budget_cache"] = budget_cache(models, small, repeat)
    with tempfile.TemporaryDirectory() as tmp:
        res["import_profile"] = {
            "import jettagger_coffea.cli": import_profile(["-c", "import jettagger_coffea.cli"]),
            "jettagger predict": import_profile(
                [
                    "-m",
                    "jettagger_coffea.cli",
                    "predict",
                    "--model",
                    models[0],
                    "--input",
                    str(small),
                    "-o",
                    f"{tmp}/jets.parquet",
                ]
            ),
        }
    res["avoided_imports_s"] = avoided(repeat)
    res["machine"]["load_after"] = os.getloadavg()
    return res


def section(res: dict) -> str:
    """The markdown between the markers of docs/performance.md (the per-file part where measured)."""
    if "budget_cache" not in res:
        return "\n".join([BEGIN, *file_section(res["per_file"]), END])
    load = max(res["machine"]["load_before"][0], res["machine"]["load_after"][0])
    cpus = res["machine"]["cpus"]
    runs = len(next(iter(res["budget_cache"].values()))["runs"])
    loaded = " (a loaded machine: other jobs shared the cores)" if load > 0.5 * cpus else ""
    intro = (
        f"Measured on this {cpus}-core machine, {res['threads']} inference threads, 1-minute load average "
        f"up to {load:.1f} during the run{loaded}; best of {runs} fresh processes each. Time to the first "
        f"score of `jettagger predict` on one small file ({res['small_file']}, 1000 FatJets), from the "
        "spawn of the process, with the slot budget measured (the first process of a model on a machine) "
        "and read from the user cache (every later process, a dask worker included); tuning in brackets:"
    )
    lines = [BEGIN, _wrap(intro), ""]
    lines += [
        (
            "| model | first process (budget measured) | second process (budget cached) | first / second "
            "| second: start-up + imports / tagger made / first score |"
        ),
        "| --- | --- | --- | --- | --- |",
    ]
    for model, r in res["budget_cache"].items():
        m, c = r["measured"], r["cached"]
        lines.append(
            f"| {model} | {m['first_score_s']:.2f} s ({m.get('tune_s', 0):.2f} s) | "
            f"{c['first_score_s']:.2f} s ({c.get('tune_s', 0):.3f} s) | "
            f"{m['first_score_s'] / c['first_score_s']:.2f}x | {c['tagger_start_s']:.2f} / "
            f"{c['tagger_ready_s']:.2f} / {c['first_score_s']:.2f} s |"
        )
    lines += ["", "| start-up, fresh process | seconds |", "| --- | --- |"]
    lines += [f"| `{k}` | {v:.3f} |" for k, v in res["startup_s"].items()]
    for what, prof in res["import_profile"].items():
        top = ", ".join(f"{name} {sec * 1000:.0f} ms" for name, sec in list(prof["packages"].items())[:10])
        text = (
            f"Imports of `{what}`: {prof['total_s']:.2f} s in all (`python -X importtime`, self times summed "
            f"per top-level package); the top 10: {top}."
        )
        lines += ["", _wrap(text)]
    gone = ", ".join(f"{k} {v:.2f} s" for k, v in res["avoided_imports_s"].items())
    text = (
        "No longer imported by `jettagger predict`, nor by `jettagger run` before its job (each timed in "
        f"this run as an import on top of the cli, numpy and awkward): {gone}."
    )
    lines += ["", _wrap(text)]
    if "per_file" in res:
        lines += ["", *file_section(res["per_file"])]
    return "\n".join([*lines, END])


# -- fixed costs of a file -----------------------------------------------------------------------------
PFNANO = HERE.parent.parent / "shared" / "reference" / "nanoaod" / "pfnano.root"


def distinct_copies(src: Path, folder: Path, n: int) -> list[str]:
    """``n`` byte copies of ``src`` with their own ROOT file UUID (patched where the header and the top
    directory hold it), so that the fileset check reads each as a file of its own."""
    import uproot

    with uproot.open(src) as f:
        old = f.file.uuid.bytes
    data = src.read_bytes()
    assert data.count(old) == 2, "the UUID is expected in the file header and the top directory"
    out = []
    for i in range(n):
        path = folder / f"pfnano_{i:03d}.root"
        path.write_bytes(data.replace(old, uuid.uuid4().bytes))
        out.append(str(path))
    return out


@contextlib.contextmanager
def variant(coffeas: bool, branch_filter: bool) -> Iterator[None]:
    """The Runner as coffea makes it (``coffeas``: its own work function, a file opened for every chunk)
    or ours, with the processor's branch filter or every branch in the NanoEvents."""
    from coffea import processor

    from jettagger_coffea import reading
    from jettagger_coffea.processor import TaggerProcessor

    saved = reading.ReusingRunner, TaggerProcessor.branch_filter
    if coffeas:
        setattr(reading, "ReusingRunner", processor.Runner)  # noqa: B010 - (a module's name replaced)
    if not branch_filter:
        setattr(TaggerProcessor, "branch_filter", lambda _: None)  # noqa: B010
    try:
        yield
    finally:
        setattr(reading, "ReusingRunner", saved[0])  # noqa: B010
        setattr(TaggerProcessor, "branch_filter", saved[1])  # noqa: B010


VARIANTS = {
    "coffea (open per chunk, all branches)": (True, False),
    "ours, reuse only (all branches)": (False, False),
    "ours (reuse + branch filter)": (False, True),
}


def per_file(model: str, n_files: int, chunks: int, tmp: Path) -> dict:
    """Seconds of the Runner (the preflight excluded: ``meta.seconds``) per variant and executor over
    ``n_files`` distinct PFNano files of ``chunks`` chunks each; dask on 2 local single-threaded workers
    (a client passed in: the cluster's start is not counted); then a profile of ours, iterative."""
    from _timing import single_thread_workers

    from jettagger_coffea.execution import run_fileset

    files = distinct_copies(PFNANO, tmp, n_files)
    events = 10
    chunksize = -(-events // chunks)
    n_chunks = n_files * -(-events // chunksize)
    fileset = {"qcd": files}
    kw = {"chunksize": chunksize, "progress": False}
    res: dict = {
        "load_before": os.getloadavg(),
        "files": n_files,
        "chunks": n_chunks,
        "chunksize": chunksize,
        "model": model,
        "branches": 1802,
        "runs": {},
    }
    run_fileset(model, {"qcd": files[:2]}, executor="iterative", **kw)  # warm: imports, sessions, file cache
    for executor, variants in (("iterative", list(VARIANTS)), ("dask", [*VARIANTS][::2])):
        with contextlib.ExitStack() as stack:
            client = None
            if executor == "dask":
                _, client = stack.enter_context(single_thread_workers(2))
                run_fileset(model, {"qcd": files[:4]}, executor="dask", client=client, **kw)  # warm workers
            for name in variants:
                with variant(*VARIANTS[name]):
                    load = os.getloadavg()[0]
                    out = run_fileset(model, fileset, executor=executor, client=client, **kw)
                seconds = out["meta"]["seconds"]
                res["runs"].setdefault(executor, {})[name] = {
                    "seconds": seconds,
                    "per_file_s": seconds / n_files,
                    "per_chunk_s": seconds / n_chunks,
                    "load_1min": [load, os.getloadavg()[0]],
                    "tagged_jets": out["cutflow"]["qcd"]["tagged_jets"],
                }
                print(executor, name, f"{seconds:.1f} s", flush=True)
    res["profile"] = profile(model, files[: max(n_files // 4, 10)], kw)
    res["load_after"] = os.getloadavg()
    return res


#: where the time of a chunk goes, by the function it is spent under (cumulative, outermost calls;
#: ``folder/file:function``): the NanoEvents made (of which the TTree's metadata read, uproot's Model.read,
#: and the form of its branches), the processor unpickled, and process (the branches read, tagging, fills)
PROFILE_PARTS = {
    "NanoEvents made (NanoEventsFactory.from_root)": ("nanoevents/factory.py:from_root",),
    "of which the TTree's metadata (uproot Model.read, once a file)": ("uproot/model.py:read",),
    "of which the form of its branches (_extract_base_form)": ("mapping/uproot.py:_extract_base_form",),
    "processor unpickled (cloudpickle)": ("~:<built-in method _pickle.loads>",),
    "process (branches read, tagging, truth, fills)": ("jettagger_coffea/processor.py:process",),
}


def profile(model: str, files: list[str], kw: dict) -> dict:
    """cProfile of ours on the iterative executor: seconds per chunk under each part of the work
    function (:data:`PROFILE_PARTS`) and the top functions by own time."""
    import pstats

    from jettagger_coffea import execution
    from jettagger_coffea.execution import run_fileset

    prof = cProfile.Profile()
    real = execution._runner

    def runner(*a, **k):
        prof.enable()
        try:
            return real(*a, **k)
        finally:
            prof.disable()

    execution._runner = runner  # type: ignore[assignment]
    try:
        run_fileset(model, {"qcd": files}, executor="iterative", **kw)
    finally:
        execution._runner = real  # type: ignore[assignment]
    stats = pstats.Stats(prof)
    chunks = len(files) * -(-10 // kw["chunksize"])
    total = max(v[3] for v in stats.stats.values())  # type: ignore[attr-defined]
    parts: dict[str, float] = {}
    for name, keys in PROFILE_PARTS.items():
        cum = [
            v[3]
            for (file, line, fn), v in stats.stats.items()  # type: ignore[attr-defined]
            if f"{Path(file).parent.name}/{Path(file).name}:{fn}".removeprefix("/") in keys
        ]
        parts[name] = max(cum, default=0.0) / chunks
    own = sorted(
        stats.stats.items(),  # type: ignore[attr-defined]
        key=lambda kv: -kv[1][2],
    )[:12]
    return {
        "files": len(files),
        "chunks": chunks,
        "total_per_chunk_s": total / chunks,
        "parts_per_chunk_s": parts,
        "top_own_time": [[f"{Path(f).name}:{line}({fn})", v[2] / chunks] for (f, line, fn), v in own],
    }


def file_section(r: dict) -> list[str]:
    """The per-file part of the section: the table of both executors, the load, the profile."""
    load = max(r["load_before"][0], r["load_after"][0])
    intro = (
        f"Per file and per chunk (issue #32, part 3): coffea's Runner over {r['files']} distinct copies of "
        f"the real PFNano file ({r['branches']} branches, 10 events; each its own ROOT file UUID), "
        f"{r['chunks'] // r['files']} chunks a file ({r['chunks']} chunks), model {r['model']}, the "
        "preflight excluded (cached); dask on 2 local single-threaded workers, the cluster's start excluded. "
        f"1-minute load average {r['load_before'][0]:.1f} before, {r['load_after'][0]:.1f} after, up to "
        f"{load:.1f}: a shared, loaded machine (other jobs on the cores), so the ratios within one executor, "
        "measured one after the other in this run, are what to read, not the absolute seconds."
    )
    lines = [_wrap(intro), ""]
    lines += [
        "| executor | work function | seconds | per file | per chunk | vs coffea's | load (1 min) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for executor, runs in r["runs"].items():
        base = next(iter(runs.values()))["seconds"]
        for name, v in runs.items():
            lo, hi = v["load_1min"]
            lines.append(
                f"| {executor} | {name} | {v['seconds']:.1f} | {v['per_file_s']:.3f} s | "
                f"{v['per_chunk_s']:.3f} s | {base / v['seconds']:.2f}x | {lo:.1f}-{hi:.1f} |"
            )
    p = r["profile"]
    parts = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in p["parts_per_chunk_s"].items())
    text = (
        f"What remains (cProfile of ours, iterative, {p['files']} files, {p['chunks']} chunks): "
        f"{p['total_per_chunk_s'] * 1000:.0f} ms a chunk, of which {parts}. The open is paid once per file "
        "(spread over its chunks here); the rest once per chunk."
    )
    top = ", ".join(f"`{name}` {sec * 1000:.1f} ms" for name, sec in p["top_own_time"][:8])
    return [*lines, "", _wrap(text), "", _wrap(f"Top own times per chunk: {top}.")]


def _wrap(text: str) -> str:
    """Prose at the doc's width, never breaking a number from its unit."""
    text = re.sub(r"(\d) (ms|s)\b", "\\1\u00a0\\2", text)
    text = textwrap.fill(text, width=110, break_on_hyphens=False, break_long_words=False)
    return text.replace("\u00a0", " ")


def write_doc(text: str) -> None:
    doc = DOC.read_text()
    if BEGIN in doc and END in doc:
        doc = doc[: doc.index(BEGIN)] + text + doc[doc.index(END) + len(END) :]
    else:
        doc = doc.rstrip("\n") + "\n\n## Fixed costs\n\n" + text + "\n"
    DOC.write_text(doc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("process", "files", "all"), default="all")
    ap.add_argument("--models", nargs="+", default=["pfn", "particlenet-lite", "part"])
    ap.add_argument("--repeat", type=int, default=3, help="fresh processes per measurement (best taken)")
    ap.add_argument("--files", type=int, default=200, help="distinct PFNano files (--part files)")
    ap.add_argument("--chunks", type=int, default=2, help="chunks per file (--part files)")
    ap.add_argument("--output", type=Path, default=HERE / "fixed_costs.json")
    ap.add_argument("--no-doc", action="store_true", help="do not rewrite docs/performance.md")
    args = ap.parse_args()
    os.environ.setdefault("JETTAGGER_THREADS", "2")
    res = json.loads(args.output.read_text()) if args.output.exists() else {}
    if args.part in ("process", "all"):
        res = {
            **measure(args.models, args.repeat),
            **({"per_file": res["per_file"]} if "per_file" in res else {}),
        }
    if args.part in ("files", "all"):
        if not PFNANO.exists():
            raise SystemExit(f"{PFNANO} not found (../shared): the per-file part needs the real PFNano file")
        with tempfile.TemporaryDirectory() as tmp:
            res["per_file"] = per_file(args.models[0], args.files, args.chunks, Path(tmp))
    args.output.write_text(json.dumps(res, indent=2))
    text = section(res)
    print(text)
    if not args.no_doc:
        write_doc(text)


if __name__ == "__main__":
    main()
