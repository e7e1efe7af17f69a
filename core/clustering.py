"""Defect types: anomaly-weighted image descriptors, clustering into kinds, and clustering metrics.

Follows Ardelean and Weyrich, "Blind Localization and Clustering of Anomalies in Textures" (section 3.2):

* **Descriptors** (Eq. 2): ``D_i = sum_xy F_i^xy softmax(A_i / tau)^xy``. The feature map ``F_i`` (the model's
  patch features, ``(d, gh, gw)``) is smoothed with a Gaussian of ``feature_sigma`` = 2 feature cells and centred
  (by default on the detector's expectation of a normal cell, see :class:`DescriptorConfig`); the anomaly map ``A_i`` is taken at the feature
  grid's resolution and rescaled to [0, 1] with the minimum and maximum of the *whole set* of maps (not per
  image), so an image whose map is flat gets nearly uniform weights while one with a sharp peak is summarised
  by its peak. ``tau`` defaults to 2e-3, inside the paper's useful range 1.5e-3 .. 3e-3. A border of
  ``border`` cells is excluded from the rescaling and the softmax, as the paper discards image borders.
* **Clustering**: Ward agglomerative clustering (``scipy.cluster.hierarchy``) or k-means (scikit-learn) into a
  given number of clusters, or a number estimated from the largest gap between successive Ward merge heights
  or from the best silhouette. Images judged good at the detector's threshold are not clustered: they form
  their own group, label 0; defect clusters are 1..n, numbered by decreasing size.
* **Metrics**: NMI and ARI (scikit-learn) and F1 after an optimal one-to-one matching of clusters to classes
  (``scipy.optimize.linear_sum_assignment``, the Jonker-Volgenant algorithm the paper cites).

:func:`cluster_images` runs the whole pipeline on a fitted SOMAD :class:`~core.model.FittedModel`; ``contrastive=True``
first trains the projection head of :mod:`core.contrastive` and ``blind=True`` replaces the model's anomaly maps
by the training-free ones of :mod:`core.blind`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch
from numpy.typing import ArrayLike

from core.data import GOOD, UNLABELLED, is_mvtec_category, load_images, typed_images
from core.decision import defect_mask, is_ng, threshold_to_use
from core.errors import ConfigError, DataError
from core.extraction import FeatureSet
from core.maps import reduce_map, smooth
from core.progress import CancelCheck, Monitor, ProgressCallback

__all__ = [
    "GOOD_LABEL",
    "ClusterResult",
    "ClusteringConfig",
    "DescriptorConfig",
    "DescriptorSet",
    "Extraction",
    "anomaly_weights",
    "ari",
    "assign_with_good_group",
    "cluster_descriptors",
    "cluster_images",
    "cluster_set",
    "clustering_metrics",
    "collect_images",
    "compute_descriptors",
    "contact_sheet",
    "contingency",
    "default_border",
    "estimate_n_clusters",
    "extract_set",
    "hungarian_f1",
    "hungarian_match",
    "image_descriptors",
    "interior_mask",
    "maps_to_grid",
    "nmi",
    "prepare_features",
    "rescale_maps",
    "thumbnail",
    "ward_linkage",
    "with_descriptor_options",
]

#: The label of the group of images judged good; defect clusters are numbered from 1.
GOOD_LABEL = 0

Centre = Literal["image", "position", "model", "none"]
Method = Literal["ward", "kmeans"]
Estimate = Literal["gap", "silhouette"]


# ------------------------------------------------------------------------------------------------ descriptors
@dataclass(frozen=True)
class DescriptorConfig:
    """Options of the anomaly-weighted descriptors (Eq. 2).

    ``tau``: softmax temperature on maps rescaled to [0, 1] over the whole set. ``feature_sigma``: Gaussian
    smoothing of the feature map, in feature cells. ``border``: cells excluded at every side (``None``: a
    sixteenth of the grid's shorter side, at least 1).

    ``centre``: what is subtracted from the features so that a normal cell is about zero.

    * ``"model"`` (default): the detector's own expectation of a normal cell there, i.e. the weight of the
      cell's best-matching SOM node (in blind mode, the VAE's reconstruction), subtracted before smoothing; the
      descriptor then describes how the defect *differs* from normal, not the part it sits on. This is a
      choice of this implementation, made because it separated defect kinds best on the synthetic kinds and
      on MVTec bottle with untrained features (see the benchmark).
    * ``"image"``: each image's own mean feature after smoothing: the paper's "centered to have the mean equal
      0", read per feature map (textures are stationary, so the mean is the normal texture).
    * ``"position"``: the set's mean feature at each grid cell (aligned objects).
    * ``"none"``: nothing. A constant shift of every feature moves every descriptor by the same vector and
      changes no clustering, so centring with one mean over the whole set is the same as ``"none"``.
    """

    tau: float = 2e-3
    feature_sigma: float = 2.0
    border: int | None = None
    centre: Centre = "model"

    def validate(self) -> DescriptorConfig:
        if not self.tau > 0 or not math.isfinite(self.tau):
            raise ConfigError(f"tau: expected a positive temperature, got {self.tau}")
        if self.feature_sigma < 0:
            raise ConfigError(f"feature_sigma: expected >= 0, got {self.feature_sigma}")
        if self.border is not None and self.border < 0:
            raise ConfigError(f"border: expected >= 0 cells, got {self.border}")
        if self.centre not in ("image", "position", "model", "none"):
            raise ConfigError(f"centre: expected image, position, model or none, got {self.centre!r}")
        return self


def default_border(grid: tuple[int, int]) -> int:
    """Cells excluded at each side by default: a sixteenth of the shorter side, at least one."""
    return max(1, round(min(grid) / 16))


def _border(config: DescriptorConfig, grid: tuple[int, int]) -> int:
    b = default_border(grid) if config.border is None else int(config.border)
    if 2 * b >= min(grid):
        raise ConfigError(f"border: {b} cells leave nothing of a {grid[0]} x {grid[1]} grid")
    return b


def interior_mask(grid: tuple[int, int], border: int) -> np.ndarray:
    """(gh, gw) bool: True inside, False on the ``border`` outer cells."""
    mask = np.zeros(grid, bool)
    mask[border : grid[0] - border, border : grid[1] - border] = True
    return mask


def maps_to_grid(maps: Sequence[np.ndarray], grid: tuple[int, int]) -> np.ndarray:
    """Anomaly maps of any sizes as one (N, gh, gw) float32 array (area averaging when reducing)."""
    gh, gw = grid
    out = np.empty((len(maps), gh, gw), np.float32)
    for i, m in enumerate(maps):
        m = np.asarray(m, np.float32)
        if m.shape != (gh, gw):
            shrink = m.shape[0] >= gh and m.shape[1] >= gw
            m = cv2.resize(m, (gw, gh), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        out[i] = m
    return out


def rescale_maps(
    maps: ArrayLike, interior: np.ndarray | None = None, limits: tuple[float, float] | None = None
) -> tuple[np.ndarray, tuple[float, float]]:
    """Maps (N, h, w) rescaled to [0, 1] with one minimum and maximum for the whole set (not per image).

    ``limits`` (lo, hi) are the set's extremes over the ``interior`` cells unless given; values outside them are
    clipped. Returns the rescaled maps and the limits used.
    """
    a = np.asarray(maps, np.float64)
    if a.ndim != 3 or a.shape[0] == 0:
        raise ValueError(f"maps: expected a non-empty (N, h, w) array, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError("maps: contain NaN or infinite values")
    if limits is None:
        values = a[:, interior] if interior is not None else a
        limits = (float(values.min()), float(values.max()))
    lo, hi = limits
    span = hi - lo if hi > lo else 1.0
    return np.clip((a - lo) / span, 0.0, 1.0), (float(lo), float(hi))


def anomaly_weights(maps01: ArrayLike, tau: float, interior: np.ndarray | None = None) -> np.ndarray:
    """Softmax of ``maps01 / tau`` over each image's ``interior`` cells; 0 elsewhere. (N, h, w), rows sum to 1."""
    a = np.asarray(maps01, np.float64)
    if interior is None:
        interior = np.ones(a.shape[1:], bool)
    logits = np.where(interior[None], a / tau, -np.inf)
    logits -= logits.max(axis=(1, 2), keepdims=True)
    w = np.exp(logits)
    return w / w.sum(axis=(1, 2), keepdims=True)


