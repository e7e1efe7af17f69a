"""``somad fit``, ``score``, ``eval`` and ``info``."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from somad import (
    DataError,
    ModelFileError,
    SomadError,
    check_output_file,
    check_output_folder,
    claimed,
    defect_area,
    describe_origin,
    staged_folder,
    threshold_to_use,
    verdict,
    write_text_atomically,
)
from somad_cli.common import (
    RANDOM_INIT_NOTE,
    TerminalProgress,
    config_from_args,
    method_options_from_args,
    warn,
)


def cmd_fit(args: argparse.Namespace, progress: TerminalProgress) -> int:
    from somad import fit, open_dataset

    config = config_from_args(args)
    options = method_options_from_args(args.option)
    dataset = open_dataset(args.data)
    inputs = [s.path for s in (*dataset.train, *dataset.test)]
    check_output_file(args.out, overwrite=args.overwrite, inputs=inputs)
    with claimed(args.out):
        out = check_output_file(args.out, overwrite=args.overwrite, inputs=inputs)
        model = fit(
            dataset,
            config,
            method=args.method,
            options=options,
            progress=progress,
            strict=args.strict,
            on_error=warn,
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


def cmd_score(args: argparse.Namespace, progress: TerminalProgress) -> int:
    from somad import image_paths, load_any_model

    model = load_any_model(args.model, device=args.device)
    threshold = threshold_to_use(model.thresholds, args.threshold, hint="pass --threshold")
    paths = image_paths(args.paths)
    inputs = [*args.paths, *paths]
    check_output_folder(args.out, overwrite=args.overwrite, inputs=inputs)
    if args.engine == "ray" and args.workers < 1:
        raise SomadError(f"--workers: expected at least 1, got {args.workers}")
    with claimed(args.out, create_folders=True):
        out = check_output_folder(args.out, overwrite=args.overwrite, inputs=inputs)
        with staged_folder(out, last=[SCORES_CSV]) as stage:
            if args.engine == "ray":
                rows = _score_on_ray(stage, model, paths, threshold, args)
            else:
                rows = _score_into(stage, model, paths, threshold, args, progress)
    n_ng = sum(r[2] == "NG" for r in rows)
    n_unreadable = sum(r[2] == "unreadable" for r in rows)
    print(
        f"scored {len(rows) - n_unreadable} images ({n_ng} NG, {n_unreadable} unreadable) at threshold "
        f"{threshold:.4g}; wrote {out}"
    )
    if model.random_init:
        print(f"note: {RANDOM_INIT_NOTE}")
    return 0


SCORES_CSV = "scores.csv"
CSV_HEADER = ["file", "score", "verdict", "threshold", "defect_area_px", "model"]


def _write_scores(folder: Path, rows: list[list]) -> None:
    with open(folder / SCORES_CSV, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_HEADER)
        writer.writerows(rows)


def _score_on_ray(folder: Path, model, paths: list[Path], threshold: float, args) -> list[list]:
    """``scores.csv`` from Ray workers (:func:`somad.distributed.score_on_ray`), row for row as the local engine."""
    from somad.distributed import score_on_ray

    scored = score_on_ray(
        args.model,
        paths,
        threshold,
        model.config.features.batch_size,
        workers=args.workers,
        address=args.address,
    )
    rows = []
    for path, row in zip(paths, scored, strict=True):
        if row.score is None:
            if args.strict:
                raise DataError(path, row.error.split(": ", 1)[-1])
            warn(DataError(path, row.error.split(": ", 1)[-1]))
            rows.append([str(path), "", "unreadable", f"{threshold:.6g}", "", args.model])
            continue
        area = "" if row.defect_area is None else row.defect_area
        rows.append(
            [
                str(path),
                f"{row.score:.6g}",
                verdict(row.score, threshold),
                f"{threshold:.6g}",
                area,
                args.model,
            ]
        )
    if not any(r[2] != "unreadable" for r in rows):
        raise DataError(None, f"none of the {len(paths)} images could be read (see the warnings above)")
    _write_scores(folder, rows)
    return rows


def _score_into(folder: Path, model, paths: list[Path], threshold: float, args, progress) -> list[list]:
    """Score ``paths`` and write their heatmaps, overlays and ``scores.csv`` into ``folder``; the CSV's rows."""
    import cv2

    from somad import read_image, render, score_paths

    strict = args.strict or len(paths) == 1  # one image: its problem is the one line
    results, _errors = score_paths(model, paths, progress=progress, strict=strict, on_error=warn)
    progress.close()
    scores = [r.score for r in results if r is not None]
    if not scores:
        raise DataError(None, f"none of the {len(paths)} images could be read (see the warnings above)")
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
        for kind, picture in (("heatmap", heat), ("overlay", overlay)):
            name = folder / f"{stem}_{kind}.png"
            if not cv2.imwrite(str(name), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)):
                raise DataError(Path(args.out) / name.name, "cannot write the image (disk full?)")
        area = defect_area(result.anomaly_map, threshold)
        rows.append([str(path), f"{result.score:.6g}", verdict_text, f"{threshold:.6g}", area, args.model])
    _write_scores(folder, rows)
    return rows


def _fmt(value: float | None) -> str:
    return "  n/a" if value is None else f"{value:.3f}"


def cmd_eval(args: argparse.Namespace, progress: TerminalProgress) -> int:
    if args.json:
        check_output_file(args.json, overwrite=args.overwrite, inputs=[args.model])
    with claimed(args.json), claimed(args.model if args.store_thresholds else None):
        return _evaluate(args, progress)


def _evaluate(args: argparse.Namespace, progress: TerminalProgress) -> int:
    from somad import evaluate, find_categories, load_any_model, open_dataset, store_thresholds

    if args.json:
        check_output_file(args.json, overwrite=args.overwrite, inputs=[args.model])
    model = load_any_model(args.model, device=args.device)
    categories = find_categories(args.data)
    reports = {}
    for folder in categories:
        dataset = open_dataset(folder)
        report = evaluate(model, dataset, progress=progress, strict=args.strict, on_error=warn)
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
    from somad import describe_model, read_model_file

    tensors, meta = read_model_file(args.model)
    size = Path(args.model).stat().st_size
    if args.json:
        print(json.dumps({k: v for k, v in meta.items() if k not in ("sha256", "metadata_sha256")}, indent=2))
        return 0
    try:
        rows = describe_model(meta, int(tensors["channel_indices"].numel()))
        method = meta.get("method", "somad")
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ModelFileError(
            args.model, f"metadata field missing or of the wrong type ({type(err).__name__}: {err})"
        ) from err
    print(f"model        {args.model} ({size / 2**20:.1f} MiB, format {meta['format_version']}, {method})")
    for field, text in rows:
        print(f"{field:<12} {text}")
    return 0
