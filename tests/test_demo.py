"""The built-in synthetic demo set: determinism, defects and masks, and the written MVTec layout."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from somad.data import open_dataset, read_image, read_mask
from somad.demo import DEMO_DEFECT_TYPES, MARKER_NAME, demo_arrays, demo_part, make_demo_dataset, plant_defect
from somad.errors import ConfigError, DataError

SMALL = {"n_train": 3, "n_test_good": 2, "n_test_per_defect": 3, "size": 96, "seed": 5}


def test_demo_arrays_shape_and_order():
    d = demo_arrays(**SMALL)
    assert len(d.train) == 3 and len(d.test) == len(d.masks) == len(d.defect_types) == 2 + 2 * 3
    assert d.defect_types == ["good"] * 2 + ["scratch"] * 3 + ["spot"] * 3
    np.testing.assert_array_equal(d.labels, [0, 0, 1, 1, 1, 1, 1, 1])
    for image in d.train + d.test:
        assert image.shape == (96, 96, 3) and image.dtype == np.uint8
    for mask in d.masks:
        assert mask.shape == (96, 96) and mask.dtype == bool


def test_demo_arrays_deterministic():
    a, b = demo_arrays(**SMALL), demo_arrays(**SMALL)
    for x, y in zip(a.train + a.test + a.masks, b.train + b.test + b.masks, strict=True):
        np.testing.assert_array_equal(x, y)
    other = demo_arrays(**{**SMALL, "seed": 6})
    assert not np.array_equal(a.train[0], other.train[0])
    more = demo_arrays(**{**SMALL, "n_train": 5})  # one count does not shift the other groups
    np.testing.assert_array_equal(a.test[-1], more.test[-1])


def test_good_parts_are_similar_but_not_identical():
    d = demo_arrays(n_train=4, n_test_good=0, n_test_per_defect=0, size=128, seed=0)
    first = d.train[0].astype(np.float32)
    for other in d.train[1:]:
        diff = np.abs(first - other)
        assert diff.max() > 0
        assert diff.mean() < 25  # same part, slightly moved, rotated and lit
    gray = cv2.cvtColor(d.train[0], cv2.COLOR_RGB2GRAY)
    assert gray[64, 64 + 30] > 100 and gray[2, 2] < 70  # metal disc on a dark background


def test_masks_empty_for_good_and_non_empty_for_defects():
    d = demo_arrays(n_train=1, n_test_good=4, n_test_per_defect=6, size=128, seed=1)
    for mask, kind in zip(d.masks, d.defect_types, strict=True):
        area = int(mask.sum())
        if kind == "good":
            assert area == 0
        else:
            assert 0 < area < 0.03 * 128 * 128, (kind, area)  # visible but small


@pytest.mark.parametrize("kind", DEMO_DEFECT_TYPES)
def test_plant_defect_changes_exactly_the_masked_pixels(kind):
    for seed in range(6):
        rng = np.random.default_rng(seed)
        good = demo_part(rng, 128)
        bad, mask = plant_defect(good, kind, rng)
        assert bad.shape == good.shape and bad.dtype == np.uint8 and mask.dtype == bool
        changed = np.any(bad != good, axis=2)
        assert mask.any()
        assert not changed[~mask].any()  # nothing outside the mask moved
        assert changed[mask].mean() > 0.95
        diff = np.abs(bad.astype(np.int16) - good.astype(np.int16)).max(axis=2)
        assert np.median(diff[mask]) > 40, (kind, seed)  # clearly visible against the metal
        ys, xs = np.nonzero(mask)
        extent = max(np.ptp(xs), np.ptp(ys)) + 1
        if kind == "spot":
            assert 3 <= extent <= 0.10 * 128 * 1.3 + 2
            r, g, b = bad[mask].astype(float).mean(axis=0)
            assert r > g + 30 > b + 30  # rust brown, not grey
        else:
            assert 0.08 * 128 <= extent <= 0.40 * 0.8 * 128 + 4


def test_plant_defect_rejects_unknown_kind():
    with pytest.raises(ValueError, match="crack"):
        plant_defect(demo_part(np.random.default_rng(0), 64), "crack", np.random.default_rng(0))


def test_invalid_counts():
    with pytest.raises(ConfigError):
        demo_arrays(**{**SMALL, "n_train": 0})
    with pytest.raises(ConfigError):
        demo_arrays(**{**SMALL, "size": 8})


def test_make_demo_dataset_layout(tmp_path):
    folder = make_demo_dataset(tmp_path, **SMALL)
    assert folder == tmp_path / "demo_parts" and (folder / MARKER_NAME).is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["demo_parts"]  # no temporary folder left behind
    ds = open_dataset(folder)
    assert ds.layout == "mvtec" and ds.name == "demo_parts"
    assert len(ds.train) == 3 and len(ds.test) == 8
    assert ds.defect_types == ["scratch", "spot"] and ds.has_masks and ds.has_labels
    d = demo_arrays(**SMALL)
    np.testing.assert_array_equal(read_image(ds.train[0].path), d.train[0])
    scratch = next(s for s in ds.test if s.defect_type == "scratch")
    assert scratch.mask_path == folder / "ground_truth" / "scratch" / "000_mask.png"
    np.testing.assert_array_equal(read_image(scratch.path), d.test[2])
    np.testing.assert_array_equal(read_mask(scratch.mask_path, (96, 96)), d.masks[2])
    raw = cv2.imread(str(scratch.mask_path), cv2.IMREAD_UNCHANGED)
    assert raw.ndim == 2 and set(np.unique(raw)) == {0, 255}


def test_make_demo_dataset_byte_identical(tmp_path):
    a = make_demo_dataset(tmp_path / "a", **SMALL)
    b = make_demo_dataset(tmp_path / "b", **SMALL)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_make_demo_dataset_reuse_and_rebuild(tmp_path):
    folder = make_demo_dataset(tmp_path, **SMALL)
    image = folder / "train" / "good" / "000.png"
    stamp = image.stat().st_mtime_ns
    assert make_demo_dataset(tmp_path, **SMALL) == folder
    assert image.stat().st_mtime_ns == stamp  # reused, not rewritten
    make_demo_dataset(tmp_path, **{**SMALL, "n_train": 4})  # other arguments: replaced
    assert len(open_dataset(folder).train) == 4
    assert [p.name for p in tmp_path.iterdir()] == ["demo_parts"]


def test_make_demo_dataset_never_overwrites_foreign_folder(tmp_path):
    (tmp_path / "demo_parts").mkdir()
    (tmp_path / "demo_parts" / "mine.txt").write_text("keep")
    with pytest.raises(DataError, match="not a demo dataset"):
        make_demo_dataset(tmp_path, **SMALL)
    assert (tmp_path / "demo_parts" / "mine.txt").read_text() == "keep"
    with pytest.raises(ConfigError):
        make_demo_dataset(tmp_path, category="../escape", **SMALL)


def test_default_demo_set_has_the_documented_counts(tmp_path):
    ds = open_dataset(make_demo_dataset(tmp_path))
    assert (len(ds.train), len(ds.test)) == (40, 26)
