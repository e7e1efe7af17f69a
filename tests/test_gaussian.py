"""Per-node Gaussians (Eq. 2 with shrinkage) and the Mahalanobis distance to them (Eq. 3), against numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from somad.gaussian import (
    RELATIVE_RIDGE,
    NodeGaussians,
    fit_node_gaussians,
    gaussian_bytes,
    mahalanobis_to_nodes,
)
from somad.progress import Monitor
from somad.som import BatchSOM

CPU = torch.device("cpu")
DIMS = 5
N_NODES = 6


def _dataset(seed: int = 0):
    """Features and hand-made assignments: node 0 many hits, 1 and 2 some, 3 one hit, 4 and 5 none."""
    rng = np.random.default_rng(seed)
    sizes = {0: 400, 1: 60, 2: 25, 3: 1}
    feats, assign = [], []
    for node, n in sizes.items():
        mixing = rng.normal(size=(DIMS, DIMS))
        feats.append(rng.normal(size=(n, DIMS)) @ mixing + rng.normal(0, 3, DIMS))
        assign += [node] * n
    x = np.concatenate(feats)
    order = rng.permutation(len(x))  # members interleaved, as in a real gallery
    return x[order].astype(np.float32), np.asarray(assign)[order]


def _fallback(seed: int = 1) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(N_NODES, DIMS)).astype(np.float32))


def _covariance(g: NodeGaussians, node: int) -> np.ndarray:
    """Sigma_j from its stored inverse Cholesky factor W_j: Sigma^-1 = W^T W."""
    w = g.inverse_cholesky[node].double().numpy()
    return np.linalg.inv(w.T @ w)


def _fit(x, assign, lam=0.01, shrinkage=0.0, node_chunk=128, fallback=None):
    return fit_node_gaussians(
        torch.from_numpy(x),
        torch.from_numpy(assign),
        N_NODES,
        _fallback() if fallback is None else fallback,
        lam,
        shrinkage,
        CPU,
        node_chunk=node_chunk,
    )


def _pooled(x: np.ndarray, assign: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    scatter = np.zeros((DIMS, DIMS))
    nodes = np.unique(assign)
    for node in nodes:
        centred = x[assign == node] - x[assign == node].mean(0)
        scatter += centred.T @ centred
    return scatter / (len(x) - len(nodes))


def test_well_populated_node_matches_numpy_covariance():
    x, assign = _dataset()
    lam = 0.01
    g = _fit(x, assign, lam=lam, shrinkage=0.0)
    for node in (0, 1, 2):
        members = x[assign == node].astype(np.float64)
        np.testing.assert_allclose(g.means[node].numpy(), members.mean(0), rtol=1e-5, atol=1e-5)
        expected = np.cov(members, rowvar=False) + lam * np.eye(DIMS)
        np.testing.assert_allclose(_covariance(g, node), expected, rtol=1e-3, atol=1e-4)
    # The stored factor is lower-triangular (inverse of a Cholesky factor).
    w = g.inverse_cholesky[0].numpy()
    np.testing.assert_array_equal(np.triu(w, 1), 0)


def test_shrinkage_matches_the_documented_formula():
    x, assign = _dataset(seed=3)
    lam, n0 = 0.05, 7.5
    g = _fit(x, assign, lam=lam, shrinkage=n0)
    pooled = _pooled(x, assign)
    for node in (0, 1, 2):
        members = x[assign == node].astype(np.float64)
        centred = members - members.mean(0)
        scatter = centred.T @ centred
        expected = (scatter + n0 * pooled) / (len(members) - 1 + n0) + lam * np.eye(DIMS)
        np.testing.assert_allclose(_covariance(g, node), expected, rtol=1e-3, atol=1e-4)
    # Shrinkage moves a small node's covariance towards the pooled one.
    plain = _fit(x, assign, lam=lam, shrinkage=0.0)
    gap_plain = np.linalg.norm(_covariance(plain, 2) - pooled)
    gap_shrunk = np.linalg.norm(_covariance(g, 2) - pooled)
    assert gap_shrunk < gap_plain


def test_single_hit_node_uses_pooled_covariance_and_its_sample_as_mean():
    x, assign = _dataset(seed=4)
    lam = 0.02
    for shrinkage in (0.0, 3.0):
        g = _fit(x, assign, lam=lam, shrinkage=shrinkage)
        np.testing.assert_allclose(g.means[3].numpy(), x[assign == 3][0], rtol=1e-6)
        expected = _pooled(x, assign) + lam * np.eye(DIMS)
        np.testing.assert_allclose(_covariance(g, 3), expected, rtol=1e-3, atol=1e-4)
        assert int(g.counts[3]) == 1


def test_nodes_without_hits_are_invalid_and_never_nearest():
    x, assign = _dataset(seed=5)
    fallback = _fallback()
    g = _fit(x, assign, fallback=fallback)
    np.testing.assert_array_equal(g.counts.numpy(), [400, 60, 25, 1, 0, 0])
    np.testing.assert_array_equal(g.valid.numpy(), [True, True, True, True, False, False])
    torch.testing.assert_close(g.means[4:], fallback[4:])
    assert torch.isfinite(g.inverse_cholesky).all()
    som = BatchSOM(2, 3, DIMS, CPU)
    som.weights = fallback.clone()
    # Queries placed exactly on the empty nodes' weights, plus the training data itself.
    queries = torch.cat([fallback[4:], fallback[4:] + 1e-3, torch.from_numpy(x)])
    idx, _ = som.nearest(queries, 4, mask=g.valid)
    assert not np.isin(idx.numpy(), [4, 5]).any()
    assert set(np.unique(idx.numpy())) <= {0, 1, 2, 3}


def test_node_chunking_does_not_change_the_statistics():
    x, assign = _dataset(seed=6)
    one = _fit(x, assign, shrinkage=2.0, node_chunk=1)
    many = _fit(x, assign, shrinkage=2.0, node_chunk=128)
    torch.testing.assert_close(one.means, many.means)
    torch.testing.assert_close(one.inverse_cholesky, many.inverse_cholesky)
    assert torch.equal(one.counts, many.counts)


def test_progress_reports_statistics_stage_and_finishes():
    x, assign = _dataset(seed=7)
    seen = []
    fit_node_gaussians(
        torch.from_numpy(x),
        torch.from_numpy(assign),
        N_NODES,
        _fallback(),
        0.01,
        0.0,
        CPU,
        Monitor(progress=lambda s, d, t: seen.append((s, d, t))),
    )
    assert seen and all(stage == "statistics" and 0 <= done <= total for stage, done, total in seen)
    assert seen[-1][1] == seen[-1][2]


def _numpy_mahalanobis(x, nodes, g):
    x = x.astype(np.float64)
    out = np.empty(nodes.shape)
    for i in range(nodes.shape[0]):
        for j in range(nodes.shape[1]):
            node = nodes[i, j]
            w = g.inverse_cholesky[node].double().numpy()
            precision = w.T @ w
            diff = x[i] - g.means[node].double().numpy()
            out[i, j] = diff @ precision @ diff
    return out


def test_mahalanobis_matches_numpy_with_repeated_nodes():
    x, assign = _dataset(seed=8)
    g = _fit(x, assign, lam=0.1, shrinkage=1.0)
    rng = np.random.default_rng(9)
    queries = rng.normal(0, 3, (50, DIMS)).astype(np.float32)
    nodes = rng.integers(0, 4, (50, 3))
    nodes[:, 2] = nodes[:, 0]  # the same node twice in one row
    nodes[:10] = 2  # one node for many rows
    got = mahalanobis_to_nodes(torch.from_numpy(queries), torch.from_numpy(nodes), g)
    assert got.shape == (50, 3)
    expected = _numpy_mahalanobis(queries, nodes, g)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(got[:, 2].numpy(), got[:, 0].numpy(), rtol=1e-6)
    # A node's own mean is at distance zero.
    at_mean = mahalanobis_to_nodes(g.means[:4], torch.arange(4).view(4, 1), g)
    np.testing.assert_allclose(at_mean.numpy(), 0.0, atol=1e-5)


def test_mahalanobis_to_identity_gaussian_is_squared_euclidean():
    means = torch.randn(3, 4)
    g = NodeGaussians(means, torch.eye(4).expand(3, 4, 4).clone(), torch.tensor([5, 5, 5]))
    x = torch.randn(20, 4)
    nodes = torch.randint(0, 3, (20, 2))
    expected = ((x[:, None, :] - means[nodes]) ** 2).sum(-1)
    torch.testing.assert_close(mahalanobis_to_nodes(x, nodes, g), expected)


def test_gaussian_bytes_matches_stored_size():
    x, assign = _dataset()
    g = _fit(x, assign)
    assert g.nbytes == gaussian_bytes(N_NODES, DIMS)
    assert gaussian_bytes(10, 8) > gaussian_bytes(10, 4) and gaussian_bytes(20, 4) > gaussian_bytes(10, 4)


@pytest.mark.parametrize("lam", [1e-4, 1.0])
def test_lambda_is_added_to_the_diagonal(lam):
    x, assign = _dataset(seed=10)
    small = _fit(x, assign, lam=1e-6)
    big = _fit(x, assign, lam=lam)
    np.testing.assert_allclose(
        _covariance(big, 0) - _covariance(small, 0), (lam - 1e-6) * np.eye(DIMS), atol=1e-3
    )


def test_the_auto_ridge_follows_the_spread_of_the_patches_around_their_nodes():
    rng = np.random.default_rng(11)
    x = torch.from_numpy(rng.normal(0.0, 1.0, (600, DIMS)))
    assign = torch.from_numpy(rng.integers(0, 6, 600))
    fitted = fit_node_gaussians(x, assign, 6, torch.zeros(6, DIMS), None, 0.0, CPU)
    within = torch.cat([x[assign == j] - x[assign == j].mean(0) for j in range(6)])
    expected = RELATIVE_RIDGE * float((within * within).sum()) / (600 - 6) / DIMS
    assert fitted.ridge == pytest.approx(expected, rel=1e-6)
    scaled = fit_node_gaussians(10 * x, assign, 6, torch.zeros(6, DIMS), None, 0.0, CPU)
    assert scaled.ridge == pytest.approx(100 * fitted.ridge, rel=1e-6)
    # a scale-free statistic: the same Mahalanobis distances for features ten times larger
    queries = torch.from_numpy(rng.normal(0.0, 1.5, (40, DIMS))).float()
    nodes = torch.from_numpy(rng.integers(0, 6, (40, 2)))
    torch.testing.assert_close(
        mahalanobis_to_nodes(10 * queries, nodes, scaled),
        mahalanobis_to_nodes(queries, nodes, fitted),
        rtol=1e-4,
        atol=1e-4,
    )
