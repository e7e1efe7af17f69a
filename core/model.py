"""The fitted SOMAD detector: backbone features -> SOM -> node Gaussians -> anomaly maps (Algorithm 1)."""

from __future__ import annotations

import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from core.config import SomadConfig
from core.decision import FALSE_REJECT_RATE, false_reject_threshold, preferred_threshold
from core.devices import device_name, resolve_device
from core.features import FeatureExtractor
from core.gaussian import NodeGaussians, fit_node_gaussians, mahalanobis_to_nodes
from core.maps import image_score, patch_scores_to_maps
from core.progress import CancelCheck, Monitor, ProgressCallback
from core.results import ImageResult
from core.som import BatchSOM, train_som, umatrix


def finish_training(
    model: Any, train_scores: np.ndarray, timings: dict[str, float], device: torch.device, summary: dict
) -> None:
    """Store what every fitted model of any method keeps from its training run: the threshold rejecting
    :data:`FALSE_REJECT_RATE` of the training images' own scores, and the training summary (``summary``
    plus the score range, the seconds of each stage and where it ran)."""
    model.thresholds["train_false_reject_1pct"] = false_reject_threshold(train_scores, FALSE_REJECT_RATE)
    model.training_summary = {
        **summary,
        "train_score_mean": float(np.mean(train_scores)),
        "train_score_max": float(np.max(train_scores)),
        "seconds": {k: round(v, 2) for k, v in timings.items()},
        "device": device_name(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


@dataclass
class SomAndNodes:
    """What :func:`fit_som_and_nodes` learns from the training patches, with the seconds of each stage."""

    som: BatchSOM
    gaussians: NodeGaussians
    quantization_error: float
    seconds: dict[str, float]


def fit_som_and_nodes(
    grid: torch.Tensor, config: SomadConfig, device: torch.device, monitor: Monitor | None = None
) -> SomAndNodes:
    """Steps 2 and 3 of Algorithm 1 on patch features ``grid`` (N, gh, gw, d): train the SOM, assign every
    patch to its best-matching node, and fit each node's Gaussian (Eq. 2) on the patches it won."""
    monitor = monitor or Monitor()
    patches = grid.reshape(-1, grid.shape[-1])
    t0 = time.perf_counter()
    som = train_som(grid, config.som, device, monitor)
    nearest, nearest_d2 = som.nearest(patches, 1)
    quantization_error = float(nearest_d2[:, 0].sqrt().mean())
    t1 = time.perf_counter()
    gaussians = fit_node_gaussians(
        patches,
        nearest[:, 0],
        som.n_nodes,
        som.weights,
        config.statistics.lam,
        config.statistics.shrinkage,
        device,
        monitor,
    )
    seconds = {"som": t1 - t0, "statistics": time.perf_counter() - t1}
    return SomAndNodes(som, gaussians, quantization_error, seconds)


#: Images whose patches go through the scoring head together: its per-node loop is paid once per group.
HEAD_GROUP_IMAGES = 16


@dataclass
class SomadModel:
    """A fitted detector. Build it with :func:`core.fit` or :func:`core.load_model`, not directly."""

    config: SomadConfig
    weights_origin: str
    channel_indices: np.ndarray
    som_weights: torch.Tensor
    gaussians: NodeGaussians
    thresholds: dict[str, float] = field(default_factory=dict)
    training_summary: dict = field(default_factory=dict)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    _extractor: FeatureExtractor | None = field(default=None, repr=False)

    #: The method's key in :data:`core.methods.METHODS`; a front end treats every fitted model alike
    #: through ``method``, ``label``, ``gives_maps`` and ``options`` (as on :class:`~core.methods.MethodModel`).
    method: ClassVar[str] = "somad"
    label: ClassVar[str] = "SOMAD"
    gives_maps: ClassVar[bool] = True

    # -- what a front end shows ------------------------------------------------------------------------
    @property
    def options(self) -> dict[str, Any]:
        """The method's own options: SOMAD has none beyond its config."""
        return {}

    @property
    def random_init(self) -> bool:
        """True when the backbone had random weights: results then say so everywhere."""
        return self.weights_origin == "random-init"

    @property
    def som_shape(self) -> tuple[int, int]:
        return self.config.som.rows, self.config.som.cols

    @property
    def grid_shape(self) -> tuple[int, int]:
        return tuple(self.training_summary.get("grid_shape", (0, 0)))  # type: ignore[return-value]

    @property
    def threshold(self) -> float | None:
        """The preferred stored threshold (see :func:`preferred_threshold`)."""
        return preferred_threshold(self.thresholds)

    def umatrix(self) -> np.ndarray:
        """(rows, cols) U-matrix of the SOM weights."""
        return umatrix(self.som_weights.cpu().numpy(), *self.som_shape)

    def hit_counts(self) -> np.ndarray:
        """(rows, cols) training patches won by each node."""
        return self.gaussians.counts.cpu().numpy().reshape(self.som_shape).astype(np.int64)

    @property
    def nbytes(self) -> int:
        return self.gaussians.nbytes + self.som_weights.numel() * 4 + self.channel_indices.nbytes

    # -- scoring ---------------------------------------------------------------------------------------
    def to(self, device: str | torch.device) -> SomadModel:
        """Move the model to ``device`` (``auto``, ``cpu``, ``cuda:N``) in place; returns ``self``."""
        device = resolve_device(device) if isinstance(device, str) else device
        self.device = device
        self.som_weights = self.som_weights.to(device)
        self.gaussians = self.gaussians.to(device)
        self._extractor = None
        return self

    @property
    def extractor(self) -> FeatureExtractor:
        if self._extractor is None:
            self._extractor = FeatureExtractor(self.config.features, self.device, self.channel_indices)
        return self._extractor

    def score_features(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Patch scores (B, gh, gw) (Eq. 3, minimum over the k nearest nodes), nearest nodes and best node.

        ``features`` is (B, d, gh, gw). Nearest nodes (B, gh, gw, k) are by Euclidean distance to the SOM
        weights (Eq. 1), among nodes with training hits only.
        """
        b, d, gh, gw = features.shape
        x = features.permute(0, 2, 3, 1).reshape(-1, d).to(self.device, torch.float32)
        k = min(self.config.scoring.k, int(self.gaussians.valid.sum()))
        som = BatchSOM(*self.som_shape, d, self.device)
        som.weights = self.som_weights
        nearest, _ = som.nearest(x, k, mask=self.gaussians.valid)
        d2 = mahalanobis_to_nodes(x, nearest, self.gaussians)
        best_d2, best_pos = d2.min(1)
        best = nearest.gather(1, best_pos.unsqueeze(1)).squeeze(1)
        return (
            best_d2.clamp_min(0).sqrt().view(b, gh, gw),
            nearest.view(b, gh, gw, k),
            best.view(b, gh, gw),
        )

    @torch.inference_mode()
    def score(
        self,
        images: Sequence[np.ndarray],
        *,
        progress: ProgressCallback | None = None,
        cancel: CancelCheck | None = None,
        paths: Sequence[Path | None] | None = None,
        batch_size: int | None = None,
    ) -> list[ImageResult]:
        """Anomaly maps of RGB uint8 images, each at its own size, in raw (comparable) Mahalanobis units."""
        monitor = Monitor(progress, cancel)
        batch_size = batch_size or self.config.features.batch_size
        group = max(batch_size, HEAD_GROUP_IMAGES)
        results: list[ImageResult] = []
        paths = list(paths) if paths is not None else [None] * len(images)
        for start in range(0, len(images), group):
            features = []
            for sub in range(start, min(start + group, len(images)), batch_size):
                monitor.step("scoring", sub, len(images))
                features.append(self.extractor(list(images[sub : sub + batch_size])))
            results += self._score_group(
                list(images[start : start + group]), torch.cat(features), paths[start : start + group]
            )
        monitor.step("scoring", len(images), len(images))
        return results

    def _score_group(
        self, batch: list[np.ndarray], features: torch.Tensor, paths: Sequence[Path | None]
    ) -> list[ImageResult]:
        scores, nearest, best = self.score_features(features)
        maps = patch_scores_to_maps(
            scores, self.config.features.image_size, self.config.scoring.sigma, [im.shape[:2] for im in batch]
        )
        nearest_np = nearest.cpu().numpy().astype(np.int32)
        best_np = best.cpu().numpy().astype(np.int32)
        return [
            ImageResult(m, image_score(m), nearest_np[i], best_np[i], None if p is None else Path(p))
            for i, (m, p) in enumerate(zip(maps, paths, strict=True))
        ]

    def time_stages(self, images: Sequence[np.ndarray]) -> dict[str, float]:
        """Seconds per image spent in the backbone and in the scoring head, for benchmarks."""
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        with torch.inference_mode():
            t0 = time.perf_counter()
            features = self.extractor(list(images))
            sync()
            t1 = time.perf_counter()
            scores, _, _ = self.score_features(features)
            patch_scores_to_maps(
                scores,
                self.config.features.image_size,
                self.config.scoring.sigma,
                [im.shape[:2] for im in images],
            )
            sync()
            t2 = time.perf_counter()
        return {"backbone": (t1 - t0) / len(images), "head": (t2 - t1) / len(images)}


def _save(self: SomadModel, path: str | Path) -> Path:
    """Write the model to a ``.somad`` file atomically (see :mod:`core.model_file`)."""
    from core.model_file import save_model

    return save_model(self, path)


SomadModel.save = _save  # type: ignore[attr-defined]
