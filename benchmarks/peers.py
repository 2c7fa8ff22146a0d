"""The ways an analyst would otherwise run a full-size ParticleNet, side by side on the same jets and weights.

    python benchmarks/peers.py [--threads 2] [--output benchmarks/peers.json]

- *CMSSW*: one onnxruntime call per jet at its own length (``BoostedJetONNXJetTagsProducer``), inputs
  already in memory: inference alone.
- *coffea ml_tools*: a torch model fed fixed-length (config length) batches of a whole chunk, as
  ``torch_wrapper`` does: inference alone.
- *ours*: ``jettagger predict``'s work in one process (read, features, batched inference, writing the
  parquet), end to end, at the old fixed slot budget and with the budget measured once per process
  (the default).

Model: the official JetClass ParticleNet (kin inputs, 366k parameters; ``../shared/reference/weights``),
imported with ``jettagger import-weaver``; jets: the 4000 bundled JetClass-layout jets.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from _timing import best_of  # benchmarks/ is on sys.path when a script here runs

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("JETTAGGER_SHARED") or HERE.parent.parent / "shared")
BUDGETS = (1024, 2048, 4096, 8192, 16384, 32768)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=HERE / "peers.json")
    args = parser.parse_args()
    os.environ["JETTAGGER_THREADS"] = str(args.threads)

    import pyarrow  # noqa: F401 - the parquet writer, as jettagger predict uses it
    import torch

    from jettagger_coffea.backends import OnnxBackend, TorchBackend, run_batched
    from jettagger_coffea.bundle import Bundle
    from jettagger_coffea.data import PROCESSES, sample_path
    from jettagger_coffea.datasets import load_jets, open_jets
    from jettagger_coffea.evaluation import predict_files
    from jettagger_coffea.features import make_table, standardise
    from jettagger_coffea.tagger import JetTagger
    from jettagger_coffea.weaver import import_weaver

    torch.set_num_threads(args.threads)
    files = [sample_path(p, "jetclass") for p in PROCESSES]
    res: dict = {"threads": args.threads}
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Bundle.load(
            import_weaver(
                SHARED / "reference/jetclass/JetClass_kin.yaml",
                Path(tmp) / "pn",
                network="particlenet",
                checkpoint=SHARED / "reference/weights/ParticleNet_kin.pt",
            )
        )
        config = bundle.config
        jets = load_jets(files, config, with_labels=False)
        res["jets"] = len(jets)
        session = OnnxBackend(bundle.onnx_path, threads=args.threads)
        n_classes = len(config.class_names)

        # the slot budget, measured for this network (inference on jets already standardised)
        per_budget = {
            b: best_of(
                lambda b=b: run_batched(session, jets, n_classes, min_length=bundle.min_length, max_slots=b)
            )
            for b in BUDGETS
        }
        res["inference_seconds_per_slot_budget"] = per_budget

        # CMSSW: per jet, its own length (at least the config's minimum), inputs prebuilt
        k1 = bundle.min_length  # ParticleNet: k + 1, as CMSSW pads
        singles = [jets.dense(i, i + 1, "dynamic", k1) for i in range(len(jets)) if jets.counts[i] > 0]
        res["cmssw_per_jet"] = best_of(lambda: [session.run(x) for x in singles])

        # coffea ml_tools: torch, fixed config length, the whole chunk (here: 1000 jets) per call
        model = TorchBackend(bundle).model
        fixed = [jets.dense(i, min(i + 1000, len(jets)), length="fixed") for i in range(0, len(jets), 1000)]
        names = list(config.inputs)

        @torch.no_grad()
        def ml_tools() -> None:
            for x in fixed:
                model(*[torch.from_numpy(x[k]) for k in names])

        res["ml_tools_fixed"] = best_of(ml_tools)

        # ours, end to end: read + features + inference + parquet, as `jettagger predict`
        def ours(budget: int | str) -> None:
            import awkward as ak

            cols = predict_files(JetTagger(bundle, max_slots=budget, threads=args.threads), files)
            ak.to_parquet(ak.Array(cols), Path(tmp) / "pred.parquet")

        res["ours_end_to_end_default"] = best_of(lambda: ours(256 * 128))
        res["ours_end_to_end_auto"] = best_of(lambda: ours("auto"))  # what `jettagger predict` does
        table = make_table(open_jets(files[0]), config)
        res["features_seconds_1000_jets"] = best_of(lambda: standardise(table, config))

    ours_t = res["ours_end_to_end_auto"]
    print(f"official ParticleNet (kin), {res['jets']} jets, {args.threads} threads")
    print("| way | seconds | jets/s | ours end to end is faster by |")
    print("| --- | --- | --- | --- |")
    for key, label in (
        ("cmssw_per_jet", "CMSSW: one onnxruntime call per jet (inference alone)"),
        ("ml_tools_fixed", "coffea ml_tools: torch, fixed length 128 (inference alone)"),
        ("ours_end_to_end_default", "ours, end to end, fixed budget (256 x 128 slots)"),
        ("ours_end_to_end_auto", "ours, end to end, budget measured per process (default)"),
    ):
        t = res[key]
        print(f"| {label} | {t:.2f} | {res['jets'] / t:.0f} | {t / ours_t:.2f}x |")
    print("inference alone per slot budget: " + ", ".join(f"{b}: {t:.2f} s" for b, t in per_budget.items()))
    args.output.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
