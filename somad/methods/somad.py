"""SOMAD (Li et al., ICIP 2021, Algorithm 1) as a detector: a Self-Organizing Map of the normal patches, a
Gaussian per map node (Eq. 2), and for each test patch the minimum Mahalanobis distance over its k nearest nodes
(Eqs. 1 and 3).

Nearest nodes are found by Euclidean distance to the SOM weights among the nodes with training hits; the
Gaussians are centred on the mean of the patches each node won (see :mod:`somad.gaussian`).

Where the defaults depart from the paper, each measured in BENCHMARKS.md ("Why SOMAD loses where it loses" and
"Making SOMAD cheaper and steadier"):

- The patches ``f`` of Eqs. 1 to 3 are locally aggregated (:mod:`somad.aggregation`: the mean over a 3 x 3
  window, every second cell) instead of single grid cells: a patch carries its neighbourhood, and a quarter of
  the patches makes fitting and scoring about 4 times cheaper (``som.patch_window``, ``som.patch_stride``).
- The map is sized to the training patches (about 25 per node, at most 80 x 80) instead of a fixed 56 x 56:
  with fewer patches a node's Gaussian rests on too few of them, with more a finer map localises better
  (``som.rows`` and ``som.cols`` 0).
- λ in Eq. 2 is half the mean per-channel variance of the patches around their nodes' means instead of 0.01
  (``statistics.lam`` Auto, :data:`somad.gaussian.RELATIVE_RIDGE`): a node's Gaussian rests on about 25
  patches in 176 channels, so its covariance is singular in most directions and λ alone sets its spread
  there. At 0.01 a normal patch a little off its node's few patches scored as a defect, and where that
  happened depended on the SOM's random draws (screw's PRO 0.931 to 0.963 over five seeds); relative to the
  features' own spread, λ does not depend on the backbone's scale. With it, the paper's k = 4 is again the best
  k (at λ = 0.01, k = 2 was: a larger k reached node Gaussians that made defects look normal).
- The SOM's training (Section 2.2) draws 100,000 patches an epoch, and its epochs with a wide neighbourhood
  fewer (:func:`somad.som.epoch_samples`, ``som.samples_per_epoch``, ``som.min_epoch_share``): a batch update
  averages each node over its whole neighbourhood, which a sample already estimates.

``patch_window = patch_stride = 1``, ``rows = cols = 56``, ``lam = 0.01``, ``samples_per_epoch = 0`` and
``min_epoch_share = 1`` give the paper's method as before. Nearest nodes are searched exactly unless
``som.search_dims`` asks for a search through principal directions (:mod:`somad.node_search`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
import torch

from somad.aggregation import aggregate
from somad.config import SomadConfig
from somad.extraction import FeatureSet
from somad.features import BACKBONE_BYTES, estimated_grid
from somad.gaussian import (
    NodeGaussians,
    fit_node_gaussians,
    gaussian_bytes,
    mahalanobis_to_nodes,
    pack_lower,
    unpack_lower,
)
from somad.methods.base import FEATURE_OPTIONS, RUN_OPTIONS, Detector
from somad.node_search import NodeSearch
from somad.progress import Monitor
from somad.som import BatchSOM, train_som, umatrix


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


class SomadDetector(Detector):
    name = "somad"
    label = "SOMAD"
    gives_maps = True
    has_som = True
    file_prefix = ""  # a SOMAD file's tensors carry no prefix (format 1 as first written)
    stores_options = False
    summary = "Self-Organizing Map of the normal patches, a Gaussian per node, Mahalanobis to the k nearest"
    config_options = (
        *FEATURE_OPTIONS,
        "som.rows",
        "som.cols",
        "som.epochs",
        "som.sigma_start",
        "som.sigma_end",
        "som.init",
        "som.patch_window",
        "som.patch_stride",
        "som.samples_per_epoch",
        "som.min_epoch_share",
        "som.search_dims",
        "som.candidates",
        "som.seed",
        "som.chunk_size",
        "statistics.lam",
        "statistics.shrinkage",
        "scoring.k",
        "scoring.sigma",
        *RUN_OPTIONS,
    )

    som_weights: torch.Tensor
    gaussians: NodeGaussians

    @classmethod
    def estimate_memory(cls, config, options, n_images: int) -> dict[str, int]:
        """Features (N, gh, gw, d) float32; the SOM's weights, grid distances and one chunk of patch-to-node
        distances; the node statistics (the model); one chunk of 128 nodes in float64 while fitting them."""
        gh, gw = estimated_grid(config.features)
        dims = config.features.dims
        stride = config.som.patch_stride
        som_config = config.som.sized_for(n_images * math.ceil(gh / stride) * math.ceil(gw / stride))
        nodes = som_config.rows * som_config.cols
        features = (
            4 * n_images * gh * gw * dims * (1 + (stride > 1 or config.som.patch_window > 1) / stride**2)
        )
        som = 4 * nodes * dims + 4 * nodes * nodes * 2 + 4 * config.som.chunk_size * nodes * 2
        statistics = gaussian_bytes(nodes, dims)
        working = 8 * 128 * dims * dims * 3  # float64 scatter, covariance and factor of one node chunk
        model = statistics + 4 * nodes * dims
        return {
            "features": features,
            "som": som,
            "statistics": statistics,
            "model": model,
            "peak": features + som + statistics + working + BACKBONE_BYTES,
        }

    @classmethod
    def from_parts(
        cls, config: SomadConfig, som_weights: torch.Tensor, gaussians: NodeGaussians, device: str = "cpu"
    ) -> SomadDetector:
        """A fitted detector from a trained SOM's weights and node Gaussians made elsewhere (for ablations)."""
        detector = cls(config, None, device)
        detector.som_weights, detector.gaussians, detector.fitted = som_weights, gaussians, True
        return detector

    # -- fitting ----------------------------------------------------------------------------------------
    def fit(self, features: FeatureSet, monitor: Monitor | None = None) -> SomadDetector:
        """Algorithm 1, steps 2 and 3, on the training patches; keeps what the training summary reports."""
        monitor = monitor or Monitor()
        assert features.patches is not None, "SOMAD needs patch features"
        storage = self.device if self.device.type == "cuda" else torch.device("cpu")
        grid = self.aggregated(features.patches.to(storage, torch.float32))
        n, gh, gw, _ = grid.shape
        self.config = replace(self.config, som=self.config.som.sized_for(n * gh * gw))
        fitted = fit_som_and_nodes(grid, self.config, self.device, monitor)
        self.gaussians = fitted.gaussians
        self._keep_ridge()
        self.som_weights = fitted.som.weights
        self.fitted = True
        patches = grid.reshape(-1, grid.shape[-1])
        self.fit_summary = {
            "n_patches": int(n * gh * gw),
            "zero_init_last": self.config.features.zero_init_last,
            "som_quantization_error": fitted.quantization_error,
            "som_topographic_error": fitted.som.topographic_error(
                patches[:: max(1, patches.shape[0] // 20_000)]
            ),
            "nodes_with_hits": int(fitted.gaussians.valid.sum()),
            "som_shape": [self.config.som.rows, self.config.som.cols],
            "grid_shape": [gh, gw],  # the grid of the patches the map scores (aggregated)
        }
        self.fit_seconds = dict(fitted.seconds)
        return self

    def absorb(self, features: FeatureSet, monitor: Monitor | None = None) -> SomadDetector:
        """Node statistics (Eq. 2) over the patches of ``features`` (every training image) on the fitted map:
        the images held out for calibration join the Gaussians; the SOM, an index of the nodes, stays."""
        monitor = monitor or Monitor()
        self._check_fitted()
        storage = self.device if self.device.type == "cuda" else torch.device("cpu")
        grid = self.aggregated(features.patches.to(storage, torch.float32))
        patches = grid.reshape(-1, grid.shape[-1])
        t0 = time.perf_counter()
        som = self.fitted_som()
        nearest = som.nearest(patches, 1)[0][:, 0]
        stats = self.config.statistics
        self.gaussians = fit_node_gaussians(
            patches, nearest, som.n_nodes, self.som_weights, stats.lam, stats.shrinkage, self.device, monitor
        )
        self._keep_ridge()
        self._search = None  # the nodes with hits may have changed
        self.fit_summary.update(
            n_patches=int(patches.shape[0]), nodes_with_hits=int(self.gaussians.valid.sum())
        )
        self.fit_seconds["statistics"] = self.fit_seconds.get("statistics", 0.0) + time.perf_counter() - t0
        return self

    def _keep_ridge(self) -> None:
        """Keep the λ the statistics used (Auto resolved) in the configuration, so the model file and an update
        of the model use it."""
        self.config = replace(
            self.config, statistics=replace(self.config.statistics, lam=self.gaussians.ridge)
        )

    def fitted_som(self) -> BatchSOM:
        """The fitted map, searched as configured."""
        som = BatchSOM.from_config(self.config.som, self.som_weights.shape[1], self.device)
        som.weights = self.som_weights
        return som

    def node_search(self) -> tuple[NodeSearch, torch.Tensor]:
        """The search over the nodes with hits (only they are ever returned) and their node indices, kept
        while the map is the same."""
        cached = getattr(self, "_search", None)
        if cached is None or cached[0] is not self.som_weights:
            search, searched = self.fitted_som().search(self.gaussians.valid)
            cached = (self.som_weights, search, searched)
            self._search = cached
        return cached[1], cached[2]

    def aggregated(self, patches: torch.Tensor) -> torch.Tensor:
        """Patch features (N, gh, gw, d) averaged over the configured windows (:mod:`somad.aggregation`)."""
        return aggregate(patches, self.config.som.patch_window, self.config.som.patch_stride)

    # -- scoring ----------------------------------------------------------------------------------------
    @property
    def som_shape(self) -> tuple[int, int]:
        return self.config.som.rows, self.config.som.cols

    def score_with_nodes(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Patch scores (B, gh', gw') (Eq. 3, minimum over the k nearest nodes), nearest nodes (B, gh', gw', k)
        and best node (B, gh', gw') of patch features (B, gh, gw, d), on the aggregated grid.

        Nearest nodes are by Euclidean distance to the SOM weights (Eq. 1, through :meth:`node_search`), among
        nodes with training hits only.
        """
        self._check_fitted()
        patches = self.aggregated(patches.to(self.device, torch.float32))
        b, gh, gw, d = patches.shape
        x = patches.reshape(-1, d)
        search, searched = self.node_search()
        k = min(self.config.scoring.k, search.n_nodes)
        nearest = searched[search.indices(x, k)]
        d2 = mahalanobis_to_nodes(x, nearest, self.gaussians)
        best_d2, best_pos = d2.min(1)
        best = nearest.gather(1, best_pos.unsqueeze(1)).squeeze(1)
        return (
            best_d2.clamp_min(0).sqrt().view(b, gh, gw),
            nearest.view(b, gh, gw, k),
            best.view(b, gh, gw),
        )

    @torch.inference_mode()
    def score(self, features: FeatureSet) -> torch.Tensor:
        assert features.patches is not None, "SOMAD needs patch features"
        return self.score_with_nodes(features.patches)[0]

    @property
    def input_dims(self) -> int | None:
        return int(self.som_weights.shape[-1])

    def umatrix(self) -> np.ndarray:
        """(rows, cols) U-matrix of the SOM weights."""
        return umatrix(self.som_weights.cpu().numpy(), *self.som_shape)

    def hit_counts(self) -> np.ndarray:
        """(rows, cols) training patches won by each node."""
        return self.gaussians.counts.cpu().numpy().reshape(self.som_shape).astype(np.int64)

    # -- state ------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        self._check_fitted()
        return {
            "som_weights": self.som_weights,
            "node_means": self.gaussians.means,
            "node_inverse_cholesky_lower": pack_lower(self.gaussians.inverse_cholesky),
            "node_counts": self.gaussians.counts.to(torch.int64),
        }

    def _load_state(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Files store the factors' lower triangles (``node_inverse_cholesky_lower``); files written before
        that, the full matrices (``node_inverse_cholesky``)."""
        packed = "node_inverse_cholesky_lower" in tensors
        factor = "node_inverse_cholesky_lower" if packed else "node_inverse_cholesky"
        weights, means, inverse, counts = self._require(
            tensors, "som_weights", "node_means", factor, "node_counts"
        )
        n_nodes = self.config.som.rows * self.config.som.cols
        dims = weights.shape[-1]
        factor_shape = (n_nodes, dims * (dims + 1) // 2) if packed else (n_nodes, dims, dims)
        for name, t, shape in (
            ("som_weights", weights, (n_nodes, dims)),
            ("node_means", means, (n_nodes, dims)),
            (factor, inverse, factor_shape),
            ("node_counts", counts, (n_nodes,)),
        ):
            if tuple(t.shape) != shape:
                raise ValueError(f"tensor {name} has shape {tuple(t.shape)}, expected {shape}")
        if packed:
            inverse = unpack_lower(inverse, dims)
        self.som_weights = weights.float().to(self.device)
        self.gaussians = NodeGaussians(
            means.float(), inverse.float(), counts, self.config.statistics.lam or 0.0
        ).to(self.device)
