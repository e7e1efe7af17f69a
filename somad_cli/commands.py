"""``somad fit``, ``score``, ``eval`` and ``info``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from somad import (
    DataError,
    ImageReadError,
    ModelFileError,
    SomadError,
    VerdictRule,
    check_output_file,
    check_output_folder,
    claimed,
    describe_origin,
    staged_folder,
    threshold_to_use,
    write_text_atomically,
)
from somad.score_report import (
    SCORES_CSV,
    colour_range,
    csv_row,
    image_for_pictures,
    picture_stems,
    write_pictures,
    write_scores_csv,
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
    rule = VerdictRule(threshold, args.pixel_threshold, args.min_area)
    paths = image_paths(args.paths)
    inputs = [*args.paths, *paths]
    check_output_folder(args.out, overwrite=args.overwrite, inputs=inputs)
    if args.engine == "ray" and args.workers < 1:
        raise SomadError(f"--workers: expected at least 1, got {args.workers}")
    with claimed(args.out, create_folders=True):
        out = check_output_folder(args.out, overwrite=args.overwrite, inputs=inputs)
        with staged_folder(out, last=[SCORES_CSV]) as stage:
            if args.engine == "ray":
                rows = _score_on_ray(stage, model, paths, rule, args)
            else:
                rows = _score_into(stage, model, paths, rule, args, progress)
    n_ng = sum(r[2] == "NG" for r in rows)
    n_unreadable = sum(r[2] == "unreadable" for r in rows)
    print(
        f"scored {len(rows) - n_unreadable} images ({n_ng} NG, {n_unreadable} unreadable) at threshold "
        f"{threshold:.4g}; wrote {out}"
    )
    if model.random_init:
        print(f"note: {RANDOM_INIT_NOTE}")
    return 0


def _score_on_ray(folder: Path, model, paths: list[Path], rule: VerdictRule, args) -> list[list]:
    """Score on Ray workers (:func:`somad.distributed.score_on_ray`): the local engine's rows and pictures."""
    from somad.distributed import score_on_ray

    scored = score_on_ray(
        args.model,
        paths,
        rule,
        model.config.features.batch_size,
        workers=args.workers,
        address=args.address,
        pictures_to=None if args.no_pictures else folder,
        colours=colour_range(model.training_summary, rule.threshold),
        shown_folder=args.out,
        model_name=args.model,
    )
    rows = []
    for path, row in zip(paths, scored, strict=True):
        if row.warning:
            warn(DataError(path, row.warning))
        if row.error:
            err = DataError(path, row.error.split(": ", 1)[-1])
            if args.strict:
                raise err
            warn(err)
        rows.append(row.row)
    if not any(r[2] != "unreadable" for r in rows):
        raise DataError(None, f"none of the {len(paths)} images could be read (see the warnings above)")
    write_scores_csv(folder, rows)
    return rows


def _score_into(folder: Path, model, paths: list[Path], rule: VerdictRule, args, progress) -> list[list]:
    """Score ``paths`` and write their heatmaps, overlays and ``scores.csv`` into ``folder``; the CSV's rows."""
    from somad import find_regions, score_paths

    strict = args.strict or len(paths) == 1  # one image: its problem is the one line
    results, _errors = score_paths(model, paths, progress=progress, strict=strict, on_error=warn)
    progress.close()
    if not any(r is not None for r in results):
        raise DataError(None, f"none of the {len(paths)} images could be read (see the warnings above)")
    colours = colour_range(model.training_summary, rule.threshold)
    rows = []
    for path, stem, result in zip(paths, picture_stems(paths), results, strict=True):
        if result is None:
            rows.append(csv_row(path, None, None, rule, args.model))
            continue
        regions = None
        if result.anomaly_map is not None:
            regions = find_regions(result.anomaly_map, rule.pixel_level)
            if not args.no_pictures:
                try:
                    image = image_for_pictures(path, result.anomaly_map)
                except ImageReadError as err:  # gone or changed since it was scored: its row stays
                    warn(DataError(path, f"no pictures: {err.reason}"))
                else:
                    write_pictures(
                        folder, stem, image, result.anomaly_map, result.score, rule, colours, args.out
                    )
        rows.append(csv_row(path, result.score, regions, rule, args.model))
    write_scores_csv(folder, rows)
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
