"""The nearest-node search (Eq. 1): exact when its candidates cover the true nearest nodes, and the grid
neighbourhood applied one axis at a time."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from somad.node_search import NodeSearch
from somad.som import BatchSOM


def _brute_nearest(x: torch.Tensor, weights: torch.Tensor, k: int) -> torch.Tensor:
    d2 = ((x[:, None, :].double() - weights[None].double()) ** 2).sum(-1)
    return torch.topk(d2, k, dim=1, largest=False).indices


def _data(seed: int, n_nodes: int = 300, n: int = 500, dim: int = 24):
    g = torch.Generator().manual_seed(seed)
    scales = torch.linspace(
        3.0, 0.2, dim
    )  # a leading few directions carry most of the spread, as in features
    weights = torch.randn(n_nodes, dim, generator=g) * scales
    x = torch.randn(n, dim, generator=g) * scales
    return weights, x


@pytest.mark.parametrize("dims, candidates", [(0, 8), (24, 8), (4, 300), (4, 1000)])
def test_an_exhaustive_search_returns_the_exact_nearest_nodes(dims, candidates):
    weights, x = _data(0)
    search = NodeSearch(weights, dims, candidates)
    assert search.exhaustive
    idx, d2 = search.nearest(x, 3)
    assert torch.equal(idx, _brute_nearest(x, weights, 3))
    torch.testing.assert_close(d2, ((x[:, None] - weights[idx]) ** 2).sum(-1))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_candidate_search_is_exact_wherever_its_candidates_cover_the_nearest_nodes(seed):
    weights, x = _data(seed)
    dims, candidates, k = 8, 16, 2
    search = NodeSearch(weights, dims, candidates)
    assert not search.exhaustive
    found, _ = search.nearest(x, k)
    exact = _brute_nearest(x, weights, k)
    # the candidates: the nodes nearest in the search's principal directions
    q = (x - search.centre) @ search.basis
    coarse = ((q[:, None] - search.projected[None]) ** 2).sum(-1)
    wide = torch.topk(coarse, candidates, dim=1, largest=False).indices
    covered = torch.tensor([set(e.tolist()) <= set(w.tolist()) for e, w in zip(exact, wide, strict=True)])
    assert 0.2 < float(covered.float().mean()) < 0.99  # both cases occur: the test tests something
    assert torch.equal(found[covered], exact[covered])
    # where the true nearest were not all candidates, the answer is still the best of the candidates
    missed = ~covered
    d_found = ((x[missed][:, None] - weights[found[missed]]) ** 2).sum(-1)
    d_exact = ((x[missed][:, None] - weights[exact[missed]]) ** 2).sum(-1)
    assert torch.all(d_found >= d_exact - 1e-4)


def test_the_search_finds_every_node_from_its_own_weight():
    weights, _ = _data(4)
    idx, d2 = NodeSearch(weights, 6, 8).nearest(weights, 1)
    assert torch.equal(idx[:, 0], torch.arange(weights.shape[0]))
    assert float(d2.max()) < 1e-6


def test_features_within_the_search_dimensions_are_searched_exactly():
    g = torch.Generator().manual_seed(5)
    mixing = torch.randn(5, 40, generator=g)  # every node and query lies in a 5-dimensional subspace
    weights = torch.randn(400, 5, generator=g) @ mixing
    x = torch.randn(300, 5, generator=g) @ mixing
    idx, _ = NodeSearch(weights, 5, 4).nearest(x, 2)
    assert torch.equal(idx, _brute_nearest(x, weights, 2))


def test_a_masked_map_search_returns_only_kept_nodes_as_node_indices():
    weights, x = _data(6, n_nodes=64)
    som = BatchSOM(8, 8, weights.shape[1], torch.device("cpu"), search_dims=4, candidates=64)
    som.weights = weights
    mask = torch.arange(64) % 3 != 0
    idx, _ = som.nearest(x, 2, mask=mask)
    kept = torch.nonzero(mask).flatten()
    assert torch.equal(idx, kept[_brute_nearest(x, weights[kept], 2)])


@pytest.mark.parametrize("rows, cols, sigma", [(4, 5, 0.7), (9, 3, 2.5), (1, 6, 1.0)])
def test_the_neighbourhood_applied_by_axis_equals_the_full_matrix(rows, cols, sigma):
    som = BatchSOM(rows, cols, 3, torch.device("cpu"))
    values = torch.from_numpy(np.random.default_rng(0).normal(size=(rows * cols, 3)).astype(np.float32))
    torch.testing.assert_close(som.spread(values, sigma), som.neighbourhood(sigma) @ values)
    counts = values[:, 0].abs()
    torch.testing.assert_close(som.spread(counts, sigma), som.neighbourhood(sigma) @ counts)


@pytest.mark.parametrize("dims, candidates", [(0, 8), (6, 300)])
def test_the_best_matching_unit_is_the_nearest_node(dims, candidates):
    weights, x = _data(7)
    best, d2 = NodeSearch(weights, dims, candidates).best(x)
    exact = ((x[:, None].double() - weights[None].double()) ** 2).sum(-1)
    assert torch.equal(best, exact.argmin(1))
    torch.testing.assert_close(d2.double(), exact.min(1).values, rtol=1e-4, atol=1e-4)
