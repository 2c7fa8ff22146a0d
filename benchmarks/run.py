"""Throughput, overhead, FLOPs, memory and scaling of the `jettagger run` pipeline, side by side in one run.

    python benchmarks/run.py [--models particlenet-lite part pfn] [--output benchmarks/results.json]

Prints a table and writes a JSON. Every ratio is measured here, in this run, on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import awkward as ak
import numpy as np
from _timing import best_of, single_thread_workers  # benchmarks/ is on sys.path when a script here runs

from jettagger_coffea.backends import TorchBackend
from jettagger_coffea.bundle import resolve
from jettagger_coffea.data import PROCESSES, default_fileset, sample_path
from jettagger_coffea.execution import run_fileset
from jettagger_coffea.features import make_table, standardise
from jettagger_coffea.nanoevents import open_events
from jettagger_coffea.tagger import JetTagger

HERE = Path(__file__).resolve().parent


def matmul_gflops(threads: int) -> float:
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    torch.mm(a, b)
    t = best_of(lambda: [torch.mm(a, b) for _ in range(20)])
    return 20 * 2 * 1024**3 / t / 1e9


def flops_per_jet(bundle, length: int) -> float:
    """Forward FLOPs of one jet of ``length`` particles (torch's FLOP counter: matmuls and convolutions)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model = TorchBackend(bundle).model
    dims = {k: v[1] for k, v in bundle.config.input_shapes.items()}
    from jettagger_coffea.nn.export import example_inputs

    n = 8
    xs = example_inputs(model, dims, n=n, length=max(length, model.min_length))
    for x in xs:  # every slot real
        x[..., :] = x[..., :1] if x.shape[1] == 1 else x
    xs[model.roles.index("mask")] = torch.ones_like(xs[model.roles.index("mask")])
    with FlopCounterMode(display=False) as fc:  # (no no_grad: its module tracker needs grad_fns)
        model(*xs)
    return fc.get_total_flops() / n


def pipeline_parts(bundle_path: Path, jets, pf, backend: str, padding) -> dict[str, float]:
    """featurize (+ pad) vs model time on already-read jets."""
    tagger = JetTagger(bundle_path, backend=backend, padding=padding)

    def feats():
        return standardise(make_table(jets, tagger.config, pf=pf), tagger.config)

    std = feats()
    tagger.run_model(std)  # warm-up: session creation
    t_feat = best_of(feats)
    t_total = best_of(lambda: tagger.run_model(std))
    # dense padding alone, to split model time from padding time
    order = np.argsort(std.counts, kind="stable")
    ordered = std.take(order)
    t_pad = best_of(
        lambda: ordered.dense(
            length="dynamic" if padding == "dynamic" else None, min_length=tagger.bundle.min_length
        )
    )
    return {
        "featurize_s": t_feat,
        "pad_s": t_pad,
        "model_s": max(t_total - t_pad, 1e-9),
        "jets": len(std),
        "jets_per_s_model_path": len(std) / (t_feat + t_total),
    }


def read_jets():
    return [ak.flatten(open_events(str(sample_path(p))).FatJet, axis=1) for p in PROCESSES]


def end_to_end(bundle_path: Path, chunksize: int = 500) -> dict[str, float]:
    """`jettagger run` (iterative executor, this process) with the time inside the model counted apart:
    everything else (read, decompress, features, pad, histogram fills, coffea) is the non-model share."""
    from jettagger_coffea import backends

    model_s = [0.0]
    run = backends.OnnxBackend.run

    def timed(self, inputs):
        t0 = time.perf_counter()
        try:
            return run(self, inputs)
        finally:
            model_s[0] += time.perf_counter() - t0

    run_fileset(
        bundle_path, default_fileset(), executor="iterative", chunksize=chunksize, progress=False
    )  # warm
    backends.OnnxBackend.run = timed  # type: ignore[method-assign]
    try:
        t = time.perf_counter()
        out = run_fileset(
            bundle_path, default_fileset(), executor="iterative", chunksize=chunksize, progress=False
        )
        dt = time.perf_counter() - t
    finally:
        backends.OnnxBackend.run = run  # type: ignore[method-assign]
    n = sum(c["selected_jets"] for c in out["cutflow"].values())
    return {
        "seconds": dt,
        "jets": n,
        "jets_per_s": n / dt,
        "model_s": model_s[0],
        "non_model_fraction": 1 - model_s[0] / dt,
        "read_s": read_seconds(),
    }


def read_seconds() -> float:
    """Reading (LZMA decompression) alone: every FatJet / PFCands branch of the bundled files with uproot."""
    import uproot

    t = time.perf_counter()
    for p in PROCESSES:
        tree = uproot.open(sample_path(p))["Events"]
        tree.arrays(tree.keys(filter_name=["FatJet*", "PFCands*", "nFatJet*", "nPFCands*"]), library="np")
    return time.perf_counter() - t


def dask_scaling(bundle_path: Path, workers: int, copies: int = 3, chunksize: int = 500) -> dict[str, float]:
    """`jettagger run` on a LocalCluster of ``workers`` single-threaded worker processes, timed on a second
    pass over ``copies`` x the bundled files: cluster start-up and per-worker model loading are excluded."""
    fileset = {f"{ds}_{i}": spec for i in range(copies) for ds, spec in default_fileset().items()}
    with single_thread_workers(workers) as (_cluster, client):
        run_fileset(
            bundle_path,
            default_fileset(),
            executor="dask",
            scheduler=client.scheduler.address,
            chunksize=chunksize,
            progress=False,
        )  # warm-up: imports, sessions on every worker
        t = time.perf_counter()
        out = run_fileset(
            bundle_path,
            fileset,
            executor="dask",
            scheduler=client.scheduler.address,
            chunksize=chunksize,
            progress=False,
        )
        dt = time.perf_counter() - t
    n = sum(c["selected_jets"] for c in out["cutflow"].values())
    return {"seconds": dt, "jets": n, "jets_per_s": n / dt}


def weaver_predict(bundle_path: Path, network: str, options: dict) -> dict[str, float] | None:
    """weaver-core's own `weaver --predict` on the same model (our model.pt) and jets (JetClass files)."""
    exe = shutil.which("weaver", path=str(Path(sys.executable).parent))
    if exe is None or network not in ("particlenet-lite", "particlenet", "part"):
        return None
    net_file = HERE / "weaver_networks" / ("part.py" if network == "part" else "particlenet.py")
    opts = []
    if network == "particlenet":
        opts += ["-o", "lite", "False"]
    for k2, v in options.items():
        opts += ["-o", k2, repr(tuple(v) if isinstance(v, list) else v)]
    files = [str(sample_path(p, "jetclass")) for p in PROCESSES]
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            exe,
            "--predict",
            "--data-test",
            *files,
            "--data-config",
            str(bundle_path / "data_config.yaml"),
            "--network-config",
            str(net_file),
            "--model-prefix",
            str(bundle_path / "model.pt"),
            "--gpus",
            "",
            "--batch-size",
            "256",
            "--num-workers",
            "0",
            "--predict-output",
            f"{tmp}/pred.root",
            *opts,
        ]
        t = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=tmp)
        dt = time.perf_counter() - t
    if r.returncode != 0:
        print("weaver predict failed:", r.stderr[-800:], file=sys.stderr)
        return None
    return {"seconds": dt, "jets": 4000, "jets_per_s": 4000 / dt}