def prepare_features(
    features: torch.Tensor, sigma: float, centre: Centre, reference: torch.Tensor | None = None
) -> torch.Tensor:
    """Smooth (N, d, h, w) features spatially with a Gaussian of ``sigma`` cells, then centre them.

    With ``centre="model"`` the ``reference`` (N, d, h, w), the detector's expectation of each normal cell, is
    subtracted before smoothing.
    """
    x = features.float()
    if centre == "model":
        if reference is None:
            raise ConfigError("centre='model' needs the model's reference features")
        x = x - reference.float()
    n, d, h, w = x.shape
    if sigma > 0:
        # Reflect padding needs the kernel's radius below the grid's side.
        sigma = min(float(sigma), (min(h, w) - 1) / 4.0)
        if sigma > 0:
            x = smooth(x.reshape(n * d, h, w), sigma).reshape(n, d, h, w)
    if centre == "image":
        x = x - x.mean(dim=(2, 3), keepdim=True)
    elif centre == "position":
        x = x - x.mean(dim=0, keepdim=True)
    return x


def image_descriptors(
    features: torch.Tensor | np.ndarray,
    maps: ArrayLike,
    config: DescriptorConfig | None = None,
    *,
    limits: tuple[float, float] | None = None,
    reference: torch.Tensor | None = None,
) -> np.ndarray:
    """Eq. 2: one descriptor (N, d) per image from features (N, d, gh, gw) and anomaly maps (N, gh, gw).

    Maps are in any units (raw Mahalanobis distances, FCA scores); they are rescaled to [0, 1] over the set
    (or with ``limits``) here. ``reference`` is needed with ``centre="model"`` only.
    """
    config = (config or DescriptorConfig()).validate()
    f = torch.as_tensor(features)
    if f.ndim != 4:
        raise ValueError(f"features: expected (N, d, h, w), got shape {tuple(f.shape)}")
    grid = (int(f.shape[2]), int(f.shape[3]))
    a = np.asarray(maps, np.float64)
    if a.shape != (f.shape[0], *grid):
        raise ValueError(f"maps: expected shape {(f.shape[0], *grid)}, got {a.shape}")
    inside = interior_mask(grid, _border(config, grid))
    maps01, _ = rescale_maps(a, inside, limits)
    weights = torch.as_tensor(anomaly_weights(maps01, config.tau, inside), dtype=torch.float64)
    prepared = prepare_features(f, config.feature_sigma, config.centre, reference).double().cpu()
    return torch.einsum("ndhw,nhw->nd", prepared, weights).numpy()


