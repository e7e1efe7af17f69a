"""Metrics of anomaly detection: threshold-free (AUROC, AUPRO) and at a threshold (F1, confusion counts).

Image-level functions take one label (0 good, 1 defective) and one score per image; pixel-level functions take
one boolean defect mask and one anomaly map of the same height x width per image. A higher score means more
anomalous, and a score is predicted defective when ``score >= threshold``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage
from sklearn.metrics import precision_recall_curve, roc_auc_score, roc_curve

from somad.decision import is_ng
from somad.errors import ConfigError

__all__ = [
    "Confusion",
    "aupro",
    "best_f1_threshold",
    "confusion_at",
    "f1_at",
    "image_auroc",
    "pixel_auroc",
    "pro_curve",
    "roc_curve_points",
]

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def _scores(scores: ArrayLike, what: str = "scores") -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"{what}: expected a 1-D array, got shape {s.shape}")
    if s.size == 0:
        raise ValueError(f"{what}: empty input")
    if np.isnan(s).any():
        raise ValueError(f"{what}: contains NaN")
    return s


def _labelled(labels: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    s = _scores(scores)
    y = np.asarray(labels)
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.shape} vs {s.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels: expected 0 (good) or 1 (defective)")
    return y.astype(bool), s


def _pixels(masks: Sequence[np.ndarray], maps: Sequence[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
    """Validated boolean masks and all map values concatenated in image order (row-major)."""
    if len(masks) != len(maps):
        raise ValueError(f"masks and maps differ in number: {len(masks)} vs {len(maps)}")
    if len(masks) == 0:
        raise ValueError("masks and maps: empty input")
    bool_masks, flat = [], []
    for i, (mask, amap) in enumerate(zip(masks, maps, strict=True)):
        m, a = np.asarray(mask), np.asarray(amap)
        if m.ndim != 2 or m.shape != a.shape:
            raise ValueError(f"image {i}: mask {m.shape} and map {a.shape} must be the same 2-D shape")
        bool_masks.append(m.astype(bool))
        flat.append(a.ravel())
    values = np.concatenate(flat)
    if not np.issubdtype(values.dtype, np.floating):
        values = values.astype(np.float64)
    if np.isnan(values).any():
        raise ValueError("maps: contain NaN")
    return bool_masks, values


def image_auroc(labels: ArrayLike, scores: ArrayLike) -> float | None:
    """Area under the ROC curve of image scores (``sklearn.metrics.roc_auc_score``); None with one class."""
    y, s = _labelled(labels, scores)
    if y.all() or not y.any():
        return None
    return float(roc_auc_score(y, s))


def pixel_auroc(masks: Sequence[np.ndarray], maps: Sequence[np.ndarray]) -> float | None:
    """ROC AUC over the pixels of all images pooled; None when no pixel is defective or none is normal."""
    bool_masks, values = _pixels(masks, maps)
    y = np.concatenate([m.ravel() for m in bool_masks])
    if y.all() or not y.any():
        return None
    return float(roc_auc_score(y, values))


def _pro_points(
    masks: Sequence[np.ndarray], maps: Sequence[np.ndarray], max_fpr: float = 1.0
) -> tuple[np.ndarray, np.ndarray] | None:
    """Exact PRO curve at every distinct threshold, or None without any defect region or any normal pixel.

    Every connected defect region (8-connectivity) weighs 1 / n_regions, shared evenly by its pixels, so the
    cumulative weight of the pixels above a threshold is the mean overlap of the regions with the prediction.
    With ``max_fpr`` < 1 only the start of the curve is computed, through its first point beyond ``max_fpr``.
    """
    bool_masks, values = _pixels(masks, maps)
    region_ids, n_regions = [], 0
    for m in bool_masks:
        ids, n = ndimage.label(m, structure=_EIGHT_CONNECTED)
        ids = ids.ravel()
        ids[ids > 0] += n_regions
        region_ids.append(ids)
        n_regions += n
    region = np.concatenate(region_ids)
    size = np.bincount(region, minlength=n_regions + 1)  # size[0]: the number of normal pixels
    n_normal = int(size[0])
    if n_regions == 0 or n_normal == 0:
        return None
    weight = np.zeros(n_regions + 1)
    weight[1:] = 1.0 / (size[1:] * n_regions)
    normal = region == 0

    if max_fpr < 1.0:
        # The pixels at or above the k-th highest normal score, k / n_normal > max_fpr, are a prefix of the
        # descending order that holds every curve point up to max_fpr and the first one beyond it.
        k = min(n_normal, int(np.floor(max_fpr * n_normal)) + 2)
        normal_values = values[normal]
        cut = np.partition(normal_values, n_normal - k)[n_normal - k]
        keep = values >= cut
        values, region, normal = values[keep], region[keep], normal[keep]

    order = np.argsort(values)[::-1]
    ordered = values[order]
    fpr = np.cumsum(normal[order]) / n_normal
    pro = np.cumsum(weight[region[order]])
    # One point per distinct threshold: the last pixel of each run of equal scores.
    last = np.flatnonzero(ordered[1:] != ordered[:-1])
    last = np.append(last, ordered.size - 1)
    fpr = np.concatenate(([0.0], fpr[last]))
    pro = np.concatenate(([0.0], np.clip(pro[last], 0.0, 1.0)))
    return fpr, pro


def pro_curve(masks: Sequence[np.ndarray], maps: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-region-overlap curve (Bergmann et al., MVTec AD, IJCV 2021) at every distinct threshold.

    Returns ``(fpr, pro)`` starting at (0, 0), fpr non-decreasing: fpr is the fraction of normal pixels at or
    above the threshold, pro the mean over connected defect regions (8-connectivity, all images) of the
    fraction of the region at or above it. ValueError when there is no defect region or no normal pixel.
    """
    points = _pro_points(masks, maps)
    if points is None:
        raise ValueError("PRO curve: needs at least one defect region and one normal pixel")
    return points


