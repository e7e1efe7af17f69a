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

With ``n0 = 0`` this is Eq. 2 as printed. Nodes with no hit hold no evidence of normal data and are masked
out of the nearest-node search (no phantom nodes at the origin). Each covariance is stored as the inverse of
its Cholesky factor, ``W_j = L_j^{-1}`` with ``Sigma_j = L_j L_j^T``, so that Eq. 3 becomes
``M = ||W_j (f - mu_j)||``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.progress import Monitor


@dataclass
class NodeGaussians:
    """Means (J, d), inverse Cholesky factors (J, d, d), hit counts (J,) of every node; float32."""

    means: torch.Tensor
    inverse_cholesky: torch.Tensor
    counts: torch.Tensor

    @property
    def valid(self) -> torch.Tensor:
        """Nodes that won at least one training patch."""
        return self.counts > 0

    def to(self, device: torch.device) -> NodeGaussians:
        return NodeGaussians(self.means.to(device), self.inverse_cholesky.to(device), self.counts.to(device))

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.means, self.inverse_cholesky, self.counts))


def gaussian_bytes(n_nodes: int, dims: int) -> int:
    """Bytes of the stored statistics of ``n_nodes`` nodes of ``dims`` channels."""
    return 4 * n_nodes * (dims * dims + dims) + 8 * n_nodes


def _group_by_node(
    assignments: torch.Tensor, n_nodes: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    order = torch.argsort(assignments, stable=True)
    counts = torch.bincount(assignments, minlength=n_nodes)
    starts = torch.cumsum(counts, 0) - counts
    return order, counts, starts


def fit_node_gaussians(
    features: torch.Tensor,
    assignments: torch.Tensor,
    n_nodes: int,
    fallback_means: torch.Tensor,
    lam: float,
    shrinkage: float,
    device: torch.device,
    monitor: Monitor | None = None,
    node_chunk: int = 128,
) -> NodeGaussians:
    """Fit every node's Gaussian from ``features`` (N, d) and their best-matching units ``assignments`` (N,).

    ``fallback_means`` (the SOM weights) are kept as the means of nodes without hits, which stay masked out.
    Scatter matrices are accumulated in float64 on ``device``, a chunk of nodes at a time, so memory stays
    O(node_chunk d^2) beyond the stored factors.
    """
    monitor = monitor or Monitor()
    dims = features.shape[1]
    order, counts, starts = _group_by_node(assignments.cpu(), n_nodes)
    hit_nodes = torch.nonzero(counts).flatten().tolist()
    total_steps = 2 * len(hit_nodes)

    def members(node: int) -> torch.Tensor:
        x = features[order[starts[node] : starts[node] + counts[node]]].to(device, torch.float64)
        return x - x.mean(0)

    # Pass 1: node means and the pooled within-node scatter.
    means = fallback_means.detach().to(device, torch.float64).clone()
    pooled = torch.zeros(dims, dims, dtype=torch.float64, device=device)
    for i, node in enumerate(hit_nodes):
        if i % 64 == 0:
            monitor.step("statistics", i, total_steps)
        x = features[order[starts[node] : starts[node] + counts[node]]].to(device, torch.float64)
        means[node] = x.mean(0)
        centred = x - means[node]
        pooled += centred.T @ centred
    pooled /= max(int(counts.sum()) - len(hit_nodes), 1)

    # Pass 2: shrunk, regularised covariances, chunk by chunk, inverted through their Cholesky factors.
    counts_dev = counts.to(device)
    inverse = torch.empty(n_nodes, dims, dims, dtype=torch.float32, device=device)
    eye = torch.eye(dims, dtype=torch.float64, device=device)
    done = len(hit_nodes)
    for start in range(0, n_nodes, node_chunk):
        stop = min(start + node_chunk, n_nodes)
        scatter = torch.zeros(stop - start, dims, dims, dtype=torch.float64, device=device)
        for node in range(start, stop):
            if counts[node] >= 2:
                centred = members(node)
                scatter[node - start] = centred.T @ centred
                done += 1
            elif counts[node] == 1:
                done += 1
        monitor.step("statistics", done, total_steps)
        n = counts_dev[start:stop].to(torch.float64).view(-1, 1, 1)
        own = (scatter + shrinkage * pooled) / (n - 1 + shrinkage).clamp_min(1e-12)
        cov = torch.where(n >= 2, own, pooled.expand_as(own)) + lam * eye
        chol = torch.linalg.cholesky(cov)
        inverse[start:stop] = torch.linalg.solve_triangular(chol, eye.expand_as(cov), upper=False).float()
    monitor.step("statistics", total_steps, total_steps)
    return NodeGaussians(means.float(), inverse, counts.to(device))


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
    patch_of = order // k
    start = 0
    for node, count in zip(unique.tolist(), counts.tolist(), strict=True):
        stop = start + count
        rows = patch_of[start:stop]
        z = (x[rows] - gaussians.means[node]) @ gaussians.inverse_cholesky[node].T
        result[order[start:stop]] = (z * z).sum(1)
        start = stop
    return result.view(n, k)