# ------------------------------------------------------------------------------------------------- clustering
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


def _by_size(raw: np.ndarray, start: int) -> np.ndarray:
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
    return _by_size(_raw_clusters(x, n, method, seed), start)


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


# ---------------------------------------------------------------------------------------------------- metrics
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


# --------------------------------------------------------------------------------------------------- pipeline
@dataclass(frozen=True)
class ClusteringConfig:
    """Options of :func:`cluster_images` besides the number of clusters."""

    descriptors: DescriptorConfig = field(default_factory=DescriptorConfig)
    method: Method = "ward"
    estimate: Estimate = "gap"
    max_n: int = 10
    seed: int = 0
    #: Longest side of the maps kept in the result (for thumbnails and contact sheets).
    keep_map_side: int = 256

    def validate(self) -> ClusteringConfig:
        self.descriptors.validate()
        if self.method not in ("ward", "kmeans"):
            raise ConfigError(f"method: expected ward or kmeans, got {self.method!r}")
        if self.estimate not in ("gap", "silhouette"):
            raise ConfigError(f"estimate: expected gap or silhouette, got {self.estimate!r}")
        if self.max_n < 1:
            raise ConfigError(f"max_n: expected at least 1, got {self.max_n}")
        return self


@dataclass
class ClusterResult:
    """Defect types found in a set of images.

    ``labels[i]`` is 0 for the images judged good (score below ``threshold``; ``None`` in blind mode) and 1..``n_clusters`` for the defect
    clusters, numbered by decreasing size. ``maps`` are the anomaly maps used (raw units of ``mode``'s detector,
    reduced to at most ``keep_map_side`` pixels) and ``map_threshold`` the level that outlines defects on them.
    ``defect_types`` holds the ground truth (folder names) when known; ``metrics`` compares the two.
    """

    paths: list[Path | None]
    labels: np.ndarray
    n_clusters: int
    scores: np.ndarray
    threshold: float | None
    descriptors: np.ndarray
    maps: list[np.ndarray]
    map_threshold: float
    mode: str
    defect_types: list[str] | None = None
    metrics: dict | None = None
    notes: list[str] = field(default_factory=list)

    def members(self) -> dict[int, list[int]]:
        """Image indices of each label present, the good group first."""
        return {int(k): np.flatnonzero(self.labels == k).tolist() for k in np.unique(self.labels)}

    def counts(self) -> dict[int, int]:
        return {k: len(v) for k, v in self.members().items()}

    def to_dict(self) -> dict:
        return {
            "mode": self.mode,
            "n_clusters": self.n_clusters,
            "threshold": self.threshold,
            "metrics": self.metrics,
            "notes": self.notes,
            "clusters": {
                str(k): [None if self.paths[i] is None else str(self.paths[i]) for i in v]
                for k, v in self.members().items()
            },
            "images": [
                {
                    "path": None if p is None else str(p),
                    "cluster": int(label),
                    "score": float(score),
                    "defect_type": None if self.defect_types is None else self.defect_types[i],
                }
                for i, (p, label, score) in enumerate(zip(self.paths, self.labels, self.scores, strict=True))
            ],
        }


