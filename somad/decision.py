"""The verdict rule and the threshold policy, in one place for the command line, the window and every export.

An image is NG when its score reaches the threshold, ``score >= t``; a pixel is predicted defective when its
anomaly map reaches the same threshold (the rule, pixel by pixel). A model's stored thresholds are preferred in
the order of :data:`THRESHOLD_PREFERENCE`: best F1 where labels were seen, then the false-reject presets.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from somad.errors import ConfigError

#: The share of good images the ``*_false_reject_1pct`` thresholds reject.
FALSE_REJECT_RATE = 0.01

#: Stored thresholds in order of preference: best F1 where labels were seen, then false-reject presets.
THRESHOLD_PREFERENCE = ("best_f1", "false_reject_1pct", "train_false_reject_1pct")

#: Thresholds that come from an evaluation on labelled test images (rather than from the training images).
EVALUATED_THRESHOLDS = ("best_f1", "false_reject_1pct")


def is_ng(scores: np.ndarray | float, threshold: float) -> np.ndarray | bool:
    """NG where the score reaches the threshold: ``score >= threshold``, element-wise."""
    return np.asarray(scores) >= threshold


def verdict(score: float, threshold: float) -> str:
    """``"NG"`` or ``"OK"`` by :func:`is_ng`."""
    return "NG" if bool(is_ng(score, threshold)) else "OK"


def defect_mask(anomaly_map: np.ndarray, threshold: float) -> np.ndarray:
    """Pixels predicted defective: where the map reaches the threshold (the verdict's rule, pixel by pixel)."""
    return np.asarray(anomaly_map) >= threshold


def defect_area(anomaly_map: np.ndarray | None, threshold: float) -> int | None:
    """Pixels predicted defective (pass the map at the image's own size); ``None`` without a map."""
    if anomaly_map is None:
        return None
    return int(np.count_nonzero(defect_mask(anomaly_map, threshold)))


def preferred_threshold(thresholds: Mapping[str, float]) -> float | None:
    """The first stored threshold of :data:`THRESHOLD_PREFERENCE`, or ``None``."""
    return next((float(thresholds[k]) for k in THRESHOLD_PREFERENCE if k in thresholds), None)


def threshold_to_use(
    thresholds: Mapping[str, float], explicit: float | None = None, *, hint: str = ""
) -> float:
    """``explicit`` when given, else the model's preferred stored threshold; a model without one is an error
    (``hint`` says how to give one, e.g. ``"pass --threshold"``)."""
    if explicit is not None:
        if not math.isfinite(explicit):
            raise ConfigError(f"threshold: expected a finite number, got {explicit!r}")
        return float(explicit)
    value = preferred_threshold(thresholds)
    if value is None:
        raise ConfigError("the model holds no threshold" + (f": {hint}" if hint else ""))
    return value


def threshold_for_false_reject_rate(good_scores: np.ndarray, rate: float) -> float:
    """Smallest threshold t with (number of good scores >= t) / (number of good scores) <= ``rate``.

    With k the largest count allowed, t is the float just above the (k+1)-th largest good score
    (``np.nextafter``); with ``rate`` 0 that is just above the maximum, so no good image is rejected.
    The step is a float64 one: compare scores to t in float64, not after rounding t to float32.
    """
    if not 0.0 <= rate < 1.0:
        raise ConfigError(f"rate: expected 0 <= rate < 1, got {rate}")
    s = np.asarray(good_scores, dtype=np.float64)
    if s.ndim != 1 or s.size == 0 or np.isnan(s).any():
        raise ValueError(f"good_scores: expected a non-empty 1-D array without NaN, got shape {s.shape}")
    s = np.sort(s)[::-1]
    n = s.size
    k = int(np.floor(rate * n))
    # Correct the rounding of rate * n so that k / n <= rate < (k + 1) / n holds as computed.
    if (k + 1) / n <= rate:
        k += 1
    elif k / n > rate:
        k -= 1
    return float(np.nextafter(s[k], np.inf))


def false_reject_threshold(good_scores: np.ndarray, rate: float = FALSE_REJECT_RATE) -> float | None:
    """The threshold that rejects ``rate`` of ``good_scores``; ``None`` without good scores."""
    good = np.asarray(good_scores, dtype=np.float64)
    if good.size == 0:
        return None
    return float(threshold_for_false_reject_rate(good, rate))


def starting_threshold(
    thresholds: Mapping[str, float],
    good_scores: np.ndarray,
    best_f1: float | None,
    scores: np.ndarray,
) -> float:
    """The threshold a new scoring run starts at: a threshold the model carries from an evaluation (best F1,
    then 1 % false rejects on test images); else 1 % false rejects on these good scores; else any other stored
    threshold (the training images' own); else best F1 on these scores; else the highest score (0 for none)."""
    for key in EVALUATED_THRESHOLDS:
        value = thresholds.get(key)
        if value is not None and np.isfinite(value):
            return float(value)
    value = false_reject_threshold(good_scores)
    if value is not None:
        return value
    for value in thresholds.values():
        if value is not None and np.isfinite(value):
            return float(value)
    if best_f1 is not None:
        return float(best_f1)
    scores = np.asarray(scores)
    return float(np.max(scores)) if scores.size else 0.0
