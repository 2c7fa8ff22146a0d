"""Reduced precision against fp32 and CMSSW's per-jet loop, side by side in one run, on the same jets.

    python benchmarks/precision.py [--threads 2] [--output benchmarks/precision.json]

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
import shutil
import tempfile
import time
from pathlib import Path

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
    args = ap.parse_args()
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
    args.output.write_text(json.dumps(res, indent=1) + "\n")


def _cpu() -> str:
    from jettagger_coffea.backends import machine_fingerprint

    m = machine_fingerprint()
    return f"{m['cpu']} ({m['cores']} cores; {' '.join(m['flags'])})"


if __name__ == "__main__":
    main()
