"""What scoring and evaluation return: plain dataclasses of numpy arrays, safe to hand to any front end."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class ImageResult:
    """What a model says of one image: every method gives a score; map methods an anomaly map and the shape
    of their feature grid; methods with a Self-Organizing Map also each patch's nodes.

    ``anomaly_map`` is float32 at the image's own height x width, in the method's raw units (Mahalanobis units for
    SOMAD, Eq. 3), so one threshold means the same on every image; ``None`` for image-level detectors. ``score``
    is its maximum. Only for methods with a SOM: ``nearest_nodes`` (gh, gw, k) holds the indices (row-major,
    ``r * cols + c``) of each feature-grid patch's k nearest nodes by Euclidean distance, nearest first, and
    ``best_node`` (gh, gw) the one of them with the smallest Mahalanobis distance; ``None`` otherwise.
    """

    anomaly_map: np.ndarray | None
    score: float
    nearest_nodes: np.ndarray | None = None
    best_node: np.ndarray | None = None
    path: Path | None = None
    #: (gh, gw) of the feature grid the map was made from; ``None`` without a map.
    grid_shape: tuple[int, int] | None = None


@dataclass
class ImageRecord:
    """One evaluated test image: where it is, its ground truth and its score."""

    path: Path
    defect_type: str
    label: int
    score: float


@dataclass
class CategoryReport:
    """Metrics of one category; ``per_defect_type`` maps a defect type to its own metrics (good images shared)."""

    category: str
    image_auroc: float | None
    pixel_auroc: float | None
    pro: float | None
    best_f1_threshold: float | None
    best_f1: float | None
    per_defect_type: dict[str, dict[str, float | int | None]] = field(default_factory=dict)
    records: list[ImageRecord] = field(default_factory=list)
    random_init: bool = False
    good_scores: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "image_auroc": self.image_auroc,
            "pixel_auroc": self.pixel_auroc,
            "pro": self.pro,
            "best_f1_threshold": self.best_f1_threshold,
            "best_f1": self.best_f1,
            "random_init": self.random_init,
            "per_defect_type": self.per_defect_type,
            "images": [
                {"path": str(r.path), "defect_type": r.defect_type, "label": r.label, "score": r.score}
                for r in self.records
            ],
        }
