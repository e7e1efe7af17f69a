"""The ``somad`` command line: ``fit`` (SOMAD or any method of :data:`somad.methods.METHODS`), ``score``,
``eval``, ``info``, ``bench``, ``cluster``, ``export``, ``check-export`` and ``update``.

Bad input ends with exit status 2 and one line on stderr naming the file and the problem; a cancelled run
(Ctrl-C) ends with status 130 and writes nothing.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from somad_cli import bench, cluster, export, update
from somad_cli.commands import cmd_eval, cmd_fit, cmd_info, cmd_score
from somad_cli.common import Parser, add_fit_options, add_method_options, run_command


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="somad", description="Unsupervised visual inspection with SOMAD.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("fit", help="fit a model on the good images of one category")
    p.add_argument("data", help="MVTec-layout category folder or a folder of good images")
    p.add_argument("--out", required=True, help="model file to write (.somad)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    add_fit_options(p)
    add_method_options(p)
    p = sub.add_parser("score", help="score images: heatmaps, overlays, scores.csv")
    p.add_argument("model")
    p.add_argument("paths", nargs="+", help="image files or folders")
    p.add_argument("--out", required=True, help="output folder (new or empty)")
    p.add_argument("--overwrite", action="store_true", help="write into --out even if it holds files")
    p.add_argument("--threshold", type=float, help="raw score threshold (default: the model's)")
    p.add_argument(
        "--pixel-threshold",
        type=float,
        help="threshold of the defect regions and contours (default: --threshold)",
    )
    p.add_argument(
        "--min-area",
        type=int,
        default=0,
        help="NG needs a defect region of at least this many pixels (default 0)",
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--strict", action="store_true")
    p.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="ray: score on Ray Data workers (a local Ray unless --address)",
    )
    p.add_argument(
        "--no-pictures", action="store_true", help="write scores.csv only, no heatmaps or overlays"
    )
    p.add_argument("--workers", type=int, default=1, help="Ray workers (each loads the model once)")
    p.add_argument("--address", help="address of an existing Ray cluster")
    p = sub.add_parser("eval", help="image AUROC, pixel AUROC and PRO on labelled test sets")
    p.add_argument("model")
    p.add_argument("data", help="a category folder or a root holding several")
    p.add_argument("--json", help="write the report to this file")
    p.add_argument("--overwrite", action="store_true", help="replace --json if it exists")
    p.add_argument(
        "--store-thresholds", action="store_true", help="keep best-F1 and 1%% FRR thresholds in the model"
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--strict", action="store_true")
    p = sub.add_parser("info", help="describe a model file")
    p.add_argument("model")
    p.add_argument("--json", action="store_true")
    bench.register(sub)
    cluster.register(sub)
    export.register(sub)
    update.register(sub)
    return parser


COMMANDS = {"fit": cmd_fit, "score": cmd_score, "eval": cmd_eval, "info": cmd_info}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = getattr(args, "handler", None) or COMMANDS[args.command]
    return run_command(handler, args)


if __name__ == "__main__":
    sys.exit(main())