def collect_images(data: str | Path) -> tuple[list[Path], list[str] | None]:
    """Images to cluster and their defect types (folder names) when known.

    An MVTec AD category gives its test set (``test/<type>``); any other folder gives the images in its
    sub-folders (typed by the sub-folder's name) and those lying directly in it (unlabelled). Types are
    ``None`` unless every image has one.
    """
    root = Path(data).expanduser()
    if not root.is_dir():
        raise DataError(root, "is not a folder" if root.exists() else "does not exist")
    folder = root / "test" if is_mvtec_category(root) else root
    samples = typed_images(folder)
    types = [s.defect_type for s in samples]
    return [s.path for s in samples], (None if UNLABELLED in types else types)


@dataclass
class Extraction:
    """What the backbone and the detector say about a set of images, reusable by several clustering runs.

    Build it with :func:`extract_set`. ``kept`` are the indices of the readable images among those asked for.
    """

    features: torch.Tensor  # (N, d, gh, gw) on the CPU
    reference: torch.Tensor | None  # SOM weights of each cell's best node, (N, d, gh, gw)
    grid_maps: list[np.ndarray]
    maps: list[np.ndarray]  # reduced maps at each image's aspect
    scores: list[float]
    shapes: list[tuple[int, int]]
    kept: list[int]
    errors: list[DataError]


def _read(chunk: list) -> tuple[list[np.ndarray], list[int], list[DataError]]:
    images, ok, errors = [], [], []
    for i, item in enumerate(chunk):
        if isinstance(item, np.ndarray):
            images.append(item)
            ok.append(i)
            continue
        read, _, failed = load_images([item])
        images += read
        ok += [i] if read else []
        errors += failed
    return images, ok, errors


def extract_set(
    model,
    images: Sequence[str | Path | np.ndarray],
    *,
    score: bool = True,
    reference: bool = True,
    keep_map_side: int = 256,
    progress: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
) -> Extraction:
    """Backbone features and (``score``) the model's anomaly maps and scores of ``images``, once.

    ``reference`` also keeps each cell's best-matching SOM node weight (needed by ``centre="model"``).
    """
    return _extract(
        model, images, Monitor(progress, cancel), score=score, reference=reference, keep_side=keep_map_side
    )


