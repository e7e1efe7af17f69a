"""SOMAD behind the detector interface: the same SOM and node Gaussians as :func:`core.fit`, on given features.

:func:`core.fit` extracts features and fits in one call; this adapter starts from features already extracted
(the benchmark's cache), runs the identical steps (SOM initialisation and epochs, best-matching units,
:func:`~core.model.fit_som_and_nodes`) and scores with :meth:`core.model.SomadModel.score_features`, so
its maps equal those of a model fitted by :func:`core.fit` on the same features.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from core.features import BACKBONE_BYTES, estimated_grid
from core.gaussian import NodeGaussians, gaussian_bytes
from core.methods.base import FEATURE_OPTIONS, RUN_OPTIONS, Detector, FeatureSet
from core.model import SomadModel, fit_som_and_nodes
from core.progress import Monitor


class SomadDetector(Detector):
    name = "somad"
    label = "SOMAD"
    gives_maps = True
    summary = "Self-Organizing Map of the normal patches, a Gaussian per node, Mahalanobis to the k nearest"
    config_options = (
        *FEATURE_OPTIONS,
        "som.rows",
        "som.cols",
        "som.epochs",
        "som.sigma_start",
        "som.sigma_end",
        "som.init",
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
        nodes = config.som.rows * config.som.cols
        features = 4 * n_images * gh * gw * dims
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

    def fit(self, features: FeatureSet, monitor: Monitor | None = None) -> SomadDetector:
        monitor = monitor or Monitor()
        config, device = self.config, self.device
        assert features.patches is not None, "SOMAD needs patch features"
        storage = device if device.type == "cuda" else torch.device("cpu")
        grid = features.patches.to(storage, torch.float32)
        fitted = fit_som_and_nodes(grid, config, device, monitor)
        self.gaussians = fitted.gaussians
        self.som_weights = fitted.som.weights
        self.fitted = True
        return self

    def somad_model(
        self,
        weights_origin: str = "unknown",
        channel_indices: np.ndarray | None = None,
        thresholds: dict | None = None,
        training_summary: dict | None = None,
    ) -> SomadModel:
        """The fitted detector as a :class:`SomadModel` (what :func:`core.fit` returns and the GUI shows)."""
        self._check_fitted()
        dims = self.som_weights.shape[1]
        return SomadModel(
            config=self.config,
            weights_origin=weights_origin,
            channel_indices=np.arange(dims) if channel_indices is None else np.asarray(channel_indices),
            som_weights=self.som_weights,
            gaussians=self.gaussians,
            thresholds=dict(thresholds or {}),
            training_summary=dict(training_summary or {}),
            device=self.device,
        )

    @torch.inference_mode()
    def score(self, features: FeatureSet) -> torch.Tensor:
        self._check_fitted()
        assert features.patches is not None, "SOMAD needs patch features"
        scores, _, _ = self.somad_model().score_features(features.patches.permute(0, 3, 1, 2))
        return scores

    def state_dict(self) -> dict[str, torch.Tensor]:
        self._check_fitted()
        return {
            "som_weights": self.som_weights,
            "node_means": self.gaussians.means,
            "node_inverse_cholesky": self.gaussians.inverse_cholesky,
            "node_counts": self.gaussians.counts.to(torch.int64),
        }

    def _load_state(self, tensors: Mapping[str, torch.Tensor]) -> None:
        weights, means, inverse, counts = self._require(
            tensors, "som_weights", "node_means", "node_inverse_cholesky", "node_counts"
        )
        n_nodes = self.config.som.rows * self.config.som.cols
        dims = weights.shape[-1]
        for name, t, shape in (
            ("som_weights", weights, (n_nodes, dims)),
            ("node_means", means, (n_nodes, dims)),
            ("node_inverse_cholesky", inverse, (n_nodes, dims, dims)),
            ("node_counts", counts, (n_nodes,)),
        ):
            if tuple(t.shape) != shape:
                raise ValueError(f"tensor {name} has shape {tuple(t.shape)}, expected {shape}")
        self.som_weights = weights.float().to(self.device)
        self.gaussians = NodeGaussians(means.float(), inverse.float(), counts).to(self.device)
