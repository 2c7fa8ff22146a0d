"""How close each network runs to the hardware, and what cutting operations buys, side by side in one run.

    python benchmarks/operations.py [--threads 2] [--output benchmarks/operations.json]

For every shipped bundle and the official JetClass ParticleNet (kin) on the 4000 bundled JetClass-layout
jets, at the slot budget the tagger tunes for it: forward FLOPs at the padded lengths actually run (torch's
FLOP counter on each batch), achieved GFLOP/s against the fp32 matmul rate measured here, onnxruntime's
time per operator type, and two cuts: int8 dynamic quantisation of MatMul/Gemm weights (onnxruntime) with
its score deviation, and for ParticleNet the EdgeConv form we export (first layer on particles before the
gather: W [x_i, x_j - x_i] = (W_a - W_b) x_i + W_b x_j, k times fewer FLOPs in that layer) against the
concatenated form weaver and CMSSW export, same weights.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from _models import concatenated_particlenet, official_particlenet
from _timing import best_of  # benchmarks/ is on sys.path when a script here runs

HERE = Path(__file__).resolve().parent
SHIPPED = ("pfn", "particlenet-lite", "part", "part-irc")


def matmul_gflops() -> float:
    import torch

    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    torch.mm(a, b)
    return 20 * 2 * 1024**3 / best_of(lambda: [torch.mm(a, b) for _ in range(20)]) / 1e9


def batches(bundle, jets, budget: int) -> list[dict]:
    from jettagger_coffea.backends import MAX_PAIRS
    from jettagger_coffea.batching import batch_length, sorted_batches

    length_of = batch_length(list(jets.config.inputs.values()), "dynamic", bundle.min_length)
    order, ranges = sorted_batches(jets.counts, length_of, budget, MAX_PAIRS if bundle.pairwise else None)
    ordered = jets.take(order)
    return [ordered.dense(a, b, length="dynamic", min_length=bundle.min_length) for a, b in ranges]


def flops(bundle, xs: list[dict]) -> float:
    """Forward FLOPs of these padded batches (matmuls and convolutions)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from jettagger_coffea.backends import TorchBackend

    model = TorchBackend(bundle).model
    total = 0.0
    for x in xs:
        with FlopCounterMode(display=False) as fc:
            model(*[torch.from_numpy(x[k]) for k in model.input_names])
        total += fc.get_total_flops()
    return total


def timed(path: Path, xs: list[dict], threads: int) -> tuple[float, np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]

    def run() -> list:
        return [sess.run(None, {k: x[k] for k in names})[0] for x in xs]

    return best_of(run), np.concatenate(run())


def op_profile(path: Path, xs: list[dict], threads: int, tmp: Path) -> dict[str, float]:
    """Share of onnxruntime's node time per operator type."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.enable_profiling = threads, True
    opts.profile_file_prefix = str(tmp / "profile")
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    for x in xs[: max(1, len(xs) // 4)]:
        sess.run(None, {k: x[k] for k in names})
    events = json.loads(Path(sess.end_profiling()).read_text())
    per_op: collections.Counter = collections.Counter()
    for e in events:
        if e.get("cat") == "Node":
            per_op[e["args"]["op_name"]] += e["dur"]
    total = sum(per_op.values())
    return {k: v / total for k, v in per_op.most_common(8)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--models", nargs="+", default=[*SHIPPED, "official-particlenet"])
    p.add_argument("--output", type=Path, default=HERE / "operations.json")
    args = p.parse_args()
    os.environ["JETTAGGER_THREADS"] = str(args.threads)
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from jettagger_coffea.backends import MAX_PAIRS, OnnxBackend, tuned_budget
    from jettagger_coffea.bundle import Bundle
    from jettagger_coffea.data import PROCESSES, sample_path
    from jettagger_coffea.jetfiles import load_jets

    torch.set_num_threads(args.threads)
    files = [sample_path(p_, "jetclass") for p_ in PROCESSES]
    res: dict = {"threads": args.threads, "matmul_gflops": matmul_gflops(), "models": {}}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for name in args.models:
            bundle = official_particlenet(tmp) if name == "official-particlenet" else Bundle.load(name)
            jets = load_jets(files, bundle.config, with_labels=False)
            session = OnnxBackend(bundle.onnx_path, threads=args.threads)
            pairs = MAX_PAIRS if bundle.pairwise else None
            budget = tuned_budget((name,), session, jets, len(bundle.classes), bundle.min_length, pairs) or 0
            xs = batches(bundle, jets, budget)
            seconds, ref = timed(bundle.onnx_path, xs, args.threads)
            f = flops(bundle, xs)
            r = {
                "budget": budget,
                "jets": len(jets),
                "seconds": seconds,
                "gflop": f / 1e9,
                "gflops_achieved": f / seconds / 1e9,
                "ops": op_profile(bundle.onnx_path, xs, args.threads, tmp),
            }
            r["fraction_of_matmul"] = r["gflops_achieved"] / res["matmul_gflops"]
            q = tmp / f"{name}-int8.onnx"
            quantize_dynamic(
                str(bundle.onnx_path),
                str(q),
                op_types_to_quantize=["MatMul", "Gemm"],
                weight_type=QuantType.QInt8,
            )
            tq, sq = timed(q, xs, args.threads)
            r["int8"] = {
                "seconds": tq,
                "speedup": seconds / tq,
                "mean_abs_diff": float(np.nanmean(np.abs(sq - ref))),
                "max_abs_diff": float(np.nanmax(np.abs(sq - ref))),
            }
            if (
                bundle.card.get("network") in ("particlenet", "particlenet-lite")
                or name == "official-particlenet"
            ):
                tc, sc = timed(concatenated_particlenet(bundle, tmp), xs, args.threads)
                r["factorised_edgeconv"] = {
                    "concatenated_seconds": tc,
                    "speedup": tc / seconds,
                    "mean_abs_diff": float(np.nanmean(np.abs(sc - ref))),
                    "max_abs_diff": float(np.nanmax(np.abs(sc - ref))),
                }
            res["models"][name] = r
            print(name, json.dumps(r), flush=True)
    print(f"\nfp32 matmul {res['matmul_gflops']:.0f} GFLOP/s, {args.threads} threads; 4000 jets")
    print(
        "| model | budget | GFLOP run | s | GFLOP/s (of matmul) | top ops | "
        "int8: speed-up, mean / max dev. | factorised vs concatenated EdgeConv |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, r in res["models"].items():
        ops = ", ".join(f"{k} {100 * v:.0f} %" for k, v in list(r["ops"].items())[:3])
        i8 = r["int8"]
        fe = r.get("factorised_edgeconv")
        fe_text = (
            f"{fe['speedup']:.2f}x ({fe['mean_abs_diff']:.0e} / {fe['max_abs_diff']:.0e})" if fe else "n/a"
        )
        print(
            f"| {name} | {r['budget']} | {r['gflop']:.0f} | {r['seconds']:.2f} | {r['gflops_achieved']:.0f} "
            f"({100 * r['fraction_of_matmul']:.0f} %) | {ops} | {i8['speedup']:.2f}x, "
            f"{i8['mean_abs_diff']:.1e} / {i8['max_abs_diff']:.1e} | {fe_text} |"
        )
    args.output.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
