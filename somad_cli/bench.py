"""``somad bench DATA --methods ...``: compare methods on the same cached features (see :mod:`somad.bench`).

    somad bench DATA --methods somad,padim,patchcore,ocsvm,iforest,kde,lof,elliptic \
        [--backbone resnet18] [--random-init] [--json FILE] [--cache DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from somad import METHODS, ConfigError, check_output_file, claimed, write_text_atomically
from somad.bench import default_cache_folder, markdown, run_bench
from somad_cli.common import RANDOM_INIT_NOTE, Parser, add_fit_options, config_from_args, run_command


def parse_methods(text: str) -> list[str]:
    """``"somad,padim"`` or ``"all"`` -> method names, in the given order, checked against the registry."""
    names = list(METHODS) if text.strip() == "all" else [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in METHODS]
    if unknown or not names:
        raise ConfigError(
            f"--methods: unknown {', '.join(unknown) or 'empty list'} (known: {', '.join(METHODS)})"
        )
    return list(dict.fromkeys(names))


# -- command line ---------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``bench`` options: the data, the methods, ``somad fit``'s feature and method options, output."""
    parser.add_argument("data", help="an MVTec-layout category or a root holding several")
    parser.add_argument(
        "--methods",
        default="all",
        help=f"comma-separated, or all (default): {','.join(METHODS)}",
    )
    add_fit_options(parser)
    b = parser.add_argument_group("bench")
    b.add_argument("--json", help="write the report to this file")
    b.add_argument("--overwrite", action="store_true", help="replace --json if it exists")
    b.add_argument("--cache", help=f"feature cache and stored results (default: {default_cache_folder()})")
    b.add_argument("--no-cache", action="store_true", help="extract features in memory only, store nothing")
    b.add_argument("--fresh", action="store_true", help="recompute stored results (features stay cached)")
    b.add_argument("--coreset-ratio", type=float, help="PatchCore: share of patches kept (default 0.1)")
    b.add_argument("--stage", type=int, help="image-level methods: backbone stage to pool (default: deepest)")
    b.add_argument("--augment", action="store_true", help="image-level methods: add rotated/flipped copies")
    b.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="METHOD.NAME=VALUE",
        help="any method option, e.g. lof.n_neighbors=8 (repeatable)",
    )
    return parser


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``bench`` sub-command to ``somad``'s sub-parsers; its handler is ``cmd_bench``."""
    parser = subparsers.add_parser(
        "bench", help="compare methods on the same cached features: a table per category"
    )
    add_arguments(parser)
    parser.set_defaults(handler=cmd_bench)
    return parser


def options_from_args(args: argparse.Namespace, methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Method options named by ``--coreset-ratio``, ``--stage``, ``--augment`` and ``--option``."""
    options: dict[str, dict[str, Any]] = {m: {} for m in methods}
    for m in methods:
        names = {s.name for s in METHODS[m].options}
        if args.coreset_ratio is not None and "coreset_ratio" in names:
            options[m]["coreset_ratio"] = args.coreset_ratio
        if args.stage is not None and "stage" in names:
            options[m]["stage"] = args.stage
        if args.augment and "augment" in names:
            options[m]["augment"] = True
    for item in args.option:
        target, _, value = item.partition("=")
        method, _, name = target.partition(".")
        if not value or not name or method not in METHODS:
            raise ConfigError(f"--option: expected METHOD.NAME=VALUE with a known method, got {item!r}")
        if method in options:
            options[method][name] = value
    for m in methods:
        METHODS[m].validate(options[m])
    return options


def cmd_bench(args: argparse.Namespace, progress) -> int:
    """``somad bench``: run, print the tables, write ``--json``."""
    config = config_from_args(args)
    methods = parse_methods(args.methods)
    options = options_from_args(args, methods)
    cache = None if args.no_cache else Path(args.cache) if args.cache else default_cache_folder()
    if args.json:
        check_output_file(args.json, overwrite=args.overwrite)
    with claimed(args.json):
        if args.json:
            check_output_file(args.json, overwrite=args.overwrite)
        return _bench(args, progress, config, methods, options, cache)


def _bench(args: argparse.Namespace, progress, config, methods, options, cache) -> int:

    def log(text: str) -> None:
        if hasattr(progress, "close"):
            progress.close()
        print(text, file=sys.stderr)

    report = run_bench(
        args.data,
        config,
        methods,
        options=options,
        cache_folder=cache,
        resume=not args.fresh,
        progress=progress,
        log=log,
        strict=args.strict,
    )
    if hasattr(progress, "close"):
        progress.close()
    argv = getattr(args, "argv", None)
    report["command"] = "somad " + " ".join(["bench", *argv] if argv is not None else sys.argv[1:])
    print(markdown(report))
    if report["random_init"]:
        print(f"note: {RANDOM_INIT_NOTE}")
    if args.json:
        write_text_atomically(Path(args.json).expanduser(), json.dumps(report, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m somad_cli.bench DATA ...``: the same as ``somad bench`` without the ``somad`` entry point."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = add_arguments(Parser(prog="somad bench", description=__doc__.split("\n")[0]))
    args = parser.parse_args(argv)
    args.argv = argv
    return run_command(cmd_bench, args, cancelled="interrupted; finished results are stored")


if __name__ == "__main__":
    sys.exit(main())
