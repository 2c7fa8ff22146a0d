"""`jettagger` command line: thin wrappers that parse, call the library and print."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from ._errors import JetTaggerError
from ._names import PRECISIONS  # (not precision: it imports numpy)

#: what the console says of ``nonfinite_inputs``
NONFINITE_TEXT = (
    "input values NaN, inf or absurd (raw beyond 1e10, model variables beyond 1e32; replaced by 0)"
)


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="generate jets with Pythia 8 + FastJet and write ROOT files")
    p.add_argument(
        "--process",
        nargs="+",
        default=["qcd", "wqq", "zqq", "tbqq"],
        help="processes: qcd, wqq, zqq, tbqq, hbb",
    )
    p.add_argument("--njets", type=int, default=1000, help="selected jets written per process")
    p.add_argument("--seed", type=int, default=1, help="random seed (files are reproducible bit by bit)")
    p.add_argument("--radius", type=float, default=0.8, help="anti-kt radius (1.0 for the seed-1 W/Z style)")
    p.add_argument("--pt-min", type=float, default=500.0, help="jet pT > this [GeV]")
    p.add_argument("--pt-max", type=float, default=1000.0, help="jet pT < this [GeV]")
    p.add_argument("--eta-max", type=float, default=2.0, help="jet |eta| < this")
    p.add_argument("--no-mpi", action="store_true", help="switch off multi-parton interactions (faster)")
    p.add_argument("--format", choices=["nanoaod", "jetclass", "both"], default="both", help="output layout")
    p.add_argument("--jobs", type=int, default=1, help="worker processes (one per core)")
    p.add_argument("--block-size", type=int, default=250, help="jets per seeded block")
    p.add_argument("--output-dir", "-o", default="samples", help="writes <dir>/<process>_<format>.root")
    p.set_defaults(func=_run_generate)


def _needs(extra: str, *modules: str) -> None:
    """One clear line, before any work, when an optional extra is not installed."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise JetTaggerError(
            f"this command needs the `{extra}` extra ({', '.join(missing)} not installed): "
            f"pip install 'jettagger-coffea[{extra}]'"
        )


def _run_generate(args: argparse.Namespace) -> int:
    _needs("generate", "pythia8mc", "fastjet")
    from .generate import GenerationSettings, generate

    if args.jobs < 1:
        raise JetTaggerError(f"--jobs must be >= 1, got {args.jobs}")
    formats = ("nanoaod", "jetclass") if args.format == "both" else (args.format,)
    settings = [
        GenerationSettings(
            process=proc,
            njets=args.njets,
            seed=args.seed,
            radius=args.radius,
            pt_min=args.pt_min,
            pt_max=args.pt_max,
            eta_max=args.eta_max,
            mpi=not args.no_mpi,
            block_size=args.block_size,
        )
        for proc in args.process
    ]
    for s in settings:
        paths = generate(s, args.output_dir, formats=formats, jobs=args.jobs)
        for p in paths.values():
            print(p)
    return 0


