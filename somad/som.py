"""Self-Organizing Maps for the normal-patch gallery (Section 2.2 of SOMAD).

:class:`BatchSOM` is Kohonen's batch SOM in torch: every epoch is one full pass over the data that finds each
sample's best-matching unit (Eq. 1, ``c = argmin_k ||f - m_k||^2``) and then sets every node to the
neighbourhood-weighted mean of the samples, ``m_k = sum_j h_kc(j) f_j / sum_j h_kc(j)`` with a Gaussian
neighbourhood ``h`` whose radius decays exponentially from ``sigma_start`` to ``sigma_end``. Samples are
processed in chunks so memory stays bounded whatever the gallery's size. :class:`MiniSomBackend` wraps
MiniSom behind the same interface, as a cross-check.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from somad.progress import Monitor
from somad.som_config import SomConfig


def grid_coordinates(rows: int, cols: int, device: torch.device | None = None) -> torch.Tensor:
    """(rows * cols, 2) float coordinates (r, c) of the nodes, row-major."""
    r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    return torch.stack([r.reshape(-1), c.reshape(-1)], dim=1).float().to(device)


def squared_distances(
    x: torch.Tensor, nodes: torch.Tensor, nodes_sq: torch.Tensor | None = None
) -> torch.Tensor:
    """``||x_i - m_k||^2`` for every pair, via ``|x|^2 - 2 x.m + |m|^2`` (one matrix product), clamped at 0."""
    if nodes_sq is None:
        nodes_sq = (nodes * nodes).sum(1)
    d2 = (x * x).sum(1, keepdim=True) - 2.0 * (x @ nodes.T) + nodes_sq.unsqueeze(0)
    return d2.clamp_min_(0.0)


def shifted_distances(x: torch.Tensor, nodes: torch.Tensor, nodes_sq: torch.Tensor) -> torch.Tensor:
    """``||x_i - m_k||^2 - ||x_i||^2 = ||m_k||^2 - 2 x_i.m_k`` as one fused matrix product.

    The dropped term is constant along each row, so argmin and top-k over nodes are those of the true
    distances at a fraction of the memory traffic; add ``||x_i||^2`` back to the few values kept.
    """
    return torch.addmm(nodes_sq, x, nodes.T, alpha=-2.0)


def sigma_schedule(config: SomConfig) -> list[float]:
    """Neighbourhood radius of each epoch: exponential decay from the initial to the final sigma."""
    start, end, n = config.initial_sigma, config.sigma_end, config.epochs
    if n == 1:
        return [end]
    return [start * (end / start) ** (t / (n - 1)) for t in range(n)]


class BatchSOM:
    """A rows x cols batch SOM whose weights live on ``device``."""

    def __init__(self, rows: int, cols: int, dim: int, device: torch.device, chunk_size: int = 8192):
        self.rows, self.cols, self.dim = rows, cols, dim
        self.device = device
        self.chunk_size = chunk_size
        self.weights = torch.zeros(rows * cols, dim, device=device)
        self._coords = grid_coordinates(rows, cols, device)

    @property
    def n_nodes(self) -> int:
        return self.rows * self.cols

    # -- initialisation -------------------------------------------------------------------------------
    def init_positional(self, position_means: torch.Tensor) -> None:
        """Node (r, c) = mean training patch at the matching feature-grid position (SOMAD, Section 3.2).

        ``position_means`` is (dim, gh, gw); it is resampled bilinearly when the map and grid sizes differ.
        """
        means = position_means.to(self.device, torch.float32).unsqueeze(0)
        if means.shape[-2:] != (self.rows, self.cols):
            means = torch.nn.functional.interpolate(
                means, size=(self.rows, self.cols), mode="bilinear", align_corners=True
            )
        self.weights = means[0].permute(1, 2, 0).reshape(self.n_nodes, self.dim).contiguous()

    def init_random(self, data: torch.Tensor, seed: int) -> None:
        """Nodes = distinct random samples."""
        generator = torch.Generator().manual_seed(seed)
        idx = torch.randperm(data.shape[0], generator=generator)[: self.n_nodes]
        if idx.numel() < self.n_nodes:
            idx = idx[torch.randint(idx.numel(), (self.n_nodes,), generator=generator)]
        self.weights = data[idx].to(self.device, torch.float32).clone()

    def init_pca(self, data: torch.Tensor, seed: int, max_samples: int = 100_000) -> None:
        """Nodes on the plane of the two leading principal components, spanning +-2 standard deviations."""
        generator = torch.Generator().manual_seed(seed)
        sample = (
            data[torch.randperm(data.shape[0], generator=generator)[:max_samples]].to(self.device).float()
        )
        mean = sample.mean(0)
        _, s, v = torch.linalg.svd(sample - mean, full_matrices=False)
        scale = s[:2] / math.sqrt(max(sample.shape[0] - 1, 1))
        r = (
            torch.linspace(-2, 2, self.rows, device=self.device)
            if self.rows > 1
            else torch.zeros(1, device=self.device)
        )
        c = (
            torch.linspace(-2, 2, self.cols, device=self.device)
            if self.cols > 1
            else torch.zeros(1, device=self.device)
        )
        rr, cc = torch.meshgrid(r, c, indexing="ij")
        self.weights = (
            mean + rr.reshape(-1, 1) * scale[0] * v[0] + cc.reshape(-1, 1) * scale[1] * v[1]
        ).contiguous()

    # -- training -------------------------------------------------------------------------------------
    def neighbourhood(self, sigma: float) -> torch.Tensor:
        """(n_nodes, n_nodes) Gaussian neighbourhood ``exp(-|r_k - r_c|^2 / (2 sigma^2))`` on the grid."""
        d2 = torch.cdist(self._coords, self._coords).pow_(2)
        return torch.exp(-d2 / (2.0 * sigma * sigma))

    def _chunks(self, n: int):
        for start in range(0, n, self.chunk_size):
            yield start, min(start + self.chunk_size, n)

    def epoch_sums(
        self, data: torch.Tensor, monitor: Monitor | None = None, on_chunk=None
    ) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Per-node sums of the samples each node wins, win counts and the quantization error, in one pass;
        ``on_chunk(done)`` hears how many samples are done after each chunk."""
        sums = torch.zeros_like(self.weights)
        counts = torch.zeros(self.n_nodes, device=self.device)
        error = torch.zeros((), dtype=torch.float64, device=self.device)
        nodes_sq = (self.weights * self.weights).sum(1)
        for start, stop in self._chunks(data.shape[0]):
            x = data[start:stop].to(self.device, torch.float32, non_blocking=True)
            shifted, bmu = shifted_distances(x, self.weights, nodes_sq).min(1)
            d2 = (shifted + (x * x).sum(1)).clamp_min_(0.0)
            sums.index_add_(0, bmu, x)
            counts += torch.bincount(bmu, minlength=self.n_nodes).to(counts.dtype)
            error += d2.sqrt().sum(dtype=torch.float64)
            if monitor is not None:
                monitor.check()
            if on_chunk is not None:
                on_chunk(stop)
        return sums, counts, float(error) / max(data.shape[0], 1)

    def fit(self, data: torch.Tensor, config: SomConfig, monitor: Monitor | None = None) -> list[float]:
        """Run ``config.epochs`` batch epochs over ``data`` (n, dim).

        With ``config.samples_per_epoch`` below ``n``, each epoch draws that many samples afresh (seeded by
        ``config.seed``): the batch update is a neighbourhood-weighted mean, which a random sample of
        tens of samples per node already estimates, so the map's quality holds at a fraction of the passes
        (measured in BENCHMARKS.md). Returns the quantization error measured during each epoch (on its
        samples, before that epoch's update).
        """
        monitor = monitor or Monitor()
        errors = []
        schedule = sigma_schedule(config)
        generator = torch.Generator().manual_seed(config.seed)
        per_epoch = config.samples_per_epoch
        for epoch, sigma in enumerate(schedule):
            sample = data
            if 0 < per_epoch < data.shape[0]:
                sample = data[torch.randperm(data.shape[0], generator=generator)[:per_epoch].to(data.device)]
            n = sample.shape[0]
            total = n * len(schedule)  # progress in samples, so the bar moves within each epoch
            monitor.step("som", epoch * n, total)
            sums, counts, error = self.epoch_sums(
                sample, monitor, lambda done, e=epoch, n=n, t=total: monitor.step("som", e * n + done, t)
            )
            errors.append(error)
            h = self.neighbourhood(sigma)
            numerator = h @ sums
            denominator = h @ counts
            update = denominator > 1e-12 * max(float(counts.sum()), 1.0)
            self.weights[update] = numerator[update] / denominator[update].unsqueeze(1)
        monitor.step("som", 1, 1)
        return errors

    # -- queries --------------------------------------------------------------------------------------
    @torch.inference_mode()
    def nearest(
        self, data: torch.Tensor, k: int = 1, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Indices (n, k) of the k nearest nodes of each sample, nearest first, and their squared distances.

        Nodes where ``mask`` is False are never returned.
        """
        nodes_sq = (self.weights * self.weights).sum(1)
        if mask is not None:
            nodes_sq = torch.where(mask.to(self.device), nodes_sq, torch.full_like(nodes_sq, float("inf")))
        idx_parts, d2_parts = [], []
        for start, stop in self._chunks(data.shape[0]):
            x = data[start:stop].to(self.device, torch.float32)
            shifted, idx = torch.topk(shifted_distances(x, self.weights, nodes_sq), k, dim=1, largest=False)
            d2 = (shifted + (x * x).sum(1, keepdim=True)).clamp_min_(0.0)
            idx_parts.append(idx)
            d2_parts.append(d2)
        return torch.cat(idx_parts), torch.cat(d2_parts)

    def bmu(self, data: torch.Tensor) -> torch.Tensor:
        """Best-matching unit of each sample (Eq. 1)."""
        return self.nearest(data, 1)[0][:, 0]

    def quantization_error(self, data: torch.Tensor) -> float:
        """Mean Euclidean distance between each sample and its best-matching unit."""
        _, d2 = self.nearest(data, 1)
        return float(d2[:, 0].sqrt().mean())

    def topographic_error(self, data: torch.Tensor) -> float:
        """Share of samples whose two nearest nodes are not grid neighbours (8-neighbourhood)."""
        idx, _ = self.nearest(data, 2)
        rc = self._coords[idx]
        step = (rc[:, 0] - rc[:, 1]).norm(dim=1)
        return float((step > 1.42).float().mean())

    def hit_counts(self, data: torch.Tensor) -> np.ndarray:
        """(rows, cols) number of samples each node wins."""
        counts = torch.bincount(self.bmu(data), minlength=self.n_nodes)
        return counts.reshape(self.rows, self.cols).cpu().numpy()

    def umatrix(self) -> np.ndarray:
        """(rows, cols) mean distance of each node's weight to its 8 grid neighbours' weights."""
        return umatrix(self.weights.cpu().numpy(), self.rows, self.cols)


def train_som(
    position_features: torch.Tensor, config: SomConfig, device: torch.device, monitor: Monitor | None = None
) -> BatchSOM:
    """Initialise (positional, PCA or random, per ``config.init``) and train a SOM on (N, gh, gw, d) features."""
    dims = position_features.shape[-1]
    patches = position_features.reshape(-1, dims)
    som = BatchSOM(config.rows, config.cols, dims, device, config.chunk_size)
    if config.init == "positional":
        som.init_positional(position_features.mean(0).permute(2, 0, 1))
    elif config.init == "pca":
        som.init_pca(patches, config.seed)
    else:
        som.init_random(patches, config.seed)
    som.fit(patches, config, monitor)
    return som


def umatrix(weights: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Unified distance matrix: mean Euclidean distance of each node to its 8-neighbourhood."""
    w = weights.reshape(rows, cols, -1).astype(np.float64)
    total = np.zeros((rows, cols))
    count = np.zeros((rows, cols))
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            if dr == 0 and dc == 0:
                continue
            r0, r1 = max(0, -dr), rows - max(0, dr)
            c0, c1 = max(0, -dc), cols - max(0, dc)
            if r1 <= r0 or c1 <= c0:
                continue
            diff = w[r0:r1, c0:c1] - w[r0 + dr : r1 + dr, c0 + dc : c1 + dc]
            total[r0:r1, c0:c1] += np.sqrt((diff * diff).sum(-1))
            count[r0:r1, c0:c1] += 1
    return (total / np.maximum(count, 1)).astype(np.float32)


class MiniSomBackend:
    """MiniSom behind :class:`BatchSOM`'s query interface (CPU, numpy), for cross-checks and comparisons."""

    def __init__(
        self, rows: int, cols: int, dim: int, sigma: float = 1.0, learning_rate: float = 0.5, seed: int = 0
    ):
        from minisom import MiniSom

        self.rows, self.cols, self.dim = rows, cols, dim
        self.som = MiniSom(rows, cols, dim, sigma=sigma, learning_rate=learning_rate, random_seed=seed)

    @property
    def weights(self) -> np.ndarray:
        return self.som.get_weights().reshape(self.rows * self.cols, self.dim)

    def set_weights(self, weights: np.ndarray) -> None:
        self.som._weights = (
            np.asarray(weights, dtype=np.float64).reshape(self.rows, self.cols, self.dim).copy()
        )

    def fit(self, data: np.ndarray, epochs: int) -> None:
        """``epochs`` full passes of MiniSom's online rule over ``data`` (n, dim)."""
        self.som.train(data, epochs * len(data), use_epochs=False, random_order=False)

    def fit_batch(self, data: np.ndarray, epochs: int) -> None:
        """``epochs`` full passes of MiniSom's own batch rule."""
        self.som.train_batch(data, epochs * len(data))

    def quantization_error(self, data: np.ndarray) -> float:
        return float(self.som.quantization_error(data))

    def topographic_error(self, data: np.ndarray) -> float:
        return float(self.som.topographic_error(data))

    def hit_counts(self, data: np.ndarray) -> np.ndarray:
        return self.som.activation_response(data).astype(np.int64)

    def umatrix(self) -> np.ndarray:
        return umatrix(self.weights, self.rows, self.cols)
