"""``somad cluster MODEL DATA``: group the defective images of a folder by defect type.

``register(subparsers)`` adds the sub-command to ``somad``'s parser; the handler is :func:`cmd_cluster`
(``args.handler``), with the same ``(args, progress) -> exit status`` signature as the other commands.
:func:`main` runs the sub-command on its own (``python -m somad_cli.cluster MODEL DATA ...``).

DATA is an MVTec AD category (its test set is clustered; ``test/<type>`` folders are the ground truth) or any
folder of images (sub-folders are types; images lying in the folder itself are unlabelled). The command prints
every cluster with its count and member files, and NMI, ARI and Hungarian F1 against the type folders when
every image has one. ``--out DIR`` writes ``clusters.csv`` (file -> cluster) and one contact sheet PNG per
cluster, each thumbnail outlined where its anomaly map reaches the threshold.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2

from somad import (
    ConfigError,
    DataError,
    check_output_file,
    check_output_folder,
    claimed,
    staged_folder,
    write_text_atomically,
)
from somad_cli.common import RANDOM_INIT_NOTE, Parser, run_command

CSV_NAME = "clusters.csv"


def register(subparsers) -> argparse.ArgumentParser:
    """Add ``cluster`` to ``somad``'s sub-commands; returns its parser (handler in ``args.handler``)."""
    p = subparsers.add_parser(
        "cluster",
        help="group defective images by defect type (anomaly-weighted descriptors, Ward clustering)",
        description="Cluster the images of DATA that the model judges defective into defect types; images "
        "below the threshold form the good group (cluster 0).",
    )
    p.add_argument("model", help="fitted model (.somad); with --blind only its backbone is used")
    p.add_argument("data", help="MVTec-layout category (its test set) or a folder of images / type folders")
    p.add_argument(
        "--n", type=int, help="number of defect clusters, the good group aside (default: estimated)"
    )
    p.add_argument("--contrastive", action="store_true", help="fine-tune a contrastive head first (slower)")
    p.add_argument(
        "--blind", action="store_true", help="anomaly maps without the model's statistics (VAE + FCA)"
    )
    p.add_argument("--json", help="write the clusters and metrics to this file")
    p.add_argument("--out", help="folder for clusters.csv and one contact sheet PNG per cluster")
    p.add_argument(
        "--overwrite", action="store_true", help="replace --json and write into --out if they exist"
    )
    g = p.add_argument_group("clustering")
    g.add_argument("--method", choices=("ward", "kmeans"), default="ward")
    g.add_argument("--estimate", choices=("gap", "silhouette"), default="gap", help="how n is estimated")
    g.add_argument("--max-n", type=int, default=10, help="largest n considered when estimating")
    g.add_argument(
        "--tau", type=float, default=2e-3, help="softmax temperature of Eq. 2 (default: %(default)s)"
    )
    g.add_argument(
        "--centre",
        choices=("model", "image", "position", "none"),
        default="model",
        help="how features are centred before weighting (default: %(default)s)",
    )
    g.add_argument("--threshold", type=float, help="image threshold of the good group (default: the model's)")
    g.add_argument("--epochs", type=int, default=10, help="contrastive epochs")
    g.add_argument("--vae-iterations", type=int, default=1000, help="blind mode's VAE iterations")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="auto")
    g.add_argument("--thumb", type=int, default=128, help="contact sheet thumbnail side in pixels")
    p.set_defaults(handler=cmd_cluster)
    return p


def _relative(path: Path | None, root: Path) -> str:
    if path is None:
        return "<array>"
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _fmt(value: float | None) -> str:
    return "  n/a" if value is None else f"{value:.3f}"


def cmd_cluster(args: argparse.Namespace, progress) -> int:
    from somad.defects import ClusteringConfig, DescriptorConfig

    if args.n is not None and args.n < 1:
        raise ConfigError(f"--n: expected at least 1 cluster, got {args.n}")
    config = ClusteringConfig(
        descriptors=DescriptorConfig(tau=args.tau, centre=args.centre),
        method=args.method,
        estimate=args.estimate,
        max_n=args.max_n,
        seed=args.seed,
    ).validate()
    root = Path(args.data).expanduser()
    _check_outputs(args, root)
    with claimed(args.json), claimed(args.out, create_folders=True):
        _check_outputs(args, root)  # again, now that they are ours: another command may have written them
        return _cluster(args, progress, root, config)


def _check_outputs(args: argparse.Namespace, root: Path) -> None:
    if args.json:
        check_output_file(args.json, overwrite=args.overwrite, inputs=[args.model])
    if args.out:
        check_output_folder(args.out, overwrite=args.overwrite, inputs=[root, args.model])


