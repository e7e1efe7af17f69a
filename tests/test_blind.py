"""Blind anomaly maps: FCA on its own, the feature VAE, and FCA of the VAE residuals (Eq. 1 of seed 003)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from somad.defects.blind import (
    BlindConfig,
    FeatureVAE,
    blind_analysis,
    blind_maps,
    fca,
    pixel_threshold,
    rescale_instances,
    train_vae,
    vae_residuals,
)
from somad.errors import Cancelled, ConfigError


def _texture(d=16, h=40, w=40, seed=0) -> torch.Tensor:
    """A stationary random texture of features: i.i.d. cells, every channel uniform on [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(d, h, w, generator=g)


def test_fca_finds_a_patch_whose_values_break_the_texture():
    x = _texture()
    x[:, 18:23, 10:15] = 0.5 + 0.5 * x[:, 18:23, 10:15]  # values shifted up: same texture elsewhere
    scores = fca(x)
    mask = np.zeros((40, 40), bool)
    mask[18:23, 10:15] = True
    assert scores.shape == (40, 40)
    row, col = divmod(int(scores.argmax()), 40)
    assert 16 <= row <= 24 and 8 <= col <= 16
    assert roc_auc_score(mask.ravel(), scores.numpy().ravel()) > 0.95


def test_fca_of_a_uniform_map_is_zero_and_batches_match_single_maps():
    flat = torch.full((4, 12, 12), 0.3)
    assert torch.allclose(fca(flat), torch.zeros(12, 12), atol=1e-6)
    a, b = _texture(seed=1), _texture(seed=2)
    batch = fca(torch.stack([a, b]))
    assert torch.allclose(batch[0], fca(a), atol=1e-6) and torch.allclose(batch[1], fca(b), atol=1e-6)
    # chunking channels changes nothing
    assert torch.allclose(fca(a, channel_chunk=3), fca(a, channel_chunk=64), atol=1e-5)


def test_fca_sees_a_changed_distribution_not_a_changed_order():
    """Shuffling the cells of one patch leaves its distribution, and so its own contribution, unchanged."""
    x = _texture(d=4, h=24, w=24, seed=3)
    shuffled = x.clone()
    block = shuffled[:, 9:14, 9:14].reshape(4, -1)
    perm = torch.randperm(25, generator=torch.Generator().manual_seed(0))
    shuffled[:, 9:14, 9:14] = block[:, perm].reshape(4, 5, 5)
    # the means over the block stay close (only which cell holds which value changed)
    assert abs(float(fca(x)[9:14, 9:14].mean() - fca(shuffled)[9:14, 9:14].mean())) < 0.02


def test_instances_are_rescaled_to_unit_range_per_channel():
    f = torch.randn(3, 5, 8, 8) * 7 + 2
    f[0, 1] = 4.0  # a flat channel
    r = rescale_instances(f)
    assert float(r.min()) >= 0.0 and float(r.max()) <= 1.0 + 1e-6
    assert torch.allclose(r[1].amax(dim=(1, 2)), torch.ones(5))
    assert torch.all(r[0, 1] == 0)


def test_vae_learns_to_reconstruct_and_keeps_its_shapes():
    g = torch.Generator().manual_seed(0)
    basis = torch.rand(8, 3, generator=g)
    coefficients = torch.rand(20, 3, 10, 10, generator=g)
    features = rescale_instances(torch.einsum("dk,nkhw->ndhw", basis, coefficients))  # rank-3 features
    config = BlindConfig(iterations=400, batch_cells=512, beta=1e-3)
    untrained = FeatureVAE(8, 4)
    before = vae_residuals(untrained, features).pow(2).mean()
    vae = train_vae(features, config)
    after = vae_residuals(vae, features)
    assert after.shape == features.shape
    assert vae.latent == 8  # max(8, d // 4)
    assert after.pow(2).mean() < 0.5 * before


def test_blind_maps_localise_planted_anomalies_among_normal_images():
    rng = torch.Generator().manual_seed(5)
    n, d, h, w = 12, 12, 28, 28
    features = torch.rand(n, d, h, w, generator=rng)
    masks = np.zeros((n, h, w), bool)
    for i in range(0, n, 2):  # half the images carry one square of unusual features
        r, c = 6 + i % 12, 8 + (3 * i) % 10
        features[i, :, r : r + 4, c : c + 4] = 0.6 + 0.4 * torch.rand(d, 4, 4, generator=rng)
        features[i, : d // 2, r : r + 4, c : c + 4] = 0.0
        masks[i, r : r + 4, c : c + 4] = True
    maps, reconstruction = blind_analysis(features, BlindConfig(iterations=300, batch_cells=512))
    assert maps.shape == (n, h, w) and maps.dtype == np.float32
    assert reconstruction.shape == features.shape
    assert roc_auc_score(masks.ravel(), maps.ravel()) > 0.9
    threshold = pixel_threshold(maps, None, 0.95)
    assert (maps >= threshold).mean() == pytest.approx(0.05, abs=0.01)


def test_blind_maps_honour_cancel_and_validate_options():
    features = torch.rand(2, 4, 10, 10)
    with pytest.raises(Cancelled):
        blind_maps(features, BlindConfig(iterations=100), cancel=lambda: True)
    with pytest.raises(ConfigError):
        BlindConfig(pixel_quantile=1.5).validate()
    with pytest.raises(ConfigError):
        BlindConfig(sigma_p=0).validate()
