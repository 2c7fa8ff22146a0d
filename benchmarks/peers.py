"""The ways an analyst would otherwise run a full-size ParticleNet, side by side on the same jets and weights.

    python benchmarks/peers.py [--threads 2] [--output benchmarks/peers.json] [--no-doc | --doc-only]

After the run its tables are rendered from the JSON into their blocks of docs/performance.md (between
the `<!-- NAME:begin -->` / `<!-- NAME:end -->` markers); ``--doc-only`` renders the existing JSON, running
nothing (``benchmarks/report.py`` does every benchmark's).

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
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _doc import DASH, X, bullet, ratio, sci, table, wrap, write_blocks
from _models import SHARED, concatenated_particlenet, official_particlenet
from _timing import best_of  # benchmarks/ is on sys.path when a script here runs

HERE = Path(__file__).resolve().parent
BUDGETS = (1024, 2048, 4096, 8192, 16384, 32768)
CMS_COPIES = 170
MODELS = ("jetclass-particlenet", "cms-particlenet-ak8")


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


def run_record(argv: list[str]) -> dict:
    """Which run an entry came from: ``id`` (its start, ISO time), the command and the load it ran under."""
    return {
        "id": time.strftime("%Y-%m-%dT%H:%M", time.gmtime()),
        "command": " ".join(["python benchmarks/peers.py", *argv]),
        "cpus": os.cpu_count(),
        "load_average": [os.getloadavg()[0]],
    }


def merge(res: dict, new: dict[str, dict]) -> dict:
    """``new`` entries replace the old ones; a replaced entry stays under ``previous`` while the other model's
    current entry is of its run (the first table's rows come from one run, the delivery rule of issue #32)."""
    candidates = [*res.get("previous", {}).items(), *((m, res[m]) for m in new if m in res)]
    res.update(new)
    current = {res[m]["run"]["id"]: m for m in MODELS if m in res and "run" in res[m]}
    res["previous"] = {
        m: e for m, e in candidates if e.get("run", {}).get("id") in current and e is not res.get(m)
    }
    return res


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--output", type=Path, default=HERE / "peers.json")
    parser.add_argument(
        "--budgets", type=int, nargs="+", default=list(BUDGETS), help="slot budgets timed (inference alone)"
    )
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/performance.md")
    parser.add_argument(
        "--doc-only", action="store_true", help="only re-render docs/performance.md from --output"
    )
    args = parser.parse_args()
    # a partial rerun (--models one) keeps the other model's numbers in the JSON
    res: dict = json.loads(args.output.read_text()) if args.output.is_file() else {}
    if not args.doc_only:
        res = measure(args, res)
        args.output.write_text(json.dumps(res, indent=1) + "\n")
    rendered = blocks(res)
    print("\n\n".join(rendered.values()))
    if not args.no_doc:
        write_blocks(rendered)


def measure(args: argparse.Namespace, res: dict) -> dict:
    os.environ["JETTAGGER_THREADS"] = str(args.threads)
    import pyarrow  # noqa: F401 - the parquet writer, as jettagger predict uses it
    import torch

    torch.set_num_threads(args.threads)
    runs = {"jetclass-particlenet": jetclass_particlenet, "cms-particlenet-ak8": cms_particlenet_ak8}
    run = run_record(sys.argv[1:])
    new = {}
    with tempfile.TemporaryDirectory() as tmp:
        for m in args.models:
            new[m] = {**runs[m](Path(tmp), args.threads, tuple(args.budgets)), "run": run}
    run["load_average"].append(os.getloadavg()[0])
    res["threads"] = args.threads
    return merge(res, new)


# --- docs/performance.md: the blocks rendered from peers.json ---------------------------------------------

#: (key, label) of the first table's rows, per model; a key the entry lacks is no row
ROWS = {
    "jetclass-particlenet": (
        ("cmssw_per_jet", "CMSSW: one onnxruntime call per jet at its own length (weaver's ONNX form)"),
        ("cmssw_per_jet_same_onnx", "the same loop on our ONNX export"),
        ("ml_tools_fixed", "coffea `ml_tools`: torch, fixed length 128, 1000-jet chunks"),
        ("ours_end_to_end_fixed_budget", f"ours, end to end, old fixed budget (256 {X} 128 slots)"),
    ),
    "cms-particlenet-ak8": (
        ("cmssw_per_jet", "CMSSW: one onnxruntime call per jet at its own length"),
        (
            "ml_tools_fixed",
            (
                "coffea `ml_tools` way: fixed lengths 100 / 10, 1000-jet chunks "
                "(onnxruntime: no torch model ships)"
            ),
        ),
    ),
}
NAMES = {"jetclass-particlenet": "JetClass ParticleNet", "cms-particlenet-ak8": "CMS ParticleNet-AK8"}
CONVERTED_ROWS = (
    ("cmssw_per_jet", "CMSSW: one onnxruntime call per jet, CMS's graph (inference alone)"),
    ("cmssw_per_jet_converted_onnx", "the same loop on the converted graph (our export)"),
    ("ml_tools_fixed", "coffea `ml_tools` way: fixed lengths, 1000-jet chunks, CMS's graph"),
    ("ours_end_to_end", "ours, end to end, CMS's graph as imported"),
)
#: the targets of issue #32: ours end to end against the peers' inference alone
TARGET_ML_TOOLS, TARGET_CMSSW, TARGET_CONVERTED = 3.0, 1.5, 1.3


def one_run(res: dict) -> dict[str, dict]:
    """Per model, its entry of the newest run that measured every model (current or ``previous``); where no
    run measured them all, each model's current entry."""
    entries = [(m, e) for m, e in [*res.get("previous", {}).items(), *res.items()] if m in MODELS]
    runs = sorted({e["run"]["id"] for _, e in entries if "run" in e}, reverse=True)
    for run in runs:
        got = {m: e for m, e in entries if e.get("run", {}).get("id") == run}
        if set(got) == set(MODELS):
            return {m: got[m] for m in MODELS}
    return {m: res[m] for m in MODELS if m in res}


def _way(label: str, seconds: float, jets: int, ours: float, bold: bool = False) -> list[str]:
    b = "**" if bold else ""
    return [f"{b}{label}{b}", f"{b}{seconds:.2f}{b}", f"{b}{jets / seconds:.0f}{b}", ratio(seconds / ours)]


def peers_block(res: dict) -> str:
    """The table of both models against their peers, and the inference time per slot budget."""
    rows = []
    entries = one_run(res)
    for m, r in entries.items():
        ways = [_way(label, r[k], r["jets"], r["ours_end_to_end"]) for k, label in ROWS[m] if k in r]
        label = "**ours, end to end (default)**"
        if "read_and_features" in r:
            label += f", of which reading and features {r['read_and_features']:.2f} s"
        ways.append(_way(label, r["ours_end_to_end"], r["jets"], r["ours_end_to_end"], bold=True))
        ways[-1][0] = label
        rows += [[NAMES[m] if i == 0 else "", *w] for i, w in enumerate(ways)]
    head = ["model", "way", "seconds", "jets/s", "ours end to end is faster by"]
    budgets = []
    for i, (m, r) in enumerate(entries.items()):
        t = r["inference_seconds_per_slot_budget"]
        if i == 0:
            budgets.append(f"({NAMES[m]}): " + ", ".join(f"{b}: {s:.1f} s" for b, s in t.items()))
        else:
            budgets.append(f"{NAMES[m]}: " + ", ".join(f"{s:.1f}" for s in t.values()) + " s")
    text = "Inference alone per slot budget " + "; ".join(budgets)
    jc = entries.get("jetclass-particlenet")
    if jc and "ours_end_to_end_fixed_budget" in jc:
        fixed = jc["ours_end_to_end_fixed_budget"] / jc["ours_end_to_end"]
        text += f". One budget for every network (the old fixed 256 {X} 128 slots) cost {ratio(fixed)} "
        text += "end to end."
    return table(head, rows) + "\n\n" + wrap(text)


def _met(x: float, target: float) -> str:
    return "**met**" if x >= target else "**missed**"


def targets_block(res: dict) -> str:
    """The targets of the first table, met or missed, with the numbers."""
    e = one_run(res)
    jc, cms = e["jetclass-particlenet"], e["cms-particlenet-ak8"]
    ml = [r["ml_tools_fixed"] / r["ours_end_to_end"] for r in (jc, cms)]
    loop = [r["cmssw_per_jet"] / r["ours_end_to_end"] for r in (jc, cms)]
    best = [r["cmssw_per_jet"] / min(r["inference_seconds_per_slot_budget"].values()) for r in (jc, cms)]
    first = (
        f"≥ {TARGET_ML_TOOLS:.0f}{X} coffea's `ml_tools` way: {_met(ml[0], TARGET_ML_TOOLS)} for the "
        f"JetClass ParticleNet ({ratio(ml[0])}); {_met(ml[1], TARGET_ML_TOOLS)} for the CMS model "
        f"({ratio(ml[1])})"
    )
    if ml[1] < TARGET_ML_TOOLS:
        first += (
            ": its lengths (100 pf, 10 sv) are close to the real multiplicities, so fixed padding wastes "
            "less than JetClass's 128"
        )
    verdicts = {_met(x, TARGET_CMSSW) for x in loop}
    met = (
        verdicts.pop()
        if len(verdicts) == 1
        else f"{_met(loop[0], TARGET_CMSSW)} and {_met(loop[1], TARGET_CMSSW)}"
    )
    second = (
        f"≥ {TARGET_CMSSW}{X} the CMSSW per-jet loop: {met} "
        f"({ratio(loop[0])} and {ratio(loop[1])}; on inference alone at the best budget {ratio(best[0])} and "
        f"{ratio(best[1])}). Our ONNX export of ParticleNet gains nothing in the per-jet loop "
        f"({jc['cmssw_per_jet']:.1f} s on weaver's form vs {jc['cmssw_per_jet_same_onnx']:.1f} s on ours), "
        f"while batched inference takes {min(jc['inference_seconds_per_slot_budget'].values()):.1f} s at the "
        "best budget"
    )
    return "Targets, end to end against the peers' inference alone:\n" + "\n".join(
        bullet(t + ".") for t in (first, second)
    )


def converted_block(res: dict) -> str:
    """The CMS model's graph imported as it is and converted into our ParticleNet, side by side in one run."""
    r, run = res["cms-particlenet-ak8"], res["cms-particlenet-ak8"]["run"]
    conv = r["ours_end_to_end_converted"]
    intro = (
        f"`{run['command']}`: {r['jets']} real CMS jets (the {r['copies']}{X} tiled PFNano file), "
        f"{res['threads']} threads, one run, side by side, on a {machine(run)} machine:"
    )
    rows = [_way(label, r[k], r["jets"], conv) for k, label in CONVERTED_ROWS]
    rows[0][3] = f"**{rows[0][3]}**"
    rows.append(_way("ours, end to end, converted (`--convert`)", conv, r["jets"], conv, bold=True))
    rows[-1][0] = "**ours, end to end, converted (`--convert`)**"
    head = ["way", "seconds", "jets/s", "ours end to end (converted) is faster by"]
    cms_t, conv_t = r["inference_seconds_per_slot_budget"], r["converted_inference_seconds_per_slot_budget"]
    gains = [cms_t[b] / conv_t[b] for b in cms_t]
    batched = (
        "Batched inference alone, CMS's graph / converted: "
        + ", ".join(f"{b} slots {cms_t[b]:.2f} / {conv_t[b]:.2f} s" for b in cms_t)
        + f" ({min(gains):.2f}{DASH}{max(gains):.2f}{X}); max |Δscore| converted vs CMS's graph over the "
        f"{r['jets']} jets {sci(r['converted_max_abs_diff'])}."
    )
    gain, imported = r["cmssw_per_jet"] / conv, r["cmssw_per_jet"] / r["ours_end_to_end"]
    goal = (
        f"**Goal (≥ {TARGET_CONVERTED}{X} CMSSW's per-jet loop for CMS ParticleNet-AK8 on real CMS jets, "
        f"NanoAOD's stored scores still reproduced): {_met(gain, TARGET_CONVERTED).strip('*')}, "
        f"{ratio(gain)}** (CMS's graph as imported: {ratio(imported)}). The stored scores are reproduced by "
        "the converted bundle as by the plain import (tests/test_cms_convert.py)."
    )
    p = {k: {op: round(100 * v) for op, v in shares.items()} for k, shares in r["per_jet_profile"].items()}
    convs = sorted(p[k].get("Conv", 0) for k in p)
    cms, ours = p["cms"], p["converted"]
    why = (
        "Why: in the per-jet loop's profile (onnxruntime node time) CMS's graph spends "
        f"Gather {cms.get('Gather', 0)} % + Tile {cms.get('Tile', 0)} % building the (N, 2C, P, k) "
        "edge features (the centre repeated k times, 2C-wide neighbours gathered); the converted graph "
        f"applies the first layer per particle before the gather: Gather {ours.get('Gather', 0)} %, "
        f"plus a broadcast Add {ours.get('Add', 0)} %. Conv is {convs[0]}{DASH}{convs[-1]} % in both."
    )
    bullets = [goal, why]
    other = one_run(res)["cms-particlenet-ak8"]
    if other is not r:
        bullets.append(
            f"The CMSSW loop read {r['cmssw_per_jet']:.2f} s here against {other['cmssw_per_jet']:.2f} s "
            f"in the section above (another run, on a {machine(other['run'])} machine); the ratio within one "
            "run is the number to compare."
        )
    return "\n\n".join([wrap(intro), table(head, rows), wrap(batched), "\n".join(map(bullet, bullets))])


def machine(run: dict) -> str:
    """ "quiet" or "loaded": as recorded, else from the load average (over half the cores: loaded)."""
    if "machine" in run:
        return run["machine"]
    return "loaded" if max(run["load_average"]) > 0.5 * run["cpus"] else "quiet"


def blocks(res: dict) -> dict[str, str]:
    """The generated blocks of docs/performance.md, by marker name."""
    out = {"peers": peers_block(res), "peers-targets": targets_block(res)}
    if "ours_end_to_end_converted" in res.get("cms-particlenet-ak8", {}):
        out["cms-converted"] = converted_block(res)
    return out


if __name__ == "__main__":
    main()
