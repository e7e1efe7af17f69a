"""The defect-type pipeline on a fitted SOMAD model: read and score the images, compute descriptors, group them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
import torch

from somad.data import GOOD, UNLABELLED, is_mvtec_category, typed_images
from somad.decision import threshold_to_use
from somad.defects.descriptors import (
    DescriptorConfig,
    border_of,
    image_descriptors,
    interior_mask,
    maps_to_grid,
    rescale_maps,
)
from somad.defects.grouping import (
    GOOD_LABEL,
    Estimate,
    Method,
    assign_with_good_group,
    cluster_descriptors,
    number_by_size,
)
from somad.defects.scores import clustering_metrics
from somad.errors import ConfigError, DataError
from somad.extraction import FeatureSet, extract_feature_set
from somad.maps import reduce_map
from somad.progress import CancelCheck, Monitor, ProgressCallback


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

    Scoring reuses the extracted features and :meth:`~somad.model.FittedModel.results`, so the image scores and
    verdicts equal the ones the CLI and window report. Unreadable files are skipped and reported.
    """
    out = Extraction([], [] if reference else None, [], [], [], [], [], [])  # type: ignore[arg-type]
    weights = model.som_weights

    def score_batch(images: list[np.ndarray], grid: torch.Tensor) -> None:
        results = model.results(FeatureSet(grid), [im.shape[:2] for im in images])
        maps = [r.anomaly_map for r in results]
        out.scores += [r.score for r in results]
        out.grid_maps += list(maps_to_grid(maps, (int(grid.shape[1]), int(grid.shape[2]))))
        out.maps += [reduce_map(m, keep_side) for m in maps]
        if reference:
            best = torch.from_numpy(np.stack([r.best_node for r in results])).long()
            nodes = weights[best.to(weights.device)].permute(0, 3, 1, 2).cpu()
            if nodes.shape[-2:] != grid.shape[1:3]:  # the map's patches are aggregated on a coarser grid
                nodes = torch.nn.functional.interpolate(nodes, size=tuple(grid.shape[1:3]), mode="nearest")
            out.reference.append(nodes)

    with torch.inference_mode():
        ex = extract_feature_set(
            model.extractor, list(items), monitor, pooled=False, on_batch=score_batch if score else None
        )
    out.errors = ex.errors
    if not ex.kept:
        raise DataError(None, "none of the images could be read")
    out.features = ex.features.patches.permute(0, 3, 1, 2).contiguous()
    out.shapes = [tuple(s) for s in ex.sizes]
    out.kept = ex.kept
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
    inside = interior_mask(grid, border_of(dconf, grid))
    notes = ["random-init backbone: untrained features"] if model.random_init else []

    if blind:
        from somad.defects.blind import BlindConfig, blind_analysis, pixel_threshold

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
        from somad.defects.contrastive import ContrastiveConfig, project, train_head

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
            labels[rest] = number_by_size(raw[rest], 1)
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
    :func:`somad.defects.blind.blind_analysis` (no use of the model's statistics or threshold): every image is clustered
    into ``n + 1`` clusters and the one with the lowest mean image score becomes the good group. With
    ``contrastive``, a projection head is trained first (:mod:`somad.defects.contrastive`) and descriptors are computed
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
