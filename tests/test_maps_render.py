"""Anomaly maps (upsampling, smoothing, image score) and the pictures drawn from them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from somad import render
from somad.maps import REFERENCE_SIZE, gaussian_kernel1d, image_score, patch_scores_to_maps, smooth

CPU = torch.device("cpu")


@pytest.mark.parametrize("sigma", [1.0, 2.5, 4.0])
def test_smooth_delta_matches_scipy_in_the_interior(sigma):
    size = 64
    delta = np.zeros((size, size), np.float32)
    delta[30, 27] = 1.0
    ours = smooth(torch.from_numpy(delta)[None], sigma)[0].numpy()
    ref = ndimage.gaussian_filter(delta.astype(np.float64), sigma, mode="reflect")
    r = max(1, int(4.0 * sigma + 0.5))
    inner = (slice(r, size - r), slice(r, size - r))
    np.testing.assert_allclose(ours[inner], ref[inner], atol=1e-4)
    assert ours.sum() == pytest.approx(1.0, abs=1e-4)  # mass is kept
    assert np.unravel_index(ours.argmax(), ours.shape) == (30, 27)


def test_smooth_random_map_matches_scipy_in_the_interior():
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(3, 40, 52)).astype(np.float32)
    sigma = 2.0
    ours = smooth(torch.from_numpy(maps), sigma).numpy()
    assert ours.shape == maps.shape
    for m, o in zip(maps, ours, strict=True):
        ref = ndimage.gaussian_filter(m.astype(np.float64), sigma, mode="reflect")
        np.testing.assert_allclose(o[8:-8, 8:-8], ref[8:-8, 8:-8], atol=1e-4)


def test_smooth_with_zero_sigma_is_identity():
    maps = torch.rand(2, 9, 7)
    assert torch.equal(smooth(maps, 0.0), maps)


def test_kernel_is_normalised_and_truncated_at_four_sigma():
    k = gaussian_kernel1d(2.0, CPU)
    assert k.numel() == 2 * 8 + 1
    assert float(k.sum()) == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(k, k.flip(0))
    assert int(k.argmax()) == 8


def test_patch_scores_to_maps_returns_each_images_own_size():
    scores = torch.rand(3, 8, 8)
    sizes = [(64, 64), (50, 120), (137, 41)]
    maps = patch_scores_to_maps(scores, 64, 4.0, sizes)
    assert [m.shape for m in maps] == sizes
    assert all(m.dtype == np.float32 and m.flags.c_contiguous for m in maps)
    # The map of a constant patch score is that constant, at any output size.
    flat = patch_scores_to_maps(torch.full((2, 8, 8), 3.5), 64, 4.0, [(30, 90), (64, 64)])
    for m in flat:
        np.testing.assert_allclose(m, 3.5, rtol=1e-6)


def test_patch_scores_to_maps_puts_the_peak_where_the_patch_is():
    scores = torch.zeros(1, 8, 8)
    scores[0, 1, 6] = 10.0  # top right region
    (m,) = patch_scores_to_maps(scores, 64, 4.0, [(100, 200)])
    r, c = np.unravel_index(m.argmax(), m.shape)
    assert r < 40 and c > 130
    assert m.min() >= -1e-5


def test_smoothing_scales_with_input_size():
    """``sigma`` is in pixels of a 224 input: at 112 px the blur is half as many pixels."""
    scores = torch.zeros(1, 28, 28)
    scores[0, 14, 9] = 1.0
    (m,) = patch_scores_to_maps(scores, 112, 4.0, [(112, 112)])
    up = torch.nn.functional.interpolate(scores[None], size=(112, 112), mode="bilinear", align_corners=False)[
        0
    ]
    np.testing.assert_allclose(m, smooth(up, 2.0)[0].numpy(), atol=1e-6)
    assert not np.allclose(m, smooth(up, 4.0)[0].numpy(), atol=1e-3)
    assert REFERENCE_SIZE == 224


def test_image_score_is_the_maximum():
    m = np.random.default_rng(1).normal(size=(20, 30)).astype(np.float32)
    m[4, 5] = 42.0
    assert image_score(m) == 42.0
    assert image_score(np.full((3, 3), -2.0, np.float32)) == -2.0
    bad = m.copy()
    bad[0, 0] = np.inf
    assert image_score(bad) == math.inf


def _blob_map(shape=(90, 140)):
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return np.exp(-((yy - 40) ** 2 + (xx - 90) ** 2) / (2 * 10.0**2)).astype(np.float32) * 10.0


def test_annotate_keeps_size_and_outlines_the_region_above_threshold():
    amap = _blob_map()
    image = np.full((*amap.shape, 3), 128, np.uint8)
    low = render.annotate(image, amap, threshold=5.0, vmin=0.0, vmax=10.0)
    none = render.annotate(image, amap, threshold=1e9, vmin=0.0, vmax=10.0)
    assert low.shape == image.shape and low.dtype == np.uint8
    assert none.shape == image.shape
    red = np.all(low == render.PREDICTED_COLOUR, axis=2)
    assert red.sum() > 20
    assert not np.all(none == render.PREDICTED_COLOUR, axis=2).any()
    # Red pixels lie on the boundary of the region above threshold, never far from it.
    region = amap >= 5.0
    near = ndimage.binary_dilation(region, iterations=2) & ~ndimage.binary_erosion(region, iterations=2)
    assert near[red].all()
    # Elsewhere the two overlays are the same heatmap blend.
    np.testing.assert_array_equal(low[~near], none[~near])


def test_annotate_of_a_non_square_image_with_truth_and_caption():
    amap = _blob_map((70, 160))
    image = np.random.default_rng(2).integers(0, 256, (70, 160, 3), dtype=np.uint8)
    truth = np.zeros((70, 160), bool)
    truth[10:30, 10:40] = True
    out = render.annotate(image, amap, 5.0, vmin=0.0, vmax=10.0, truth=truth, caption="NG 9.9")
    assert out.shape == (70, 160, 3)
    assert np.all(out == render.TRUTH_COLOUR, axis=2).any()


def test_heatmap_rgb_spans_the_colormap():
    amap = np.linspace(0, 1, 100, dtype=np.float32).reshape(10, 10)
    heat = render.heatmap_rgb(amap, 0.0, 1.0)
    assert heat.shape == (10, 10, 3) and heat.dtype == np.uint8
    # Jet: low end blue, high end red.
    assert heat[0, 0, 2] > heat[0, 0, 0] and heat[-1, -1, 0] > heat[-1, -1, 2]
    # Clipped outside [vmin, vmax].
    np.testing.assert_array_equal(
        render.heatmap_rgb(amap - 5, 0.0, 1.0), render.heatmap_rgb(amap * 0, 0.0, 1.0)
    )


def test_colour_range_puts_the_threshold_mid_scale():
    from somad.score_report import colour_range

    assert colour_range({"train_score_mean": 2.0}, 5.0) == (2.0, 8.0)
    low, high = colour_range({"train_score_mean": 6.0}, 5.0)  # threshold under the good mean: still around it
    assert low < 5.0 < high and (low + high) / 2 == 5.0
    assert colour_range({}, 3.0) == (0.0, 6.0)
