"""Grouping descriptors into defect types: Ward or k-means, the number of groups estimated from the largest gap
between Ward merge heights or the best silhouette; images judged good form their own group (label 0)."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from somad.decision import is_ng
from somad.errors import ConfigError

#: The label of the group of images judged good; defect clusters are numbered from 1.
GOOD_LABEL = 0

Method = Literal["ward", "kmeans"]
Estimate = Literal["gap", "silhouette"]


def ward_linkage(descriptors: ArrayLike) -> np.ndarray:
    """SciPy's Ward linkage matrix of the descriptors (N >= 2)."""
    from scipy.cluster.hierarchy import linkage

    x = np.asarray(descriptors, np.float64)
    return linkage(x, method="ward")


def _gap_estimate(x: np.ndarray, min_n: int, max_n: int) -> int:
    """The n whose cut of the Ward tree falls in the largest gap between successive merge heights."""
    heights = ward_linkage(x)[:, 2]
    n_points = x.shape[0]
    best_n, best_gap = min_n, -1.0
    for n in range(min_n, max_n + 1):
        # Keeping n clusters performs the first N - n merges; the gap is to the next merge, not performed.
        gap = heights[n_points - n] - heights[n_points - n - 1]
        if gap > best_gap + 1e-12:
            best_n, best_gap = n, float(gap)
    return best_n


def _silhouette_estimate(x: np.ndarray, min_n: int, max_n: int, method: Method, seed: int) -> int:
    from sklearn.metrics import silhouette_score

    best_n, best_score = min_n, -math.inf
    for n in range(min_n, max_n + 1):
        labels = _raw_clusters(x, n, method, seed)
        if len(np.unique(labels)) < 2:
            continue
        s = float(silhouette_score(x, labels))
        if s > best_score + 1e-12:
            best_n, best_score = n, s
    return best_n


def estimate_n_clusters(
    descriptors: ArrayLike,
    *,
    max_n: int = 10,
    min_n: int = 2,
    estimate: Estimate = "gap",
    method: Method = "ward",
    seed: int = 0,
) -> int:
    """Number of clusters in ``min_n .. max_n`` (capped at N - 1): largest Ward gap or best silhouette."""
    x = np.asarray(descriptors, np.float64)
    n_points = x.shape[0]
    if n_points < 3:
        return max(1, n_points)
    max_n = min(max_n, n_points - 1)
    min_n = max(1, min(min_n, max_n))
    if max_n < 2:
        return max_n
    if estimate == "gap":
        return _gap_estimate(x, max(min_n, 2), max_n)
    if estimate == "silhouette":
        return _silhouette_estimate(x, max(min_n, 2), max_n, method, seed) if max_n >= 2 else 1
    raise ConfigError(f"estimate: expected gap or silhouette, got {estimate!r}")


def _raw_clusters(x: np.ndarray, n: int, method: Method, seed: int) -> np.ndarray:
    if method == "ward":
        from scipy.cluster.hierarchy import fcluster

        return fcluster(ward_linkage(x), t=n, criterion="maxclust").astype(np.int64)
    if method == "kmeans":
        from sklearn.cluster import KMeans

        return KMeans(n_clusters=n, n_init=10, random_state=seed).fit_predict(x).astype(np.int64)
    raise ConfigError(f"method: expected ward or kmeans, got {method!r}")


def number_by_size(raw: np.ndarray, start: int) -> np.ndarray:
    """Relabel clusters start, start + 1, ... by decreasing size (ties: first appearance)."""
    ids, first, counts = np.unique(raw, return_index=True, return_counts=True)
    order = sorted(range(len(ids)), key=lambda i: (-counts[i], first[i]))
    mapping = {ids[i]: start + rank for rank, i in enumerate(order)}
    return np.array([mapping[v] for v in raw], np.int64)


def cluster_descriptors(
    descriptors: ArrayLike,
    n: int | None = None,
    *,
    method: Method = "ward",
    estimate: Estimate = "gap",
    max_n: int = 10,
    seed: int = 0,
    start: int = 1,
) -> np.ndarray:
    """Cluster labels ``start .. start + n - 1`` of the descriptors (N, D), numbered by decreasing size.

    ``n`` is estimated (:func:`estimate_n_clusters`) when ``None``; it is capped at the number of descriptors.
    """
    x = np.asarray(descriptors, np.float64)
    if x.ndim != 2:
        raise ValueError(f"descriptors: expected (N, D), got shape {x.shape}")
    if x.shape[0] == 0:
        return np.zeros(0, np.int64)
    if n is not None and n < 1:
        raise ConfigError(f"n: expected at least 1 cluster, got {n}")
    if x.shape[0] == 1:
        return np.full(1, start, np.int64)
    if n is None:
        n = estimate_n_clusters(x, max_n=max_n, estimate=estimate, method=method, seed=seed)
    n = min(n, x.shape[0])
    if n == 1:
        return np.full(x.shape[0], start, np.int64)
    return number_by_size(_raw_clusters(x, n, method, seed), start)


def assign_with_good_group(
    descriptors: ArrayLike,
    scores: ArrayLike,
    threshold: float,
    n: int | None = None,
    **kwargs,
) -> np.ndarray:
    """Labels: 0 for images scoring below ``threshold`` (judged good), 1..n for clusters of the others."""
    x = np.asarray(descriptors, np.float64)
    s = np.asarray(scores, np.float64)
    labels = np.full(x.shape[0], GOOD_LABEL, np.int64)
    defective = is_ng(s, threshold)
    if defective.any():
        labels[defective] = cluster_descriptors(x[defective], n, start=1, **kwargs)
    return labels
