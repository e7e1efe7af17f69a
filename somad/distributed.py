"""Scoring on Ray Data: many images over the workers of a Ray cluster (a local one when no address is given).

Each worker loads the model once (a stateful scorer, ``map_batches`` with a callable class) and scores the same
batches :func:`somad.model.score_paths` scores locally, with as many threads: the paths are cut into the
model's batches on the driver, so every image keeps the company it has on the local engine and the scores are
the same to the last digit. Rows come back in the input's order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from somad.errors import ConfigError
from somad.stderr import captured_stderr


@dataclass(frozen=True)
class ScoredRow:
    """One image's result: its score and defect area at the threshold, or the reason it could not be read."""

    path: str
    score: float | None
    defect_area: int | None
    error: str


class _Scorer:
    """Loads the model once per worker; scores one local batch of paths a call."""

    def __init__(self, model_path: str, threshold: float, threads: int):
        import torch

        from somad.model import load_any_model

        torch.set_num_threads(threads)  # as the local engine: float sums, hence scores, depend on the threads
        self.model = load_any_model(model_path, device="auto")
        self.threshold = threshold

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        from somad.decision import defect_area
        from somad.model import score_paths

        out: dict[str, list] = {"index": [], "path": [], "score": [], "area": [], "error": []}
        for index, paths in zip(batch["index"], batch["paths"], strict=True):
            chunk = [str(p) for p in paths]
            results, failed = score_paths(self.model, chunk)
            errors = {str(err.path): str(err) for err in failed}
            for offset, (path, result) in enumerate(zip(chunk, results, strict=True)):
                out["index"].append(int(index) + offset)
                out["path"].append(path)
                if result is None:
                    out["score"].append(float("nan"))
                    out["area"].append(-1)
                    out["error"].append(errors.get(path, "unreadable"))
                    continue
                area = (
                    -1 if result.anomaly_map is None else int(defect_area(result.anomaly_map, self.threshold))
                )
                out["score"].append(float(result.score))
                out["area"].append(area)
                out["error"].append("")
        return {key: np.asarray(value, dtype=object) for key, value in out.items()}


def score_on_ray(
    model_path: str | Path,
    paths: Sequence[str | Path],
    threshold: float,
    batch_size: int,
    *,
    workers: int = 1,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float = 0.0,
    address: str | None = None,
) -> list[ScoredRow]:
    """Score ``paths`` with the model file on Ray; one row per path, in order."""
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
                threshold,
                batch_size,
                threads,
                workers,
                cpus_per_worker,
                gpus_per_worker,
                address,
            )
    finally:
        for name, logger in quiet.items():
            logger.setLevel(levels[name])


def _run(
    ray, model_path, paths, threshold, batch_size, threads, workers, cpus, gpus, address
) -> list[ScoredRow]:
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        chunks = [
            {"index": start, "paths": [str(p) for p in paths[start : start + batch_size]]}
            for start in range(0, len(paths), batch_size)
        ]
        dataset = ray.data.from_items(chunks, override_num_blocks=max(1, min(len(chunks), 4 * workers)))
        scored = dataset.map_batches(
            _Scorer,
            fn_constructor_args=(str(model_path), float(threshold), threads),
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=cpus,
            num_gpus=gpus,
        ).take_all()
    finally:
        if started:
            ray.shutdown()
    rows = sorted(scored, key=lambda r: int(r["index"]))
    return [
        ScoredRow(
            str(r["path"]),
            None if r["error"] else float(r["score"]),
            None if r["error"] or int(r["area"]) < 0 else int(r["area"]),
            str(r["error"]),
        )
        for r in rows
    ]