def ours_predict(bundle_path: Path) -> dict[str, float]:
    files = [str(sample_path(p, "jetclass")) for p in PROCESSES]
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "jettagger_coffea.cli",
                "predict",
                "--model",
                str(bundle_path),
                "--input",
                *files,
                "--output",
                f"{tmp}/pred.root",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        dt = time.perf_counter() - t
    assert r.returncode == 0, r.stderr
    return {"seconds": dt, "jets": 4000, "jets_per_s": 4000 / dt}


def rss_vs_chunksize(bundle_path: Path, sizes=(100, 500, 2000)) -> dict[int, float]:
    """Peak RSS (MB, the kernel's VmHWM) of a fresh process running the `jettagger run` pipeline over the
    bundled files with chunks of ``size`` events (500 is the CLI default): what one worker needs."""
    code = (
        "import sys\n"
        "from jettagger_coffea.data import default_fileset\n"
        "from jettagger_coffea.execution import run_fileset\n"
        "run_fileset(sys.argv[1], default_fileset(), executor='iterative', chunksize=int(sys.argv[2]), "
        "progress=False)\n"
        "print(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])\n"
    )
    # (not getrusage: after fork + exec, ru_maxrss inherits the parent's high-water mark)
    out = {}
    for n in sizes:
        r = subprocess.run(
            [sys.executable, "-c", code, str(bundle_path), str(n)],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "JETTAGGER_THREADS": "1"},
        )
        out[n] = float(r.stdout.strip().splitlines()[-1]) / 1024
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["particlenet-lite", "part", "pfn"])
    ap.add_argument("--output", default=str(HERE / "results.json"))
    ap.add_argument("--skip-dask", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("JETTAGGER_THREADS", "2")
    res: dict = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(),
        }
    }
    res["matmul_gflops_fp32"] = {"1 thread": matmul_gflops(1), "2 threads": matmul_gflops(2)}
    jets_list = read_jets()
    pf = ak.concatenate([j.constituents.pf for j in jets_list])  # cross-references resolve per file
    jets = ak.concatenate(jets_list)
    counts = ak.to_numpy(ak.num(pf, axis=1))
    res["multiplicity"] = {"mean": float(counts.mean()), "max": int(counts.max())}
    for name in args.models:
        path = resolve(name)
        bundle = JetTagger(path).bundle
        r: dict = {"bundle": str(path), "network": bundle.card.get("network")}
        r["parameters"] = bundle.card.get("provenance", {}).get("parameters")
        r["flops_per_jet"] = {
            "mean multiplicity": flops_per_jet(bundle, round(counts.mean())),
            "128": flops_per_jet(bundle, 128),
        }
        r["onnx_dynamic"] = pipeline_parts(path, jets, pf, "onnx", "dynamic")
        r["onnx_fixed128"] = pipeline_parts(path, jets, pf, "onnx", "fixed")
        r["torch_dynamic"] = pipeline_parts(path, jets, pf, "torch", "dynamic")
        m = r["onnx_dynamic"]
        achieved = r["flops_per_jet"]["mean multiplicity"] * m["jets"] / m["model_s"] / 1e9
        r["model_gflops_achieved"] = achieved
        r["model_fraction_of_matmul"] = achieved / res["matmul_gflops_fp32"]["2 threads"]
        r["end_to_end_iterative"] = end_to_end(path)
        if not args.skip_dask:
            r["dask_1_worker"] = dask_scaling(path, 1)
            r["dask_2_workers"] = dask_scaling(path, 2)
        r["weaver_predict"] = weaver_predict(
            path, bundle.card.get("network"), bundle.card.get("network_options", {})
        )
        r["jettagger_predict"] = ours_predict(path)
        r["rss_mb_vs_chunk_events"] = {str(k): v for k, v in rss_vs_chunksize(path).items()}
        res[name] = r
    Path(args.output).write_text(json.dumps(res, indent=2))
    print_table(res, args.models)


