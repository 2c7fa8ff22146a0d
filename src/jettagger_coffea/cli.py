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


_EXTRA_COMMANDS: list = []


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