def _extract(model, items: Sequence, monitor: Monitor, *, score: bool, reference: bool, keep_side: int):
    """Features of every readable image and, with ``score``, the model's maps at each image's size.

    Scoring reuses the extracted features and :meth:`~core.model.FittedModel.results`, so the image scores and
    verdicts equal the ones the CLI and window report. Unreadable files are skipped and reported.
    """
    out = Extraction([], [] if reference else None, [], [], [], [], [], [])  # type: ignore[arg-type]
    feats: list[torch.Tensor] = []
    batch = model.config.features.batch_size
    weights = model.som_weights
    for start in range(0, len(items), batch):
        monitor.step("features", start, len(items))
        images, ok, failed = _read(list(items[start : start + batch]))
        out.errors += failed
        if not images:
            continue
        with torch.inference_mode():
            f = model.extractor(images)
            if score:
                results = model.results(FeatureSet(f.permute(0, 2, 3, 1)), [im.shape[:2] for im in images])
                maps = [r.anomaly_map for r in results]
                best = torch.from_numpy(np.stack([r.best_node for r in results])).long()
                out.scores += [r.score for r in results]
                out.grid_maps += list(maps_to_grid(maps, (int(f.shape[2]), int(f.shape[3]))))
                out.maps += [reduce_map(m, keep_side) for m in maps]
                if reference:
                    out.reference.append(weights[best.to(weights.device)].permute(0, 3, 1, 2).cpu())
        feats.append(f.cpu())
        out.shapes += [tuple(im.shape[:2]) for im in images]
        out.kept += [start + i for i in ok]
    monitor.step("features", len(items), len(items))
    if not feats:
        raise DataError(None, "none of the images could be read")
    out.features = torch.cat(feats)
    if reference and out.reference:
        out.reference = torch.cat(out.reference)
    return out


def _model_threshold(model, threshold: float | None) -> float:
    return threshold_to_use(model.thresholds, threshold, hint="pass one")


@dataclass
class DescriptorSet:
    """Everything clustering needs, computed once: descriptors, image scores and maps of a set of images.

    ``threshold`` is the image-level threshold of the good group (``None`` in blind mode, where the good group
    is the cluster with the lowest mean score); ``map_threshold`` outlines defects on ``maps``.
    """

    paths: list[Path | None]
    descriptors: np.ndarray
    scores: np.ndarray
    threshold: float | None
    maps: list[np.ndarray]
    map_threshold: float
    mode: str
    defect_types: list[str] | None = None
    notes: list[str] = field(default_factory=list)


