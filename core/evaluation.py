"""Evaluation on a labelled test set: image AUROC, pixel AUROC, PRO and the best-F1 threshold, overall and per
defect type, and the ground-truth masks they are measured against.

Pixel metrics need a mask for every defective image: where one is missing or unreadable they are ``None`` (the
image metrics still stand) and ``on_error`` hears why. The command line and the window use the same rule.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from core import metrics
from core.data import Dataset, Sample, read_mask
from core.decision import FALSE_REJECT_RATE, false_reject_threshold
from core.errors import DataError
from core.model import FittedModel, score_paths
from core.progress import CancelCheck, Monitor, ProgressCallback
from core.results import CategoryReport, ImageRecord, ImageResult

ErrorCallback = Callable[[DataError], None]


def _pixel_metrics(masks: list[np.ndarray], maps: list[np.ndarray]) -> tuple[float | None, float | None]:
    if not masks:
        return None, None
    return metrics.pixel_auroc(masks, maps), metrics.aupro(masks, maps)


def evaluate(
    model: FittedModel,
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


def store_thresholds(model: FittedModel, report: CategoryReport) -> None:
    """Keep the best-F1 threshold and the 1 % false-reject threshold of the test's good images in the model."""
    if report.best_f1_threshold is not None:
        model.thresholds["best_f1"] = report.best_f1_threshold
    if report.good_scores:
        model.thresholds["false_reject_1pct"] = false_reject_threshold(report.good_scores, FALSE_REJECT_RATE)
