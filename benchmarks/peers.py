"""The ways an analyst would otherwise run a full-size ParticleNet, side by side on the same jets and weights.

    python benchmarks/peers.py [--threads 2] [--output benchmarks/peers.json]

Two models, each against its peers:
- the official JetClass ParticleNet (kin inputs, 366k parameters; ``../shared/reference/weights``), imported
  with ``jettagger import-weaver``, on the 4000 bundled JetClass-layout jets;
- the CMS ParticleNet-AK8 (pf + sv inputs; ``../shared/reference/cms``) on coffea's real PFNano file, its
  events written 170 times into one file (4080 FatJets): real CMS jets in a chunk of realistic size.

Peers (inference alone, inputs already in memory):
- *CMSSW*: one onnxruntime call per jet at its own length, at least the minimum the preprocessing asks
  for (``BoostedJetONNXJetTagsProducer``), on the ONNX as weaver exports it (CMS's own file for the AK8
  model); for the JetClass model also on our export (EdgeConv's first layer before the gather), to
  separate what batching gains from what the cheaper graph gains;
- *coffea ml_tools*: whole chunks (1000 jets) at the config's fixed length, as ``torch_wrapper`` feeds them
  (torch for the JetClass model; the CMS model ships as ONNX only, so onnxruntime at fixed length).
*Ours*, end to end: reading, features, batched inference (slot budget measured once per process, the
default) and writing the scores to parquet; for the JetClass model also at the old fixed budget; for the
CMS model also with its graph converted into our ParticleNet (``import-weaver --convert``: our export,
each EdgeConv's first layer applied per particle before the gather), with CMSSW's loop on that graph and
onnxruntime's per-operator profile of both graphs in that loop.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from _models import SHARED, concatenated_particlenet, official_particlenet
from _timing import best_of  # benchmarks/ is on sys.path when a script here runs

HERE = Path(__file__).resolve().parent
BUDGETS = (1024, 2048, 4096, 8192, 16384, 32768)
CMS_COPIES = 170


def cmssw_per_jet(session, jets, min_length: int) -> float:
    singles = [jets.dense(i, i + 1, "dynamic", min_length) for i in range(len(jets)) if jets.counts[i] > 0]
    return best_of(lambda: [session.run(x) for x in singles])


def per_budget(
    session, jets, n_classes: int, min_length: int, budgets: tuple[int, ...] = BUDGETS
) -> dict[int, float]:
    from jettagger_coffea.backends import run_batched

    return {
        b: best_of(lambda b=b: run_batched(session, jets, n_classes, min_length=min_length, max_slots=b))
        for b in budgets
    }


def jetclass_particlenet(tmp: Path, threads: int, budgets: tuple[int, ...] = BUDGETS) -> dict:
    import awkward as ak
    import torch

    from jettagger_coffea.backends import OnnxBackend, TorchBackend
    from jettagger_coffea.data import PROCESSES, sample_path
    from jettagger_coffea.evaluation import predict_files
    from jettagger_coffea.jetfiles import load_jets
    from jettagger_coffea.tagger import JetTagger

    files = [sample_path(p, "jetclass") for p in PROCESSES]
    bundle = official_particlenet(tmp)
    config = bundle.config
    jets = load_jets(files, config, with_labels=False)
    session = OnnxBackend(bundle.onnx_path, threads=threads)
    res: dict = {"jets": len(jets)}
    res["inference_seconds_per_slot_budget"] = per_budget(
        session, jets, len(bundle.classes), bundle.min_length, budgets
    )
    res["cmssw_per_jet_same_onnx"] = cmssw_per_jet(session, jets, bundle.min_length)
    # what CMSSW would load: the network as weaver exports it (edge features concatenated)
    weaver_form = OnnxBackend(concatenated_particlenet(bundle, tmp), threads=threads)
    res["cmssw_per_jet"] = cmssw_per_jet(weaver_form, jets, bundle.min_length)

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


def tiled_pfnano(path: Path, out: Path, copies: int) -> Path:
    """The real PFNano file's events ``copies`` times in one file (NanoAOD's indices are event-local, so the
    cross-references stay valid): a chunk of real CMS jets of the size a job processes."""
    import awkward as ak
    import uproot

    tree = uproot.open(path)["Events"]
    colls = ("FatJet", "FatJetPFCands", "PFCands", "FatJetSVs", "SV")
    scalars = ("run", "luminosityBlock", "event")
    arrays = tree.arrays(filter_name=[f"{c}_*" for c in colls] + list(scalars))
    arrays = ak.concatenate([arrays] * copies)
    data = {
        c: ak.zip({k[len(c) + 1 :]: arrays[k] for k in arrays.fields if k.startswith(f"{c}_")}) for c in colls
    }
    data |= {k: arrays[k] for k in scalars}
    with uproot.recreate(out) as f:
        f.mktree("Events", {k: v.type for k, v in data.items()}).extend(data)
    return out


def cms_particlenet_ak8(tmp: Path, threads: int, budgets: tuple[int, ...] = BUDGETS) -> dict:
    """CMS's graph as CMSSW runs it against ours end to end, on the bundle imported as it is and on the one
    converted into our ParticleNet (``import-weaver --convert``: our export, the EdgeConv first layer per
    particle before the gather), side by side."""
    import awkward as ak

    from jettagger_coffea.backends import OnnxBackend
    from jettagger_coffea.bundle import Bundle
    from jettagger_coffea.evaluation import predict_files
    from jettagger_coffea.features import make_table, standardise
    from jettagger_coffea.jetfiles import open_jets
    from jettagger_coffea.tagger import JetTagger
    from jettagger_coffea.weaver import import_weaver

    cms = SHARED / "reference/cms/ParticleNetAK8_General_V01"
    copies = int(os.environ.get("PEERS_CMS_COPIES", CMS_COPIES))  # fewer: a quick check of the script
    path = tiled_pfnano(SHARED / "reference/nanoaod/pfnano.root", tmp / "pfnano_tiled.root", copies)
    onnx, pre = cms / "model.onnx", cms / "preprocess.json"
    bundle = Bundle.load(import_weaver(None, tmp / "cms", onnx=onnx, preprocess=pre))
    converted = Bundle.load(
        import_weaver(None, tmp / "cms-converted", onnx=onnx, preprocess=pre, convert=True)
    )
    table = make_table(open_jets(path), bundle.config, bundle.preset, where=str(path))
    jets = standardise(table, bundle.config, bundle.primary)
    session = OnnxBackend(bundle.onnx_path, threads=threads)
    ours_session = OnnxBackend(converted.onnx_path, threads=threads)
    res: dict = {"jets": len(jets), "copies": copies}
    n = len(bundle.classes)
    res["inference_seconds_per_slot_budget"] = per_budget(session, jets, n, bundle.min_length, budgets)
    res["converted_inference_seconds_per_slot_budget"] = per_budget(
        ours_session, jets, n, bundle.min_length, budgets
    )
    res["cmssw_per_jet"] = cmssw_per_jet(session, jets, bundle.min_length)
    res["cmssw_per_jet_converted_onnx"] = cmssw_per_jet(ours_session, jets, bundle.min_length)
    fixed = [jets.dense(i, min(i + 1000, len(jets)), length="fixed") for i in range(0, len(jets), 1000)]
    res["ml_tools_fixed"] = best_of(lambda: [session.run(x) for x in fixed])

    def ours(b: Bundle, name: str) -> None:
        cols = predict_files(JetTagger(b, threads=threads), [path])
        ak.to_parquet(ak.Array(cols), tmp / f"{name}.parquet")

    res["ours_end_to_end"] = best_of(lambda: ours(bundle, "cms"))
    res["ours_end_to_end_converted"] = best_of(lambda: ours(converted, "cms-converted"))
    got, want = (ak.from_parquet(tmp / f"{n}.parquet") for n in ("cms-converted", "cms"))
    res["converted_max_abs_diff"] = max(
        float(np.nanmax(np.abs(ak.to_numpy(got[k]) - ak.to_numpy(want[k]))))
        for k in want.fields
        if k.startswith("score_")
    )
    res["read_and_features"] = best_of(
        lambda: standardise(
            make_table(open_jets(path), bundle.config, bundle.preset), bundle.config, bundle.primary
        )
    )
    res["per_jet_profile"] = {
        name: per_jet_profile(b.onnx_path, jets, b.min_length, threads, tmp)
        for name, b in (("cms", bundle), ("converted", converted))
    }
    return res


def per_jet_profile(onnx: Path, jets, min_length: int, threads: int, tmp: Path) -> dict:
    """onnxruntime's node time per operator type (the top 8 shares) over one call per jet, CMSSW's way, on
    the first 400 jets."""
    from operations import op_profile  # benchmarks/operations.py

    first = range(min(400, len(jets)))
    singles = [jets.dense(i, i + 1, "dynamic", min_length) for i in first if jets.counts[i] > 0]
    return op_profile(onnx, singles * 4, threads, tmp)  # it profiles the first quarter: every single


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=["jetclass-particlenet", "cms-particlenet-ak8"])
    parser.add_argument("--output", type=Path, default=HERE / "peers.json")
    parser.add_argument(
        "--budgets", type=int, nargs="+", default=list(BUDGETS), help="slot budgets timed (inference alone)"
    )
    args = parser.parse_args()
    os.environ["JETTAGGER_THREADS"] = str(args.threads)
    import pyarrow  # noqa: F401 - the parquet writer, as jettagger predict uses it
    import torch

    torch.set_num_threads(args.threads)
    runs = {"jetclass-particlenet": jetclass_particlenet, "cms-particlenet-ak8": cms_particlenet_ak8}
    # a partial rerun (--models one) keeps the other model's numbers in the JSON
    res: dict = json.loads(args.output.read_text()) if args.output.is_file() else {}
    res["threads"] = args.threads
    with tempfile.TemporaryDirectory() as tmp:
        for m in args.models:
            res[m] = runs[m](Path(tmp), args.threads, tuple(args.budgets))
    for m in args.models:
        r = res[m]
        ours = r["ours_end_to_end"]
        print(f"\n{m}: {r['jets']} jets, {args.threads} threads")
        print("| way | seconds | jets/s | ours end to end is faster by |")
        print("| --- | --- | --- | --- |")
        for key, label in (
            ("cmssw_per_jet", "CMSSW: one onnxruntime call per jet (inference alone)"),
            ("cmssw_per_jet_same_onnx", "CMSSW's loop on our ONNX export (inference alone)"),
            ("cmssw_per_jet_converted_onnx", "CMSSW's loop on the converted graph (inference alone)"),
            ("ml_tools_fixed", "coffea ml_tools: fixed config length, 1000-jet chunks (inference alone)"),
            ("ours_end_to_end_fixed_budget", "ours, end to end, fixed budget (256 x 128 slots)"),
            ("ours_end_to_end", "ours, end to end, budget measured per process (default)"),
            ("ours_end_to_end_converted", "ours, end to end, the graph converted (import-weaver --convert)"),
        ):
            if key in r:
                print(f"| {label} | {r[key]:.2f} | {r['jets'] / r[key]:.0f} | {r[key] / ours:.2f}x |")
        for key in ("inference_seconds_per_slot_budget", "converted_inference_seconds_per_slot_budget"):
            if key in r:
                print(f"{key}: " + ", ".join(f"{b}: {t:.2f} s" for b, t in r[key].items()))
        if "ours_end_to_end_converted" in r:
            conv = r["ours_end_to_end_converted"]
            print(
                f"converted, end to end, vs CMSSW's loop on CMS's graph: {r['cmssw_per_jet'] / conv:.2f}x; "
                f"max |score difference| {r['converted_max_abs_diff']:.1e}"
            )
            for name, shares in r["per_jet_profile"].items():
                print(f"per-jet profile, {name}: " + ", ".join(f"{k} {v:.0%}" for k, v in shares.items()))
    args.output.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