def _cluster(args: argparse.Namespace, progress, root: Path, config) -> int:
    from somad import load_model
    from somad.defects import BlindConfig, ContrastiveConfig, cluster_images, collect_images

    paths, types = collect_images(root)
    model = load_model(args.model, device=args.device)
    result = cluster_images(
        model,
        paths,
        n=args.n,
        defect_types=types,
        threshold=args.threshold,
        contrastive=args.contrastive,
        blind=args.blind,
        config=config,
        contrastive_config=ContrastiveConfig(epochs=args.epochs, seed=args.seed),
        blind_config=BlindConfig(iterations=args.vae_iterations, seed=args.seed),
        progress=progress,
        on_error=lambda err: print(f"somad: warning: {err}", file=sys.stderr),
    )
    progress.close()
    shown = root / "test" if (root / "test").is_dir() and (root / "train").is_dir() else root
    how = f"n={args.n} given" if args.n is not None else f"n estimated ({args.estimate})"
    at = "blind maps" if result.threshold is None else f"threshold {result.threshold:.4g}"
    print(
        f"clustered {len(result.paths)} images of {root.name!r}: {result.mode} descriptors, {args.method}, "
        f"{how}, {at}; {result.n_clusters} defect clusters"
    )
    for label, members in result.members().items():
        title = "judged good" if label == 0 else "defect cluster"
        print(f"cluster {label} ({title}): {len(members)} images")
        for i in members:
            truth = f"  [{result.defect_types[i]}]" if result.defect_types is not None else ""
            print(f"  {_relative(result.paths[i], shown)}{truth}")
    if result.metrics is not None:
        print("metrics against the defect-type folders:")
        for part, m in result.metrics.items():
            label = "all images    " if part == "all" else "defective only"
            print(
                f"  {label} NMI {_fmt(m['nmi'])}  ARI {_fmt(m['ari'])}  F1 {_fmt(m['f1'])}"
                f"  ({m['n_images']} images, {m['n_classes']} classes, {m['n_clusters']} clusters)"
            )
    else:
        print("metrics: n/a (not every image lies in a type folder)")
    if model.random_init:
        print(f"note: {RANDOM_INIT_NOTE}")
    if args.out:
        out = Path(args.out).expanduser()
        with staged_folder(out, last=[CSV_NAME]) as stage:
            write_outputs(result, stage, shown, thumb=args.thumb)
        print(f"wrote {out / CSV_NAME} and {len(result.members())} contact sheets to {out}")
    if args.json:
        report = result.to_dict()
        report["config"] = {
            "model": str(args.model),
            "data": str(root),
            "method": args.method,
            "n": args.n,
            "estimate": args.estimate,
            "tau": args.tau,
            "centre": args.centre,
            "contrastive": args.contrastive,
            "blind": args.blind,
            "random_init": model.random_init,
        }
        write_text_atomically(args.json, json.dumps(report, indent=2))
    return 0


def write_outputs(result, out: Path, root: Path, *, thumb: int = 128) -> Path:
    """``clusters.csv`` and ``cluster_<k>_<name>.png`` contact sheets of a :class:`ClusterResult`."""
    from somad import read_image
    from somad.defects import cluster_name, contact_sheet, thumbnail, write_cluster_csv

    out.mkdir(parents=True, exist_ok=True)

    write_cluster_csv(
        out / CSV_NAME, result.paths, result.labels, scores=result.scores, defect_types=result.defect_types
    )
    for label, members in result.members().items():
        thumbs, captions = [], []
        for i in members:
            path = result.paths[i]
            if path is None:
                continue
            image = read_image(path)
            thumbs.append(thumbnail(image, result.maps[i], result.map_threshold, thumb))
            captions.append(_relative(path, root))
        sheet = contact_sheet(thumbs, captions)
        name = out / f"cluster_{label:02d}_{cluster_name(label)}.png"
        ok, buffer = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
        if not ok:
            raise DataError(name, "cannot encode PNG")
        buffer.tofile(name)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="somad", description="Unsupervised visual inspection with SOMAD.")
    register(parser.add_subparsers(dest="command", required=True))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``cluster`` on its own, with ``somad``'s exit statuses (2 bad input, 130 cancelled)."""
    args = build_parser().parse_args(argv)
    return run_command(args.handler, args, cancelled="cancelled; nothing was written")


if __name__ == "__main__":
    sys.exit(main(["cluster", *sys.argv[1:]]))