def compute_descriptors(
    model,
    images: Sequence[str | Path | np.ndarray],
    *,
    defect_types: Sequence[str] | None = None,
    threshold: float | None = None,
    contrastive: bool = False,
    blind: bool = False,
    config: ClusteringConfig | None = None,
    contrastive_config=None,
    blind_config=None,
    progress: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
    on_error=None,
    extraction: Extraction | None = None,
) -> DescriptorSet:
    """The expensive half of :func:`cluster_images`: features, maps, (contrastive head) and descriptors.

    ``extraction`` (from :func:`extract_set` on the same ``images``) skips the backbone pass.
    """
    config = (config or ClusteringConfig()).validate()
    monitor = Monitor(progress, cancel)
    if defect_types is not None and len(defect_types) != len(images):
        raise ValueError(f"defect_types: expected {len(images)} entries, got {len(defect_types)}")
    dconf = config.descriptors
    want_reference = dconf.centre == "model" and not blind
    ex = extraction
    if ex is None:
        ex = _extract(
            model, images, monitor, score=not blind, reference=want_reference, keep_side=config.keep_map_side
        )
    elif (not blind and not ex.grid_maps) or (want_reference and ex.reference is None):
        raise ConfigError("extraction: made without the maps or the reference this run needs")
    for err in ex.errors:
        if on_error is not None:
            on_error(err)
    features, reference = ex.features, ex.reference
    grid = (int(features.shape[2]), int(features.shape[3]))
    inside = interior_mask(grid, _border(dconf, grid))
    notes = ["random-init backbone: untrained features"] if model.random_init else []

    if blind:
        from core.blind import BlindConfig, blind_analysis, pixel_threshold

        bconf = (blind_config or BlindConfig()).validate()
        maps_np, reconstruction = blind_analysis(
            features, bconf, device=model.device, progress=progress, cancel=cancel
        )
        reference = reconstruction if dconf.centre == "model" else None
        scores = np.array([float(m[inside].max()) for m in maps_np])
        pixel_t = pixel_threshold(maps_np, inside, bconf.pixel_quantile)
        kept_maps = [
            reduce_map(cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR), config.keep_map_side)
            for m, (h, w) in zip(maps_np, ex.shapes, strict=True)
        ]
        image_t = None
    else:
        maps_np = np.stack(ex.grid_maps)
        scores = np.asarray(ex.scores, np.float64)
        image_t = _model_threshold(model, threshold)
        pixel_t = image_t
        kept_maps = ex.maps

    limits = rescale_maps(maps_np, inside)[1]
    if contrastive:
        from core.contrastive import ContrastiveConfig, project, train_head

        cconf = (contrastive_config or ContrastiveConfig()).validate()
        plain = image_descriptors(features, maps_np, dconf, limits=limits, reference=reference)
        cell_t = pixel_t
        if cconf.cell_quantile is not None:
            cell_t = max(cell_t, float(np.quantile(maps_np[:, inside], cconf.cell_quantile)))
        head = train_head(
            features,
            (maps_np >= cell_t) & inside[None],
            plain,
            cconf,
            interior=inside,
            device=model.device,
            progress=progress,
            cancel=cancel,
        )
        features = project(head, features, device=model.device)
        reference = None if reference is None else project(head, reference, device=model.device)
    monitor.step("descriptors", 0, 1)
    descriptors = image_descriptors(features, maps_np, dconf, limits=limits, reference=reference)
    monitor.step("descriptors", 1, 1)
    return DescriptorSet(
        paths=[None if isinstance(images[i], np.ndarray) else Path(images[i]) for i in ex.kept],
        descriptors=descriptors,
        scores=scores,
        threshold=image_t,
        maps=kept_maps,
        map_threshold=float(pixel_t),
        mode="blind" if blind else ("contrastive" if contrastive else "plain"),
        defect_types=None if defect_types is None else [defect_types[i] for i in ex.kept],
        notes=notes,
    )


def cluster_set(
    data: DescriptorSet, n: int | None = None, config: ClusteringConfig | None = None
) -> ClusterResult:
    """The cheap half of :func:`cluster_images`: cluster computed descriptors into ``n`` defect clusters."""
    config = (config or ClusteringConfig()).validate()
    kwargs = {"method": config.method, "estimate": config.estimate, "seed": config.seed}
    notes = list(data.notes)
    scores = data.scores
    if data.threshold is None:
        total = None if n is None else n + 1
        raw = cluster_descriptors(data.descriptors, total, start=1, max_n=config.max_n + 1, **kwargs)
        good = min(np.unique(raw), key=lambda k: float(scores[raw == k].mean()))
        labels = np.full(raw.shape, GOOD_LABEL, np.int64)
        rest = raw != good
        if rest.any():
            labels[rest] = _by_size(raw[rest], 1)
        notes.append(
            "blind: every image is clustered; the cluster with the lowest mean score is the good group"
        )
    else:
        labels = assign_with_good_group(
            data.descriptors, scores, data.threshold, n, max_n=config.max_n, **kwargs
        )
    metrics = None
    if data.defect_types is not None:
        t = np.asarray(data.defect_types)
        metrics = {"all": clustering_metrics(t, labels)}
        defective = t != GOOD
        if defective.any():
            metrics["defective"] = clustering_metrics(t[defective], labels[defective])
    return ClusterResult(
        paths=list(data.paths),
        labels=labels,
        n_clusters=int(np.unique(labels[labels != GOOD_LABEL]).size),
        scores=np.asarray(scores, np.float64),
        threshold=data.threshold,
        descriptors=data.descriptors,
        maps=data.maps,
        map_threshold=data.map_threshold,
        mode=data.mode,
        defect_types=data.defect_types,
        metrics=metrics,
        notes=notes,
    )


