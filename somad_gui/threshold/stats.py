"""Vectorised verdict statistics at a threshold (no Qt): cheap enough to recompute on every slider step."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

import somad
from somad_gui.store import NG, OK, ResultStore


@dataclass(frozen=True)
class Summary:
    """OK / NG counts of the scored test images and the confusion counts of the labelled ones; ratios are
    ``None`` where undefined (shown as n/a)."""

    ok: int
    ng: int
    unscored: int
    labelled: int
    confusion: somad.metrics.Confusion = field(default_factory=lambda: somad.metrics.Confusion(0, 0, 0, 0))

    @property
    def tp(self) -> int:
        return self.confusion.tp

    @property
    def fp(self) -> int:
        return self.confusion.fp

    @property
    def tn(self) -> int:
        return self.confusion.tn

    @property
    def fn(self) -> int:
        return self.confusion.fn

    @property
    def precision(self) -> float | None:
        return self.confusion.defined("precision")

    @property
    def recall(self) -> float | None:
        return self.confusion.defined("recall")

    @property
    def f1(self) -> float | None:
        return self.confusion.defined("f1")

    @property
    def fpr(self) -> float | None:
        return self.confusion.defined("false_reject_rate")

    @property
    def tpr(self) -> float | None:
        return self.recall


def summarize(store: ResultStore) -> Summary:
    """OK/NG counts over scored test images and, for labelled ones, the confusion counts."""
    test = store.is_test
    verdicts = store.verdicts[test]
    labels = store.labels[test]
    scored = verdicts >= 0
    known = scored & (labels >= 0)
    v, lab = verdicts[known], labels[known]
    return Summary(
        ok=int(np.count_nonzero(verdicts == OK)),
        ng=int(np.count_nonzero(verdicts == NG)),
        unscored=int(np.count_nonzero(~scored)),
        labelled=int(np.count_nonzero(known)),
        confusion=somad.metrics.Confusion.from_predictions(lab == 1, v == NG),
    )


def score_range(scores: np.ndarray, threshold: float = math.nan, margin: float = 0.05) -> tuple[float, float]:
    """A display range covering every score and the threshold, with a margin."""
    values = np.asarray(scores, dtype=np.float64)
    values = values[np.isfinite(values)]
    if math.isfinite(threshold):
        values = np.append(values, threshold)
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = float(values.min()), float(values.max())
    span = hi - lo if hi > lo else max(abs(hi), 1.0)
    return lo - margin * span, hi + margin * span


def histogram_edges(scores: np.ndarray, bins: int = 30) -> np.ndarray:
    lo, hi = score_range(scores, margin=0.02)
    return np.linspace(lo, hi, bins + 1)


def value_to_step(value: float, lo: float, hi: float, steps: int) -> int:
    if hi <= lo:
        return 0
    return round(min(max((value - lo) / (hi - lo), 0.0), 1.0) * steps)


def step_to_value(step: int, lo: float, hi: float, steps: int) -> float:
    return lo + (hi - lo) * step / steps if steps else lo