class _DefaultsFormatter(argparse.HelpFormatter):
    """``(default: X)`` after a help text that does not already say its default, and only for a default
    that means something (not None, False, an empty list or a suppressed one): argparse's own formatter
    says it twice."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or default is None
            or default is False
            or default == argparse.SUPPRESS
            or (isinstance(default, (list, tuple)) and not default)
            or action.option_strings == []
            or isinstance(action, (argparse._HelpAction, argparse._VersionAction))
        ):
            return text
        return f"{text} (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="log progress (INFO), also from dask and coffea",
    )
    parser = argparse.ArgumentParser(prog="jettagger", description=__doc__, parents=[common])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    add = sub.add_parser

    def add_parser(name: str, **kw):  # every subcommand: -v, and defaults shown in --help
        kw.setdefault("formatter_class", _DefaultsFormatter)
        return add(name, parents=[common], **kw)

    sub.add_parser = add_parser  # type: ignore[method-assign]
    _add_generate(sub)
    for register in _EXTRA_COMMANDS:
        register(sub)
    return parser


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a network on a weaver data config (weaver-like)")
    p.add_argument("--data-config", required=True, help="weaver data config YAML")
    from .nn import NETWORKS  # the registry: no torch

    p.add_argument("--network", required=True, help=", ".join(NETWORKS))
    p.add_argument("--network-options", default="{}", help="JSON dict of constructor options")
    p.add_argument("--train", nargs="+", required=True, help="training files (JetClass or PFNano)")
    p.add_argument("--val", nargs="*", default=[], help="validation files (default: 20 %% of --train)")
    p.add_argument("--output", "-o", required=True, help="folder for checkpoints, log.jsonl, summary.json")
    p.add_argument("--epochs", type=int, default=10, help="passes over the training set")
    p.add_argument("--batch-size", type=int, default=256, help="jets per optimiser step")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    p.add_argument("--optimizer", choices=["adamw", "ranger"], default="adamw", help="optimiser")
    p.add_argument("--seed", type=int, default=1, help="random seed")
    p.add_argument(
        "--max-minutes", type=float, default=None, help="stop after this wall time (keeps the best)"
    )
    p.add_argument("--max-train-jets", type=int, default=None, help="random subset of the training jets")
    p.add_argument("--max-val-jets", type=int, default=None, help="random subset of the validation jets")
    p.add_argument(
        "--curve-points",
        type=int,
        default=0,
        help="learning curve: validation metrics at log-spaced counts of distinct jets (curve.jsonl)",
    )
    p.add_argument("--trim", action="store_true", help="weaver's random sequence trimming")
    p.add_argument("--resume", action="store_true", help="continue from <output>/last.pt")
    p.add_argument(
        "--init",
        default=None,
        metavar="WEIGHTS",
        help="start from these weights (a bundle's model.pt, a weaver .pt); where only the class count "
        "differs, a new head (the tensors not loaded are named)",
    )
    p.add_argument(
        "--freeze",
        action="append",
        default=[],
        metavar="PATTERN",
        help="keep the parameters whose names match this fnmatch pattern fixed (repeatable; "
        "'mod.edge_convs.0.*')",
    )
    p.add_argument(
        "--lr-mult",
        action="append",
        default=[],
        metavar="PATTERN=FACTOR",
        help="learning rate x FACTOR (0 < FACTOR <= 1000) for the parameters matching PATTERN (repeatable; "
        "'mod.fc.*=50')",
    )
    p.add_argument("--stop-after", type=int, default=None, help="stop after this many epochs (resume later)")
    p.add_argument(
        "--stop-after-jets",
        type=int,
        default=None,
        help="stop this run after this many training jets, mid-pass if need be (resume later)",
    )
    p.add_argument(
        "--checkpoint-minutes",
        type=float,
        default=10.0,
        help="save a resumable mid-pass checkpoint at least this often (SIGTERM / Ctrl-C also save one)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    import json

    _needs("train", "torch")
    from .training import train

    s = train(
        args.data_config,
        args.network,
        args.train,
        args.output,
        val_files=args.val,
        network_options=json.loads(args.network_options),
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        optimizer=args.optimizer,
        seed=args.seed,
        max_minutes=args.max_minutes,
        trim=args.trim,
        resume=args.resume,
        init=args.init,
        freeze=args.freeze,
        lr_mult=[_lr_mult(x) for x in args.lr_mult],
        threads=args.threads,
        max_train_jets=args.max_train_jets,
        max_val_jets=args.max_val_jets,
        curve_points=args.curve_points,
        stop_after=args.stop_after,
        stop_after_jets=args.stop_after_jets,
        checkpoint_minutes=args.checkpoint_minutes,
    )
    if s["best_epoch"] is not None:
        best = next(r for r in s["history"] if r["epoch"] == s["best_epoch"])
        acc = f" val_acc {best['val_acc']:.4f}" if "val_acc" in best else ""  # none for a regression only
        print(f"best epoch {s['best_epoch']}: val_loss {best['val_loss']:.4f}{acc}")
    if "interrupted" in s:  # EX_TEMPFAIL: not done, try again (batch systems can requeue on it)
        cut = s["interrupted"]
        print(f"stopped in epoch {cut['epoch']} after {cut['jets']} jets; go on with --resume")
        return 75
    return 0


def _lr_mult(text: str) -> tuple[str, float]:
    """One ``--lr-mult PATTERN=FACTOR`` (the factor's bounds are the library's)."""
    pattern, _, factor = text.rpartition("=")
    try:
        if pattern:
            return pattern, float(factor)
    except ValueError:
        pass
    raise JetTaggerError(f"--lr-mult {text!r}: expected PATTERN=FACTOR, e.g. 'mod.fc.*=50'")


def _add_export(sub) -> None:
    p = sub.add_parser(
        "export", help="training folder -> tagger bundle; bundle -> Triton model repository (--triton)"
    )
    p.add_argument("training", help="folder written by `jettagger train` (or, with --triton only, a bundle)")
    p.add_argument("--output", "-o", default=None, help="bundle folder to write (from a training folder)")
    p.add_argument("--name", default=None, help="bundle name (default: the folder name)")
    p.add_argument("--reference", nargs="*", default=[], help="files to derive working points and metrics on")
    p.add_argument("--card", default="{}", help="JSON dict merged into tagger.yaml (e.g. the data command)")
    p.add_argument(
        "--triton", default=None, help="also write a Triton model repository here (<name>/config.pbtxt, 1/)"
    )
    p.add_argument(
        "--max-batch", type=_positive(int), default=1024, help="Triton max_batch_size (jets per request)"
    )
    p.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from .bundle import Bundle

    if not Path(args.training).exists() and not args.triton:
        raise JetTaggerError(f"{args.training}: no such training folder")
    if Path(args.training, "tagger.yaml").is_file() or not Path(args.training).exists():
        if not args.triton or args.output:
            raise JetTaggerError(
                f"{args.training} is a tagger bundle: export it with --triton REPOSITORY only"
            )
        bundle_path = args.training
    else:
        if not args.output:
            raise JetTaggerError("--output: the bundle folder to write from the training folder")
        _needs("train", "torch", "onnx")
        from .training import export

        bundle_path = export(
            args.training,
            args.output,
            name=args.name,
            reference_files=args.reference,
            card=json.loads(args.card),
        )
        print(bundle_path)
    if args.triton:
        from .triton import write_repository

        print(write_repository(Bundle.load(bundle_path), args.triton, args.name, args.max_batch))
    return 0


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="metrics (accuracy, AUC, rejection, confusion) and plots of a bundle")
    p.add_argument("--model", required=True, help="tagger bundle folder")
    p.add_argument(
        "--input", nargs="+", required=True, help="ROOT files: NanoAOD (Events) or JetClass (tree)"
    )
    p.add_argument("--output", "-o", required=True, help="output folder or file")
    _add_backend(p)
    p.set_defaults(func=_run_evaluate)


def _add_backend(p: argparse.ArgumentParser) -> None:
    from ._names import BACKENDS  # (not backends: it imports numpy)

    p.add_argument(
        "--jets", default=None, help="jet collection to tag: FatJet (AK8), Jet (AK4); default: the bundle's"
    )
    p.add_argument(
        "--backend",
        choices=list(BACKENDS),
        default=None,
        help="inference backend (default: onnx; triton for a client-only bundle)",
    )
    p.add_argument("--server", default=None, help="Triton server, grpc://host:8001 or http://host:8000")
    p.add_argument(
        "--served-model", default=None, help="model name on the Triton server (default: the bundle's name)"
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="int8 (onnx) or bf16 (torch): only for a bundle whose card records them within the limits "
        "(see `jettagger quantize`)",
    )


def _backend(args: argparse.Namespace):
    """The backend spec from ``--backend``, ``--server``, ``--served-model`` and ``--precision`` (checked
    here, once): a server means Triton, a reduced precision the backend that runs it; none leaves the
    choice to the bundle (None: onnx, or triton for a client-only one)."""
    from ._names import reduced
    from .backends import BackendSpec

    precision, runs_it = reduced(args.precision)
    name = args.backend or ("triton" if args.server or args.served_model else runs_it)
    if name is None:
        return None
    return BackendSpec.of(name, server=args.server, served_model=args.served_model, precision=precision)


def _run_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate
    from .outputs import claim_output
    from .tagger import JetTagger

    with claim_output(args.output, folder=True):  # checked and locked before any work
        m = evaluate(JetTagger(args.model, backend=_backend(args), jets=args.jets), args.input, args.output)
    print(f"{m['model']}: {m['n_jets']} jets, accuracy {_number(m['accuracy'], '.4f')}")
    _print_problems("inputs", m["counts"])
    _print_discriminants(m)
    return 0


def _print_problems(where: str, counts: dict) -> None:
    """One line of what was counted rather than refused (nothing when nothing went wrong): jets with
    invalid scores, input values replaced by 0, invalid link rows per table."""
    parts = []
    if counts.get("invalid_score_jets"):
        parts.append(
            f"{counts['invalid_score_jets']} jets with invalid scores (non-finite model output; "
            "left out of the score histograms and metrics)"
        )
    if counts.get("nonfinite_inputs"):
        parts.append(f"{counts['nonfinite_inputs']} {NONFINITE_TEXT}")
    for key, n in counts.items():
        if key.startswith("invalid_link_rows_") and n:
            parts.append(f"{n} invalid {key[len('invalid_link_rows_') :]} rows (index out of range)")
    if parts:
        print(f"  {where}: " + "; ".join(parts))


def _number(x: float | None, fmt: str) -> str:
    """A metrics.json number (null where unbounded or undefined, see its null_reasons)."""
    return "n/a" if x is None else format(x, fmt)


def _print_discriminants(m: dict) -> None:
    """One line per discriminant, the same for ``evaluate`` (per jet) and ``run`` (binned)."""
    for name, d in m["discriminants"].items():
        print(
            f"  {name}: AUC {_number(d['auc'], '.4f')}  1/eps_b @50% {_rejection(d, 'rej50')}  "
            f"@30% {_rejection(d, 'rej30')}  ({d['n_signal']:.0f} signal, {d['n_background']:.0f} "
            f"background jets, {m['method']})"
        )


def _rejection(d: dict, key: str) -> str:
    """1/eps_b with its binomial error, or n/a (metrics.json's null_reasons say why)."""
    if d.get(key) is None:
        return "n/a"
    err = d.get(f"{key}_err")
    return f"{d[key]:.1f}" + (f" +- {err:.1f}" if err is not None else "")


def _add_predict(sub) -> None:
    p = sub.add_parser(
        "predict", help="one row per jet with score_<class> and the observers (weaver --predict)"
    )
    p.add_argument("--model", required=True, help="bundle folder or shipped name")
    p.add_argument(
        "--input", nargs="+", required=True, help="ROOT files: NanoAOD (Events) or JetClass (tree)"
    )
    p.add_argument("--output", "-o", required=True, help="OUT.root or OUT.parquet")
    _add_backend(p)
    p.set_defaults(func=_run_predict)


def _run_predict(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .evaluation import predict_files
    from .outputs import claim_output, write_jet_table
    from .tagger import JetTagger

    out = Path(args.output)
    if out.suffix not in (".root", ".parquet"):
        raise JetTaggerError(f"--output must end in .root or .parquet, got {out}")
    missing = [f for f in args.input if not Path(f).is_file()]
    if missing:
        raise JetTaggerError(f"--input: no such file {missing[0]}")
    sources: dict[str, int] = {}
    counters: dict[str, int] = {}
    with claim_output(out, folder=False):  # checked and locked before any work
        cols = predict_files(
            JetTagger(args.model, backend=_backend(args), jets=args.jets),
            args.input,
            progress=True,
            sources=sources,
            counters=counters,
        )
        for source, n in sources.items():
            print(f"source preset {source}: {n} file{'s' * (n != 1)}")
        _print_problems("inputs", counters)
        write_jet_table(cols, out)  # a temporary file beside it, renamed over it
    print(f"{out}: {len(next(iter(cols.values())))} jets")
    return 0


def _add_import(sub) -> None:
    p = sub.add_parser("import-weaver", help="weaver or CMSSW artefacts -> tagger bundle")
    p.add_argument(
        "--data-config",
        default=None,
        help="the weaver data config YAML (not needed with --onnx and a CMSSW-style --preprocess)",
    )
    p.add_argument("--output", "-o", required=True, help="bundle folder to write")
    from .nn import NETWORKS  # the registry: no torch

    p.add_argument("--network", help=f"network name, with --checkpoint ({', '.join(NETWORKS)})")
    p.add_argument("--network-options", default="{}", help="JSON dict (e.g. use_pre_activation_pair)")
    p.add_argument("--checkpoint", help="weaver state_dict (loaded weights-only)")
    p.add_argument("--onnx", help="weaver-exported or CMSSW model.onnx (with --preprocess)")
    p.add_argument(
        "--convert",
        action="store_true",
        help="with --onnx of a ParticleNet: convert it into our network and ship our export (checked "
        "against the original; needs the train extra)",
    )
    p.add_argument(
        "--served-model",
        default=None,
        help="without --onnx: a client-only bundle for this model on a Triton server (SONIC)",
    )
    p.add_argument(
        "--jets",
        default=None,
        help="jet collection the model tags: FatJet (AK8), Jet (AK4); stored in the bundle",
    )
    p.add_argument("--preprocess", help="preprocess.json (weaver: var_length; CMSSW: min/max_length)")
    p.add_argument(
        "--source",
        default=None,
        help="source preset (jetclass, cms-pfnano or a YAML file); default: chosen from the variable names",
    )
    p.add_argument(
        "--stored-prefix",
        default=None,
        help="NanoAOD branch prefix of the experiment's own "
        "scores for this model, e.g. particleNet -> FatJet_particleNet_<discriminant>",
    )
    p.add_argument("--name", default=None, help="bundle name (default: the folder name)")
    p.add_argument(
        "--discriminants",
        default="{}",
        help='JSON, e.g. {"TvsQCD": {"signal": ["Tbqq"], '
        '"background": ["QCD"]}}; default for CMS classes: NanoAOD\'s',
    )
    p.add_argument(
        "--outputs",
        default="{}",
        help="JSON: roles overriding those from the output names (output -> column -> role), e.g. "
        '{"output": {"mass": {"role": "regression", "unit": "GeV"}}}',
    )
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

    if args.checkpoint or args.convert:
        _needs("train", "torch", "onnx")
    options = _json_option(args.network_options, "--network-options")
    discriminants = _json_option(args.discriminants, "--discriminants")
    outputs = _json_option(args.outputs, "--outputs") or None
    path = import_weaver(
        args.data_config,
        args.output,
        network=args.network,
        checkpoint=args.checkpoint,
        onnx=args.onnx,
        preprocess=args.preprocess,
        name=args.name,
        network_options=options,
        discriminants=discriminants,
        source=args.source,
        stored_prefix=args.stored_prefix,
        served_model=args.served_model,
        jets=args.jets,
        outputs=outputs,
        convert=args.convert,
    )
    print(path)
    return 0


def _positive(kind: type):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def _add_run(sub) -> None:
    from ._names import MAX_LENGTH, MAX_LENGTH_ENV  # (not batching: it imports numpy)

    p = sub.add_parser(
        "run",
        help="the main job: a tagger over a fileset -> hists, metrics, plots",
    )
    p.add_argument("--model", default=None, help="bundle folder or shipped name (default: models/DEFAULT)")
    p.add_argument(
        "--fileset",
        default=None,
        help="coffea JSON fileset {dataset: {files, metadata: {xsec, "
        "is_mc}}} (default: the bundled PFNano samples)",
    )
    p.add_argument(
        "--executor",
        default="auto",
        help="iterative, futures, dask, dask-awkward, or auto: iterative for small jobs, dask otherwise",
    )
    p.add_argument("--workers", type=_positive(int), default=2, help="dask / futures worker processes")
    p.add_argument("--scheduler", default=None, help="address of an external dask scheduler")
    p.add_argument(
        "--cluster",
        default=None,
        metavar="FILE.yaml",
        help="cluster YAML (kind: htcondor or slurm): submit its jobs and run on them (the `jobqueue` extra)",
    )
    p.add_argument("--chunksize", type=_positive(int), default=500, help="events per chunk")
    p.add_argument(
        "--lumi",
        type=_positive(float),
        default=None,
        help="integrated luminosity in pb^-1: scale MC datasets to xsec x lumi / sum genWeight",
    )
    p.add_argument("--pt-min", type=float, default=300.0, help="FatJet pT > this [GeV]")
    p.add_argument("--pt-max", type=float, default=None, help="FatJet pT < this [GeV]")
    p.add_argument("--eta-max", type=float, default=2.4, help="|eta| < this")
    p.add_argument("--msd-min", type=float, default=None, help="soft-drop mass > this [GeV]")
    p.add_argument("--msd-max", type=float, default=None, help="soft-drop mass < this [GeV]")
    p.add_argument(
        "--jet-id",
        choices=["none", "loose", "tight", "tightlepveto"],
        default="none",
        help="FatJet_jetId bit to require",
    )
    p.add_argument(
        "--working-points",
        default=None,
        help="correctionlib JSON from `jettagger workingpoints` (default: the bundle's working points)",
    )
    p.add_argument("--label", default=None, help="text in the plots' corner (default: Simulation)")
    p.add_argument(
        "--per-jet",
        action="store_true",
        help="also write jets.parquet: one row per selected jet (ids, truth, weight, scores, discriminants)",
    )
    p.add_argument(
        "--padding",
        default="dynamic",
        help=f"dynamic, fixed, or a length (at most {MAX_LENGTH}; ${MAX_LENGTH_ENV} sets the cap)",
    )
    _add_backend(p)
    p.add_argument("--skip-bad-files", action="store_true", help="skip unreadable files and failing chunks")
    p.add_argument("--output", "-o", default="output", help="output folder")
    p.set_defaults(func=_run_run)


def _run_run(args: argparse.Namespace) -> int:
    import json

    from .outputs import claim_output

    with claim_output(args.output, folder=True):  # checked and locked before any work
        out, paths = _run_job(args)
    _print_run(json.loads(paths["metrics"].read_text()), out, paths, args.output)
    return 0


def _run_job(args: argparse.Namespace) -> tuple[dict, dict]:
    """The run's job and its outputs (in ``args.output``, which the caller holds)."""
    spec = _cluster_spec(args)  # checked first (before coffea is imported), no job submitted yet
    from .bundle import Bundle
    from .data import default_fileset
    from .execution import run_fileset
    from .fileset import load_fileset
    from .outputs import write_outputs
    from .processor import Selection

    selection = Selection(args.pt_min, args.pt_max, args.eta_max, args.msd_min, args.msd_max, args.jet_id)
    backend = _backend(args)
    bundle = Bundle.load(args.model)  # a folder, a shipped name, or the default
    if backend is not None:  # a reduced precision the card does not record is refused here, before any job
        from .precision import check

        check(bundle, dict(backend.options).get("precision"), backend.name)
    fileset = load_fileset(args.fileset) if args.fileset else default_fileset()
    if args.label is not None:
        from . import plotting  # (matplotlib: 1 s of imports, otherwise paid only when the plots are drawn)

        plotting.LABEL = args.label
    with _cluster_client(spec) as client:
        out = run_fileset(
            bundle,
            fileset,
            executor="dask" if spec is not None and args.executor == "auto" else args.executor,
            workers=args.workers,
            scheduler=args.scheduler,
            client=client,
            chunksize=args.chunksize,
            skip_bad_files=args.skip_bad_files,
            lumi=args.lumi,
            selection=selection,
            padding=args.padding,
            working_points=args.working_points,
            per_jet=args.per_jet,
            backend=backend,
            jets=args.jets,
        )
    return out, write_outputs(out, args.output)


def _cluster_spec(args: argparse.Namespace):
    """``--cluster``: its YAML checked; it runs the dask executors only, and no other scheduler."""
    if args.cluster is None:
        return None
    from .clusters import load_cluster_spec

    if args.scheduler:
        raise JetTaggerError("--cluster and --scheduler: give one (a cluster started here, or a running one)")
    if args.executor not in ("auto", "dask", "dask-awkward"):
        raise JetTaggerError(f"--cluster runs --executor dask or dask-awkward, not {args.executor}")
    return load_cluster_spec(args.cluster)


def _cluster_client(spec):
    """The batch cluster's client (its jobs cancelled on leaving), or None without ``--cluster``."""
    import contextlib

    if spec is None:
        return contextlib.nullcontext(None)
    from .clusters import cluster_client

    return cluster_client(spec)


def _add_cluster_script(sub) -> None:
    p = sub.add_parser(
        "cluster-script",
        help="print the batch job script of a cluster YAML (htcondor, slurm); submits nothing",
    )
    p.add_argument("config", metavar="FILE.yaml", help="cluster YAML, e.g. examples/clusters/htcondor.yaml")
    p.set_defaults(func=_run_cluster_script)


def _run_cluster_script(args: argparse.Namespace) -> int:
    from .clusters import job_script, load_cluster_spec

    spec = load_cluster_spec(args.config)
    print(job_script(spec), end="")
    print(
        f"# {spec.jobs} job(s) x {spec.cores} one-thread workers = {spec.workers} dask workers; "
        "the scheduler address is filled in when the cluster starts",
        file=sys.stderr,
    )
    return 0


def _print_run(m: dict, out: dict, paths: dict, folder: str) -> None:
    """The run's summary: speed, accuracy, discriminants, warnings, skipped files, outputs."""
    jets = sum(c["selected_jets"] for c in m["cutflow"].values())
    acc = f", accuracy {m['accuracy']:.3f}" if m["accuracy"] is not None else ""
    print(
        f"{out['meta']['model']} on {out['meta']['executor']}: {jets} jets in {m['seconds']:.1f} s "
        f"({m['jets_per_second']:.0f} jets/s){acc}"
    )
    for source, n in out["meta"]["sources"].items():
        print(f"  source preset {source}: {n} file{'s' * (n != 1)}")
    ship = out["meta"].get("shipping") or {}
    if ship.get("model_bytes_per_worker") is not None:
        print(
            f"  model sent once per worker ({ship['model_bytes_per_worker'] / 1e6:.2f} MB), "
            f"{ship['processor_bytes_per_task'] / 1e3:.0f} kB per task"
        )
    for ds, counts in m["cutflow"].items():
        _print_problems(f"dataset {ds}", counts)
    _print_discriminants(m)
    for w in m["warnings"]:
        print(f"  warning: {w}")
    for s in m["skipped"]:
        print(
            f"  skipped {s['file'] or s['dataset']}: {s['events'] if s['events'] is not None else 'unknown'} "
            f"events ({s['error']})"
        )
    print(f"outputs in {folder}/: " + ", ".join(p.name for p in paths.values()))


def _add_workingpoints(sub) -> None:
    p = sub.add_parser(
        "workingpoints",
        help="a bundle's working points (and a run's efficiency maps) as correctionlib JSON",
    )
    p.add_argument("--model", default=None, help="bundle folder or shipped name (default: models/DEFAULT)")
    p.add_argument("--hists", default=None, help="hists.pkl of a `jettagger run`: add efficiency maps")
    p.add_argument("--output", "-o", required=True, help="correctionlib JSON to write")
    p.set_defaults(func=_run_workingpoints)


def _run_workingpoints(args: argparse.Namespace) -> int:
    import pickle
    from pathlib import Path

    from .bundle import Bundle
    from .outputs import staged
    from .workingpoints import write_correction_set

    if not str(args.output).endswith(".json"):
        raise JetTaggerError(f"--output must end in .json, got {args.output}")
    with staged(args.output, folder=False) as tmp:  # checked and locked first; renamed over it whole
        hists = None
        if args.hists:
            try:
                with Path(args.hists).open("rb") as f:
                    hists = pickle.load(f)["hists"]
            except (OSError, pickle.UnpicklingError, KeyError, TypeError) as err:
                raise JetTaggerError(
                    f"--hists {args.hists}: not a `jettagger run` hists.pkl ({err})"
                ) from None
        write_correction_set(tmp, Bundle.load(args.model), hists)
    print(args.output)
    return 0


def _add_quantize(sub) -> None:
    p = sub.add_parser(
        "quantize",
        help="make a bundle's int8 model / measure its bf16 run, and record its deviation in the card",
    )
    p.add_argument("model", help="tagger bundle folder (written into: model.int8.onnx, tagger.yaml)")
    p.add_argument("--precision", choices=PRECISIONS[1:], required=True, help="reduced precision")
    p.add_argument(
        "--reference", nargs="+", required=True, help="labelled files: calibration and held-out jets"
    )
    p.add_argument(
        "--calibration-jets", type=_positive(int), default=512, help="jets the int8 ranges are calibrated on"
    )
    p.add_argument(
        "--max-jets", type=_positive(int), default=None, help="at most this many jets (a seeded subset)"
    )
    p.set_defaults(func=_run_quantize)


def _run_quantize(args: argparse.Namespace) -> int:
    from pathlib import Path

    missing = [f for f in args.reference if not Path(f).is_file()]
    if missing:
        raise JetTaggerError(f"--reference: no such file {missing[0]}")
    _needs("train", "torch", "onnx")
    from .precision import MAX_AUC_DELTA, MAX_MEAN_DELTA, describe, quantize

    rec = quantize(args.model, args.precision, args.reference, args.calibration_jets, args.max_jets)
    verdict = "within the limits" if rec["within_limits"] else "OVER the limits: --precision refuses it"
    layers = f", {len(rec['nodes'])} layers int8" if "nodes" in rec else ""
    print(f"{args.model}: {args.precision}{layers}: {describe(rec)}")
    print(f"  {verdict} (mean |Δscore| <= {MAX_MEAN_DELTA:g}, AUC within {MAX_AUC_DELTA:g}), in tagger.yaml")
    return 0


_EXTRA_COMMANDS: list = [
    _add_run,
    _add_workingpoints,
    _add_train,
    _add_export,
    _add_evaluate,
    _add_predict,
    _add_import,
    _add_cluster_script,
    _add_quantize,
]


def _logging(verbose: bool) -> None:
    """WARNING and above, or INFO with ``-v``, also from distributed, coffea and dask. distributed sets its
    loggers' levels from dask's config when it is imported, in this process and in each worker process of
    a LocalCluster: the environment variable reaches both."""
    level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(message)s")
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "info" if verbose else "warning")
    for name in ("distributed", "coffea", "dask"):
        logging.getLogger(name).setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _logging(getattr(args, "verbose", False))
    try:
        return int(args.func(args) or 0)
    except (JetTaggerError, ValueError, OSError, FileNotFoundError, KeyError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"jettagger {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: outputs are whole or absent (outputs.staged), so one line
        print(f"jettagger {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
