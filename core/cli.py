"""The ``somad`` command line: ``fit`` (SOMAD or any method of :data:`core.methods.METHODS`), ``score``,
``eval`` and ``info``.

Bad input ends with exit status 2 and one line on stderr naming the file and the problem; a cancelled run
(Ctrl-C) ends with status 130 and writes nothing.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from core.atomic import write_atomically, write_text_atomically
from core.bundled_weights import BUNDLED_PACKAGES, describe_origin
from core.config import SomadConfig
from core.decision import defect_area, threshold_to_use, verdict
from core.errors import Cancelled, DataError, SomadError

RANDOM_INIT_NOTE = (
    "random-init backbone: features are untrained, figures are not comparable to pretrained ones"
)


class TerminalProgress:
    """A ``progress(stage, done, total)`` callback drawing one tqdm bar per stage on a terminal."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._bar = None
        self._stage = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if stage != self._stage:
            self.close()
            self._stage = stage
            self._bar = tqdm(total=total, desc=f"{stage:<11}", unit="", leave=True, dynamic_ncols=True)
        self._bar.total = total
        self._bar.n = done
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            self._stage = None


def _warn(err: SomadError) -> None:
    print(f"somad: warning: {err}", file=sys.stderr)


def _add_fit_options(parser: argparse.ArgumentParser) -> None:
    d = SomadConfig()
    f = parser.add_argument_group("features")
    f.add_argument(
        "--backbone",
        default=d.features.backbone,
        help="timm model name (default: %(default)s; ImageNet weights installed for "
        f"{', '.join(BUNDLED_PACKAGES)}, others from timm's hub)",
    )
    f.add_argument(
        "--layers",
        default=",".join(map(str, d.features.layers)),
        help="feature stages (default: %(default)s)",
    )
    f.add_argument("--image-size", type=int, default=d.features.image_size, help="input side in pixels")
    f.add_argument("--dims", type=int, default=d.features.dims, help="random channel subset size")
    f.add_argument("--weights", help="backbone weights file (safetensors or a torch state dict)")
    f.add_argument(
        "--random-init", action="store_true", help="untrained backbone (offline use; flagged in reports)"
    )
    f.add_argument(
        "--zero-init-last",
        action="store_true",
        help="with --random-init: zero each residual block's last norm (timm's default)",
    )
    s = parser.add_argument_group("SOM and statistics")
    s.add_argument("--som-size", type=int, default=d.som.rows, help="K for a K x K map")
    s.add_argument("--epochs", type=int, default=d.som.epochs, help="full passes over the training patches")
    s.add_argument("--som-init", choices=("positional", "pca", "random"), default=d.som.init)
    s.add_argument("--lambda", dest="lam", type=float, default=d.statistics.lam, help="covariance ridge term")
    s.add_argument(
        "--shrinkage",
        type=float,
        default=d.statistics.shrinkage,
        help="prior samples of the pooled covariance",
    )
    s.add_argument("--k", type=int, default=d.scoring.k, help="nearest nodes searched per patch")
    s.add_argument("--sigma", type=float, default=d.scoring.sigma, help="map smoothing (pixels at 224)")
    g = parser.add_argument_group("run")
    g.add_argument("--max-train", type=int, help="use at most this many training images")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    g.add_argument("--strict", action="store_true", help="stop at the first unreadable image")


def _add_method_options(parser: argparse.ArgumentParser) -> None:
    m = parser.add_argument_group("method")
    m.add_argument(
        "--method",
        default="somad",
        help="somad (default), padim, patchcore, or an image-level detector: ocsvm, iforest, kde, lof, elliptic",
    )
    m.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of the method, repeatable (e.g. coreset_ratio=0.05; `somad info` lists a model's)",
    )


def config_from_args(args: argparse.Namespace) -> SomadConfig:
    """Build and validate the configuration named by ``somad fit``'s options."""
    try:
        layers = tuple(int(x) for x in str(args.layers).split(",") if x.strip())
    except ValueError as err:
        raise SomadError(f"--layers: expected comma-separated integers, got {args.layers!r}") from err
    return (
        SomadConfig()
        .with_changes(
            features={
                "backbone": args.backbone,
                "layers": layers,
                "image_size": args.image_size,
                "dims": args.dims,
                "seed": args.seed,
                "weights": args.weights,
                "random_init": args.random_init,
                "zero_init_last": args.zero_init_last,
            },
            som={
                "rows": args.som_size,
                "cols": args.som_size,
                "epochs": args.epochs,
                "init": args.som_init,
                "seed": args.seed,
            },
            statistics={"lam": args.lam, "shrinkage": args.shrinkage},
            scoring={"k": args.k, "sigma": args.sigma},
            device=args.device,
            max_train=args.max_train,
        )
        .validate()
    )


