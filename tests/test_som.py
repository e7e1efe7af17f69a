"""The torch batch SOM: cross-checked against MiniSom, initialisations, neighbourhood, U-matrix, chunking."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from somad.config import SomConfig
from somad.som import (
    BatchSOM,
    MiniSomBackend,
    epoch_samples,
    grid_coordinates,
    sigma_schedule,
    umatrix,
)

CPU = torch.device("cpu")


def _random_data(seed: int = 0, n: int = 1000, dim: int = 6) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 1.0, (n, dim)).astype(np.float32)


def _clustered_data(seed: int = 0, n: int = 1200, dim: int = 8, clusters: int = 6) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 5.0, (clusters, dim))
    return (centres[rng.integers(0, clusters, n)] + rng.normal(0.0, 0.5, (n, dim))).astype(np.float32)


def _fitted_som(
    data: np.ndarray, rows: int = 8, cols: int = 8, epochs: int = 4, chunk: int = 300
) -> BatchSOM:
    x = torch.from_numpy(data)
    som = BatchSOM(rows, cols, data.shape[1], CPU, chunk)
    som.init_random(x, 0)
    som.fit(x, SomConfig(rows=rows, cols=cols, epochs=epochs, min_epoch_share=1.0))
    return som


def _exact_sorted_d2(data: np.ndarray, weights: np.ndarray) -> np.ndarray:
    diff = data[:, None, :].astype(np.float64) - weights[None].astype(np.float64)
    return np.sort((diff * diff).sum(-1), axis=1)


# -- cross-check against MiniSom --------------------------------------------------------------------------
def test_minisom_with_same_weights_gives_same_errors_and_hits():
    data = _random_data()
    som = _fitted_som(data)
    x = torch.from_numpy(data)
    # Precondition: no near-ties among the three nearest nodes, so float32 vs float64 cannot flip a BMU.
    d2 = _exact_sorted_d2(data, som.weights.numpy())
    assert (d2[:, 1] - d2[:, 0]).min() > 1e-5 and (d2[:, 2] - d2[:, 1]).min() > 1e-5

    mini = MiniSomBackend(8, 8, data.shape[1])
    mini.set_weights(som.weights.numpy())
    np.testing.assert_allclose(mini.weights, som.weights.numpy())
    assert mini.quantization_error(data) == pytest.approx(som.quantization_error(x), rel=1e-4)
    # Topographic error: the same number of samples whose two BMUs are not grid neighbours.
    n = len(data)
    assert round(mini.topographic_error(data) * n) == round(som.topographic_error(x) * n)
    assert 0 < som.topographic_error(x) < 1
    np.testing.assert_array_equal(mini.hit_counts(data), som.hit_counts(x))
    assert som.hit_counts(x).sum() == n
    np.testing.assert_allclose(mini.umatrix(), som.umatrix(), rtol=1e-5)


def test_batch_som_and_minisom_reach_comparable_quantization_error():
    data = _clustered_data()
    x = torch.from_numpy(data)
    epochs = 4
    som = BatchSOM(8, 8, data.shape[1], CPU, 512)
    som.init_pca(x, 0)
    start_qe = som.quantization_error(x)
    som.fit(x, SomConfig(rows=8, cols=8, epochs=epochs, min_epoch_share=1.0))
    mini = MiniSomBackend(8, 8, data.shape[1], sigma=2.0, learning_rate=0.5, seed=0)
    mini.som.pca_weights_init(data)
    mini.fit_batch(data, epochs)
    qe_torch, qe_mini = som.quantization_error(x), mini.quantization_error(data)
    assert qe_torch < 0.5 * start_qe  # training did something
    assert 1 / 1.5 < qe_torch / qe_mini < 1.5, (qe_torch, qe_mini)
    # Both organised the data far below its spread (clusters 5 apart, noise 0.5 per channel).
    assert qe_torch < 3.0 and qe_mini < 3.0


def test_quantization_error_decreases_over_epochs():
    data = _clustered_data(seed=1)
    x = torch.from_numpy(data)
    som = BatchSOM(8, 8, data.shape[1], CPU, 512)
    som.init_pca(x, 0)
    before = som.quantization_error(x)
    errors = som.fit(x, SomConfig(rows=8, cols=8, epochs=5, min_epoch_share=1.0))
    assert len(errors) == 5
    # Each entry is measured during its epoch, before that epoch's update.
    assert errors[0] == pytest.approx(before, rel=1e-5)
    history = [*errors, som.quantization_error(x)]
    assert all(b <= a * (1 + 1e-6) for a, b in itertools.pairwise(history)), history
    assert history[-1] < 0.5 * before


def test_sigma_schedule_decays_from_start_to_end():
    cfg = SomConfig(rows=12, cols=8, epochs=5, sigma_end=0.5)
    schedule = sigma_schedule(cfg)
    assert schedule[0] == pytest.approx(3.0) and schedule[-1] == pytest.approx(0.5)
    assert all(b < a for a, b in itertools.pairwise(schedule))
    assert sigma_schedule(SomConfig(epochs=1, sigma_end=0.7)) == [0.7]


# -- initialisation ---------------------------------------------------------------------------------------
def test_init_shapes_for_every_method():
    data = torch.from_numpy(_random_data(n=300, dim=5))
    for rows, cols in ((6, 9), (1, 4), (7, 1)):
        som = BatchSOM(rows, cols, 5, CPU)
        som.init_random(data, 0)
        assert som.weights.shape == (rows * cols, 5) and som.weights.dtype == torch.float32
        som.init_pca(data, 0)
        assert som.weights.shape == (rows * cols, 5) and torch.isfinite(som.weights).all()
        som.init_positional(torch.randn(5, 4, 3))
        assert som.weights.shape == (rows * cols, 5)


def test_random_init_uses_distinct_samples_and_is_seeded():
    data = torch.from_numpy(_random_data(n=200, dim=4))
    som = BatchSOM(6, 6, 4, CPU)
    som.init_random(data, 5)
    rows = {tuple(r) for r in som.weights.tolist()}
    assert len(rows) == 36
    assert rows <= {tuple(r) for r in data.tolist()}
    first = som.weights.clone()
    som.init_random(data, 5)
    assert torch.equal(first, som.weights)
    som.init_random(data, 6)
    assert not torch.equal(first, som.weights)
    # Fewer samples than nodes: still every node is a sample.
    small = BatchSOM(6, 6, 4, CPU)
    small.init_random(data[:10], 0)
    assert small.weights.shape == (36, 4)
    assert {tuple(r) for r in small.weights.tolist()} <= {tuple(r) for r in data[:10].tolist()}


def test_pca_init_spans_the_leading_plane():
    rng = np.random.default_rng(2)
    # Strongly anisotropic data: variance 25 along e0, 4 along e1, ~0 elsewhere.
    data = np.zeros((2000, 4), np.float32)
    data[:, 0] = rng.normal(0, 5, 2000)
    data[:, 1] = rng.normal(0, 2, 2000)
    data[:, 2:] = rng.normal(0, 0.01, (2000, 2))
    som = BatchSOM(5, 5, 4, CPU)
    som.init_pca(torch.from_numpy(data) + 10.0, 0)
    w = som.weights.numpy()
    np.testing.assert_allclose(w.mean(0), [10, 10, 10, 10], atol=0.35)
    spread = w.max(0) - w.min(0)
    assert spread[0] == pytest.approx(20.0, rel=0.1)  # +-2 sd along the first component
    assert spread[1] == pytest.approx(8.0, rel=0.1)
    assert spread[2:].max() < 0.2


def test_positional_init_equals_position_means_when_sizes_match():
    means = torch.randn(7, 6, 5)  # (dim, gh, gw)
    som = BatchSOM(6, 5, 7, CPU)
    som.init_positional(means)
    for r in range(6):
        for c in range(5):
            torch.testing.assert_close(som.weights[r * 5 + c], means[:, r, c])


def test_positional_init_is_resampled_when_sizes_differ():
    means = torch.randn(3, 4, 4)
    som = BatchSOM(7, 10, 3, CPU)
    som.init_positional(means)
    w = som.weights.view(7, 10, 3)
    expected = F.interpolate(means[None], size=(7, 10), mode="bilinear", align_corners=True)[0]
    torch.testing.assert_close(w, expected.permute(1, 2, 0))
    # align_corners keeps the four corners exactly.
    torch.testing.assert_close(w[0, 0], means[:, 0, 0])
    torch.testing.assert_close(w[-1, -1], means[:, -1, -1])
    torch.testing.assert_close(w[0, -1], means[:, 0, -1])
    # Not a plain copy: the map has more nodes than grid cells.
    assert som.weights.shape == (70, 3)


# -- neighbourhood, U-matrix, queries ---------------------------------------------------------------------
def test_neighbourhood_tiny_sigma_is_identity_and_wide_sigma_is_smooth():
    som = BatchSOM(4, 5, 2, CPU)
    h = som.neighbourhood(1e-3)
    torch.testing.assert_close(h, torch.eye(20), atol=1e-6, rtol=0)
    wide = som.neighbourhood(2.0)
    torch.testing.assert_close(wide, wide.T)
    assert torch.all(wide.diagonal() == 1)
    # Neighbour at grid distance 1: exp(-1 / (2 * 4)).
    assert float(wide[0, 1]) == pytest.approx(np.exp(-1 / 8), rel=1e-5)
    assert float(wide[0, 5]) == pytest.approx(np.exp(-1 / 8), rel=1e-5)
    assert float(wide[0, 6]) == pytest.approx(np.exp(-2 / 8), rel=1e-5)


def test_grid_coordinates_are_row_major():
    coords = grid_coordinates(2, 3)
    np.testing.assert_array_equal(coords.numpy(), [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]])


def _brute_umatrix(weights: np.ndarray, rows: int, cols: int) -> np.ndarray:
    w = weights.reshape(rows, cols, -1).astype(np.float64)
    out = np.zeros((rows, cols))
    for r in range(rows):
        for c in range(cols):
            dists = []
            for rr in range(r - 1, r + 2):
                for cc in range(c - 1, c + 2):
                    if (rr, cc) != (r, c) and 0 <= rr < rows and 0 <= cc < cols:
                        dists.append(np.linalg.norm(w[r, c] - w[rr, cc]))
            out[r, c] = np.mean(dists) if dists else 0.0
    return out


@pytest.mark.parametrize("shape", [(5, 7), (1, 6), (6, 1), (2, 2)])
def test_umatrix_matches_brute_force(shape):
    rows, cols = shape
    weights = np.random.default_rng(rows * 10 + cols).normal(size=(rows * cols, 4)).astype(np.float32)
    np.testing.assert_allclose(umatrix(weights, rows, cols), _brute_umatrix(weights, rows, cols), rtol=1e-5)
    som = BatchSOM(rows, cols, 4, CPU)
    som.weights = torch.from_numpy(weights)
    np.testing.assert_allclose(som.umatrix(), _brute_umatrix(weights, rows, cols), rtol=1e-5)


def test_chunk_size_does_not_change_results():
    data = _random_data(seed=4, n=800, dim=5)
    small = _fitted_som(data, chunk=7)
    large = _fitted_som(data, chunk=10_000)
    torch.testing.assert_close(small.weights, large.weights, atol=1e-5, rtol=1e-5)
    x = torch.from_numpy(data)
    idx_s, d2_s = small.nearest(x, 3)
    idx_l, d2_l = large.nearest(x, 3)
    assert torch.equal(idx_s, idx_l)
    torch.testing.assert_close(d2_s, d2_l)


def test_nearest_matches_numpy_and_respects_mask():
    data = _random_data(seed=5, n=200, dim=4)
    rng = np.random.default_rng(6)
    weights = rng.normal(size=(12, 4)).astype(np.float32)
    som = BatchSOM(3, 4, 4, CPU, chunk_size=33)
    som.weights = torch.from_numpy(weights)
    idx, d2 = som.nearest(torch.from_numpy(data), 3)
    full = ((data[:, None, :].astype(np.float64) - weights[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(idx.numpy(), np.argsort(full, axis=1)[:, :3])
    np.testing.assert_allclose(d2.numpy(), np.sort(full, axis=1)[:, :3], rtol=1e-4, atol=1e-4)
    mask = torch.ones(12, dtype=torch.bool)
    mask[[0, 5, 7]] = False
    idx_m, _ = som.nearest(torch.from_numpy(data), 4, mask=mask)
    assert not np.isin(idx_m.numpy(), [0, 5, 7]).any()
    # Queries sitting exactly on a masked node still get an unmasked one.
    idx_on, _ = som.nearest(torch.from_numpy(weights[[0, 5, 7]]), 1, mask=mask)
    assert not np.isin(idx_on.numpy(), [0, 5, 7]).any()


def test_fit_is_seeded_and_deterministic():
    data = _clustered_data(seed=7, n=600)
    a = _fitted_som(data, epochs=3)
    b = _fitted_som(data, epochs=3)
    assert torch.equal(a.weights, b.weights)
    x = torch.from_numpy(data)
    c = BatchSOM(8, 8, data.shape[1], CPU, 300)
    c.init_random(x, 1)
    c.fit(x, SomConfig(rows=8, cols=8, epochs=3, min_epoch_share=1.0))
    assert not torch.equal(a.weights, c.weights)


def test_fit_keeps_weights_finite_with_empty_nodes():
    # Two tight clusters on a big map: many nodes win nothing, none may become NaN.
    data = np.concatenate([np.zeros((50, 3)), np.ones((50, 3)) * 10]).astype(np.float32)
    x = torch.from_numpy(data)
    som = BatchSOM(12, 12, 3, CPU)
    som.init_random(x, 0)
    errors = som.fit(x, SomConfig(rows=12, cols=12, epochs=3, sigma_end=0.3, min_epoch_share=1.0))
    assert torch.isfinite(som.weights).all()
    assert errors[-1] < 1e-3
    hits = som.hit_counts(x)
    assert hits.shape == (12, 12) and hits.sum() == 100 and (hits == 0).sum() > 100


def test_epochs_on_drawn_samples_reach_the_quality_of_full_passes():
    data = torch.from_numpy(_clustered_data(seed=2, n=20_000))
    result = {}
    for per_epoch in (0, 1_000):
        som = BatchSOM(8, 8, data.shape[1], CPU, 4096)
        som.init_pca(data, 0)
        som.fit(data, SomConfig(rows=8, cols=8, epochs=6, samples_per_epoch=per_epoch, min_epoch_share=1.0))
        result[per_epoch] = (som.quantization_error(data), som.topographic_error(data), som.weights.clone())
    full, drawn = result[0], result[1_000]
    assert drawn[0] <= full[0] * 1.03  # 20 times fewer samples a pass, the same quantization error
    assert drawn[1] <= full[1] + 0.02
    assert not torch.equal(full[2], drawn[2])  # the samples were drawn: a different map
    again = BatchSOM(8, 8, data.shape[1], CPU, 4096)
    again.init_pca(data, 0)
    again.fit(data, SomConfig(rows=8, cols=8, epochs=6, samples_per_epoch=1_000, min_epoch_share=1.0))
    assert torch.equal(again.weights, drawn[2])  # seeded: the same draws


def test_epochs_with_a_wide_neighbourhood_draw_fewer_samples():
    config = SomConfig(
        rows=40, cols=40, epochs=10, sigma_end=0.5, samples_per_epoch=10_000, min_epoch_share=0.1
    )
    sizes = epoch_samples(config, 50_000)
    assert sizes[-1] == 10_000 and sizes[0] == 1_000  # the floor: a tenth
    assert all(b >= a for a, b in itertools.pairwise(sizes))
    for sigma, size in zip(sigma_schedule(config), sizes, strict=True):
        assert size == min(10_000, max(1_000, math.ceil(10_000 / sigma**2)))  # (2 sigma_end / sigma)^2
    assert epoch_samples(config, 3_000)[-1] == 3_000 and epoch_samples(config, 3_000)[0] == 300
    assert epoch_samples(replace(config, min_epoch_share=1.0), 50_000) == [10_000] * 10


def test_fewer_samples_in_wide_epochs_keep_the_map_quality():
    data = torch.from_numpy(_clustered_data(seed=3, n=20_000))
    result = {}
    for share in (1.0, 0.1):
        som = BatchSOM(12, 12, data.shape[1], CPU, 4096)
        som.init_pca(data, 0)
        som.fit(data, SomConfig(rows=12, cols=12, epochs=8, sigma_end=0.5, min_epoch_share=share))
        result[share] = (som.quantization_error(data), som.topographic_error(data))
    assert result[0.1][0] <= result[1.0][0] * 1.03
    assert result[0.1][1] <= result[1.0][1] + 0.02
