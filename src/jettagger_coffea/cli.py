"""`jettagger` command line: thin wrappers that parse, call the library and print."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from ._errors import JetTaggerError


def _add_generate(sub) -> None:
    from .generate.settings import PROCESSES

    p = sub.add_parser("generate", help="generate jets with Pythia 8 + FastJet and write ROOT files")
    p.add_argument("--process", nargs="+", default=["qcd", "wqq", "zqq", "tbqq"],
                   help=f"processes ({', '.join(PROCESSES)})")
    p.add_argument("--njets", type=int, default=1000, help="selected jets written per process")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--radius", type=float, default=0.8, help="anti-kt radius (1.0 for the seed-1 W/Z style)")
    p.add_argument("--pt-min", type=float, default=500.0)
    p.add_argument("--pt-max", type=float, default=1000.0)
    p.add_argument("--eta-max", type=float, default=2.0)
    p.add_argument("--no-mpi", action="store_true", help="switch off multi-parton interactions (faster)")
    p.add_argument("--format", choices=["nanoaod", "jetclass", "both"], default="both")
    p.add_argument("--jobs", type=int, default=1, help="worker processes (one per core)")
    p.add_argument("--block-size", type=int, default=250, help="jets per seeded block")
    p.add_argument("--output-dir", "-o", default="samples", help="writes <dir>/<process>_<format>.root")
    p.set_defaults(func=_run_generate)


def _run_generate(args: argparse.Namespace) -> int:
    from .generate import GenerationSettings, generate

    formats = ("nanoaod", "jetclass") if args.format == "both" else (args.format,)
    settings = [
        GenerationSettings(
            process=proc, njets=args.njets, seed=args.seed, radius=args.radius, pt_min=args.pt_min,
            pt_max=args.pt_max, eta_max=args.eta_max, mpi=not args.no_mpi, block_size=args.block_size,
        )
        for proc in args.process
    ]
    if args.jobs < 1:
        raise JetTaggerError(f"--jobs must be >= 1, got {args.jobs}")
    for s in settings:
        paths = generate(s, args.output_dir, formats=formats, jobs=args.jobs)
        for p in paths.values():
            print(p)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jettagger", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_generate(sub)
    for register in _EXTRA_COMMANDS:
        register(sub)
    return parser


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a network on a weaver data config (weaver-like)")
    p.add_argument("--data-config", required=True)
    p.add_argument("--network", required=True, help="particlenet, particlenet-lite, part, part-plain, part-irc, pfn, efn")
    p.add_argument("--network-options", default="{}", help="JSON dict of constructor options")
    p.add_argument("--train", nargs="+", required=True, help="training files (JetClass or PFNano)")
    p.add_argument("--val", nargs="*", default=[], help="validation files (default: 20 %% of --train)")
    p.add_argument("--output", "-o", required=True, help="folder for checkpoints, log.jsonl, summary.json")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--optimizer", choices=["adamw", "ranger"], default="adamw")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--max-minutes", type=float, default=None, help="stop after this wall time (keeps the best)")
    p.add_argument("--max-train-jets", type=int, default=None)
    p.add_argument("--trim", action="store_true", help="weaver's random sequence trimming")
    p.add_argument("--resume", action="store_true", help="continue from <output>/last.pt")
    p.add_argument("--stop-after", type=int, default=None, help="stop after this many epochs (resume later)")
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    import json

    from .training import train

    s = train(args.data_config, args.network, args.train, args.output, val_files=args.val,
              network_options=json.loads(args.network_options), epochs=args.epochs, batch_size=args.batch_size,
              lr=args.lr, optimizer=args.optimizer, seed=args.seed, max_minutes=args.max_minutes,
              trim=args.trim, resume=args.resume, threads=args.threads, max_train_jets=args.max_train_jets,
              stop_after=args.stop_after)
    best = next(r for r in s["history"] if r["epoch"] == s["best_epoch"])
    print(f"best epoch {s['best_epoch']}: val_loss {best['val_loss']:.4f} val_acc {best['val_acc']:.4f}")
    return 0


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="training folder -> tagger bundle (ONNX, configs, model card, WPs)")
    p.add_argument("training", help="folder written by `jettagger train`")
    p.add_argument("--output", "-o", required=True)
    p.add_argument("--name", default=None)
    p.add_argument("--reference", nargs="*", default=[], help="files to derive working points and metrics on")
    p.add_argument("--card", default="{}", help="JSON dict merged into tagger.yaml (e.g. the data command)")
    p.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    import json

    from .training import export

    print(export(args.training, args.output, name=args.name, reference_files=args.reference,
                 card=json.loads(args.card)))
    return 0


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="metrics (accuracy, AUC, rejection, confusion) and plots of a bundle")
    p.add_argument("--model", required=True, help="tagger bundle folder")
    p.add_argument("--input", nargs="+", required=True)
    p.add_argument("--output", "-o", required=True)
    p.add_argument("--backend", choices=["onnx", "torch"], default="onnx")
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate
    from .tagger import JetTagger

    m = evaluate(JetTagger(args.model, backend=args.backend), args.input, args.output)
    print(f"accuracy {m['accuracy']:.4f}  macro AUC {m['auc_macro']:.4f}")
    for name, d in m["discriminants"].items():
        print(f"{name}: AUC {d['auc']:.4f}  1/eps_b @50% {d['rej50']:.1f}  @30% {d['rej30']:.1f}")
    return 0


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="one row per jet with score_<class> and the observers (weaver --predict)")
    p.add_argument("--model", required=True)
    p.add_argument("--input", nargs="+", required=True)
    p.add_argument("--output", "-o", required=True, help="OUT.root or OUT.parquet")
    p.add_argument("--backend", choices=["onnx", "torch"], default="onnx")
    p.set_defaults(func=_run_predict)


def _run_predict(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .evaluation import predict_files
    from .tagger import JetTagger

    out = Path(args.output)
    if out.suffix not in (".root", ".parquet"):
        raise JetTaggerError(f"--output must end in .root or .parquet, got {out}")
    missing = [f for f in args.input if not Path(f).is_file()]
    if missing:
        raise JetTaggerError(f"--input: no such file {missing[0]}")
    cols = predict_files(JetTagger(args.model, backend=args.backend), args.input, progress=True)
    if out.suffix == ".root":
        import uproot

        with uproot.recreate(out) as f:
            f.mktree("Events", {k: v.dtype for k, v in cols.items()}).extend(cols)
    elif out.suffix == ".parquet":
        import awkward as ak

        ak.to_parquet(ak.zip(cols), out)
    else:
        raise JetTaggerError(f"--output must end in .root or .parquet, got {out}")
    print(f"{out}: {len(next(iter(cols.values())))} jets")
    return 0


def _add_import(sub) -> None:
    p = sub.add_parser("import-weaver", help="weaver or CMSSW artefacts -> tagger bundle")
    p.add_argument("--data-config", default=None, help="the weaver data config YAML (not needed with --onnx "
                   "and a CMSSW-style --preprocess)")
    p.add_argument("--output", "-o", required=True, help="bundle folder to write")
    p.add_argument("--network", help="network name, with --checkpoint")
    p.add_argument("--network-options", default="{}", help="JSON dict (e.g. use_pre_activation_pair)")
    p.add_argument("--checkpoint", help="weaver state_dict (loaded weights-only)")
    p.add_argument("--onnx", help="weaver-exported or CMSSW model.onnx (with --preprocess)")
    p.add_argument("--preprocess", help="preprocess.json (weaver: var_length; CMSSW: min/max_length)")
    p.add_argument("--source", default=None, help="source preset (jetclass, cms-pfnano or a YAML file); "
                   "default: chosen from the variable names")
    p.add_argument("--stored-prefix", default=None, help="NanoAOD branch prefix of the experiment's own "
                   "scores for this model, e.g. particleNet -> FatJet_particleNet_<discriminant>")
    p.add_argument("--name", default=None, help="bundle name (default: the folder name)")
    p.add_argument("--discriminants", default="{}", help='JSON, e.g. {"TvsQCD": {"signal": ["Tbqq"], '
                   '"background": ["QCD"]}}; default for CMS classes: NanoAOD\'s')
    p.set_defaults(func=_run_import)


def _json_option(text: str, option: str) -> dict:
    import json

    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise JetTaggerError(f"{option}: not valid JSON ({err.msg})") from None
    if not isinstance(value, dict):
        raise JetTaggerError(f"{option}: expected a JSON object")
    return value


def _run_import(args: argparse.Namespace) -> int:
    from .weaver import import_weaver

    options = _json_option(args.network_options, "--network-options")
    discriminants = _json_option(args.discriminants, "--discriminants")
    path = import_weaver(args.data_config, args.output, network=args.network, checkpoint=args.checkpoint,
                         onnx=args.onnx, preprocess=args.preprocess, name=args.name,
                         network_options=options, discriminants=discriminants, source=args.source,
                         stored_prefix=args.stored_prefix)
    print(path)
    return 0


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="the main job: a tagger over a fileset -> hists, metrics, plots")
    p.add_argument("--model", default=None, help="bundle folder or shipped name (default: the best shipped)")
    p.add_argument("--fileset", default=None, help="coffea JSON fileset (default: the bundled PFNano samples)")
    p.add_argument("--executor", choices=["iterative", "futures", "dask", "dask-awkward"], default="dask")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--scheduler", default=None, help="address of an external dask scheduler")
    p.add_argument("--chunksize", type=int, default=500)
    p.add_argument("--pt-min", type=float, default=500.0)
    p.add_argument("--pt-max", type=float, default=1000.0)
    p.add_argument("--eta-max", type=float, default=2.0)
    p.add_argument("--padding", default="dynamic", help="dynamic, fixed, or a length")
    p.add_argument("--skip-bad-files", action="store_true")
    p.add_argument("--output", "-o", default="output")
    p.set_defaults(func=_run_run)


def _run_run(args: argparse.Namespace) -> int:
    from . import models
    from .data import default_fileset
    from .run import load_fileset, run_fileset, write_outputs

    bundle = models.resolve(args.model)
    fileset = load_fileset(args.fileset) if args.fileset else default_fileset()
    padding = int(args.padding) if args.padding.isdigit() else args.padding
    out = run_fileset(bundle, fileset, executor=args.executor, workers=args.workers, scheduler=args.scheduler,
                      chunksize=args.chunksize, skip_bad_files=args.skip_bad_files,
                      pt_range=(args.pt_min, args.pt_max), eta_max=args.eta_max, padding=padding)
    paths = write_outputs(out, args.output)
    import json

    m = json.loads(paths["metrics"].read_text())
    jets = sum(c["selected_jets"] for c in m["cutflow"].values())
    print(f"{bundle.name}: {jets} jets in {m['seconds']:.1f} s ({m['jets_per_second']:.0f} jets/s), "
          f"accuracy {m['accuracy']:.3f}")
    for name, d in m["discriminants"].items():
        print(f"  {name}: AUC {d['auc']:.4f}  1/eps_b @50% {d['rej50']:.1f}  @30% {d['rej30']:.1f}")
    for s in m["skipped"]:
        print(f"  skipped {s['file'] or s['dataset']}: {s['events'] if s['events'] is not None else 'unknown'} "
              f"events ({s['error']})")
    print(f"outputs in {args.output}/: " + ", ".join(p.name for p in paths.values()))
    return 0


_EXTRA_COMMANDS: list = [_add_run, _add_train, _add_export, _add_evaluate, _add_predict, _add_import]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return int(args.func(args) or 0)
    except (JetTaggerError, ValueError, OSError, FileNotFoundError, KeyError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"jettagger {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
