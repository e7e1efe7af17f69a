"""Metrics of anomaly detection against scikit-learn, hand-made cases and a slow direct PRO reference."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from somad.decision import threshold_for_false_reject_rate
from somad.errors import ConfigError
from somad.metrics import (
    Confusion,
    aupro,
    best_f1_threshold,
    confusion_at,
    f1_at,
    image_auroc,
    pixel_auroc,
    pro_curve,
    roc_curve_points,
)


def _smooth_case(rng: np.random.Generator, n_images: int = 6, shape=(48, 40), n_good: int = 2):
    """Random smooth maps with defect masks correlated to them; the last ``n_good`` images have no defect."""
    masks, maps = [], []
    for i in range(n_images):
        field = ndimage.gaussian_filter(rng.normal(size=shape), 3.0)
        amap = field + ndimage.gaussian_filter(rng.normal(size=shape), 2.0)
        mask = field > np.quantile(field, 0.85) if i < n_images - n_good else np.zeros(shape, bool)
        masks.append(mask)
        maps.append(amap.astype(np.float32))
    return masks, maps


def _reference_aupro(masks, maps, max_fpr: float = 0.3, n_thresholds: int = 1000) -> float:
    """Direct definition: on a fine grid of thresholds, count fpr and the mean overlap of each region."""
    regions = []
    for i, m in enumerate(masks):
        ids, n = ndimage.label(m, structure=np.ones((3, 3)))
        regions += [(i, ids == r) for r in range(1, n + 1)]
    normal = np.concatenate([~m.ravel() for m in masks])
    values = np.concatenate([a.ravel() for a in maps])
    fprs, pros = [0.0], [0.0]
    for t in np.linspace(values.max(), values.min(), n_thresholds):
        fprs.append(np.mean(values[normal] >= t))
        pros.append(np.mean([np.mean(maps[i][region] >= t) for i, region in regions]))
    fprs, pros = np.array(fprs), np.array(pros)
    keep = fprs <= max_fpr
    x = np.append(fprs[keep], max_fpr)
    y = np.append(pros[keep], np.interp(max_fpr, fprs, pros))
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2) / max_fpr)


# --- AUROC --------------------------------------------------------------------------------------------------


def test_image_auroc_matches_sklearn():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = rng.normal(size=200) + labels
    assert image_auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_image_auroc_one_class_is_none():
    assert image_auroc([0, 0, 0], [0.1, 0.5, 0.2]) is None
    assert image_auroc([1, 1], [0.1, 0.5]) is None


def test_pixel_auroc_matches_sklearn_pooled():
    rng = np.random.default_rng(1)
    masks, maps = _smooth_case(rng)
    expected = roc_auc_score(
        np.concatenate([m.ravel() for m in masks]), np.concatenate([a.ravel() for a in maps])
    )
    assert pixel_auroc(masks, maps) == pytest.approx(expected, abs=1e-12)


def test_pixel_auroc_one_class_is_none():
    assert pixel_auroc([np.zeros((4, 4), bool)], [np.random.default_rng(2).random((4, 4))]) is None
    assert pixel_auroc([np.ones((4, 4), bool)], [np.random.default_rng(3).random((4, 4))]) is None


# --- PRO ----------------------------------------------------------------------------------------------------


def _two_blobs():
    mask = np.zeros((32, 32), bool)
    mask[2:22, 2:22] = True  # 400 pixels
    mask[28:30, 28:30] = True  # 4 pixels
    return mask


def test_aupro_perfect_map_is_one():
    mask = _two_blobs()
    good = np.zeros((32, 32), bool)
    assert aupro([mask, good], [mask.astype(float), np.zeros((32, 32))]) == pytest.approx(1.0, abs=1e-12)


def test_aupro_inverted_map_is_zero():
    mask = _two_blobs()
    assert aupro([mask], [(~mask).astype(float)]) == pytest.approx(0.0, abs=1e-12)


def test_aupro_constant_map_is_the_diagonal():
    # One tie group: the curve jumps from (0, 0) to (1, 1); the area under y = x up to 0.3 is 0.045.
    fpr, pro = pro_curve([_two_blobs()], [np.full((32, 32), 0.5)])
    np.testing.assert_allclose(fpr, [0.0, 1.0])
    np.testing.assert_allclose(pro, [0.0, 1.0])
    assert aupro([_two_blobs()], [np.full((32, 32), 0.5)]) == pytest.approx(0.15, abs=1e-12)


def test_pro_counts_regions_not_pixels():
    """Only the small region is found: PRO is 0.5 at low FPR although it holds 1 % of the defect pixels."""
    mask = _two_blobs()
    amap = np.random.default_rng(4).uniform(0.1, 0.5, (32, 32))
    amap[mask] = 0.0
    amap[28:30, 28:30] = 1.0
    fpr, pro = pro_curve([mask], [amap])
    assert np.all(np.diff(fpr) >= 0)
    assert fpr[0] == 0.0 and pro[0] == 0.0
    assert fpr[-1] == pytest.approx(1.0) and pro[-1] == pytest.approx(1.0)
    for x in (0.0, 0.01, 0.1, 0.3):
        assert np.interp(x, fpr, pro) == pytest.approx(0.5, abs=1e-12)
    assert aupro([mask], [amap]) == pytest.approx(0.5, abs=1e-12)


def test_good_images_add_only_normal_pixels():
    mask = np.zeros((10, 10), bool)
    mask[3:5, 3:5] = True
    good = np.zeros((10, 10), bool)
    # The good image scores above the defect: at its score PRO is still 0 and FPR is 100 / 196.
    fpr, pro = pro_curve([mask, good], [mask.astype(float), np.full((10, 10), 2.0)])
    np.testing.assert_allclose(fpr, [0.0, 100 / 196, 100 / 196, 1.0])
    np.testing.assert_allclose(pro, [0.0, 0.0, 1.0, 1.0])


def test_regions_are_eight_connected():
    mask = np.zeros((6, 6), bool)
    mask[0, 0] = mask[1, 1] = True  # diagonal neighbours: one region of 2 pixels
    mask[4, 4] = True  # a second region
    amap = np.full((6, 6), 0.5)
    amap[mask] = 0.0
    amap[0, 0] = 1.0
    fpr, pro = pro_curve([mask], [amap])
    # One region half found, one not: (1/2 + 0) / 2. With 4-connectivity it would be (1 + 0 + 0) / 3.
    assert fpr[1] == 0.0 and pro[1] == pytest.approx(0.25)


@pytest.mark.parametrize("seed", [5, 6, 7])
@pytest.mark.parametrize("max_fpr", [0.3, 0.05])
def test_aupro_matches_direct_reference(seed, max_fpr):
    masks, maps = _smooth_case(np.random.default_rng(seed))
    value = aupro(masks, maps, max_fpr=max_fpr)
    assert 0.0 <= value <= 1.0
    assert value == pytest.approx(_reference_aupro(masks, maps, max_fpr), abs=1e-3)


@pytest.mark.parametrize("max_fpr", [0.3, 0.1, 50 / 1000, 1.0])
def test_aupro_integrates_the_full_curve(max_fpr):
    """Ties everywhere (maps rounded to 0.1): aupro equals integrating pro_curve up to max_fpr by hand."""
    masks, maps = _smooth_case(np.random.default_rng(11), shape=(25, 40))  # 1000 pixels per image
    maps = [np.round(a, 1) for a in maps]
    fpr, pro = pro_curve(masks, maps)
    k = np.searchsorted(fpr, max_fpr, side="right")
    x, y = fpr[:k], pro[:k]
    if k < fpr.size:
        x = np.append(x, max_fpr)
        y = np.append(y, pro[k - 1] + (pro[k] - pro[k - 1]) * (max_fpr - fpr[k - 1]) / (fpr[k] - fpr[k - 1]))
    expected = np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2) / max_fpr
    assert aupro(masks, maps, max_fpr) == pytest.approx(expected, abs=1e-12)


def test_aupro_undefined_is_none():
    rng = np.random.default_rng(8)
    assert aupro([np.zeros((5, 5), bool)], [rng.random((5, 5))]) is None
    assert aupro([np.ones((5, 5), bool)], [rng.random((5, 5))]) is None
    with pytest.raises(ValueError, match="defect region"):
        pro_curve([np.zeros((5, 5), bool)], [rng.random((5, 5))])


def test_pixel_inputs_are_validated():
    m, a = np.zeros((4, 4), bool), np.zeros((4, 4))
    with pytest.raises(ValueError, match="image 1"):
        aupro([m, m], [a, np.zeros((4, 5))])
    with pytest.raises(ValueError, match="image 0"):
        pixel_auroc([m], [np.zeros(16)])
    with pytest.raises(ValueError, match="differ in number"):
        pixel_auroc([m, m], [a])
    with pytest.raises(ValueError, match="empty"):
        aupro([], [])
    with pytest.raises(ValueError, match="NaN"):
        aupro([m], [np.full((4, 4), np.nan)])
    with pytest.raises(ConfigError):
        aupro([m], [a], max_fpr=0.0)


# --- Thresholds ---------------------------------------------------------------------------------------------


LABELS = [0, 0, 0, 0, 1, 1, 1]
SCORES = [0.1, 0.2, 0.3, 0.6, 0.5, 0.7, 0.9]


def test_confusion_counts_by_hand():
    c = confusion_at(LABELS, SCORES, 0.5)  # >= 0.5: 0.6 (good), 0.5, 0.7, 0.9 (defective)
    assert c == Confusion(tp=3, fp=1, tn=3, fn=0)
    assert c.precision == 0.75 and c.recall == 1.0 and c.accuracy == 6 / 7
    assert c.f1 == pytest.approx(6 / 7)
    assert c.false_reject_rate == 0.25 and c.escape_rate == 0.0
    c = confusion_at(LABELS, SCORES, 0.65)
    assert c == Confusion(tp=2, fp=0, tn=4, fn=1)
    assert c.escape_rate == pytest.approx(1 / 3)
    assert Confusion(0, 0, 0, 0).f1 == 0.0


def test_best_f1_threshold_by_hand():
    # Thresholds 0.5 -> F1 6/7, 0.7 -> 0.8, 0.6 -> 0.667: 0.5 is best.
    threshold, f1 = best_f1_threshold(LABELS, SCORES)
    assert threshold == 0.5 and f1 == pytest.approx(6 / 7)
    assert f1_at(LABELS, SCORES, threshold) == pytest.approx(f1)
    assert best_f1_threshold([0, 1, 1], [0.2, 0.4, 0.9]) == (0.4, 1.0)


def test_best_f1_threshold_is_a_score_and_optimal():
    rng = np.random.default_rng(9)
    labels = rng.integers(0, 2, 60)
    scores = np.round(rng.normal(size=60) + labels, 1)  # ties included
    threshold, f1 = best_f1_threshold(labels, scores)
    assert threshold in scores
    assert f1 == pytest.approx(f1_at(labels, scores, threshold))
    assert f1 >= max(f1_at(labels, scores, t) for t in scores) - 1e-12


def test_false_reject_rate_threshold():
    good = np.arange(100.0)
    t = threshold_for_false_reject_rate(good, 0.01)
    assert np.sum(good >= t) == 1
    assert np.sum(good >= np.nextafter(t, -np.inf)) == 2  # smallest such threshold
    t0 = threshold_for_false_reject_rate(good, 0.0)
    assert np.sum(good >= t0) == 0 and t0 == np.nextafter(99.0, np.inf)


@pytest.mark.parametrize("rate", [0.0, 0.07, 0.1, 0.29, 0.5, 0.99])
def test_false_reject_rate_threshold_is_smallest(rate):
    good = np.round(np.random.default_rng(10).normal(size=100), 1)  # ties included
    t = threshold_for_false_reject_rate(good, rate)
    assert np.mean(good >= t) <= rate
    assert np.mean(good >= np.nextafter(t, -np.inf)) > rate


def test_image_inputs_are_validated():
    with pytest.raises(ValueError, match="differ in length"):
        image_auroc([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        confusion_at([0, 1], [0.1, np.nan], 0.5)
    with pytest.raises(ValueError, match="empty"):
        image_auroc([], [])
    with pytest.raises(ValueError, match="0 \\(good\\) or 1"):
        image_auroc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="empty"):
        threshold_for_false_reject_rate([], 0.1)
    with pytest.raises(ConfigError):
        threshold_for_false_reject_rate([1.0, 2.0], 1.0)
    with pytest.raises(ValueError, match="defective"):
        best_f1_threshold([0, 0], [0.1, 0.2])


def test_roc_curve_points_wrap_sklearn():
    fpr, tpr, thresholds = roc_curve_points(LABELS, SCORES)
    assert fpr[0] == 0.0 and tpr[0] == 0.0 and fpr[-1] == 1.0 and tpr[-1] == 1.0
    assert np.isinf(thresholds[0])
    assert np.trapezoid(tpr, fpr) == pytest.approx(image_auroc(LABELS, SCORES))
    with pytest.raises(ValueError, match="both"):
        roc_curve_points([1, 1], [0.1, 0.2])
