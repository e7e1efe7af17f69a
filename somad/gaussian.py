"""Per-node Gaussians and the Mahalanobis distance to them (Eqs. 2 and 3 of SOMAD).

One definition throughout: node ``j``'s Gaussian is centred on the **sample mean** ``mu_j`` of the training
patches whose best-matching unit is ``j``, its covariance is the scatter around that same mean, and test
distances are measured from that same mean. The SOM weight ``m_j`` is a neighbourhood-smoothed average pulled
towards adjacent nodes, so centring Eq. 2 on it would inflate every covariance by ``(m_j - mu_j)(m_j - mu_j)^T``
while distances from ``mu_j`` would disagree with it; the weight serves only to find the k nearest nodes.

Covariance (Eq. 2 with shrinkage towards the pooled within-node covariance, Bayesian prior of n0 samples)::

    S_j      = sum_{i in G_j} (f_i - mu_j)(f_i - mu_j)^T
    Sigma_p  = sum_j S_j / (N - J)                       (J = nodes with >= 1 hit)
    Sigma_j  = (S_j + n0 Sigma_p) / (n_j - 1 + n0) + lambda I          (n_j >= 2)
    Sigma_j  = Sigma_p + lambda I                                      (n_j == 1: mean = the one patch)
    lambda   = RELATIVE_RIDGE * tr(Sigma_p) / d                        (when not given: scale-free)

With ``n0 = 0`` this is Eq. 2 as printed. Nodes with no hit hold no evidence of normal data and are masked
out of the nearest-node search (no phantom nodes at the origin). Each covariance is stored as the inverse of
its Cholesky factor, ``W_j = L_j^{-1}`` with ``Sigma_j = L_j L_j^T``, so that Eq. 3 becomes
``M = ||W_j (f - mu_j)||``.

PaDiM's Gaussians, one per feature-grid position (:func:`fit_position_gaussians`), go through the same
regularised factor (:func:`inverse_cholesky`) and are stored in the same :class:`NodeGaussians`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from somad.devices import single_threaded
from somad.progress import Monitor

#: The ridge, when not given, as a share of the mean per-channel variance of the patches around their node's
#: mean (BENCHMARKS.md, "The ridge λ over seeds").
RELATIVE_RIDGE = 0.5


@dataclass
class NodeGaussians:
    """Means (J, d), inverse Cholesky factors (J, d, d), hit counts (J,) of every node; float32; and the ridge
    λ their covariances were fitted with."""

    means: torch.Tensor
    inverse_cholesky: torch.Tensor
    counts: torch.Tensor
    ridge: float = 0.0

    @property
    def valid(self) -> torch.Tensor:
        """Nodes that won at least one training patch."""
        return self.counts > 0

    def to(self, device: torch.device) -> NodeGaussians:
        return NodeGaussians(
            self.means.to(device), self.inverse_cholesky.to(device), self.counts.to(device), self.ridge
        )

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.means, self.inverse_cholesky, self.counts))


def gaussian_bytes(n_nodes: int, dims: int) -> int:
    """Bytes of the stored statistics of ``n_nodes`` nodes of ``dims`` channels."""
    return 4 * n_nodes * (dims * dims + dims) + 8 * n_nodes


def pack_lower(matrices: torch.Tensor) -> torch.Tensor:
    """(J, d, d) lower-triangular matrices -> (J, d (d + 1) / 2): their lower triangles, row by row (how model
    files store the inverse Cholesky factors: half the bytes, nothing lost)."""
    rows, cols = torch.tril_indices(matrices.shape[-1], matrices.shape[-1], device=matrices.device)
    return matrices[:, rows, cols].contiguous()


def unpack_lower(packed: torch.Tensor, dims: int) -> torch.Tensor:
    """The inverse of :func:`pack_lower`: (J, d (d + 1) / 2) -> (J, d, d), zeros above the diagonal."""
    rows, cols = torch.tril_indices(dims, dims, device=packed.device)
    out = torch.zeros(packed.shape[0], dims, dims, dtype=packed.dtype, device=packed.device)
    out[:, rows, cols] = packed
    return out


def inverse_cholesky(cov: torch.Tensor) -> torch.Tensor:
    """``W = L^{-1}`` with ``cov = L L^T`` for a batch of covariances, as float32 (so ``M^2 = ||W (f - mu)||^2``)."""
    chol = torch.linalg.cholesky(cov)
    eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
    return torch.linalg.solve_triangular(chol, eye.expand_as(cov), upper=False).float()


def fit_node_gaussians(
    features: torch.Tensor,
    assignments: torch.Tensor,
    n_nodes: int,
    fallback_means: torch.Tensor,
    lam: float | None,
    shrinkage: float,
    device: torch.device,
    monitor: Monitor | None = None,
    node_chunk: int = 128,
) -> NodeGaussians:
    """Fit every node's Gaussian from ``features`` (N, d) and their best-matching units ``assignments`` (N,).

    ``fallback_means`` (the SOM weights) are kept as the means of nodes without hits, which stay masked out.
    Means and the pooled scatter come from one vectorised pass in float64; each node's scatter is then formed
    from its centred patches (float32 products, summed into float64) a chunk of nodes at a time, so memory
    stays O(node_chunk d^2) beyond the stored factors.
    """
    monitor = monitor or Monitor()
    dims = features.shape[1]
    counts = torch.bincount(assignments.cpu(), minlength=n_nodes)
    hit_nodes = torch.nonzero(counts).flatten().tolist()
    monitor.step("statistics", 0, n_nodes)

    # Pass 1, vectorised: node means, and the pooled scatter sum_j S_j = sum_i f_i f_i^T - sum_j n_j mu_j mu_j^T.
    assign_dev = assignments.to(device)
    sums = torch.zeros(n_nodes, dims, dtype=torch.float64, device=device)
    gram = torch.zeros(dims, dims, dtype=torch.float64, device=device)
    for start in range(0, features.shape[0], 65536):
        x = features[start : start + 65536].to(device, torch.float64)
        sums.index_add_(0, assign_dev[start : start + 65536], x)
        gram += x.T @ x
        monitor.check()
    counts_dev = counts.to(device)
    hit = counts_dev > 0
    means = fallback_means.detach().to(device, torch.float64).clone()
    means[hit] = sums[hit] / counts_dev[hit].unsqueeze(1)
    pooled = (gram - (means[hit] * counts_dev[hit].unsqueeze(1)).T @ means[hit]) / max(
        int(counts.sum()) - len(hit_nodes), 1
    )
    if lam is None:
        lam = max(RELATIVE_RIDGE * float(pooled.trace()) / dims, 1e-6)

    # Pass 2: each node's scatter from its contiguous slice of the sorted patches, then shrunk, regularised
    # covariances, chunk by chunk, inverted through their Cholesky factors.
    order = torch.argsort(assignments.cpu(), stable=True)
    starts = (torch.cumsum(counts, 0) - counts).tolist()
    counts_list = counts.tolist()
    inverse = torch.empty(n_nodes, dims, dims, dtype=torch.float32, device=device)
    for start in range(0, n_nodes, node_chunk):
        stop = min(start + node_chunk, n_nodes)
        monitor.step("statistics", start, n_nodes)
        first, last = starts[start], starts[stop - 1] + counts_list[stop - 1]
        block = features[order[first:last]].to(device, torch.float32)
        cov = torch.empty(stop - start, dims, dims, dtype=torch.float64, device=device)
        with single_threaded(device), torch.inference_mode():
            for node in range(start, stop):
                if counts_list[node] >= 2:
                    lo = starts[node] - first
                    centred = block[lo : lo + counts_list[node]] - means[node].float()
                    cov[node - start] = centred.T @ centred
                else:
                    cov[node - start] = 0.0
        with torch.inference_mode():  # in place: a chunk of float64 matrices is tens of megabytes
            n = counts_dev[start:stop].to(torch.float64)
            cov.add_(pooled, alpha=shrinkage).div_((n - 1 + shrinkage).clamp_min(1e-12).view(-1, 1, 1))
            cov[n < 2] = pooled
            cov.diagonal(dim1=1, dim2=2).add_(lam)
        inverse[start:stop] = inverse_cholesky(cov)
    monitor.step("statistics", n_nodes, n_nodes)
    return NodeGaussians(means.float(), inverse, counts.to(device), float(lam))


def mahalanobis_to_nodes(x: torch.Tensor, nodes: torch.Tensor, gaussians: NodeGaussians) -> torch.Tensor:
    """Squared Mahalanobis distance (Eq. 3 squared) of each row of ``x`` (n, d) to each of its nodes (n, k).

    Pairs are grouped by node, so each node's factor is read once and applied with one matrix product,
    whatever the number of patches: memory stays O(n k d) instead of gathering an (n, k, d, d) array.
    """
    n, k = nodes.shape
    flat = nodes.reshape(-1)
    order = torch.argsort(flat)
    sorted_nodes = flat[order]
    unique, counts = torch.unique_consecutive(sorted_nodes, return_counts=True)
    result = torch.empty(n * k, dtype=torch.float32, device=x.device)
    pairs_x = x[order // k]  # patches in node order: each node's rows are one contiguous slice
    squared = torch.empty_like(result)
    start = 0
    with single_threaded(x.device):
        for node, count in zip(unique.tolist(), counts.tolist(), strict=True):
            stop = start + count
            z = (pairs_x[start:stop] - gaussians.means[node]) @ gaussians.inverse_cholesky[node].T
            squared[start:stop] = (z * z).sum(1)
            start = stop
    result[order] = squared
    return result.view(n, k)


def fit_position_gaussians(
    features: torch.Tensor,
    lam: float,
    device: torch.device,
    monitor: Monitor | None = None,
    position_chunk: int = 128,
) -> NodeGaussians:
    """One Gaussian per feature-grid position (PaDiM): mean and covariance over the N training images.

    ``features`` is (N, P, d); ``Sigma_p = 1/(N-1) sum_i (f_ip - mu_p)(f_ip - mu_p)^T + lambda I``, stored like
    node Gaussians (inverse Cholesky factors), so the same distance code serves both methods.
    """
    monitor = monitor or Monitor()
    n, positions, dims = features.shape
    means = torch.empty(positions, dims, dtype=torch.float32, device=device)
    inverse = torch.empty(positions, dims, dims, dtype=torch.float32, device=device)
    eye = torch.eye(dims, dtype=torch.float64, device=device)
    for start in range(0, positions, position_chunk):
        monitor.step("statistics", start, positions)
        x = features[:, start : start + position_chunk].to(device, torch.float64)
        mu = x.mean(0)
        centred = (x - mu).permute(1, 0, 2)  # (chunk, N, d)
        cov = centred.transpose(1, 2) @ centred / max(n - 1, 1) + lam * eye
        means[start : start + position_chunk] = mu.float()
        inverse[start : start + position_chunk] = inverse_cholesky(cov)
    monitor.step("statistics", positions, positions)
    counts = torch.full((positions,), n, dtype=torch.int64, device=device)
    return NodeGaussians(means, inverse, counts, float(lam))


def mahalanobis_per_position(
    x: torch.Tensor, gaussians: NodeGaussians, position_chunk: int = 256
) -> torch.Tensor:
    """Squared Mahalanobis distance (B, P) of each patch of ``x`` (B, P, d) to its own position's Gaussian."""
    b, positions, _ = x.shape
    out = torch.empty(b, positions, dtype=torch.float32, device=x.device)
    for start in range(0, positions, position_chunk):
        stop = min(start + position_chunk, positions)
        centred = (x[:, start:stop] - gaussians.means[start:stop]).permute(1, 0, 2)  # (chunk, B, d)
        z = centred @ gaussians.inverse_cholesky[start:stop].transpose(1, 2)
        out[:, start:stop] = (z * z).sum(-1).T
    return out
