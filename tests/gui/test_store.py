"""The non-widget state: entries, scores and verdicts as arrays; the patch mapping; maps kept small."""

from __future__ import annotations

import time

import numpy as np

import somad
from somad_gui.store import NG, OK, UNSCORED, ResultStore, StoredResult, entries_from_dataset

from .synthetic import fake_result, synthetic_dataset


def test_entries_follow_the_dataset():
    ds = synthetic_dataset(n_test=8, n_train=3)
    entries = entries_from_dataset(ds)
    assert [e.split for e in entries] == ["train"] * 3 + ["test"] * 8
    assert entries[3].defect_type == "good" and entries[3].label == 0 and entries[3].mask_path is None
    assert entries[4].label == 1 and entries[4].mask_path is not None
    assert entries[4].ground_truth == "defective"


def test_verdicts_are_vectorised_and_report_changes():
    store = ResultStore.from_dataset(synthetic_dataset(n_test=1000))
    rng = np.random.default_rng(0)
    store.set_results(
        {e.index: fake_result(rng.uniform(0, 10)) for e in store.entries if e.split == "test"}, {}
    )
    assert np.all(store.verdicts == UNSCORED)
    t0 = time.perf_counter()
    changed = store.set_threshold(5.0)
    assert time.perf_counter() - t0 < 0.01
    test = store.is_test
    assert np.all(store.verdicts[~test] == UNSCORED)
    assert np.array_equal(store.verdicts[test] == NG, store.scores[test] >= 5.0)
    assert set(changed) == set(np.flatnonzero(test))
    changed = store.set_threshold(6.0)
    between = np.flatnonzero((store.scores >= 5.0) & (store.scores < 6.0))
    assert set(changed) == set(between)
    counts = store.counts()
    assert counts["ok"] + counts["ng"] == 1000 and counts["unscored"] == 20


def test_misclassified_uses_labels():
    store = ResultStore.from_dataset(synthetic_dataset(n_test=4, n_train=0))
    # good, crack, hole, scratch
    store.set_results({i: fake_result(s) for i, s in enumerate([9.0, 1.0, 9.0, 9.0])}, {})
    store.set_threshold(5.0)
    assert list(store.verdicts) == [NG, OK, NG, NG]
    assert list(store.misclassified()) == [True, True, False, False]


def test_large_maps_are_kept_reduced_and_restored_to_image_size():
    amap = np.zeros((1024, 768), np.float32)
    amap[500:520, 300:320] = 7.0
    result = somad.ImageResult(
        anomaly_map=amap,
        score=7.0,
        nearest_nodes=np.zeros((56, 56, 4), int),
        best_node=np.zeros((56, 56), int),
        grid_shape=(56, 56),
    )
    stored = StoredResult.from_image_result(result)
    assert max(stored.anomaly_map.shape) == 512 and stored.image_shape == (1024, 768)
    assert stored.full_map().shape == (1024, 768)
    assert stored.score == 7.0 and stored.map_min == 0.0


def test_patch_mapping_scales_pixels_to_the_feature_grid():
    stored = fake_result(1.0, shape=(100, 200), grid=(10, 20))
    assert stored.patch_at(0, 0) == (0, 0)
    assert stored.patch_at(199, 99) == (9, 19)
    assert stored.patch_at(15, 55) == (int(55 * 10 / 100), int(15 * 20 / 200))


def test_heat_levels_cover_typical_floor_to_top_score():
    store = ResultStore.from_dataset(synthetic_dataset(n_test=4, n_train=0))
    store.set_results({i: fake_result(s) for i, s in enumerate([2.0, 3.0, 4.0, 8.0])}, {})
    lo, hi = store.heat_levels()
    assert hi == 8.0 and lo < hi
