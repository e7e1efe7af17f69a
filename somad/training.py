"""Fitting any method on good images: features, the detector's own fit, calibration, training summary.

One path for every method (Algorithm 1 of SOMAD for ``method="somad"``): the training images go through the
backbone once (:func:`somad.extraction.extract_feature_set`) and the detector learns from their features.

Calibration on held-out images: a model scores the images it learned from far lower than new good parts (each
training patch is in its own node's Gaussian, or in PatchCore's memory), so a threshold from those scores
rejects most new parts. With at least :data:`MIN_HELD_OUT_TRAINING` images, every :data:`HELD_OUT_EVERY`-th
is held out: the detector is fitted on the others, scores the held-out ones as it will score new parts, and
``train_false_reject_1pct`` rejects 1 % of those scores; then the detector takes in every image
(:meth:`Detector.absorb`: SOMAD fits its node statistics on all patches with the map it has, other methods fit
again). Fewer images are calibrated in-sample, as the summary's ``calibration`` says.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from somad.config import SomadConfig
from somad.data import Dataset
from somad.decision import FALSE_REJECT_RATE, false_reject_threshold
from somad.devices import device_name, resolve_device
from somad.errors import DataError
from somad.extraction import FeatureSet, extract_feature_set
from somad.features import FeatureExtractor, configure_threads
from somad.memory import check_memory
from somad.methods.registry import method_info
from somad.model import FittedModel
from somad.progress import CancelCheck, Monitor, ProgressCallback

#: Training images scored together during calibration.
CALIBRATION_BATCH = 32
#: Every this-many-th training image is held out for calibration ...
HELD_OUT_EVERY = 5
#: ... when there are at least this many.
MIN_HELD_OUT_TRAINING = 10


def held_out(n: int) -> list[int]:
    """Indices of the training images held out for calibration: every :data:`HELD_OUT_EVERY`-th, spread over
    the list; none below :data:`MIN_HELD_OUT_TRAINING` images."""
    if n < MIN_HELD_OUT_TRAINING:
        return []
    return list(range(HELD_OUT_EVERY // 2, n, HELD_OUT_EVERY))


def calibration_order(paths: list[Path]) -> tuple[list[Path], int]:
    """``paths`` with the held-out ones (:func:`held_out`) moved to the end, and how many come before them:
    extracted in this order, the features to learn from and those to calibrate on are two views, no copy."""
    held = set(held_out(len(paths)))
    learn = [p for i, p in enumerate(paths) if i not in held]
    return learn + [p for i, p in enumerate(paths) if i in held], len(learn)


def training_paths(train: Dataset | Sequence[str | Path], max_train: int | None) -> list[Path]:
    """The training images of a dataset or a list of paths; at most ``max_train``, spread evenly."""
    if isinstance(train, str | Path):
        raise DataError(train, "expected a dataset (somad.open_dataset) or a list of image paths")
    paths = [s.path for s in train.train] if isinstance(train, Dataset) else [Path(p) for p in train]
    if not paths:
        raise DataError(getattr(train, "root", None), "no training images")
    if max_train is not None and len(paths) > max_train:
        keep = np.unique(np.linspace(0, len(paths) - 1, max_train).round().astype(int))
        paths = [paths[i] for i in keep]
    return paths


def calibrate(model: FittedModel, features: FeatureSet, monitor: Monitor | None = None) -> np.ndarray:
    """In-sample image scores of the training images from their features (maps at the input size)."""
    monitor = monitor or Monitor()
    size = model.config.features.image_size
    n = len(features)
    scores: list[float] = []
    for start in range(0, n, CALIBRATION_BATCH):
        monitor.step("calibration", start, n)
        chunk = features.rows(start, min(start + CALIBRATION_BATCH, n))
        scores += [r.score for r in model.results(chunk, [(size, size)] * len(chunk))]
    monitor.step("calibration", n, n)
    return np.asarray(scores)


def finish_training(
    model: FittedModel,
    train_scores: np.ndarray,
    timings: dict[str, float],
    device: torch.device,
    summary: dict,
) -> None:
    """Store what every fitted model keeps from its training run: the threshold rejecting
    :data:`~somad.decision.FALSE_REJECT_RATE` of the training images' own scores, and the training summary
    (``summary`` plus the score range, the seconds of each stage and where it ran)."""
    model.thresholds["train_false_reject_1pct"] = false_reject_threshold(train_scores, FALSE_REJECT_RATE)
    model.training_summary = {
        **summary,
        "train_score_mean": float(np.mean(train_scores)),
        "train_score_max": float(np.max(train_scores)),
        "seconds": {k: round(v, 2) for k, v in timings.items()},
        "device": device_name(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def fit(
    train: Dataset | Sequence[str | Path],
    config: SomadConfig | None = None,
    *,
    method: str = "somad",
    options: Mapping[str, Any] | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
    strict: bool = False,
    on_error=None,
) -> FittedModel:
    """Fit ``method`` (a key of :data:`somad.METHODS`, SOMAD by default) on the good images of ``train``.

    ``train`` is a :class:`~somad.data.Dataset` or a list of image paths; ``options`` are the method's own (see
    ``METHODS[method].options``). Unreadable images are reported through ``on_error`` and skipped (raised
    when ``strict``). ``progress(stage, done, total)`` and ``cancel() -> bool`` are called between batches.
    """
    info = method_info(method)
    config = (config or SomadConfig()).validate()
    configure_threads()
    monitor = Monitor(progress, cancel)
    device = resolve_device(config.device)
    detector = info.detector(config, options, device)
    paths, n_learn = calibration_order(training_paths(train, config.max_train))
    check_memory(config, len(paths), device, method, detector.options)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    monitor.step("backbone", 0, 1)
    extractor = FeatureExtractor(config.features, device)
    extracted = extract_feature_set(
        extractor,
        paths,
        monitor,
        patches=detector.needs_patches,
        pooled=detector.needs_pooled,
        augmented=detector.wants_augmented,
        strict=strict,
        on_error=on_error,
        storage=device if device.type == "cuda" else torch.device("cpu"),
    )
    if not extracted.paths:
        raise DataError(paths[0].parent, f"none of the {len(paths)} training images could be read")
    timings["features"] = time.perf_counter() - t0

    features = extracted.features
    n_fit = sum(position < n_learn for position in extracted.kept)  # the readable ones to learn from
    n_held = len(extracted.paths) - n_fit
    calibration = n_fit > 0 and n_held > 0
    t0 = time.perf_counter()
    detector.fit(features.head(n_fit) if calibration else features, monitor)
    fit_seconds = dict(detector.fit_seconds)
    model = FittedModel(
        method=method,
        config=detector.config,  # as fitted: an Auto map size is resolved
        detector=detector,
        weights_origin=extractor.weights_origin,
        channel_indices=extractor.layout.channel_indices,
        device=device,
        _extractor=extractor,
    )
    t1 = time.perf_counter()
    scored = features.rows(n_fit, len(extracted.paths)) if calibration else features
    train_scores = calibrate(model, FeatureSet(scored.patches, scored.pooled), monitor)
    t2 = time.perf_counter()
    timings.update(fit_seconds or {"fit": t1 - t0})
    timings["calibration"] = t2 - t1
    if calibration:
        detector.absorb(features, monitor)
        model.config = detector.config
        timings["all images"] = time.perf_counter() - t2
    summary = {
        "method": method,
        "category": train.name if isinstance(train, Dataset) else None,
        "n_images": len(extracted.paths),
        "n_unreadable": len(extracted.unreadable),
        "calibration": f"held-out {n_held} images" if calibration else "in-sample",
        "grid_shape": list(extractor.grid_shape) if detector.needs_patches else [0, 0],
        "feature_channels": int(sum(extractor.layout.stage_channels)),
        **detector.fit_summary,
    }
    finish_training(model, train_scores, timings, device, summary)
    return model


def fit_method(
    train: Dataset | Sequence[str | Path],
    method: str = "somad",
    config: SomadConfig | None = None,
    options: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> FittedModel:
    """:func:`fit` with the method as second argument (the earlier name)."""
    return fit(train, config, method=method, options=options, **kwargs)