def method_options_from_args(items: Sequence[str]) -> dict[str, str]:
    """``["coreset_ratio=0.05", ...]`` -> ``{"coreset_ratio": "0.05"}``; the method converts and checks them."""
    options: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SomadError(f"--option: expected KEY=VALUE, got {item!r}")
        options[key.strip()] = value.strip()
    return options


def cmd_fit(args: argparse.Namespace, progress: TerminalProgress) -> int:
    from core.data import open_dataset
    from core.training import fit

    config = config_from_args(args)
    options = method_options_from_args(args.option)
    out = Path(args.out)
    if not out.parent.exists():
        raise DataError(out, "output folder does not exist")
    dataset = open_dataset(args.data)
    model = fit(
        dataset,
        config,
        method=args.method,
        options=options,
        progress=progress,
        strict=args.strict,
        on_error=_warn,
    )
    progress.close()
    model.save(out)
    summary = model.training_summary
    seconds = ", ".join(f"{k} {v:.1f} s" for k, v in summary["seconds"].items())
    what = "" if args.method == "somad" else f"{model.label} on "
    print(f"fitted {what}{summary['n_images']} images of {dataset.name!r} ({seconds}); wrote {out}")
    print(f"weights: {describe_origin(model.weights_origin)}")
    if model.random_init:
        print(f"note: {RANDOM_INIT_NOTE}")
    return 0


def _image_paths(inputs: Sequence[str]) -> list[Path]:
    from core.data import IMAGE_SUFFIXES

    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(
                q for q in p.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES and not q.name.startswith(".")
            )
            if not found:
                raise DataError(p, "no images in this folder")
            paths += found
        elif p.exists():
            paths.append(p)
        else:
            raise DataError(p, "file not found")
    return paths


