"""How well a grouping matches the true defect types: NMI, ARI and F1 after an optimal one-to-one matching of
clusters to classes (``scipy.optimize.linear_sum_assignment``)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def _pair(true: ArrayLike, pred: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    t, p = np.asarray(true), np.asarray(pred)
    if t.ndim != 1 or t.shape != p.shape:
        raise ValueError(f"labels: expected two 1-D arrays of one length, got {t.shape} and {p.shape}")
    if t.size == 0:
        raise ValueError("labels: empty input")
    return t, p


def contingency(true: ArrayLike, pred: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts (classes x clusters) with the sorted class and cluster values."""
    t, p = _pair(true, pred)
    classes, ti = np.unique(t, return_inverse=True)
    clusters, pi = np.unique(p, return_inverse=True)
    table = np.zeros((classes.size, clusters.size), np.int64)
    np.add.at(table, (ti, pi), 1)
    return table, classes, clusters


def nmi(true: ArrayLike, pred: ArrayLike) -> float:
    """Normalised mutual information (arithmetic mean of the entropies, scikit-learn's default)."""
    from sklearn.metrics import normalized_mutual_info_score

    t, p = _pair(true, pred)
    return float(normalized_mutual_info_score(t, p))


def ari(true: ArrayLike, pred: ArrayLike) -> float:
    """Adjusted Rand index (Hubert and Arabie)."""
    from sklearn.metrics import adjusted_rand_score

    t, p = _pair(true, pred)
    return float(adjusted_rand_score(t, p))


def hungarian_match(true: ArrayLike, pred: ArrayLike) -> dict:
    """The one-to-one matching of clusters to classes that maximises the images they share.

    Returns ``{class: cluster}`` for the matched classes (a class left without a cluster, when there are fewer
    clusters than classes, is absent).
    """
    from scipy.optimize import linear_sum_assignment

    table, classes, clusters = contingency(true, pred)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return {classes[r].item(): clusters[c].item() for r, c in zip(rows, cols, strict=True)}


def hungarian_f1(true: ArrayLike, pred: ArrayLike) -> float:
    """Macro F1 over the classes after :func:`hungarian_match`: class c matched to cluster k scores
    2 |c and k| / (|c| + |k|); an unmatched class scores 0."""
    t, p = _pair(true, pred)
    match = hungarian_match(t, p)
    f1 = []
    for c in np.unique(t):
        k = match.get(c.item())
        if k is None:
            f1.append(0.0)
            continue
        both = int(np.sum((t == c) & (p == k)))
        f1.append(2.0 * both / (int(np.sum(t == c)) + int(np.sum(p == k))))
    return float(np.mean(f1))


def clustering_metrics(true: ArrayLike, pred: ArrayLike) -> dict:
    """NMI, ARI, Hungarian F1 and matched accuracy of a clustering against ground-truth classes."""
    t, p = _pair(true, pred)
    match = hungarian_match(t, p)
    matched = sum(int(np.sum((t == c) & (p == k))) for c, k in match.items())
    return {
        "nmi": nmi(t, p),
        "ari": ari(t, p),
        "f1": hungarian_f1(t, p),
        "accuracy": matched / t.size,
        "n_images": int(t.size),
        "n_classes": int(np.unique(t).size),
        "n_clusters": int(np.unique(p).size),
    }
