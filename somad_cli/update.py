"""``somad update``: a SOMAD model that also knows more good images, without fitting it again."""

from __future__ import annotations

import argparse

from somad import check_output_file, claimed, image_paths, load_any_model
from somad_cli.common import warn


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "update", help="add good images to a SOMAD model (SOM continued, node statistics merged)"
    )
    p.add_argument("model")
    p.add_argument("paths", nargs="+", help="good image files, folders or .txt lists of paths")
    p.add_argument("--out", required=True, help="the updated model file to write (.somad)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--device", default="auto")
    p.add_argument("--strict", action="store_true")
    p.set_defaults(handler=cmd_update)


def cmd_update(args: argparse.Namespace, progress) -> int:
    paths = image_paths(args.paths)
    inputs = [args.model, *args.paths, *paths]
    check_output_file(args.out, overwrite=args.overwrite, inputs=inputs)
    model = load_any_model(args.model, device=args.device)
    with claimed(args.out):
        out = check_output_file(args.out, overwrite=args.overwrite, inputs=inputs)
        updated = model.update(paths, progress=progress, strict=args.strict, on_error=warn)
        progress.close()
        updated.save(out)
    last = updated.training_summary["updates"][-1]
    seconds = ", ".join(f"{k} {v:.1f} s" for k, v in last["seconds"].items())
    print(
        f"updated with {last['n_images']} images ({seconds}); the model knows "
        f"{updated.training_summary['n_images']} good images; wrote {out}"
    )
    return 0
