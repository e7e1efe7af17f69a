"""The public entry points: fit a detector, score images, evaluate on a labelled test set, estimate memory.

Every long call takes ``progress(stage, done, total)`` and ``cancel() -> bool``; a cancelled call raises
:class:`~core.errors.Cancelled` and leaves nothing behind (nothing is ever written here).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core import metrics
from core.config import FeatureConfig, ScoringConfig, SomadConfig, SomConfig
from core.data import Dataset, Sample, load_images, read_mask
from core.decision import FALSE_REJECT_RATE, false_reject_threshold
from core.devices import resolve_device
from core.errors import DataError, ResourceError
from core.features import FeatureExtractor, configure_threads
from core.maps import patch_scores_to_maps
from core.model import SomadModel, finish_training, fit_som_and_nodes
from core.progress import CancelCheck, Monitor, ProgressCallback
from core.results import CategoryReport, ImageRecord, ImageResult

#: A small configuration that fits the built-in demo set in well under a minute on a 2-core CPU, on the
#: default backbone's bundled ImageNet weights.
DEMO_CONFIG = SomadConfig(
    features=FeatureConfig(layers=(1, 2, 3), image_size=128, dims=64),
    som=SomConfig(rows=16, cols=16, epochs=6),
    scoring=ScoringConfig(k=4, sigma=4.0),
)

ErrorCallback = Callable[[DataError], None]


def estimate_memory(
    config: SomadConfig,
    n_train_images: int,
    method: str = "somad",
    options: dict[str, Any] | None = None,
) -> dict[str, int]:
    """Bytes needed to fit ``method``: ``features`` kept, the ``model`` itself and the expected ``peak``
    (backbone included), plus SOMAD's ``som`` and ``statistics``. An estimate before any network is built:
    the finest stage is taken to have stride 4 (true of ResNets and ConvNeXts)."""
    from core.methods import method_info

    info = method_info(method)
    n_images = min(n_train_images, config.max_train or n_train_images)
    return info.detector.estimate_memory(config, info.validate(options), n_images)


def _available_memory(device: torch.device) -> int | None:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(
    config: SomadConfig,
    n_images: int,
    device: torch.device,
    method: str = "somad",
    options: dict[str, Any] | None = None,
) -> None:
    """Refuse to start a fit whose memory estimate exceeds what the device (and host) has free."""
    need = estimate_memory(config, n_images, method, options)["peak"]
    for where in {device, torch.device("cpu")}:
        have = _available_memory(where)
        if have is not None and need > have:
            raise ResourceError(
                f"fitting needs about {need / 2**30:.1f} GiB but only {have / 2**30:.1f} GiB is free on "
                f"{where}; lower --dims, --som-size, --image-size or --max-train"
            )


def _training_paths(train: Dataset | Sequence[str | Path], max_train: int | None) -> list[Path]:
    paths = [s.path for s in train.train] if isinstance(train, Dataset) else [Path(p) for p in train]
    if not paths:
        raise DataError(getattr(train, "root", None), "no training images")
    if max_train is not None and len(paths) > max_train:
        keep = np.unique(np.linspace(0, len(paths) - 1, max_train).round().astype(int))
        paths = [paths[i] for i in keep]
    return paths


def extract_features(
    extractor: FeatureExtractor,
    paths: Sequence[Path],
    monitor: Monitor,
    *,
    strict: bool = False,
    on_error: ErrorCallback | None = None,
    storage: torch.device | None = None,
) -> tuple[torch.Tensor, list[Path], list[DataError]]:
    """Patch features (N, gh, gw, d) of the readable images among ``paths``, batch by batch."""
    batch_size = extractor.config.batch_size
    gh, gw = extractor.grid_shape
    storage = storage or torch.device("cpu")
    out = torch.empty(len(paths), gh, gw, extractor.layout.dims, device=storage)
    kept: list[Path] = []
    errors: list[DataError] = []
    for start in range(0, len(paths), batch_size):
        monitor.step("features", start, len(paths))
        chunk = paths[start : start + batch_size]
        images, ok, failed = load_images(chunk, strict=strict, on_error=on_error)
        errors += failed
        if images:
            feats = extractor(images)
            out[len(kept) : len(kept) + len(images)] = feats.permute(0, 2, 3, 1).to(storage)
            kept += [chunk[i] for i in ok]
    monitor.step("features", len(paths), len(paths))
    return out[: len(kept)], kept, errors


def fit(
    train: Dataset | Sequence[str | Path],
    config: SomadConfig | None = None,
    *,
    progress: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
    strict: bool = False,
    on_error: ErrorCallback | None = None,
) -> SomadModel:
    """Fit SOMAD (Algorithm 1) on the good images of ``train``: features, SOM, node Gaussians, threshold.

    Unreadable images are reported through ``on_error`` and skipped (raised when ``strict``). The returned
    model holds a false-reject-rate threshold measured on the training images themselves.
    """
    config = (config or SomadConfig()).validate()
    configure_threads()
    monitor = Monitor(progress, cancel)
    device = resolve_device(config.device)
    paths = _training_paths(train, config.max_train)
    check_memory(config, len(paths), device)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    monitor.step("backbone", 0, 1)
    extractor = FeatureExtractor(config.features, device)
    storage = device if device.type == "cuda" else torch.device("cpu")
    features, kept, errors = extract_features(
        extractor, paths, monitor, strict=strict, on_error=on_error, storage=storage
    )
    if not kept:
        raise DataError(paths[0].parent, f"none of the {len(paths)} training images could be read")
    n, gh, gw, d = features.shape
    patches = features.view(-1, d)
    timings["features"] = time.perf_counter() - t0

    fitted = fit_som_and_nodes(features, config, device, monitor)
    som, gaussians, quantization_error = fitted.som, fitted.gaussians, fitted.quantization_error
    timings.update(fitted.seconds)

    model = SomadModel(
        config=config,
        weights_origin=extractor.weights_origin,
        channel_indices=extractor.layout.channel_indices,
        som_weights=som.weights,
        gaussians=gaussians,
        device=device,
        _extractor=extractor,
    )
    t0 = time.perf_counter()
    train_scores = _score_training_features(model, features, monitor)
    timings["calibration"] = time.perf_counter() - t0
    summary = {
        "category": train.name if isinstance(train, Dataset) else None,
        "n_images": len(kept),
        "n_unreadable": len(errors),
        "n_patches": int(n * gh * gw),
        "grid_shape": [gh, gw],
        "feature_channels": int(sum(extractor.layout.stage_channels)),
        "zero_init_last": config.features.zero_init_last,
        "som_quantization_error": quantization_error,
        "som_topographic_error": som.topographic_error(patches[:: max(1, patches.shape[0] // 100_000)]),
        "nodes_with_hits": int(gaussians.valid.sum()),
    }
    finish_training(model, train_scores, timings, device, summary)
    return model


def _score_training_features(model: SomadModel, features: torch.Tensor, monitor: Monitor) -> np.ndarray:
    """In-sample image scores of the training images, from their cached features."""
    size = model.config.features.image_size
    scores = []
    batch = 32
    for start in range(0, features.shape[0], batch):
        monitor.step("calibration", start, features.shape[0])
        chunk = features[start : start + batch].permute(0, 3, 1, 2)
        patch, _, _ = model.score_features(chunk)
        maps = patch_scores_to_maps(patch, size, model.config.scoring.sigma, [(size, size)] * chunk.shape[0])
        scores += [float(m.max()) for m in maps]
    return np.asarray(scores)


def score_paths(
    model: SomadModel,
    paths: Sequence[str | Path],
    *,
    progress: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
    strict: bool = False,
    on_error: ErrorCallback | None = None,
) -> tuple[list[ImageResult | None], list[DataError]]:
    """Score image files; an unreadable one gives ``None`` in its place and a :class:`DataError`."""
    monitor = Monitor(progress, cancel)
    results: list[ImageResult | None] = [None] * len(paths)
    errors: list[DataError] = []
    batch_size = model.config.features.batch_size
    for start in range(0, len(paths), batch_size):
        monitor.step("scoring", start, len(paths))
        chunk = [Path(p) for p in paths[start : start + batch_size]]
        images, ok, failed = load_images(chunk, strict=strict, on_error=on_error)
        errors += failed
        if images:
            for i, result in zip(
                ok, model.score(images, paths=[chunk[i] for i in ok], cancel=cancel), strict=True
            ):
                results[start + i] = result
    monitor.step("scoring", len(paths), len(paths))
    return results, errors


def _pixel_metrics(masks: list[np.ndarray], maps: list[np.ndarray]) -> tuple[float | None, float | None]:
    if not masks:
        return None, None
    return metrics.pixel_auroc(masks, maps), metrics.aupro(masks, maps)


def evaluate(
    model: SomadModel,
    dataset: Dataset,
    *,
    progress: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
    strict: bool = False,
    on_error: ErrorCallback | None = None,
    results: list[ImageResult | None] | None = None,
) -> CategoryReport:
    """Image AUROC, pixel AUROC, PRO (FPR <= 0.3) and best-F1 threshold on ``dataset``'s test set.

    Per defect type, metrics use that type's images plus every good image. Pixel metrics need a mask for
    every defective image; where one is missing they are ``None`` and the image metrics still stand.
    Pass ``results`` (from :func:`score_paths` on the test paths) to reuse scores already computed.
    """
    samples = [s for s in dataset.test if s.label >= 0]
    if not samples:
        raise DataError(
            dataset.root, "no labelled test images to evaluate (expected test/good and test/<defect>)"
        )
    if results is None:
        results, _ = score_paths(
            model,
            [s.path for s in samples],
            progress=progress,
            cancel=cancel,
            strict=strict,
            on_error=on_error,
        )
    scored = [(s, r) for s, r in zip(samples, results, strict=True) if r is not None]
    if not scored:
        raise DataError(dataset.root, "none of the test images could be read")
    monitor = Monitor(progress, cancel)
    labels = np.array([s.label for s, _ in scored])
    scores = np.array([r.score for _, r in scored])
    masks, maps, types = _load_masks(scored, monitor, on_error)
    image_auroc = metrics.image_auroc(labels, scores)
    pixel_auroc, pro = _pixel_metrics(masks, maps) if masks is not None else (None, None)
    best = metrics.best_f1_threshold(labels, scores) if image_auroc is not None else (None, None)
    per_type: dict[str, dict] = {}
    for defect in sorted({s.defect_type for s, _ in scored if s.label == 1}):
        keep = np.array([s.defect_type in ("good", defect) for s, _ in scored])
        entry: dict = {"count": int(sum(s.defect_type == defect for s, _ in scored))}
        entry["image_auroc"] = metrics.image_auroc(labels[keep], scores[keep])
        if masks is not None:
            sub_masks = [m for m, t in zip(masks, types, strict=True) if t in ("good", defect)]
            sub_maps = [m for m, t in zip(maps, types, strict=True) if t in ("good", defect)]
            entry["pixel_auroc"], entry["pro"] = _pixel_metrics(sub_masks, sub_maps)
        else:
            entry["pixel_auroc"], entry["pro"] = None, None
        per_type[defect] = entry
    return CategoryReport(
        category=dataset.name,
        image_auroc=image_auroc,
        pixel_auroc=pixel_auroc,
        pro=pro,
        best_f1_threshold=None if best[0] is None else float(best[0]),
        best_f1=None if best[1] is None else float(best[1]),
        per_defect_type=per_type,
        records=[ImageRecord(s.path, s.defect_type, s.label, r.score) for s, r in scored],
        random_init=model.random_init,
        good_scores=[r.score for s, r in scored if s.label == 0],
    )


def _load_masks(
    scored: list[tuple[Sample, ImageResult]], monitor: Monitor, on_error: ErrorCallback | None
) -> tuple[list[np.ndarray] | None, list[np.ndarray], list[str]]:
    """Ground-truth masks at each map's size (empty for good images); ``None`` if any defect lacks one."""
    masks, maps, types = [], [], []
    for i, (sample, result) in enumerate(scored):
        if i % 16 == 0:
            monitor.check()
        if result.anomaly_map is None:  # image-level detectors give no map
            return None, [], []
        shape = result.anomaly_map.shape
        if sample.label == 0:
            masks.append(np.zeros(shape, bool))
        elif sample.mask_path is None:
            if on_error is not None:
                on_error(DataError(sample.path, "no ground-truth mask: pixel metrics are skipped"))
            return None, [], []
        else:
            try:
                masks.append(read_mask(sample.mask_path, shape))
            except DataError as err:
                if on_error is not None:
                    on_error(err)
                return None, [], []
        maps.append(result.anomaly_map)
        types.append(sample.defect_type)
    return masks, maps, types


def store_thresholds(model: SomadModel, report: CategoryReport) -> None:
    """Keep the best-F1 threshold and the 1 % false-reject threshold of the test's good images in the model."""
    if report.best_f1_threshold is not None:
        model.thresholds["best_f1"] = report.best_f1_threshold
    if report.good_scores:
        model.thresholds["false_reject_1pct"] = false_reject_threshold(report.good_scores, FALSE_REJECT_RATE)
