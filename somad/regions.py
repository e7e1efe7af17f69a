"""Defect regions: the connected parts of an anomaly map at the pixel threshold, and the verdict rule that can
require a minimum area of them (the region filter of inspection tools).

A region is an 8-connected component of ``map >= pixel_threshold`` (the defect mask of
:func:`somad.decision.defect_mask`), described by its area in pixels, its peak raw score and its bounding box.
:class:`VerdictRule` judges an image: NG when its score reaches the image threshold and, when ``min_area`` is
set, its largest region at the pixel threshold has at least ``min_area`` pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from somad.decision import defect_mask, is_ng
from somad.errors import ConfigError


@dataclass(frozen=True)
class Region:
    """One connected defect region: ``area`` pixels, ``peak`` raw score, box ``(x, y, width, height)``."""

    area: int
    peak: float
    box: tuple[int, int, int, int]


def find_regions(anomaly_map: np.ndarray, pixel_threshold: float) -> list[Region]:
    """The regions of ``anomaly_map`` at ``pixel_threshold``, largest first (ties: higher peak first)."""
    values = np.asarray(anomaly_map, dtype=np.float32)
    mask = defect_mask(values, pixel_threshold).astype(np.uint8)
    if not mask.any():
        return []
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    peaks = np.full(n, -np.inf, dtype=np.float64)
    np.maximum.at(peaks, labels.ravel(), values.ravel())
    regions = [
        Region(
            int(stats[i, cv2.CC_STAT_AREA]),
            float(peaks[i]),
            tuple(int(v) for v in stats[i, :4]),
        )
        for i in range(1, n)
    ]
    return sorted(regions, key=lambda r: (-r.area, -r.peak))


def largest_area(anomaly_map: np.ndarray, pixel_threshold: float) -> int:
    """Pixels of the largest region at ``pixel_threshold`` (0 when there is none)."""
    mask = defect_mask(anomaly_map, pixel_threshold).astype(np.uint8)
    if not mask.any():
        return 0
    _, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    return int(stats[1:, cv2.CC_STAT_AREA].max())


def critical_level(anomaly_map: np.ndarray, min_area: int, scale: float = 1.0) -> float:
    """The highest level at which ``anomaly_map`` has a region of at least ``min_area`` pixels, each map pixel
    counting ``scale`` image pixels (rounded as the window rounds); ``-inf`` when it has none at any level.

    The largest region can only shrink as the level rises (every region at a higher level lies inside one at a
    lower level), so a binary search over the map's sorted values finds it, and an image with this map has a
    large enough region at level ``t`` exactly when ``t <= critical_level``.
    """
    values = np.unique(np.asarray(anomaly_map, dtype=np.float32))
    if round(largest_area(anomaly_map, float(values[0])) * scale) < min_area:
        return -np.inf
    lo, hi = 0, values.size - 1  # the predicate holds at lo; find the last index where it does
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if round(largest_area(anomaly_map, float(values[mid])) * scale) >= min_area:
            lo = mid
        else:
            hi = mid - 1
    return float(values[lo])


def format_boxes(regions: list[Region]) -> str:
    """Boxes as ``x y w h`` separated by ``;`` (the CSV's ``boxes`` column)."""
    return ";".join(" ".join(str(v) for v in r.box) for r in regions)


@dataclass(frozen=True)
class VerdictRule:
    """How an image is judged: ``threshold`` on its score; ``pixel_threshold`` (``None``: the same) draws the
    regions and contours; ``min_area`` > 0 requires a region of at least that many pixels for NG."""

    threshold: float
    pixel_threshold: float | None = None
    min_area: int = 0

    def __post_init__(self) -> None:
        if not math.isfinite(self.threshold):
            raise ConfigError(f"threshold: expected a finite number, got {self.threshold!r}")
        if self.pixel_threshold is not None and not math.isfinite(self.pixel_threshold):
            raise ConfigError(f"pixel threshold: expected a finite number, got {self.pixel_threshold!r}")
        if int(self.min_area) != self.min_area or self.min_area < 0:
            raise ConfigError(f"minimum defect area: expected a whole number >= 0, got {self.min_area!r}")

    @property
    def pixel_level(self) -> float:
        """The threshold regions and contours are drawn at."""
        return self.threshold if self.pixel_threshold is None else float(self.pixel_threshold)

    def is_ng(
        self, score: float, anomaly_map: np.ndarray | None = None, *, largest: int | None = None
    ) -> bool:
        """NG when ``score >= threshold`` and, with ``min_area``, the largest region at the pixel threshold (from
        ``anomaly_map``, or given as ``largest``) has that many pixels. Without a map (image-level detectors)
        the score alone decides."""
        if not bool(is_ng(score, self.threshold)):
            return False
        if self.min_area <= 0:
            return True
        if largest is None:
            if anomaly_map is None:
                return True
            largest = largest_area(anomaly_map, self.pixel_level)
        return largest >= self.min_area

    def verdict(
        self, score: float, anomaly_map: np.ndarray | None = None, *, largest: int | None = None
    ) -> str:
        """``"NG"`` or ``"OK"`` by :meth:`is_ng`."""
        return "NG" if self.is_ng(score, anomaly_map, largest=largest) else "OK"
