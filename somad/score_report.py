"""What ``somad score`` writes for each image, the same from every engine: a ``scores.csv`` row, a heatmap and
an overlay.

The colours are fixed by the model and the threshold (:func:`colour_range`), never by the other images of the
run, so an image gets the same pictures whether it is scored alone, in a folder, or on any worker of a cluster.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np

from somad import render
from somad.data import read_image
from somad.errors import DataError, ImageReadError
from somad.regions import Region, VerdictRule, format_boxes

SCORES_CSV = "scores.csv"
CSV_HEADER = [
    "file",
    "score",
    "verdict",
    "threshold",
    "defect_area_px",
    "model",
    "regions",
    "largest_region_px",
    "region_boxes",
    "pixel_threshold",
    "min_area_px",
]
PICTURE_KINDS = ("heatmap", "overlay")


def colour_range(training_summary: Mapping, threshold: float) -> tuple[float, float]:
    """(low, high) raw scores of the colour scale: from the mean training score to as far above the threshold,
    so the threshold sits mid-scale (the normalisation ``0.5 + (s - t) / (2 (t - m))`` clipped to 0..1)."""
    low = float(training_summary.get("train_score_mean", 0.0))
    half = threshold - low
    if not half > 0:  # a threshold at or under the good images' mean: a scale of its own size around it
        half = max(abs(threshold), 1.0) / 2
        low = threshold - half
    return low, threshold + half


def picture_stems(paths: Sequence[Path]) -> list[str]:
    """A distinct file-name stem per path: the file's own, prefixed by parent folders' names where two clash."""
    used: set[str] = set()
    stems = []
    for path in paths:
        path = Path(path)
        stem = path.stem
        while stem in used:
            stem = f"{path.parent.name}_{stem}"
        used.add(stem)
        stems.append(stem)
    return stems


def csv_row(
    path: Path, score: float | None, regions: list[Region] | None, rule: VerdictRule, model: str
) -> list:
    """One ``scores.csv`` row: ``score`` ``None`` for an unreadable image, ``regions`` ``None`` without a map
    (image-level detectors)."""
    settings = [f"{rule.pixel_level:.6g}", rule.min_area]
    if score is None:
        return [str(path), "", "unreadable", f"{rule.threshold:.6g}", "", model, "", "", "", *settings]
    if regions is None:
        verdict = rule.verdict(score)
        return [str(path), f"{score:.6g}", verdict, f"{rule.threshold:.6g}", "", model, "", "", "", *settings]
    largest = regions[0].area if regions else 0
    return [
        str(path),
        f"{score:.6g}",
        rule.verdict(score, largest=largest),
        f"{rule.threshold:.6g}",
        sum(r.area for r in regions),
        model,
        len(regions),
        largest,
        format_boxes(regions),
        *settings,
    ]


def write_scores_csv(folder: Path, rows: Sequence[list]) -> None:
    with open(Path(folder) / SCORES_CSV, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_HEADER)
        writer.writerows(rows)


def image_for_pictures(path: Path, anomaly_map: np.ndarray) -> np.ndarray:
    """The scored image read again for its pictures; :class:`ImageReadError` when it is gone or is no longer the
    size it was scored at (replaced meanwhile)."""
    image = read_image(path)
    if image.shape[:2] != anomaly_map.shape[:2]:
        h, w = anomaly_map.shape[:2]
        raise ImageReadError(
            path, f"changed since it was scored (now {image.shape[1]} x {image.shape[0]}, was {w} x {h})"
        )
    return image


def write_pictures(
    folder: Path,
    stem: str,
    image: np.ndarray,
    anomaly_map: np.ndarray,
    score: float,
    rule: VerdictRule,
    colours: tuple[float, float],
    shown_folder: Path | None = None,
) -> None:
    """``{stem}_heatmap.png`` and ``{stem}_overlay.png`` (RGB ``image``, contours at the pixel threshold) into
    ``folder``; a failed write names the file as it will be seen (under ``shown_folder`` when the folder is a
    staging one)."""
    vmin, vmax = colours
    caption = f"{rule.verdict(score, anomaly_map)}  score {score:.2f}  threshold {rule.threshold:.2f}"
    pictures = (
        render.heatmap_rgb(anomaly_map, vmin, vmax),
        render.annotate(image, anomaly_map, rule.pixel_level, vmin=vmin, vmax=vmax, caption=caption),
    )
    for kind, picture in zip(PICTURE_KINDS, pictures, strict=True):
        name = Path(folder) / f"{stem}_{kind}.png"
        if not cv2.imwrite(str(name), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)):
            raise DataError(Path(shown_folder or folder) / name.name, "cannot write the image (disk full?)")