def aupro(masks: Sequence[np.ndarray], maps: Sequence[np.ndarray], max_fpr: float = 0.3) -> float | None:
    """Area under the PRO curve up to ``max_fpr``, divided by ``max_fpr`` (Bergmann et al., IJCV 2021).

    Exact: the curve is taken at every distinct threshold, the point at ``max_fpr`` is interpolated linearly
    and the area integrated by the trapezoid rule. In [0, 1]; None without a defect region or a normal pixel.
    """
    if not 0.0 < max_fpr <= 1.0:
        raise ConfigError(f"max_fpr: expected 0 < max_fpr <= 1, got {max_fpr}")
    points = _pro_points(masks, maps, max_fpr)
    if points is None:
        return None
    fpr, pro = points
    k = int(np.searchsorted(fpr, max_fpr, side="right"))  # points with fpr <= max_fpr
    x, y = fpr[:k], pro[:k]
    if k < fpr.size:  # fpr[k - 1] <= max_fpr < fpr[k]
        t = (max_fpr - fpr[k - 1]) / (fpr[k] - fpr[k - 1])
        x = np.append(x, max_fpr)
        y = np.append(y, pro[k - 1] + t * (pro[k] - pro[k - 1]))
    area = float(np.sum(np.diff(x) * (y[1:] + y[:-1])) / 2.0)
    return min(max(area / max_fpr, 0.0), 1.0)


@dataclass
class Confusion:
    """Counts of images at one threshold; a ratio with a zero denominator is 0.0 (``zero_division=0``)."""

    tp: int
    fp: int
    tn: int
    fn: int

    @classmethod
    def from_predictions(cls, labels: ArrayLike, predicted: ArrayLike) -> Confusion:
        """Counts from truths (1 = defective) and predictions (True = judged defective) of the same images."""
        y = np.asarray(labels).astype(bool)
        p = np.asarray(predicted).astype(bool)
        return cls(
            tp=int(np.sum(p & y)), fp=int(np.sum(p & ~y)), tn=int(np.sum(~p & ~y)), fn=int(np.sum(~p & y))
        )

    @staticmethod
    def _ratio(num: int, den: int) -> float:
        return num / den if den else 0.0

    def defined(self, name: str) -> float | None:
        """The ratio ``name`` (precision, recall, f1, false_reject_rate, escape_rate, accuracy), or ``None``
        where it is undefined: a zero denominator, or for F1 no true positive."""
        dens = {
            "precision": self.tp + self.fp,
            "recall": self.tp + self.fn,
            "f1": self.tp,
            "false_reject_rate": self.fp + self.tn,
            "escape_rate": self.fn + self.tp,
            "accuracy": self.tp + self.fp + self.tn + self.fn,
        }
        return getattr(self, name) if dens[name] else None

    @property
    def precision(self) -> float:
        return self._ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        return self._ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        return self._ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    @property
    def accuracy(self) -> float:
        return self._ratio(self.tp + self.tn, self.tp + self.fp + self.tn + self.fn)

    @property
    def false_reject_rate(self) -> float:
        """Fraction of good images rejected: fp / (fp + tn)."""
        return self._ratio(self.fp, self.fp + self.tn)

    @property
    def escape_rate(self) -> float:
        """Fraction of defective images accepted: fn / (fn + tp)."""
        return self._ratio(self.fn, self.fn + self.tp)


def _threshold(threshold: float) -> float:
    t = float(threshold)
    if np.isnan(t):
        raise ConfigError("threshold: NaN")
    return t


def confusion_at(labels: ArrayLike, scores: ArrayLike, threshold: float) -> Confusion:
    """Confusion counts when an image is predicted defective by the verdict rule (:func:`somad.decision.is_ng`)."""
    y, s = _labelled(labels, scores)
    return Confusion.from_predictions(y, is_ng(s, _threshold(threshold)))


def f1_at(labels: ArrayLike, scores: ArrayLike, threshold: float) -> float:
    """F1 = 2 tp / (2 tp + fp + fn) with ``score >= threshold`` predicted defective; 0.0 when undefined."""
    return confusion_at(labels, scores, threshold).f1


def best_f1_threshold(labels: ArrayLike, scores: ArrayLike) -> tuple[float, float]:
    """``(threshold, f1)`` maximising F1 over the scores as thresholds (``sklearn precision_recall_curve``).

    The threshold is one of the scores; among equal F1 the lowest threshold wins. ValueError without any
    defective image.
    """
    y, s = _labelled(labels, scores)
    if not y.any():
        raise ValueError("best F1: needs at least one defective image")
    precision, recall, thresholds = precision_recall_curve(y, s)
    precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
    den = precision + recall
    f1 = np.divide(2 * precision * recall, den, out=np.zeros_like(den), where=den > 0)
    i = int(np.argmax(f1))
    return float(thresholds[i]), float(f1[i])


def roc_curve_points(labels: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)`` of ``sklearn.metrics.roc_curve``; the first threshold is +inf.

    ValueError unless both good and defective images are present.
    """
    y, s = _labelled(labels, scores)
    if y.all() or not y.any():
        raise ValueError("ROC curve: needs both good and defective images")
    fpr, tpr, thresholds = roc_curve(y, s)
    return fpr, tpr, thresholds
