"""Scoring a dataset and its metrics, written to run in a worker (no Qt, no widgets).

``score_entries`` scores images in chunks through ``somad.score_paths`` (so a huge dataset never holds every
full-resolution map at once), keeps what the window needs per image (:class:`~somad_gui.store.StoredResult`)
and computes the run's metrics once: image AUROC, best F1, the ROC curve and, where masks exist, pixel AUROC
and PRO, so the GUI thread never computes them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import somad
from somad_gui.store import Entry, StoredResult

Progress = Callable[[str, int, int], None] | None
Cancel = Callable[[], bool] | None

CHUNK_SIZE = 16


@dataclass
class RunMetrics:
    """Metrics of one scoring run; ``None`` where they cannot be computed, with the reason in ``notes``."""

    image_auroc: float | None = None
    pixel_auroc: float | None = None
    pro: float | None = None
    best_f1_threshold: float | None = None
    best_f1: float | None = None
    roc: tuple[np.ndarray, np.ndarray] | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class ScoringRun:
    results: dict[int, StoredResult]
    errors: dict[int, str]
    metrics: RunMetrics
    model: Any = None


def _check(cancel: Cancel) -> None:
    if cancel is not None and cancel():
        raise somad.Cancelled("cancelled by the user")


def score_entries(
    model: Any,
    entries: Sequence[Entry],
    *,
    progress: Progress = None,
    cancel: Cancel = None,
    chunk_size: int = CHUNK_SIZE,
    with_metrics: bool = True,
) -> ScoringRun:
    """Score ``entries`` with ``model``; unreadable images end up in ``errors`` (index -> one-line message)."""
    entries = list(entries)
    total = len(entries)
    results: dict[int, StoredResult] = {}
    errors: dict[int, str] = {}
    if progress is not None:
        progress("scoring", 0, total)
    for start in range(0, total, chunk_size):
        _check(cancel)
        chunk = entries[start : start + chunk_size]

        def sub_progress(
            _stage: str, done: int, sub_total: int, _start: int = start, _n: int = len(chunk)
        ) -> None:
            if progress is not None and sub_total > 0:
                progress("scoring", _start + min(_n, round(done * _n / sub_total)), total)

        found, problems = somad.score_paths(
            model, [e.path for e in chunk], progress=sub_progress, cancel=cancel
        )
        reasons: dict[Path, str] = {}
        for err in problems:
            path = getattr(err, "path", None)
            if path is not None:
                reasons[Path(path)] = str(err)
        for entry, res in zip(chunk, found, strict=False):
            if res is None:
                errors[entry.index] = reasons.get(entry.path, f"{entry.path}: the image could not be read")
            else:
                results[entry.index] = StoredResult.from_image_result(res)
        if progress is not None:
            progress("scoring", min(total, start + len(chunk)), total)
    metrics = (
        compute_metrics(entries, results, progress=progress, cancel=cancel) if with_metrics else RunMetrics()
    )
    return ScoringRun(results=results, errors=errors, metrics=metrics, model=model)


def _as_float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if np.isfinite(out) else None


def compute_metrics(
    entries: Sequence[Entry],
    results: dict[int, StoredResult],
    *,
    progress: Progress = None,
    cancel: Cancel = None,
) -> RunMetrics:
    """Image-level metrics from the scores, pixel-level ones from the stored maps and the masks."""
    metrics = RunMetrics()
    labelled = [e for e in entries if e.index in results and e.label in (0, 1)]
    labels = np.array([e.label for e in labelled], dtype=np.int64)
    scores = np.array([results[e.index].score for e in labelled], dtype=np.float64)
    if not labelled:
        metrics.notes.append("no labelled test images: AUROC, F1 and ROC need ground truth")
        return metrics
    if not (np.any(labels == 0) and np.any(labels == 1)):
        missing = "good" if not np.any(labels == 0) else "defective"
        metrics.notes.append(f"no {missing} test images: AUROC, F1 and ROC need both kinds")
        return metrics

    metrics.image_auroc = _as_float(somad.metrics.image_auroc(labels, scores))
    thr, f1 = somad.metrics.best_f1_threshold(labels, scores)
    metrics.best_f1_threshold, metrics.best_f1 = _as_float(thr), _as_float(f1)
    fpr, tpr, _ = somad.metrics.roc_curve_points(labels, scores)
    metrics.roc = (np.asarray(fpr, dtype=np.float64), np.asarray(tpr, dtype=np.float64))

    if not all(results[e.index].has_map for e in labelled):
        metrics.notes.append("this method gives image scores only: pixel AUROC and PRO unavailable")
        return metrics
    if not any(e.mask_path is not None for e in labelled):
        metrics.notes.append("no ground-truth masks: pixel AUROC and PRO unavailable")
        return metrics
    _check(cancel)
    if progress is not None:
        progress("metrics", 0, 1)
    try:
        pixel_auroc, pro = somad.pixel_metrics(
            labelled,
            [results[e.index].anomaly_map for e in labelled],
            on_error=lambda err: metrics.notes.append(f"pixel AUROC and PRO unavailable: {err}"),
        )
    except (somad.SomadError, ValueError) as exc:
        metrics.notes.append(f"pixel metrics unavailable: {exc}")
        pixel_auroc = pro = None
    metrics.pixel_auroc, metrics.pro = _as_float(pixel_auroc), _as_float(pro)
    if progress is not None:
        progress("metrics", 1, 1)
    return metrics
