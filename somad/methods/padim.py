"""PaDiM (Defard et al., ICPR 2020): a Gaussian per feature-grid position, Mahalanobis distance to it.

For grid position p, over the N training images: ``mu_p`` is the mean patch feature and
``Sigma_p = 1/(N-1) sum_n (f_np - mu_p)(f_np - mu_p)^T + lambda I`` (``lambda`` is ``statistics.lam``,
shared with SOMAD; Auto gives 0.01, as in the paper). A test patch at p scores
``sqrt((f - mu_p)^T Sigma_p^-1 (f - mu_p))``. The statistics and the distance are SOMAD's own code
(:mod:`somad.gaussian`): the same regularised inverse Cholesky factors, the same float64 accumulation, one
factor per position instead of per SOM node. Maps then go through the same upsampling and smoothing as SOMAD's.

Memory: positions x d x d float32 factors (3136 x 200^2 x 4 bytes = 0.5 GB at 224 px and d = 200).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import torch

from somad.features import BACKBONE_BYTES, estimated_grid
from somad.gaussian import NodeGaussians, fit_position_gaussians, mahalanobis_per_position
from somad.methods.base import FEATURE_OPTIONS, RUN_OPTIONS, Detector, FeatureSet
from somad.progress import Monitor

#: λ of PaDiM's paper, what ``statistics.lam`` Auto gives PaDiM.
PAPER_RIDGE = 0.01


class PadimDetector(Detector):
    name = "padim"
    label = "PaDiM"
    gives_maps = True
    summary = "a Gaussian per feature-grid position, Mahalanobis distance (Defard et al. 2020)"
    config_options = (*FEATURE_OPTIONS, "statistics.lam", "scoring.sigma", *RUN_OPTIONS)

    gaussians: NodeGaussians
    grid: tuple[int, int]

    def fit(self, features: FeatureSet, monitor: Monitor | None = None) -> PadimDetector:
        assert features.patches is not None, "PaDiM needs patch features"
        n, gh, gw, d = features.patches.shape
        self.grid = (gh, gw)
        statistics = self.config.statistics
        if statistics.lam is None:
            self.config = replace(self.config, statistics=replace(statistics, lam=PAPER_RIDGE))
        self.gaussians = fit_position_gaussians(
            features.patches.reshape(n, gh * gw, d), self.config.statistics.lam, self.device, monitor
        )
        self.fitted = True
        return self

    @classmethod
    def estimate_memory(cls, config, options, n_images: int) -> dict[str, int]:
        """Features (N, P, d) float32; the model: P means, P d x d inverse Cholesky factors (float32) and
        counts; while fitting, one chunk of 128 positions in float64 (features, covariances, factors)."""
        gh, gw = estimated_grid(config.features)
        positions, d = gh * gw, config.features.dims
        features = 4 * n_images * positions * d
        model = 4 * positions * d + 4 * positions * d * d + 8 * positions + 16
        working = 8 * 128 * (2 * n_images * d + 3 * d * d)
        return {"features": features, "model": model, "peak": features + model + working + BACKBONE_BYTES}

    @torch.inference_mode()
    def score(self, features: FeatureSet) -> torch.Tensor:
        self._check_fitted()
        assert features.patches is not None, "PaDiM needs patch features"
        b, gh, gw, d = features.patches.shape
        if (gh, gw) != self.grid:
            raise ValueError(f"PaDiM was fitted on a {self.grid} grid, got {(gh, gw)}")
        x = features.patches.reshape(b, gh * gw, d).to(self.gaussians.means.device, torch.float32)
        d2 = mahalanobis_per_position(x, self.gaussians)
        return d2.clamp_min(0).sqrt().view(b, gh, gw)

    def state_dict(self) -> dict[str, torch.Tensor]:
        self._check_fitted()
        return {
            "position_means": self.gaussians.means,
            "position_inverse_cholesky": self.gaussians.inverse_cholesky,
            "position_counts": self.gaussians.counts.to(torch.int64),
            "grid_shape": torch.tensor(self.grid, dtype=torch.int64),
        }

    @property
    def input_dims(self) -> int | None:
        return int(self.gaussians.means.shape[-1])

    def _load_state(self, tensors: Mapping[str, torch.Tensor]) -> None:
        means, inverse, counts, grid = self._require(
            tensors, "position_means", "position_inverse_cholesky", "position_counts", "grid_shape"
        )
        gh, gw = (int(v) for v in grid.tolist())
        positions, dims = gh * gw, means.shape[-1]
        for name, t, shape in (
            ("position_means", means, (positions, dims)),
            ("position_inverse_cholesky", inverse, (positions, dims, dims)),
            ("position_counts", counts, (positions,)),
        ):
            if tuple(t.shape) != shape:
                raise ValueError(f"tensor {name} has shape {tuple(t.shape)}, expected {shape}")
        self.grid = (gh, gw)
        self.gaussians = NodeGaussians(
            means.float(), inverse.float(), counts, self.config.statistics.lam or 0.0
        ).to(self.device)
