"""Self-Organizing Maps for the normal-patch gallery (Section 2.2 of SOMAD).

:class:`BatchSOM` is Kohonen's batch SOM in torch: every epoch is one full pass over the data that finds each
sample's best-matching unit (Eq. 1, ``c = argmin_k ||f - m_k||^2``) and then sets every node to the
neighbourhood-weighted mean of the samples, ``m_k = sum_j h_kc(j) f_j / sum_j h_kc(j)`` with a Gaussian
neighbourhood ``h`` whose radius decays exponentially from ``sigma_start`` to ``sigma_end``. Samples are
processed in chunks so memory stays bounded whatever the gallery's size. Best-matching units come from a
:class:`~somad.node_search.NodeSearch` (exact unless the map is given search dimensions), and the Gaussian
neighbourhood on the grid, ``h = g(dr) g(dc)``, is applied one grid axis at a time. :class:`MiniSomBackend`
wraps MiniSom behind the same interface, as a cross-check.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from somad.node_search import NodeSearch
from somad.progress import Monitor
from somad.som_config import SomConfig


def grid_coordinates(rows: int, cols: int, device: torch.device | None = None) -> torch.Tensor:
    """(rows * cols, 2) float coordinates (r, c) of the nodes, row-major."""
    r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    return torch.stack([r.reshape(-1), c.reshape(-1)], dim=1).float().to(device)


def sigma_schedule(config: SomConfig) -> list[float]:
    """Neighbourhood radius of each epoch: exponential decay from the initial to the final sigma."""
    start, end, n = config.initial_sigma, config.sigma_end, config.epochs
    if n == 1:
        return [end]
    return [start * (end / start) ** (t / (n - 1)) for t in range(n)]


def epoch_samples(config: SomConfig, n: int) -> list[int]:
    """Samples drawn in each epoch of ``n``: ``samples_per_epoch`` (``n`` when 0 or above ``n``), scaled by
    ``(2 sigma_end / sigma)^2`` in the epochs whose radius ``sigma`` is wider, down to ``min_epoch_share`` of it.

    The batch update sets a node to a mean over its neighbourhood, about ``sigma^2`` nodes wide: a wide epoch
    averages each node over as many samples as a final one from ``(2 sigma_end / sigma)^2`` times as many
    draws (measured in BENCHMARKS.md, "Training the map").
    """
    full = n if not 0 < config.samples_per_epoch < n else config.samples_per_epoch
    floor = max(1, math.ceil(config.min_epoch_share * full))
    return [
        min(full, max(floor, math.ceil(full * min(1.0, (2.0 * config.sigma_end / sigma) ** 2))))
        for sigma in sigma_schedule(config)
    ]


class BatchSOM:
    """A rows x cols batch SOM whose weights live on ``device``; its nodes are searched through ``search_dims``
    principal directions and ``candidates`` exact distances (:class:`~somad.node_search.NodeSearch`; 0: exact)."""

    def __init__(
        self,
        rows: int,
        cols: int,
        dim: int,
        device: torch.device,
        chunk_size: int = 8192,
        search_dims: int = 0,
        candidates: int = 0,
    ):
        self.rows, self.cols, self.dim = rows, cols, dim
        self.device = device
        self.chunk_size = chunk_size
        self.search_dims, self.candidates = search_dims, candidates
        self.weights = torch.zeros(rows * cols, dim, device=device)
        self._coords = grid_coordinates(rows, cols, device)

    @classmethod
    def from_config(cls, config: SomConfig, dim: int, device: torch.device) -> BatchSOM:
        """A map of ``config``'s size, chunks and node search."""
        return cls(
            config.rows, config.cols, dim, device, config.chunk_size, config.search_dims, config.candidates
        )

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

    def spread(self, values: torch.Tensor, sigma: float) -> torch.Tensor:
        """``h @ values`` for per-node ``values`` (n_nodes, m) without the (n_nodes, n_nodes) matrix ``h``.

        The grid distance splits into rows and columns, ``h_kc = g(r_k - r_c) g(c_k - c_c)`` with
        ``g(t) = exp(-t^2 / (2 sigma^2))``, so ``h`` is applied as a rows x rows then a cols x cols product:
        O(n_nodes (rows + cols) m) instead of O(n_nodes^2 m).
        """
        flat = values.dim() == 1
        grid = values.reshape(self.rows, self.cols, -1).to(torch.float32)

        def kernel(n: int) -> torch.Tensor:
            t = torch.arange(n, device=values.device, dtype=torch.float32)
            return torch.exp(-((t[:, None] - t[None, :]) ** 2) / (2.0 * sigma * sigma))

        grid = torch.einsum("ij,jcm->icm", kernel(self.rows), grid)
        grid = torch.einsum("kc,icm->ikm", kernel(self.cols), grid)
        out = grid.reshape(self.n_nodes, -1)
        return out[:, 0] if flat else out

    def search(self, mask: torch.Tensor | None = None) -> tuple[NodeSearch, torch.Tensor | None]:
        """A search over the current weights (only nodes where ``mask`` is True) and the node index of each
        searched node (``None`` when every node is searched)."""
        if mask is None:
            return NodeSearch(self.weights, self.search_dims, self.candidates), None
        kept = torch.nonzero(mask.to(self.device)).flatten()
        return NodeSearch(self.weights[kept], self.search_dims, self.candidates), kept

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
        search, _ = self.search()
        for start, stop in self._chunks(data.shape[0]):
            x = data[start:stop].to(self.device, torch.float32, non_blocking=True)
            bmu, d2 = search.best(x)
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

        Each epoch draws :func:`epoch_samples` samples afresh (seeded by ``config.seed``), or passes over all
        of them: the batch update is a neighbourhood-weighted mean, which a random sample of tens of samples
        per node already estimates, so the map's quality holds at a fraction of the passes (measured in
        BENCHMARKS.md). Returns the quantization error measured during each epoch (on its samples, before
        that epoch's update).
        """
        monitor = monitor or Monitor()
        errors = []
        schedule = sigma_schedule(config)
        sizes = epoch_samples(config, data.shape[0])
        total = sum(sizes)  # progress in samples, so the bar moves within each epoch
        generator = torch.Generator().manual_seed(config.seed)
        done = 0
        for sigma, size in zip(schedule, sizes, strict=True):
            sample = data
            if size < data.shape[0]:
                sample = data[torch.randperm(data.shape[0], generator=generator)[:size].to(data.device)]
            monitor.step("som", done, total)
            sums, counts, error = self.epoch_sums(
                sample, monitor, lambda d, before=done: monitor.step("som", before + d, total)
            )
            done += size
            errors.append(error)
            numerator = self.spread(sums, sigma)
            denominator = self.spread(counts, sigma)
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
        search, kept = self.search(mask)
        idx_parts, d2_parts = [], []
        for start, stop in self._chunks(data.shape[0]):
            idx, d2 = search.nearest(data[start:stop], k)
            idx_parts.append(idx if kept is None else kept[idx])
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
    som = BatchSOM.from_config(config, dims, device)
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
