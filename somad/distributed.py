"""Scoring on Ray Data: many images over the workers of a Ray cluster (a local one when no address is given).

Each worker loads the model once (a stateful scorer, ``map_batches`` with a callable class) and scores the same
batches :func:`somad.model.score_paths` scores locally, with as many threads: the paths are cut into the
model's batches on the driver, so every image keeps the company it has on the local engine and the scores are
the same to the last digit. Rows come back in the input's order. Workers write each image's heatmap and overlay
(:mod:`somad.score_report`) straight into the output folder, which on a cluster must be on storage every node
mounts at the same path; their names are chosen on the driver, and their colours depend on the model alone.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from somad.errors import ConfigError
from somad.regions import VerdictRule
from somad.stderr import captured_stderr


@dataclass(frozen=True)
class ScoredRow:
    """One image's ``scores.csv`` row (:func:`somad.score_report.csv_row`), and why it could not be read."""

    path: str
    row: list
    error: str
    warning: str = ""


class _Scorer:
    """Loads the model once per worker; scores one local batch of paths a call."""

    def __init__(
        self,
        model_path: str,
        rule: VerdictRule,
        threads: int,
        pictures_to: str | None,
        colours: tuple[float, float],
        shown_folder: str | None,
        model_name: str,
    ):
        import torch

        from somad.model import load_any_model

        torch.set_num_threads(threads)  # as the local engine: float sums, hence scores, depend on the threads
        self.model = load_any_model(model_path, device="auto")
        self.rule = rule
        self.pictures_to = pictures_to
        self.colours = colours
        self.shown_folder = shown_folder
        self.model_name = model_name

    def __call__(self, batch: dict) -> dict:
        import json

        import numpy as np

        from somad.errors import ImageReadError
        from somad.model import score_paths
        from somad.regions import find_regions
        from somad.score_report import csv_row, image_for_pictures, write_pictures

        out: dict[str, list] = {"index": [], "path": [], "row": [], "error": [], "warning": []}
        for index, paths, stems in zip(batch["index"], batch["paths"], batch["stems"], strict=True):
            chunk = [str(p) for p in paths]
            results, failed = score_paths(self.model, chunk)
            errors = {str(err.path): str(err) for err in failed}
            for offset, (path, stem, result) in enumerate(zip(chunk, stems, results, strict=True)):
                out["index"].append(int(index) + offset)
                out["path"].append(path)
                if result is None:
                    out["row"].append(json.dumps(csv_row(Path(path), None, None, self.rule, self.model_name)))
                    out["error"].append(errors.get(path, "unreadable"))
                    out["warning"].append("")
                    continue
                regions, warning = None, ""
                if result.anomaly_map is not None:
                    regions = find_regions(result.anomaly_map, self.rule.pixel_level)
                    if self.pictures_to is not None:
                        try:
                            image = image_for_pictures(Path(path), result.anomaly_map)
                        except ImageReadError as err:  # gone or changed since it was scored: its row stays
                            warning = f"no pictures: {err.reason}"
                        else:
                            write_pictures(
                                Path(self.pictures_to),
                                str(stem),
                                image,
                                result.anomaly_map,
                                result.score,
                                self.rule,
                                self.colours,
                                self.shown_folder,
                            )
                row = csv_row(Path(path), result.score, regions, self.rule, self.model_name)
                out["row"].append(json.dumps(row))
                out["error"].append("")
                out["warning"].append(warning)
        return {key: np.asarray(value, dtype=object) for key, value in out.items()}


def score_on_ray(
    model_path: str | Path,
    paths: Sequence[str | Path],
    rule: VerdictRule,
    batch_size: int,
    *,
    workers: int = 1,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float = 0.0,
    address: str | None = None,
    pictures_to: str | Path | None = None,
    colours: tuple[float, float] = (0.0, 1.0),
    shown_folder: str | Path | None = None,
    model_name: str | None = None,
) -> list[ScoredRow]:
    """Score ``paths`` with the model file on Ray; one row per path, in order. With ``pictures_to``, each
    image's heatmap and overlay go there in ``colours`` (:func:`somad.score_report.write_pictures`)."""
    import torch

    threads = torch.get_num_threads()
    try:
        import ray
    except ImportError:
        raise ConfigError("--engine ray needs Ray: pip install 'ray[data]'") from None
    import logging

    import ray.data

    quiet = {
        name: logging.getLogger(name)
        for name in list(logging.root.manager.loggerDict)
        if name.startswith("ray")
    }
    levels = {name: logger.level for name, logger in quiet.items()}
    for logger in quiet.values():
        logger.setLevel(logging.ERROR)
    try:
        with captured_stderr():  # Ray's start-up and progress lines: the command speaks for itself
            return _run(
                ray,
                model_path,
                paths,
                rule,
                batch_size,
                threads,
                workers,
                cpus_per_worker,
                gpus_per_worker,
                address,
                (
                    None if pictures_to is None else str(pictures_to),
                    tuple(map(float, colours)),
                    None if shown_folder is None else str(shown_folder),
                    str(model_path) if model_name is None else model_name,
                ),
            )
    finally:
        for name, logger in quiet.items():
            logger.setLevel(levels[name])


def _run(
    ray, model_path, paths, rule, batch_size, threads, workers, cpus, gpus, address, pictures
) -> list[ScoredRow]:
    from somad.score_report import picture_stems

    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        stems = picture_stems([Path(p) for p in paths])
        chunks = [
            {
                "index": start,
                "paths": [str(p) for p in paths[start : start + batch_size]],
                "stems": stems[start : start + batch_size],
            }
            for start in range(0, len(paths), batch_size)
        ]
        dataset = ray.data.from_items(chunks, override_num_blocks=max(1, min(len(chunks), 4 * workers)))
        scored = dataset.map_batches(
            _Scorer,
            fn_constructor_args=(str(model_path), rule, threads, *pictures),
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=cpus,
            num_gpus=gpus,
        ).take_all()
    finally:
        if started:
            ray.shutdown()
    rows = sorted(scored, key=lambda r: int(r["index"]))
    return [ScoredRow(str(r["path"]), json.loads(r["row"]), str(r["error"]), str(r["warning"])) for r in rows]