def cmd_score(args: argparse.Namespace, progress: TerminalProgress) -> int:
    import cv2

    from core import render
    from core.data import read_image
    from core.model import load_any_model, score_paths

    model = load_any_model(args.model, device=args.device)
    threshold = threshold_to_use(model.thresholds, args.threshold, hint="pass --threshold")
    paths = _image_paths(args.paths)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results, errors = score_paths(model, paths, progress=progress, strict=args.strict, on_error=_warn)
    progress.close()
    scores = [r.score for r in results if r is not None]
    vmin = model.training_summary.get("train_score_mean", min(scores, default=0.0))
    vmax = max(threshold * 1.5, max(scores, default=threshold))
    used: set[str] = set()
    rows = []
    for path, result in zip(paths, results, strict=True):
        if result is None:
            rows.append([str(path), "", "unreadable", f"{threshold:.6g}", "", args.model])
            continue
        stem = path.stem
        while stem in used:
            stem = f"{path.parent.name}_{stem}"
        used.add(stem)
        verdict_text = verdict(result.score, threshold)
        if result.anomaly_map is None:  # image-level detector: a score, no map
            rows.append([str(path), f"{result.score:.6g}", verdict_text, f"{threshold:.6g}", "", args.model])
            continue
        image = read_image(path)
        heat = render.heatmap_rgb(result.anomaly_map, vmin, vmax)
        caption = f"{verdict_text}  score {result.score:.2f}  threshold {threshold:.2f}"
        overlay = render.annotate(image, result.anomaly_map, threshold, vmin=vmin, vmax=vmax, caption=caption)
        cv2.imwrite(str(out / f"{stem}_heatmap.png"), cv2.cvtColor(heat, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(out / f"{stem}_overlay.png"), cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
        area = defect_area(result.anomaly_map, threshold)
        rows.append([str(path), f"{result.score:.6g}", verdict_text, f"{threshold:.6g}", area, args.model])

    def write_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["file", "score", "verdict", "threshold", "defect_area_px", "model"])
            writer.writerows(rows)

    write_atomically(out / "scores.csv", write_csv)
    n_ng = sum(r[2] == "NG" for r in rows)
    print(
        f"scored {len(scores)} images ({n_ng} NG, {len(errors)} unreadable) at threshold {threshold:.4g}; wrote {out}"
    )
    if model.random_init:
        print(f"note: {RANDOM_INIT_NOTE}")
    return 0


def _fmt(value: float | None) -> str:
    return "  n/a" if value is None else f"{value:.3f}"


def cmd_eval(args: argparse.Namespace, progress: TerminalProgress) -> int:
    from core.data import find_categories, open_dataset
    from core.evaluation import evaluate, store_thresholds
    from core.model import load_any_model

    model = load_any_model(args.model, device=args.device)
    categories = find_categories(args.data)
    reports = {}
    for folder in categories:
        dataset = open_dataset(folder)
        report = evaluate(model, dataset, progress=progress, strict=args.strict, on_error=_warn)
        progress.close()
        reports[dataset.name] = report
        print(
            f"{dataset.name}: image AUROC {_fmt(report.image_auroc)}  pixel AUROC {_fmt(report.pixel_auroc)}"
            f"  PRO {_fmt(report.pro)}  best-F1 threshold {_fmt(report.best_f1_threshold)}"
        )
        for defect, entry in report.per_defect_type.items():
            print(
                f"  {defect:<20} n={entry['count']:<4} image {_fmt(entry['image_auroc'])}"
                f"  pixel {_fmt(entry['pixel_auroc'])}  PRO {_fmt(entry['pro'])}"
            )
    if model.random_init:
        print(f"note: {RANDOM_INIT_NOTE}")
    if args.store_thresholds:
        if len(reports) != 1:
            raise SomadError("--store-thresholds needs a single category")
        store_thresholds(model, next(iter(reports.values())))
        model.save(args.model)
        print(f"stored thresholds {model.thresholds} in {args.model}")
    if args.json:
        report = eval_json(reports, model.random_init, model.weights_origin)
        write_text_atomically(args.json, json.dumps(report, indent=2))
    return 0


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def eval_json(reports: dict, random_init: bool, weights_origin: str | None = None) -> dict:
    """The ``--json`` report: means over categories at the top, then each category."""
    return {
        "image_auroc": _mean([r.image_auroc for r in reports.values()]),
        "pixel_auroc": _mean([r.pixel_auroc for r in reports.values()]),
        "pro": _mean([r.pro for r in reports.values()]),
        "random_init": random_init,
        "weights_origin": weights_origin,
        "categories": {name: r.to_dict() for name, r in reports.items()},
    }


def cmd_info(args: argparse.Namespace, progress: TerminalProgress) -> int:
    from core.model_file import describe_model, read_model_file

    tensors, meta = read_model_file(args.model)
    size = Path(args.model).stat().st_size
    if args.json:
        print(json.dumps({k: v for k, v in meta.items() if k != "sha256"}, indent=2))
        return 0
    print(
        f"model        {args.model} ({size / 2**20:.1f} MiB, format {meta['format_version']}, {meta['method']})"
    )
    for field, text in describe_model(meta, int(tensors["channel_indices"].numel())):
        print(f"{field:<12} {text}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="somad", description="Unsupervised visual inspection with SOMAD.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("fit", help="fit a model on the good images of one category")
    p.add_argument("data", help="MVTec-layout category folder or a folder of good images")
    p.add_argument("--out", required=True, help="model file to write (.somad)")
    _add_fit_options(p)
    _add_method_options(p)
    p = sub.add_parser("score", help="score images: heatmaps, overlays, scores.csv")
    p.add_argument("model")
    p.add_argument("paths", nargs="+", help="image files or folders")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--threshold", type=float, help="raw score threshold (default: the model's)")
    p.add_argument("--device", default="auto")
    p.add_argument("--strict", action="store_true")
    p = sub.add_parser("eval", help="image AUROC, pixel AUROC and PRO on labelled test sets")
    p.add_argument("model")
    p.add_argument("data", help="a category folder or a root holding several")
    p.add_argument("--json", help="write the report to this file")
    p.add_argument(
        "--store-thresholds", action="store_true", help="keep best-F1 and 1%% FRR thresholds in the model"
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--strict", action="store_true")
    p = sub.add_parser("info", help="describe a model file")
    p.add_argument("model")
    p.add_argument("--json", action="store_true")
    from core import bench, cluster_cli

    bench.register(sub)
    cluster_cli.register(sub)
    return parser


COMMANDS = {"fit": cmd_fit, "score": cmd_score, "eval": cmd_eval, "info": cmd_info}


def run_command(handler, args: argparse.Namespace, *, cancelled: str = "cancelled") -> int:
    """Run one command's ``handler(args, progress)`` with the exit statuses of every ``somad`` command:
    0 done, 2 bad input (one line on stderr naming the file and the problem), 130 cancelled or interrupted."""
    progress = TerminalProgress(sys.stderr.isatty())
    try:
        return handler(args, progress)
    except (Cancelled, KeyboardInterrupt):
        progress.close()
        print(f"somad: {cancelled}", file=sys.stderr)
        return 130
    except SomadError as err:
        progress.close()
        print(f"somad: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        progress.close()
        where = f"{err.filename}: " if err.filename else ""
        print(f"somad: error: {where}{err.strerror or err}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = getattr(args, "handler", None) or COMMANDS[args.command]
    return run_command(handler, args)


if __name__ == "__main__":
    sys.exit(main())