def print_table(res: dict, names) -> None:
    """A markdown table (the README's) and the per-chunk-size memory."""
    print(
        f"fp32 matmul: {res['matmul_gflops_fp32']['2 threads']:.1f} GFLOP/s (2 threads); "
        f"mean multiplicity {res['multiplicity']['mean']:.1f}\n"
    )
    head = [
        "model",
        "FLOPs/jet (mean / 128)",
        "end-to-end jets/s",
        "dynamic vs fixed-128",
        "onnxruntime vs torch",
        "vs weaver `--predict`",
        "dask 2 workers / 1",
        "non-model: pipeline (read) / features+pad",
        "model / matmul rate",
        "peak RSS MB (chunk 500)",
    ]
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    for n in names:
        r = res[n]
        d, f, t = r["onnx_dynamic"], r["onnx_fixed128"], r["torch_dynamic"]
        e = r["end_to_end_iterative"]
        w = r.get("weaver_predict")
        features = (d["featurize_s"] + d["pad_s"]) / (d["featurize_s"] + d["pad_s"] + d["model_s"])
        cells = [
            n,
            f"{r['flops_per_jet']['mean multiplicity'] / 1e6:.0f}M / {r['flops_per_jet']['128'] / 1e6:.0f}M",
            f"{e['jets_per_s']:.0f}",
            f"{(f['pad_s'] + f['model_s']) / (d['pad_s'] + d['model_s']):.2f}x",
            f"{(t['pad_s'] + t['model_s']) / (d['pad_s'] + d['model_s']):.2f}x",
            (
                f"{r['jettagger_predict']['jets_per_s'] / w['jets_per_s']:.1f}x "
                f"({r['jettagger_predict']['seconds']:.1f} s vs {w['seconds']:.1f} s)"
            )
            if w
            else "n/a",
            f"{r['dask_2_workers']['jets_per_s'] / r['dask_1_worker']['jets_per_s']:.2f}x"
            if "dask_2_workers" in r
            else "n/a",
            (
                f"{100 * e['non_model_fraction']:.0f} % ({100 * e['read_s'] / e['seconds']:.0f} %) / "
                f"{100 * features:.0f} %"
            ),
            f"{100 * r['model_fraction_of_matmul']:.0f} % ({r['model_gflops_achieved']:.0f} GFLOP/s)",
            f"{r['rss_mb_vs_chunk_events']['500']:.0f}",
        ]
        print("| " + " | ".join(cells) + " |")
    for n in names:
        rss = ", ".join(f"{k}: {v:.0f}" for k, v in res[n]["rss_mb_vs_chunk_events"].items())
        print(f"\n{n}: peak RSS MB per chunk size (events) {rss}")


if __name__ == "__main__":
    main()
