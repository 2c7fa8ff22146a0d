"""The ways an analyst would otherwise run a full-size ParticleNet, side by side on the same jets and weights.

    python benchmarks/peers.py [--threads 2] [--output benchmarks/peers.json]

Two models, each against its peers:
- the official JetClass ParticleNet (kin inputs, 366k parameters; ``../shared/reference/weights``), imported
  with ``jettagger import-weaver``, on the 4000 bundled JetClass-layout jets;
- the CMS ParticleNet-AK8 (pf + sv inputs; ``../shared/reference/cms``) on coffea's real PFNano file, its 24
  FatJets taken 170 times (4080 jets): a real CMS multiplicity spectrum. The file is opened once (its
  TTree metadata costs ~0.6 s per file whatever the reader; reported apart), features are made per pass.

Peers (inference alone, inputs already in memory):
- *CMSSW*: one onnxruntime call per jet at its own length, at least the minimum the preprocessing asks
  for (``BoostedJetONNXJetTagsProducer``);
- *coffea ml_tools*: whole chunks (1000 jets) at the config's fixed length, as ``torch_wrapper`` feeds them
  (torch for the JetClass model; the CMS model ships as ONNX only, so onnxruntime at fixed length).
*Ours*, end to end: reading, features, batched inference (slot budget measured once per process, the
default) and writing the scores to parquet; for the JetClass model also at the old fixed budget.
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
CMS_PASSES = 170


def cmssw_per_jet(session, jets, min_length: int) -> float:
    singles = [jets.dense(i, i + 1, "dynamic", min_length) for i in range(len(jets)) if jets.counts[i] > 0]
    return best_of(lambda: [session.run(x) for x in singles])


def per_budget(session, jets, n_classes: int, min_length: int) -> dict[int, float]:
    from jettagger_coffea.backends import run_batched

    return {
        b: best_of(lambda b=b: run_batched(session, jets, n_classes, min_length=min_length, max_slots=b))
        for b in BUDGETS
    }


def jetclass_particlenet(tmp: Path, threads: int) -> dict:
    import awkward as ak
    import torch

    from jettagger_coffea.backends import OnnxBackend, TorchBackend
    from jettagger_coffea.bundle import Bundle
    from jettagger_coffea.data import PROCESSES, sample_path
    from jettagger_coffea.datasets import load_jets
    from jettagger_coffea.evaluation import predict_files
    from jettagger_coffea.tagger import JetTagger
    from jettagger_coffea.weaver import import_weaver

    files = [sample_path(p, "jetclass") for p in PROCESSES]
    bundle = Bundle.load(
        import_weaver(
            SHARED / "reference/jetclass/JetClass_kin.yaml",
            tmp / "pn",
            network="particlenet",
            checkpoint=SHARED / "reference/weights/ParticleNet_kin.pt",
        )
    )
    config = bundle.config
    jets = load_jets(files, config, with_labels=False)
    session = OnnxBackend(bundle.onnx_path, threads=threads)
    res: dict = {"jets": len(jets)}
    res["inference_seconds_per_slot_budget"] = per_budget(
        session, jets, len(bundle.classes), bundle.min_length
    )
    res["cmssw_per_jet"] = cmssw_per_jet(session, jets, bundle.min_length)

    model = TorchBackend(bundle).model
    fixed = [jets.dense(i, min(i + 1000, len(jets)), length="fixed") for i in range(0, len(jets), 1000)]

    @torch.no_grad()
    def ml_tools() -> None:
        for x in fixed:
            model(*[torch.from_numpy(x[k]) for k in config.inputs])

    res["ml_tools_fixed"] = best_of(ml_tools)

    def ours(budget: int | str) -> None:
        cols = predict_files(JetTagger(bundle, max_slots=budget, threads=threads), files)
        ak.to_parquet(ak.Array(cols), tmp / "pred.parquet")

    res["ours_end_to_end_fixed_budget"] = best_of(lambda: ours(256 * 128))
    res["ours_end_to_end"] = best_of(lambda: ours("auto"))  # what `jettagger predict` does
    return res


def cms_particlenet_ak8(tmp: Path, threads: int) -> dict:
    import awkward as ak
    import numpy as np

    from jettagger_coffea.backends import OnnxBackend, run_batched
    from jettagger_coffea.bundle import Bundle
    from jettagger_coffea.datasets import open_jets
    from jettagger_coffea.features import Standardised, make_table, standardise
    from jettagger_coffea.tagger import JetTagger
    from jettagger_coffea.weaver import import_weaver

    cms = SHARED / "reference/cms/ParticleNetAK8_General_V01"
    path = SHARED / "reference/nanoaod/pfnano.root"
    bundle = Bundle.load(
        import_weaver(None, tmp / "cms", onnx=cms / "model.onnx", preprocess=cms / "preprocess.json")
    )
    tagger = JetTagger(bundle, threads=threads)

    data = open_jets(path)  # PFNano's TTree metadata (1802 branches): ~0.6 s per file, timed apart below

    def read() -> (
        Standardised
    ):  # one pass over the file's FatJets: read (uproot's cache after the first), features
        table = make_table(data, bundle.config, bundle.preset, where=str(path))
        return standardise(table, bundle.config, bundle.primary)

    jets = Standardised.concatenate([read() for _ in range(CMS_PASSES)])
    session = OnnxBackend(bundle.onnx_path, threads=threads)
    k = len(bundle.classes)
    res: dict = {"jets": len(jets), "passes": CMS_PASSES}
    res["inference_seconds_per_slot_budget"] = per_budget(session, jets, k, bundle.min_length)
    res["cmssw_per_jet"] = cmssw_per_jet(session, jets, bundle.min_length)
    fixed = [jets.dense(i, min(i + 1000, len(jets)), length="fixed") for i in range(0, len(jets), 1000)]
    res["ml_tools_fixed"] = best_of(lambda: [session.run(x) for x in fixed])

    def ours() -> None:  # a chunk's worth of jets per inference call, as in `jettagger run`
        std = Standardised.concatenate([read() for _ in range(CMS_PASSES)])
        scores = tagger.run_model(std)
        ak.to_parquet(
            ak.Array({c: np.ascontiguousarray(scores[:, i]) for i, c in enumerate(bundle.classes)}),
            tmp / "cms.parquet",
        )

    res["open_file_seconds"] = best_of(lambda: open_jets(path))
    res["read_and_features"] = best_of(lambda: [read() for _ in range(CMS_PASSES)])
    res["ours_end_to_end"] = best_of(ours)
    res["max_abs_diff_batched_vs_per_jet"] = float(
        np.nanmax(
            np.abs(
                run_batched(session, jets, k, min_length=bundle.min_length)[: len(jets)]
                - np.concatenate(
                    [
                        session.run(jets.dense(i, i + 1, "dynamic", bundle.min_length))
                        for i in range(len(jets))
                    ]
                )
            )
        )
    )
    return res


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=["jetclass-particlenet", "cms-particlenet-ak8"])
    parser.add_argument("--output", type=Path, default=HERE / "peers.json")
    args = parser.parse_args()
    os.environ["JETTAGGER_THREADS"] = str(args.threads)
    import pyarrow  # noqa: F401 - the parquet writer, as jettagger predict uses it
    import torch

    torch.set_num_threads(args.threads)
    runs = {"jetclass-particlenet": jetclass_particlenet, "cms-particlenet-ak8": cms_particlenet_ak8}
    res: dict = {"threads": args.threads}
    with tempfile.TemporaryDirectory() as tmp:
        for m in args.models:
            res[m] = runs[m](Path(tmp), args.threads)
    for m in args.models:
        r = res[m]
        ours = r["ours_end_to_end"]
        print(f"\n{m}: {r['jets']} jets, {args.threads} threads")
        print("| way | seconds | jets/s | ours end to end is faster by |")
        print("| --- | --- | --- | --- |")
        for key, label in (
            ("cmssw_per_jet", "CMSSW: one onnxruntime call per jet (inference alone)"),
            ("ml_tools_fixed", "coffea ml_tools: fixed config length, 1000-jet chunks (inference alone)"),
            ("ours_end_to_end_fixed_budget", "ours, end to end, fixed budget (256 x 128 slots)"),
            ("ours_end_to_end", "ours, end to end, budget measured per process (default)"),
        ):
            if key in r:
                print(f"| {label} | {r[key]:.2f} | {r['jets'] / r[key]:.0f} | {r[key] / ours:.2f}x |")
        print(
            "inference alone per slot budget: "
            + ", ".join(f"{b}: {t:.2f} s" for b, t in r["inference_seconds_per_slot_budget"].items())
        )
    args.output.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
