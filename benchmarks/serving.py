"""The triton backend against the in-process onnxruntime backend, side by side in one run.

    python benchmarks/serving.py [--models pfn particlenet-lite part] [--output benchmarks/serving.json]

A local Triton server (PyTriton, `make triton`) on loopback serves the shipped bundles from a repository
written by `jettagger export --triton`; the client scores the 4000 bundled NanoAOD FatJets with the same
features, padding and batches either way. Both sides get the same inference threads (--threads); on a
2-core machine the server and the client share the cores, as they would not at a facility.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from _timing import best_of  # benchmarks/ is on sys.path when a script here runs

HERE = Path(__file__).resolve().parent
PYTHON = Path(os.environ.get("JETTAGGER_TRITON_PYTHON") or HERE.parent / ".venv-triton" / "bin" / "python")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["pfn", "particlenet-lite", "part"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--output", type=Path, default=HERE / "serving.json")
    args = p.parse_args()
    os.environ["JETTAGGER_THREADS"] = str(args.threads)

    from coffea.nanoevents import NanoEventsFactory

    from jettagger_coffea import JetTagger
    from jettagger_coffea.bundle import Bundle
    from jettagger_coffea.data import PROCESSES, sample_path
    from jettagger_coffea.nanoevents import PFNanoSchema
    from jettagger_coffea.triton import start_local_server, write_repository

    events = [
        NanoEventsFactory.from_root(
            {str(sample_path(p_, "nanoaod")): "Events"}, schemaclass=PFNanoSchema, mode="eager"
        ).events()
        for p_ in PROCESSES
    ]
    res: dict = {"threads": args.threads, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for m in args.models:
            write_repository(Bundle.load(m), Path(tmp) / "repo")
        proc, grpc, http = start_local_server(Path(tmp) / "repo", PYTHON, Path(tmp) / "log", args.threads)
        try:
            for m in args.models:
                local = JetTagger(m)
                ref = np.concatenate([local.score_jets(e).scores for e in events])
                r = {
                    "jets": len(ref),
                    "onnxruntime": best_of(lambda t=local: [t.score_jets(e) for e in events]),
                }
                for name, url in (("triton_grpc", grpc), ("triton_http", http)):
                    remote = JetTagger(m, backend="triton", server=url)
                    got = np.concatenate([remote.score_jets(e).scores for e in events])
                    r[f"{name}_max_abs_diff"] = float(np.nanmax(np.abs(got - ref)))
                    r[name] = best_of(lambda t=remote: [t.score_jets(e) for e in events])
                res["models"][m] = r
        finally:
            proc.terminate()
            proc.wait(60)
    print(f"{args.threads} inference threads each side; seconds for the 4000 FatJets (features included)")
    print("| model | onnxruntime in process | Triton gRPC | Triton HTTP | gRPC / in-process | max abs diff |")
    print("| --- | --- | --- | --- | --- | --- |")
    for m, r in res["models"].items():
        diff = max(r["triton_grpc_max_abs_diff"], r["triton_http_max_abs_diff"])
        print(
            f"| {m} | {r['onnxruntime']:.2f} s | {r['triton_grpc']:.2f} s | {r['triton_http']:.2f} s | "
            f"{r['triton_grpc'] / r['onnxruntime']:.2f}x | {diff:.1e} |"
        )
    args.output.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
