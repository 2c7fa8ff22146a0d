"""Fixed costs of a process, side by side in one run: time to the first score of a first process (slot budget
measured) and of a second one (budget read from the user cache), start-up times of the CLI, and the import
profile of `jettagger predict`.

    python benchmarks/fixed_costs.py [--models pfn particlenet-lite part] [--repeat 3]

Writes benchmarks/fixed_costs.json and regenerates the "Fixed costs" section of docs/performance.md
(between its markers). Every process is a fresh interpreter; the cache is a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import defaultdict
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
    """The markdown between the markers of docs/performance.md."""
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
    return "\n".join([*lines, "", _wrap(text), END])


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
    ap.add_argument("--models", nargs="+", default=["pfn", "particlenet-lite", "part"])
    ap.add_argument("--repeat", type=int, default=3, help="fresh processes per measurement (best taken)")
    ap.add_argument("--output", type=Path, default=HERE / "fixed_costs.json")
    ap.add_argument("--no-doc", action="store_true", help="do not rewrite docs/performance.md")
    args = ap.parse_args()
    os.environ.setdefault("JETTAGGER_THREADS", "2")
    res = measure(args.models, args.repeat)
    args.output.write_text(json.dumps(res, indent=2))
    text = section(res)
    print(text)
    if not args.no_doc:
        write_doc(text)


if __name__ == "__main__":
    main()
