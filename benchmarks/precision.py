"""Reduced precision against fp32 and CMSSW's per-jet loop, side by side in one run, on the same jets.

    python benchmarks/precision.py [--threads 2] [--output benchmarks/precision.json] [--no-doc | --doc-only]

After the run its tables are rendered from the JSON into their blocks of docs/performance.md (between
the `<!-- NAME:begin -->` / `<!-- NAME:end -->` markers); ``--doc-only`` renders the existing JSON, running
nothing (``benchmarks/report.py`` does every benchmark's).

Two networks: the official JetClass ParticleNet (``../shared/reference/weights``, imported as
``benchmarks/peers.py`` does) and the shipped particlenet-lite (a copy). Each gets its int8 model and its
bf16 measurement from ``precision.quantize`` on the 4000 bundled JetClass-layout jets (512 calibrate, the
rest choose the int8 layers and measure: the card's record). Then, best of 2, interleaved per round so
that the machine's load hits every side alike:

- *CMSSW*: one onnxruntime call per jet on the ONNX as weaver exports it, fp32 (inference alone,
  ``peers.cmssw_per_jet``);
- *inference*: ``JetTagger.run_model`` on the standardised jets (tuned slot budget), fp32 / int8 / bf16;
- *end to end*: what ``jettagger predict --precision P`` does: read, features, inference, parquet;
- torch fp32 (the baseline bf16 runs against) and bf16 where its record is over the limits (not offered:
  its speed only).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from _doc import X, bullet, ratio, sci, table, wrap, write_blocks
from _models import concatenated_particlenet, official_particlenet
from peers import cmssw_per_jet

HERE = Path(__file__).resolve().parent


NETWORKS = ("official-particlenet", "particlenet-lite")


def bundle_of(name: str, tmp: Path):
    from jettagger_coffea.bundle import Bundle, resolve

    if name == "official-particlenet":
        return official_particlenet(tmp)
    shutil.copytree(resolve(name), tmp / name)
    return Bundle.load(tmp / name)


def measure(bundle, files, tmp: Path, threads: int, torch_sides: bool = True) -> dict:
    import awkward as ak

    from jettagger_coffea import precision
    from jettagger_coffea.backends import OnnxBackend
    from jettagger_coffea.bundle import Bundle
    from jettagger_coffea.evaluation import predict_files
    from jettagger_coffea.jetfiles import load_jets
    from jettagger_coffea.tagger import JetTagger

    res: dict = {"records": {}}
    for p in ("int8", "bf16"):
        t = time.perf_counter()
        rec = precision.quantize(bundle.path, p, files)
        res["records"][p] = {k: v for k, v in rec.items() if k not in ("reference", "fp32_sha256")}
        res["records"][p]["seconds_to_make"] = time.perf_counter() - t
    bundle = Bundle.load(bundle.path)
    usable = [p for p in ("int8", "bf16") if precision.within_limits(res["records"][p])]
    onnx = {"threads": threads}  # torch's: torch.set_num_threads in main
    taggers = {p: JetTagger(bundle, precision=p, **(onnx if p != "bf16" else {})) for p in ("fp32", *usable)}
    jets = load_jets(files, bundle.config, with_labels=False)
    res["jets"] = int((jets.counts > 0).sum())
    weaver_form = OnnxBackend(concatenated_particlenet(bundle, tmp), threads=threads)
    sides = {"cmssw_per_jet_fp32": lambda: cmssw_per_jet(weaver_form, jets, bundle.min_length)}
    for p, tagger in taggers.items():
        tagger.run_model(jets)  # tunes the slot budget once, as the first chunk of a run does
        sides[f"inference_{p}"] = lambda tagger=tagger: tagger.run_model(jets)

        def end_to_end(p=p, tagger=tagger) -> None:
            ak.to_parquet(ak.Array(predict_files(tagger, files)), tmp / f"pred-{p}.parquet")

        sides[f"end_to_end_{p}"] = end_to_end
    if "bf16" not in usable and torch_sides:  # not offered: its speed only (the backend made directly)
        from jettagger_coffea.backends import TorchBackend, run_batched

        bf16 = TorchBackend(bundle, precision="bf16")
        sides["inference_bf16_not_offered"] = lambda: run_batched(
            bf16, jets, bundle.outputs, min_length=bundle.min_length, max_slots=4096
        )
    if torch_sides:
        torch32 = JetTagger(bundle, backend="torch")
        torch32.run_model(jets)
        sides["inference_torch_fp32"] = lambda: torch32.run_model(jets)
    times: dict[str, list[float]] = {k: [] for k in sides}
    for _ in range(2):  # interleaved rounds: the load hits every side alike
        for name, fn in sides.items():
            t = time.perf_counter()
            out = fn()
            times[name].append(out if name.startswith("cmssw") else time.perf_counter() - t)  # type: ignore[arg-type]
    res["seconds"] = {k: min(v) for k, v in times.items()}
    cmssw = res["seconds"]["cmssw_per_jet_fp32"]
    res["speedup_vs_cmssw"] = {k: cmssw / v for k, v in res["seconds"].items()}
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--output", type=Path, default=HERE / "precision.json")
    ap.add_argument("--networks", nargs="+", choices=NETWORKS, default=list(NETWORKS))
    ap.add_argument("--no-torch", action="store_true", help="skip the torch sides (fp32, bf16 not offered)")
    ap.add_argument("--no-doc", action="store_true", help="do not rewrite docs/performance.md")
    ap.add_argument(
        "--doc-only", action="store_true", help="only re-render docs/performance.md from --output"
    )
    args = ap.parse_args()
    if not args.doc_only:
        args.output.write_text(json.dumps(run(args), indent=1) + "\n")
    rendered = blocks(load_runs(args.output))
    print("\n\n".join(rendered.values()))
    if not args.no_doc:
        write_blocks(rendered)


def run(args: argparse.Namespace) -> dict:
    os.environ["JETTAGGER_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    from jettagger_coffea.backends import _SESSIONS
    from jettagger_coffea.data import PROCESSES, sample_path

    files = [sample_path(p, "jetclass") for p in PROCESSES]
    load = os.getloadavg()[0]
    res: dict = {"threads": args.threads, "load_average_at_start": load, "cpu": _cpu()}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.networks:
            res[name] = measure(bundle_of(name, Path(tmp)), files, Path(tmp), args.threads, not args.no_torch)
            _SESSIONS.clear()  # the next network's run starts without this one's arenas
            print(name, json.dumps(res[name]["seconds"]), flush=True)
            print("  speed-up vs CMSSW", json.dumps(res[name]["speedup_vs_cmssw"]), flush=True)
    res["load_average_at_end"] = os.getloadavg()[0]
    return res


def _cpu() -> str:
    from jettagger_coffea.backends import machine_fingerprint

    m = machine_fingerprint()
    return f"{m['cpu']} ({m['cores']} cores; {' '.join(m['flags'])})"


# --- docs/performance.md: the blocks rendered from the runs' JSONs ----------------------------------------

#: the earlier run on a loaded machine (load average 1.2 -> 4.0, ``--no-torch``, both networks): the only
#: JSON holding ParticleNet-Lite's numbers; kept as that run wrote it
LOADED = HERE / "precision_loaded.json"
LABELS = {"official-particlenet": "official ParticleNet", "particlenet-lite": "particlenet-lite"}
#: int8 candidates, the per-edge layers of each network's EdgeConv blocks (architecture, not measured)
EDGE_LAYERS = {"official-particlenet": 6, "particlenet-lite": 4}
GOAL = 1.5  # official ParticleNet end to end with --precision int8 against CMSSW's per-jet fp32 loop
ORDINAL = {(0, 1): "both", (1,): "second", (0,): "first"}


def load_runs(*paths: Path) -> list[tuple[str, dict]]:
    """(file name, JSON) of the runs rendered: the newest first, then the loaded one."""
    return [(p.name, json.loads(p.read_text())) for p in (*(paths or (HERE / "precision.json",)), LOADED)]


def loaded(run: dict) -> bool:
    """Over half the cores busy when the run started (fixed_costs.py's rule, at the start)."""
    cores = int(re.search(r"\((\d+) cores", run["cpu"]).group(1))  # type: ignore[union-attr]
    return run["load_average_at_start"] > 0.5 * cores


def layers(nodes: list[str]) -> str:
    """Which int8 layers, by block, widest first: "block 3 both, block 2 second"."""
    per: dict[int, list[int]] = {}
    for n in nodes:
        block, layer = map(int, re.search(r"convs\.(\d+)/layers\.(\d+)/", n).groups())  # type: ignore[union-attr]
        per.setdefault(block + 1, []).append(layer)
    return ", ".join(f"block {b} {ORDINAL[tuple(sorted(per[b]))]}" for b in sorted(per, reverse=True))


def _signed(x: float) -> str:
    return sci(x).replace("-", "\u2212", 1) if x < 0 else sci(x)


def _dev(rec: dict) -> list[str]:
    """mean / max |Δscore|, the worst AUC change (its discriminant), within limits."""
    mx = rec["max_abs_delta"]
    worst = max(rec["auc_delta"].items(), key=lambda kv: abs(kv[1]))
    ok = "yes" if rec["within_limits"] else "**no**"
    return [
        f"{sci(rec['mean_abs_delta'])} / {f'{mx:.2f}' if mx >= 0.1 else sci(mx)}",
        f"{sci(abs(worst[1]))} ({worst[0]})",
        ok,
    ]


def rows(name: str, r: dict, label: str) -> list[list[str]]:
    """The table's rows of one network: CMSSW's loop, fp32, then each reduced precision."""
    s, goal = r["seconds"], name == "official-particlenet"
    cmssw = s["cmssw_per_jet_fp32"]
    out = [[label, "CMSSW per-jet fp32", "—", "—", "—", "—", f"{cmssw:.2f}", "—", "1"]]
    out.append(
        [label, "fp32", "—", "0", "0", "—", f"{s['inference_fp32']:.2f}", f"{s['end_to_end_fp32']:.2f}"]
    )
    out[-1].append(ratio(cmssw / s["end_to_end_fp32"]))
    for p, rec in r["records"].items():
        b = "**" if goal and rec["within_limits"] else ""
        which = "—"
        if "nodes" in rec:
            which = f"{len(rec['nodes'])} of {EDGE_LAYERS[name]} ({layers(rec['nodes'])})"
        inf, e2e = s.get(f"inference_{p}"), s.get(f"end_to_end_{p}")
        inference = f"{inf:.2f}" if inf else "—"
        if f"inference_{p}_not_offered" in s:  # its speed only (torch): against torch fp32
            inference = f"{s[f'inference_{p}_not_offered']:.1f} (torch fp32: {s['inference_torch_fp32']:.1f})"
        end = [f"{b}{e2e:.2f}{b}", f"{b}{ratio(cmssw / e2e)}{b}"] if e2e else ["—", "—"]
        kind = f"{p} ({rec['backend']})" if rec["backend"] == "torch" else p
        out.append([label, f"{b}{kind}{b}", which, *_dev(rec), inference, *end])
    return out


def networks(runs: list[tuple[str, dict]]) -> dict[str, tuple[str, dict]]:
    """Per network, the first run (newest) that measured it: (file name, run)."""
    out: dict[str, tuple[str, dict]] = {}
    for file, run in runs:
        for n in NETWORKS:
            if n in run and n not in out:
                out[n] = (file, run)
    return {n: out[n] for n in NETWORKS if n in out}


def table_block(runs: list[tuple[str, dict]]) -> str:
    """Where each network's rows come from, the table, and the records' sizes."""
    which = networks(runs)
    where = "; ".join(
        f"{LABELS[n]}: `benchmarks/{file}`, load average {run['load_average_at_start']:.1f} at the start, "
        f"{run['load_average_at_end']:.1f} at the end" + (" (loaded)" if loaded(run) else "")
        for n, (file, run) in which.items()
    )
    body = []
    for n, (_, run) in which.items():
        body += rows(n, run[n], LABELS[n] + (" (loaded)" if loaded(run) else ""))
    head = ["network", "precision", "int8 layers", "mean / max \\|Δscore\\|", "worst AUC Δ", "within limits"]
    head += ["inference s", "end to end s", "end to end vs CMSSW per-jet fp32"]
    parts = [wrap(f"Rows by network: {where}."), table(head, body)]
    if "official-particlenet" in which:
        r = which["official-particlenet"][1]["official-particlenet"]
        i8, b16 = r["records"]["int8"], r["records"]["bf16"]
        parts.append(
            f"Records: {i8['jets']} held-out jets for int8 (the other {i8['jets']} chose the layers), "
            f"{b16['jets']} for bf16; {i8['calibration_jets']} calibrate; making the official network's int8 "
            f"model took {i8['seconds_to_make']:.0f} s."
        )
    if "particlenet-lite" in which:
        s = which["particlenet-lite"][1]["particlenet-lite"]["seconds"]
        parts[-1] += (
            f" Lite's int8 is {ratio(s['inference_fp32'] / s['inference_int8'])} its fp32 in inference and "
            f"{ratio(s['end_to_end_fp32'] / s['end_to_end_int8'])} end to end, where reading and features "
            f"({s['end_to_end_fp32'] - s['inference_fp32']:.1f} s) weigh as much as the network."
        )
    parts[-1] = wrap(parts[-1])
    if "official-particlenet" in which:
        parts.append(bullet(goal(which["official-particlenet"][1])))
    return "\n\n".join(parts)


def goal(run: dict) -> str:
    s = run["official-particlenet"]["seconds"]
    e2e = s["cmssw_per_jet_fp32"] / s["end_to_end_int8"]
    met = "met" if e2e >= GOAL else "missed"
    return (
        f"**Goal (official ParticleNet end to end with `--precision int8` ≥ {GOAL}{X} CMSSW's per-jet fp32 "
        f"loop, same jets): {met}, {ratio(e2e)}** on the {'loaded' if loaded(run) else 'quiet'} machine "
        f"(fp32 end to end: {ratio(s['cmssw_per_jet_fp32'] / s['end_to_end_fp32'])}); int8 against our own "
        f"fp32: {ratio(s['end_to_end_fp32'] / s['end_to_end_int8'])} end to end, "
        f"{ratio(s['inference_fp32'] / s['inference_int8'])} in inference."
    )


def limits_block(runs: list[tuple[str, dict]]) -> str:
    """bf16 against the limits, and what the load did to CMSSW's loop (the official network in both runs)."""
    which = networks(runs)
    dev = {n: r[n]["records"]["bf16"] for n, (_, r) in which.items()}
    off = dev.get("official-particlenet")
    over = [n for n, rec in dev.items() if not rec["within_limits"]]
    if not over:
        return bullet("bf16 (torch autocast, oneDNN): within the limits for every network.")
    names = "both networks" if len(over) == 2 else ", ".join(LABELS[n] for n in over)
    text = f"bf16 (torch autocast, oneDNN): over the limits for {names}"
    if off:
        cls, auc = max(off["auc_delta"].items(), key=lambda kv: abs(kv[1]))
        text += f" (official: mean |Δscore| {sci(off['mean_abs_delta'])}, the {cls} AUC {_signed(auc)}"
        if "particlenet-lite" in dev:
            text += f"; Lite: {sci(dev['particlenet-lite']['mean_abs_delta'])}"
        text += ")"
    out = [bullet(text + ", so not offered.")]
    official = [run for _, run in runs if "official-particlenet" in run]
    quiet = [r for r in official if not loaded(r)]
    for run in [r for r in official if loaded(r)][:1] if quiet else []:
        s, q = run["official-particlenet"]["seconds"], quiet[0]["official-particlenet"]["seconds"]
        file = next(f for f, r in runs if r is run)
        out.append(
            bullet(
                "The per-jet loop suffers most from a loaded machine (thousands of small calls, each waking "
                f"{run['threads']} threads): in the loaded run (`benchmarks/{file}`) CMSSW's loop read "
                f"{s['cmssw_per_jet_fp32']:.1f} s against {q['cmssw_per_jet_fp32']:.1f} s quiet, which "
                "inflated the int8 end-to-end ratio there to "
                f"{ratio(s['cmssw_per_jet_fp32'] / s['end_to_end_int8'])}."
            )
        )
    return "\n".join(out)


def blocks(runs: list[tuple[str, dict]]) -> dict[str, str]:
    """The generated blocks of docs/performance.md, by marker name."""
    return {"precision": table_block(runs), "precision-limits": limits_block(runs)}


if __name__ == "__main__":
    main()
