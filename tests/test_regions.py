"""Defect regions and the verdict rule with a minimum area."""

from __future__ import annotations

import numpy as np
import pytest

import somad
from somad.regions import format_boxes, largest_area


def two_blobs() -> np.ndarray:
    m = np.zeros((40, 60), np.float32)
    m[5:15, 10:20] = 3.0  # 100 px, peak 3
    m[7, 12] = 4.0
    m[30:33, 40:44] = 5.0  # 12 px, peak 5
    return m


def test_regions_are_connected_components_with_area_peak_and_box():
    regions = somad.find_regions(two_blobs(), 2.0)
    assert [(r.area, r.peak, r.box) for r in regions] == [
        (100, 4.0, (10, 5, 10, 10)),
        (12, 5.0, (40, 30, 4, 3)),
    ]
    assert format_boxes(regions) == "10 5 10 10;40 30 4 3"
    assert somad.find_regions(two_blobs(), 4.5)[0].area == 12
    assert somad.find_regions(two_blobs(), 9.0) == []
    assert largest_area(two_blobs(), 2.0) == 100 and largest_area(two_blobs(), 9.0) == 0


def test_diagonal_neighbours_are_one_region():
    m = np.zeros((5, 5), np.float32)
    m[1, 1] = m[2, 2] = m[3, 3] = 1.0
    assert [r.area for r in somad.find_regions(m, 1.0)] == [3]


def test_minimum_area_and_pixel_threshold_decide_the_verdict():
    m = two_blobs()
    assert somad.VerdictRule(2.0).verdict(5.0, m) == "NG"
    assert somad.VerdictRule(2.0, min_area=100).verdict(5.0, m) == "NG"
    assert somad.VerdictRule(2.0, min_area=101).verdict(5.0, m) == "OK"
    # regions drawn higher: only the small blob is left, and it is too small
    assert somad.VerdictRule(2.0, pixel_threshold=4.5, min_area=50).verdict(5.0, m) == "OK"
    assert somad.VerdictRule(6.0).verdict(5.0, m) == "OK"  # the score decides first
    assert somad.VerdictRule(2.0, min_area=10).verdict(5.0) == "NG"  # no map: the score alone
    assert somad.VerdictRule(2.0, min_area=10).verdict(5.0, largest=9) == "OK"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"threshold": float("nan")},
        {"threshold": 1.0, "min_area": -1},
        {"threshold": 1.0, "min_area": 2.5},
        {"threshold": 1.0, "pixel_threshold": float("inf")},
    ],
)
def test_bad_rules_are_refused(kwargs):
    with pytest.raises(somad.ConfigError):
        somad.VerdictRule(**kwargs)


def test_critical_level_is_where_the_largest_region_stops_being_large_enough():
    from somad.regions import critical_level

    rng = np.random.default_rng(0)
    import cv2

    for seed in range(5):
        m = cv2.GaussianBlur(rng.random((40, 50), dtype=np.float32), (0, 0), 3.0)
        for min_area in (1, 30, 200, 5000):
            level = critical_level(m, min_area)
            levels = np.unique(m)
            brute = [v for v in levels if largest_area(m, float(v)) >= min_area]
            assert level == (max(brute) if brute else -np.inf), (seed, min_area)
        assert critical_level(m, 10, scale=4.0) == critical_level(m, 3)  # 3 map px of 4 image px: 12 >= 10
