"""SOMAD's patch aggregation and map sizing, on synthetic features where the answer is known."""

from __future__ import annotations

import math

import pytest
import torch

from somad.aggregation import aggregate
from somad.extraction import FeatureSet
from somad.methods import create_detector
from somad.som_config import HITS_PER_NODE, MAX_AUTO_SIDE, MIN_AUTO_SIDE, SomConfig
from tests.conftest import make_config

CPU = torch.device("cpu")


def test_aggregate_is_the_window_mean_of_the_cells_inside_the_grid():
    x = torch.randn(2, 7, 6, 3)
    out = aggregate(x, 3, 2)
    assert out.shape == (2, 4, 3, 3)
    for r, c in [(0, 0), (1, 1), (3, 2), (2, 0)]:
        rows = slice(max(2 * r - 1, 0), min(2 * r + 2, 7))
        cols = slice(max(2 * c - 1, 0), min(2 * c + 2, 6))
        torch.testing.assert_close(out[:, r, c], x[:, rows, cols].mean((1, 2)))
    assert aggregate(x, 1, 1) is x


@pytest.mark.parametrize(
    ("patches", "side"),
    [(100, MIN_AUTO_SIDE), (40_000, 40), (156_800, 79), (10_000_000, MAX_AUTO_SIDE)],
)
def test_an_auto_map_rests_about_hits_per_node_patches_on_each_node(patches, side):
    sized = SomConfig(rows=0, cols=0).sized_for(patches)
    assert (sized.rows, sized.cols) == (side, side)
    if MIN_AUTO_SIDE < side < MAX_AUTO_SIDE:
        assert patches / side**2 == pytest.approx(HITS_PER_NODE, rel=0.05)
    assert SomConfig(rows=6, cols=9).sized_for(patches) == SomConfig(rows=6, cols=9)  # explicit: kept


def _stripes(n: int, seed: int, odd_block: bool = False) -> torch.Tensor:
    """(n, 16, 16, 8) features: columns alternate between two normal cells A and B; with ``odd_block`` a
    6 x 6 block holds A everywhere: every cell of it is normal alone, but its neighbourhood never is."""
    g = torch.Generator().manual_seed(seed)
    a, b = torch.zeros(8), torch.zeros(8)
    a[0], b[1] = 4.0, 4.0
    cols = torch.arange(16) % 2 == 0
    grid = torch.where(cols.view(1, 1, 16, 1), a, b).expand(n, 16, 16, 8).clone()
    if odd_block:
        grid[:, 5:11, 5:11] = a
    return grid + 0.05 * torch.randn(grid.shape, generator=g)


@pytest.mark.parametrize("window", [1, 3])
def test_a_defect_of_normal_cells_in_an_abnormal_arrangement_needs_the_window(window):
    config = make_config(som=4, epochs=3).with_changes(
        som={"patch_window": window, "patch_stride": 1}, scoring={"k": 1}
    )
    detector = create_detector("somad", config, {}, CPU).fit(FeatureSet(_stripes(20, 0)))
    scores = detector.score(FeatureSet(_stripes(1, 1, odd_block=True)))[0]
    inside = scores[6:10, 6:10].max()
    outside = torch.cat([scores[:, :3].flatten(), scores[:, 13:].flatten()]).max()
    if window == 1:
        assert inside < 2 * outside  # each cell alone looks normal: the paper's patches miss it
    else:
        assert inside > 5 * outside  # the 3 x 3 mean carries the arrangement: found


def test_the_map_is_sized_when_fitted_and_scores_on_the_aggregated_grid():
    config = make_config(som=4, epochs=2).with_changes(som={"rows": 0, "cols": 0, "patch_window": 3})
    detector = create_detector("somad", config, {}, CPU).fit(FeatureSet(_stripes(20, 0)))
    expected = max(MIN_AUTO_SIDE, round(math.sqrt(20 * 8 * 8 / HITS_PER_NODE)))
    assert detector.som_shape == (expected, expected)
    assert detector.fit_summary["grid_shape"] == [8, 8]
    assert detector.score(FeatureSet(_stripes(2, 1))).shape == (2, 8, 8)
