"""Per-image results of the open dataset and their verdicts at the current threshold, as numpy arrays.

No Qt here. Verdicts for every image are one vectorised comparison, so moving the threshold over thousands of
images costs microseconds; views ask the store for what changed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

import somad

# Anomaly maps are kept at most somad.MAX_MAP_SIDE pixels on their long side (somad.reduce_map, as pixel metrics
# see them); larger images get a reduced map, restored to the image's own size (bilinear) when a view or an
# export needs it.
MAX_MAP_SIDE = somad.MAX_MAP_SIDE

UNSCORED = -1
OK = 0
NG = 1


@dataclass(frozen=True)
class Entry:
    """One image of the dataset, as the browser lists it."""

    index: int
    path: Path
    split: str
    defect_type: str
    label: int
    mask_path: Path | None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def ground_truth(self) -> str:
        if self.label == 1:
            return "defective"
        if self.label == 0:
            return "good"
        return "unknown"


@dataclass
class StoredResult:
    """The parts of ``somad.ImageResult`` the window keeps for one image.

    ``anomaly_map`` is ``None`` for image-level detectors (a score, no heatmap); ``image_shape`` is then (0, 0)
    and ``map_min`` the score. ``nearest_nodes`` and ``best_node`` are there for models with a SOM only.
    """

    anomaly_map: np.ndarray | None
    image_shape: tuple[int, int]
    score: float
    nearest_nodes: np.ndarray | None
    best_node: np.ndarray | None
    map_min: float
    grid: tuple[int, int] | None = None

    @property
    def has_map(self) -> bool:
        return self.anomaly_map is not None

    @classmethod
    def from_image_result(cls, result: Any, max_side: int = MAX_MAP_SIDE) -> StoredResult:
        if result.anomaly_map is None:
            return cls(
                anomaly_map=None,
                image_shape=(0, 0),
                score=float(result.score),
                nearest_nodes=None,
                best_node=None,
                map_min=float(result.score),
            )
        amap = np.asarray(result.anomaly_map, dtype=np.float32)
        h, w = amap.shape[:2]
        reduced = somad.reduce_map(amap, max_side)
        if reduced is amap:
            reduced = amap.copy()
        return cls(
            anomaly_map=reduced,
            image_shape=(int(h), int(w)),
            score=float(result.score),
            nearest_nodes=None if result.nearest_nodes is None else np.asarray(result.nearest_nodes),
            best_node=None if result.best_node is None else np.asarray(result.best_node),
            map_min=float(np.min(amap)),
            grid=result.grid_shape,
        )

    @property
    def area_scale(self) -> float:
        """Image pixels per pixel of the kept map (1 unless the map was reduced)."""
        if self.anomaly_map is None:
            return 1.0
        h, w = self.image_shape
        return (h * w) / float(self.anomaly_map.shape[0] * self.anomaly_map.shape[1])

    @property
    def grid_shape(self) -> tuple[int, int]:
        """(gh, gw) of the feature grid ((1, 1) when unknown)."""
        if self.grid is not None:
            return self.grid
        if self.best_node is not None:
            return (int(self.best_node.shape[0]), int(self.best_node.shape[1]))
        return (1, 1)

    def full_map(self, shape: tuple[int, int] | None = None) -> np.ndarray | None:
        """The map at ``shape`` (default: the image's own height x width); None without a map."""
        if self.anomaly_map is None:
            return None
        h, w = shape if shape is not None else self.image_shape
        if self.anomaly_map.shape[:2] == (h, w):
            return self.anomaly_map
        return cv2.resize(self.anomaly_map, (int(w), int(h)), interpolation=cv2.INTER_LINEAR)

    def patch_at(self, x: float, y: float, shape: tuple[int, int] | None = None) -> tuple[int, int]:
        """Feature-grid patch (gy, gx) under image pixel (x, y) of an image of ``shape``."""
        h, w = shape if shape is not None else self.image_shape
        gh, gw = self.grid_shape
        gy = min(max(int(y * gh / h), 0), gh - 1)
        gx = min(max(int(x * gw / w), 0), gw - 1)
        return gy, gx


def critical_levels(results: dict[int, StoredResult], min_area: int, cancel=None) -> dict[int, float]:
    """Each map's critical level for ``min_area`` image pixels (somad.regions.critical_level); for a worker,
    which stops early when ``cancel()`` says so."""
    levels: dict[int, float] = {}
    for i, result in results.items():
        if cancel is not None and cancel():
            break
        levels[i] = somad.regions.critical_level(result.anomaly_map, min_area, result.area_scale)
    return levels


def entries_from_dataset(dataset: Any) -> list[Entry]:
    """Train images first, then test images, each with its ground truth as core's ``Sample`` describes it."""
    out: list[Entry] = []
    for split_name, samples in (("train", dataset.train), ("test", dataset.test)):
        for sample in samples:
            out.append(
                Entry(
                    index=len(out),
                    path=Path(sample.path),
                    split=str(getattr(sample, "split", split_name) or split_name),
                    defect_type=str(sample.defect_type),
                    label=int(sample.label),
                    mask_path=None if sample.mask_path is None else Path(sample.mask_path),
                )
            )
    return out


class ResultStore:
    """Entries, scores, labels and verdicts of one dataset."""

    def __init__(self, entries: Sequence[Entry]):
        self.entries: list[Entry] = list(entries)
        n = len(self.entries)
        self.scores = np.full(n, np.nan, dtype=np.float64)
        self.labels = np.array([e.label for e in self.entries], dtype=np.int8)
        self.verdicts = np.full(n, UNSCORED, dtype=np.int8)
        self.is_test = np.array([e.split == "test" for e in self.entries], dtype=bool)
        self.results: dict[int, StoredResult] = {}
        self.errors: dict[int, str] = {}
        self.threshold = math.nan
        #: The region rule (somad.VerdictRule): contours' own threshold (None: the image threshold), and the
        #: smallest region an NG verdict needs (0: none).
        self.pixel_threshold: float | None = None
        self.min_area = 0
        #: Each image's critical level for ``min_area`` (somad.regions.critical_level): with it, the region test
        #: of a threshold move is one comparison; images without one yet are measured at the move.
        self.critical: dict[int, float] = {}
        #: Counts changes of the results, so work started on older results can tell.
        self.generation = 0

    @classmethod
    def from_dataset(cls, dataset: Any) -> ResultStore:
        return cls(entries_from_dataset(dataset))

    def __len__(self) -> int:
        return len(self.entries)

    # -- results ---------------------------------------------------------------------------------------------
    def clear_results(self) -> None:
        self.generation += 1
        self.critical.clear()
        self.scores[:] = np.nan
        self.verdicts[:] = UNSCORED
        self.results.clear()
        self.errors.clear()

    def set_results(self, results: dict[int, StoredResult], errors: dict[int, str]) -> None:
        """A scoring run's results; training images marked unreadable by the fit stay marked."""
        kept = {i: m for i, m in self.errors.items() if not self.is_test[i]}
        self.clear_results()
        self.errors.update(kept)
        self.results.update(results)
        self.errors.update(errors)
        for i, res in results.items():
            self.scores[i] = res.score
        self._recompute()

    def add_entries(self, paths: Sequence[Path], defect_type: str = "unlabelled") -> list[Entry]:
        """Append unlabelled test images (a watched folder's new files); return their entries."""
        start = len(self.entries)
        added = [Entry(start + i, Path(p), "test", defect_type, -1, None) for i, p in enumerate(paths)]
        self.entries.extend(added)
        n = len(added)
        self.scores = np.concatenate([self.scores, np.full(n, np.nan)])
        self.labels = np.concatenate([self.labels, np.full(n, -1, dtype=np.int8)])
        self.verdicts = np.concatenate([self.verdicts, np.full(n, UNSCORED, dtype=np.int8)])
        self.is_test = np.concatenate([self.is_test, np.ones(n, dtype=bool)])
        return added

    def add_results(self, results: dict[int, StoredResult], errors: dict[int, str]) -> np.ndarray:
        """Results of some entries, keeping the others'; return the indices whose verdict changed."""
        self.generation += 1
        for i in results:
            self.critical.pop(i, None)
        self.results.update(results)
        self.errors.update(errors)
        for i, res in results.items():
            self.scores[i] = res.score
        old = self.verdicts.copy()
        self._recompute()
        return np.flatnonzero(old != self.verdicts)

    def result(self, index: int) -> StoredResult | None:
        return self.results.get(index)

    @property
    def scored(self) -> np.ndarray:
        return ~np.isnan(self.scores)

    @property
    def has_results(self) -> bool:
        return bool(self.results)

    # -- threshold -------------------------------------------------------------------------------------------
    def set_threshold(self, threshold: float) -> np.ndarray:
        """Apply a threshold; return the indices whose verdict changed."""
        self.threshold = float(threshold)
        old = self.verdicts.copy()
        self._recompute()
        return np.flatnonzero(old != self.verdicts)

    def set_rule(self, pixel_threshold: float | None, min_area: int) -> np.ndarray:
        """Set the region rule; return the indices whose verdict changed."""
        if int(min_area) != self.min_area:
            self.critical.clear()
        self.pixel_threshold = None if pixel_threshold is None else float(pixel_threshold)
        self.min_area = int(min_area)
        old = self.verdicts.copy()
        self._recompute()
        return np.flatnonzero(old != self.verdicts)

    @property
    def pixel_level(self) -> float:
        """The threshold regions and contours are drawn at."""
        return self.threshold if self.pixel_threshold is None else self.pixel_threshold

    def rule(self) -> somad.VerdictRule | None:
        """The verdict rule of the window's settings (``None`` before a threshold is set)."""
        if math.isnan(self.threshold):
            return None
        return somad.VerdictRule(self.threshold, self.pixel_threshold, self.min_area)

    def _recompute(self) -> None:
        scored = self.scored
        self.verdicts[:] = UNSCORED
        if math.isnan(self.threshold):
            return
        ng = somad.is_ng(self.scores, self.threshold) & scored
        if self.min_area > 0:
            level = self.pixel_level
            for i in np.flatnonzero(ng):
                result = self.results.get(int(i))
                if result is None or not result.has_map:
                    continue  # image-level scores: the score alone decides
                critical = self.critical.get(int(i))
                large = (
                    self.largest_region(int(i)) >= self.min_area if critical is None else level <= critical
                )
                ng[i] = large
        self.verdicts[scored] = ng[scored].astype(np.int8)

    def unmeasured(self) -> dict[int, StoredResult]:
        """The scored images with maps that have no critical level yet (for :func:`critical_levels`)."""
        return {i: r for i, r in list(self.results.items()) if r.has_map and i not in self.critical}

    def largest_region(self, index: int) -> int:
        """Image pixels of the image's largest region at the pixel threshold (measured on the kept map, scaled
        to the image's size for images reduced to somad.MAX_MAP_SIDE)."""
        result = self.results[index]
        total = round(np.count_nonzero(result.anomaly_map >= self.pixel_level) * result.area_scale)
        if total < self.min_area:
            return total  # no region can be larger than all of them together: no need to find them
        area = somad.regions.largest_area(result.anomaly_map, self.pixel_level)
        return round(area * result.area_scale)

    def regions(self, index: int) -> list[somad.Region]:
        """The current image's regions at the pixel threshold, at the image's own size, largest first."""
        result = self.results.get(index)
        if result is None or not result.has_map or math.isnan(self.threshold):
            return []
        return somad.find_regions(result.full_map(), self.pixel_level)

    # -- summaries -------------------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        return {
            "ok": int(np.count_nonzero(self.verdicts == OK)),
            "ng": int(np.count_nonzero(self.verdicts == NG)),
            "unscored": int(np.count_nonzero(self.verdicts == UNSCORED)),
            "errors": len(self.errors),
        }

    def misclassified(self) -> np.ndarray:
        """True where a labelled, scored image's verdict disagrees with its ground truth."""
        known = (self.labels >= 0) & (self.verdicts >= 0)
        return known & (self.verdicts != self.labels)

    def scored_test(self) -> np.ndarray:
        return np.flatnonzero(self.is_test & self.scored)

    def labelled_scores(self) -> tuple[np.ndarray, np.ndarray]:
        """(labels, scores) of scored test images with a known label."""
        idx = self.scored_test()
        idx = idx[self.labels[idx] >= 0]
        return self.labels[idx].astype(np.int64), self.scores[idx]

    def good_scores(self) -> np.ndarray:
        idx = self.scored_test()
        return self.scores[idx[self.labels[idx] == 0]]

    def defect_scores(self) -> np.ndarray:
        idx = self.scored_test()
        return self.scores[idx[self.labels[idx] == 1]]

    def unlabelled_scores(self) -> np.ndarray:
        idx = self.scored_test()
        return self.scores[idx[self.labels[idx] < 0]]

    @property
    def has_both_labels(self) -> bool:
        labels, _ = self.labelled_scores()
        return bool(np.any(labels == 0) and np.any(labels == 1))

    @property
    def has_masks(self) -> bool:
        return any(e.mask_path is not None for e in self.entries)

    def defect_types(self, split: str | None = "test") -> list[str]:
        seen: dict[str, None] = {}
        for e in self.entries:
            if split is None or e.split == split:
                seen.setdefault(e.defect_type, None)
        return list(seen)

    def heat_levels(self) -> tuple[float, float]:
        """Colour range shared by every image, in raw score units: a typical map floor up to the top score."""
        if not self.results:
            return (0.0, 1.0)
        mins = np.array([r.map_min for r in self.results.values()], dtype=np.float64)
        with_maps = any(r.has_map for r in self.results.values())
        lo = float(np.median(mins)) if with_maps else float(np.min(mins))
        hi = float(np.nanmax(self.scores))
        if not hi > lo:
            hi = lo + 1.0
        return lo, hi

    def index_of_path(self, path: Path) -> int | None:
        for e in self.entries:
            if e.path == path:
                return e.index
        return None

    def indices(self, which: Iterable[int]) -> list[Entry]:
        return [self.entries[i] for i in which]
