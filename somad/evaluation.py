"""Evaluation on a labelled test set: image AUROC, pixel AUROC, PRO and the best-F1 threshold, overall and per
defect type, and the ground-truth masks they are measured against.

Pixel metrics need a mask for every defective image: where one is missing or unreadable they are ``None`` (the
image metrics still stand) and ``on_error`` hears why. The command line and the window use the same rule.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from somad import metrics
from somad.data import Dataset, read_mask
from somad.decision import FALSE_REJECT_RATE, false_reject_threshold
from somad.errors import DataError
from somad.maps import reduce_map
from somad.model import FittedModel, score_paths
from somad.progress import CancelCheck, Monitor, ProgressCallback
from somad.results import CategoryReport, ImageRecord, ImageResult

ErrorCallback = Callable[[DataError], None]


def truth_masks(
    samples: Sequence, shapes: Sequence[tuple[int, int]], on_error: ErrorCallback | None = None
) -> list[np.ndarray] | None:
    """Ground-truth masks of labelled samples (anything with ``label``, ``mask_path`` and ``path``) at the given
    (height, width): empty for good images, read for defective ones. ``None`` when a defective image has no
    mask or an unreadable one (``on_error`` hears which): pixel metrics then need skipping, not guessing."""
    masks = []
    for sample, shape in zip(samples, shapes, strict=True):
        if sample.label == 0:
            masks.append(np.zeros(shape, bool))
        elif sample.mask_path is None:
            if on_error is not None:
                on_error(DataError(sample.path, "no ground-truth mask: pixel metrics are skipped"))
            return None
        else:
            try:
                masks.append(read_mask(sample.mask_path, shape))
            except DataError as err:
                if on_error is not None:
                    on_error(err)
                return None
    return masks


def metric_maps(
    samples: Sequence, maps: Sequence[np.ndarray], on_error: ErrorCallback | None = None
) -> tuple[list[np.ndarray], list[np.ndarray]] | None:
    """The masks and maps pixel metrics are measured on: maps reduced to at most
    :data:`~somad.maps.MAX_MAP_SIDE` pixels (as the window keeps them) and the masks at their size; ``None``
    without a mask for every defective image."""
    reduced = [reduce_map(m) for m in maps]
    masks = truth_masks(samples, [m.shape for m in reduced], on_error)
    return None if masks is None else (masks, reduced)


def _pixel_scores(masks: list[np.ndarray], maps: list[np.ndarray]) -> tuple[float | None, float | None]:
    if not masks or not any(m.any() for m in masks):
        return None, None
    return metrics.pixel_auroc(masks, maps), metrics.aupro(masks, maps)


def pixel_metrics(
    samples: Sequence, maps: Sequence[np.ndarray], on_error: ErrorCallback | None = None
) -> tuple[float | None, float | None]:
    """Pixel AUROC and PRO (FPR <= 0.3) of ``maps`` against the samples' masks (see :func:`metric_maps`);
    ``(None, None)`` without masks for every defective image or without any defect pixel."""
    found = metric_maps(samples, maps, on_error)
    return (None, None) if found is None else _pixel_scores(*found)


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
    monitor.check()
    gives_maps = all(r.anomaly_map is not None for _, r in scored)
    samples = [s for s, _ in scored]
    found = metric_maps(samples, [r.anomaly_map for _, r in scored], on_error) if gives_maps else None
    masks, maps = found if found is not None else ([], [])
    image_auroc = metrics.image_auroc(labels, scores)
    pixel_auroc, pro = _pixel_scores(masks, maps) if found is not None else (None, None)
    best = metrics.best_f1_threshold(labels, scores) if image_auroc is not None else (None, None)
    per_type: dict[str, dict] = {}
    for defect in sorted({s.defect_type for s, _ in scored if s.label == 1}):
        keep = np.array([s.defect_type in ("good", defect) for s, _ in scored])
        entry: dict = {"count": int(sum(s.defect_type == defect for s, _ in scored))}
        entry["image_auroc"] = metrics.image_auroc(labels[keep], scores[keep])
        if pixel_auroc is not None:
            entry["pixel_auroc"], entry["pro"] = _pixel_scores(
                [m for m, k in zip(masks, keep, strict=True) if k],
                [m for m, k in zip(maps, keep, strict=True) if k],
            )
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


def store_thresholds(model: FittedModel, report: CategoryReport) -> None:
    """Keep the best-F1 threshold and the 1 % false-reject threshold of the test's good images in the model."""
    if report.best_f1_threshold is not None:
        model.thresholds["best_f1"] = report.best_f1_threshold
    if report.good_scores:
        model.thresholds["false_reject_1pct"] = false_reject_threshold(report.good_scores, FALSE_REJECT_RATE)