def cluster_images(
    model,
    images: Sequence[str | Path | np.ndarray],
    *,
    n: int | None = None,
    defect_types: Sequence[str] | None = None,
    threshold: float | None = None,
    contrastive: bool = False,
    blind: bool = False,
    config: ClusteringConfig | None = None,
    contrastive_config=None,
    blind_config=None,
    progress: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
    on_error=None,
) -> ClusterResult:
    """Group images by defect type with the features of ``model``'s backbone.

    ``images`` are files or RGB uint8 arrays. Without ``blind``, the model's anomaly maps weight the
    descriptors and images scoring below ``threshold`` (default: the model's) form the good group (label 0);
    the others are clustered into ``n`` clusters (estimated when ``None``). With ``blind``, maps come from
    :func:`core.blind.blind_analysis` (no use of the model's statistics or threshold): every image is clustered
    into ``n + 1`` clusters and the one with the lowest mean image score becomes the good group. With
    ``contrastive``, a projection head is trained first (:mod:`core.contrastive`) and descriptors are computed
    through it. ``defect_types`` (ground truth, "good" for good images) adds metrics to the result.
    Unreadable files are skipped and passed to ``on_error``.
    """
    data = compute_descriptors(
        model,
        images,
        defect_types=defect_types,
        threshold=threshold,
        contrastive=contrastive,
        blind=blind,
        config=config,
        contrastive_config=contrastive_config,
        blind_config=blind_config,
        progress=progress,
        cancel=cancel,
        on_error=on_error,
    )
    monitor = Monitor(progress, cancel)
    monitor.step("clustering", 0, 1)
    result = cluster_set(data, n, config)
    monitor.step("clustering", 1, 1)
    return result


def with_descriptor_options(config: ClusteringConfig, **changes) -> ClusteringConfig:
    """A copy of ``config`` with some descriptor options changed (``tau=...``, ``centre=...``)."""
    return replace(config, descriptors=replace(config.descriptors, **changes))


# --------------------------------------------------------------------------------------------------- pictures
def thumbnail(
    image: np.ndarray, anomaly_map: np.ndarray | None, threshold: float | None, side: int
) -> np.ndarray:
    """A ``side`` x ``side`` RGB thumbnail (letterboxed) with the outline of ``map >= threshold`` in red."""
    from core import render

    h, w = image.shape[:2]
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    if anomaly_map is not None and threshold is not None and np.isfinite(threshold):
        m = cv2.resize(np.asarray(anomaly_map, np.float32), size, interpolation=cv2.INTER_LINEAR)
        small = render.draw_contours(small, defect_mask(m, threshold), render.PREDICTED_COLOUR, 1)
    out = np.full((side, side, 3), 32, np.uint8)
    y0, x0 = (side - size[1]) // 2, (side - size[0]) // 2
    out[y0 : y0 + size[1], x0 : x0 + size[0]] = small
    return out


def contact_sheet(thumbs: Sequence[np.ndarray], captions: Sequence[str], columns: int = 8) -> np.ndarray:
    """Thumbnails in rows of ``columns`` with a caption band under each, on a white background."""
    if not thumbs:
        return np.full((32, 32, 3), 255, np.uint8)
    side = thumbs[0].shape[0]
    band, gap = 16, 4
    cols = min(columns, len(thumbs))
    rows = -(-len(thumbs) // cols)
    sheet = np.full((rows * (side + band + gap) + gap, cols * (side + gap) + gap, 3), 255, np.uint8)
    for k, (t, text) in enumerate(zip(thumbs, captions, strict=True)):
        r, c = divmod(k, cols)
        y, x = gap + r * (side + band + gap), gap + c * (side + gap)
        sheet[y : y + side, x : x + side] = t
        label = text if len(text) <= side // 7 else "..." + text[-(side // 7 - 3) :]
        cv2.putText(sheet, label, (x + 1, y + side + 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (20, 20, 20), 1)
    return sheet
