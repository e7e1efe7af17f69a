"""The public API on the tiny demo set: fit, score, evaluate, progress, cancel, unreadable data, memory."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import somad
import somad.memory as memory
import somad.training as training
from somad import metrics
from somad.demo import demo_arrays
from somad.errors import Cancelled, DataError, ImageReadError, ResourceError


def _random_bytes(path, n=3000, seed=0):
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes())


# -- quality on the demo set --------------------------------------------------------------------------------
def test_demo_defects_are_detected(demo_report):
    report = demo_report
    assert report.image_auroc is not None and report.image_auroc >= 0.8
    labels = np.array([r.label for r in report.records])
    scores = np.array([r.score for r in report.records])
    assert labels.sum() == 8 and (labels == 0).sum() == 4
    assert metrics.image_auroc(labels, scores) == pytest.approx(report.image_auroc)
    rng = np.random.default_rng(0)
    shuffled = [metrics.image_auroc(rng.permutation(labels), scores) for _ in range(50)]
    assert report.image_auroc > np.mean(shuffled) + 0.2
    assert 0.0 <= report.pixel_auroc <= 1.0 and report.pixel_auroc > 0.75
    assert 0.0 <= report.pro <= 1.0
    assert report.random_init is True
    assert report.best_f1 is not None and 0 < report.best_f1 <= 1


def test_evaluate_reports_every_defect_type(demo_report):
    per_type = demo_report.per_defect_type
    assert sorted(per_type) == ["scratch", "spot"]
    for entry in per_type.values():
        assert entry["count"] == 4
        for key in ("image_auroc", "pixel_auroc", "pro"):
            assert entry[key] is not None and 0.0 <= entry[key] <= 1.0
    assert len(demo_report.good_scores) == 4
    as_dict = demo_report.to_dict()
    assert as_dict["per_defect_type"] == per_type and len(as_dict["images"]) == 12


def test_training_summary_and_threshold(fitted):
    summary = fitted.training_summary
    assert summary["n_images"] == 12 and summary["n_unreadable"] == 0
    assert summary["grid_shape"] == [16, 16]  # the aggregated grid the map scores
    assert summary["n_patches"] == 12 * 16 * 16  # 3 x 3 windows every second cell of the 32 x 32 grid
    assert 0 < summary["nodes_with_hits"] <= 100
    assert summary["category"] == "demo_parts"
    assert summary["train_score_max"] >= summary["train_score_mean"] > 0
    assert 0 <= summary["som_topographic_error"] <= 1
    assert fitted.threshold == fitted.thresholds["train_false_reject_1pct"]
    assert summary["train_score_mean"] < fitted.threshold <= summary["train_score_max"] + 1e-6
    assert fitted.hit_counts().sum() == summary["n_patches"]
    assert fitted.umatrix().shape == (10, 10)
    assert fitted.nbytes > 0


# -- scoring ------------------------------------------------------------------------------------------------
def test_score_maps_have_each_images_own_size(fitted):
    rng = np.random.default_rng(1)
    images = [
        rng.integers(0, 256, (70, 110, 3), dtype=np.uint8),
        rng.integers(0, 256, (120, 50, 3), dtype=np.uint8),
        rng.integers(0, 256, (96, 96, 3), dtype=np.uint8),
    ]
    results = fitted.score(images, batch_size=2)
    assert [r.anomaly_map.shape for r in results] == [(70, 110), (120, 50), (96, 96)]
    for r in results:
        assert r.score == pytest.approx(float(r.anomaly_map.max()))
        assert r.nearest_nodes.shape == (16, 16, 4) and r.best_node.shape == (16, 16)  # aggregated grid
        assert fitted.gaussians.valid.cpu().numpy()[r.nearest_nodes].all()
        assert (r.nearest_nodes == r.best_node[..., None]).any(-1).all()


def test_scores_do_not_depend_on_batching(fitted):
    images = demo_arrays(n_train=1, n_test_good=2, n_test_per_defect=1, size=96, seed=3).test
    one = fitted.score(images, batch_size=1)
    all_at_once = fitted.score(images, batch_size=8)
    for a, b in zip(one, all_at_once, strict=True):  # the tolerance the README states
        assert a.score == pytest.approx(b.score, rel=1e-5)
        np.testing.assert_allclose(a.anomaly_map, b.anomaly_map, rtol=1e-5, atol=1e-5 * a.score)


def test_score_paths_reports_unreadable_files(fitted, demo_root, tmp_path):
    bad = tmp_path / "broken.png"
    _random_bytes(bad)
    good = sorted((demo_root / "test" / "good").glob("*.png"))[:2]
    seen = []
    results, errors = somad.score_paths(fitted, [good[0], bad, good[1]], on_error=seen.append)
    assert results[1] is None and results[0] is not None and results[2] is not None
    assert len(errors) == 1 and errors[0].path == bad and seen == errors
    assert results[0].path == good[0]
    with pytest.raises(ImageReadError, match=r"broken\.png"):
        somad.score_paths(fitted, [good[0], bad], strict=True)


# -- fitting: determinism, progress, cancel ----------------------------------------------------------------
def test_fit_is_deterministic_and_reports_progress(demo_root, fast_config):
    dataset = somad.open_dataset(demo_root)
    calls = []
    a = somad.fit(dataset, fast_config, progress=lambda s, d, t: calls.append((s, d, t)))
    b = somad.fit(dataset, fast_config)
    assert torch.equal(a.som_weights, b.som_weights)
    assert torch.equal(a.gaussians.inverse_cholesky, b.gaussians.inverse_cholesky)
    images = demo_arrays(n_train=1, n_test_good=1, n_test_per_defect=1, size=96, seed=5).test
    for ra, rb in zip(a.score(images), b.score(images), strict=True):
        np.testing.assert_array_equal(ra.anomaly_map, rb.anomaly_map)
    assert a.thresholds == b.thresholds

    stages = [s for s, _, _ in calls]
    for stage in ("features", "som", "statistics"):
        assert stage in stages
    assert stages.index("features") < stages.index("som") < stages.index("statistics")
    assert all(0 <= done <= total for _, done, total in calls)
    for stage in ("features", "som", "statistics"):
        last = [(d, t) for s, d, t in calls if s == stage][-1]
        assert last[0] == last[1]  # every stage reports its completion


def test_fit_from_a_list_of_paths(demo_root, fast_config):
    paths = sorted((demo_root / "train" / "good").glob("*.png"))[:4]
    model = somad.fit([str(p) for p in paths], fast_config)
    assert model.training_summary["n_images"] == 4
    assert model.training_summary["category"] is None


def test_max_train_limits_the_training_images(demo_root, fast_config):
    config = dataclasses.replace(fast_config, max_train=3)
    model = somad.fit(somad.open_dataset(demo_root), config)
    assert model.training_summary["n_images"] == 3


def test_cancel_during_som_raises_cancelled(demo_root, fast_config):
    state = {"som_seen": False}
    stages = []

    def progress(stage, done, total):
        stages.append(stage)
        if stage == "som":
            state["som_seen"] = True

    with pytest.raises(Cancelled):
        somad.fit(
            somad.open_dataset(demo_root), fast_config, progress=progress, cancel=lambda: state["som_seen"]
        )
    assert "som" in stages and "statistics" not in stages
    assert stages.count("som") == 1


def test_cancel_during_scoring(fitted):
    images = demo_arrays(n_train=1, n_test_good=4, n_test_per_defect=0, size=96, seed=2).test
    with pytest.raises(Cancelled):
        fitted.score(images, batch_size=1, progress=lambda *a: None, cancel=lambda: True)


# -- bad data ----------------------------------------------------------------------------------------------
def test_unreadable_training_image_is_skipped(demo_copy, fast_config):
    bad = demo_copy / "train" / "good" / "000_broken.png"
    _random_bytes(bad)
    errors = []
    model = somad.fit(somad.open_dataset(demo_copy), fast_config, on_error=errors.append)
    assert len(errors) == 1 and isinstance(errors[0], ImageReadError)
    assert errors[0].path == bad and "000_broken.png" in str(errors[0])
    assert model.training_summary["n_images"] == 12
    assert model.training_summary["n_unreadable"] == 1


def test_unreadable_training_image_is_raised_when_strict(demo_copy, fast_config):
    bad = demo_copy / "train" / "good" / "000_broken.png"
    _random_bytes(bad)
    with pytest.raises(ImageReadError, match=r"000_broken\.png") as info:
        somad.fit(somad.open_dataset(demo_copy), fast_config, strict=True)
    assert info.value.path == bad


def test_no_readable_training_image_is_a_data_error(tmp_path, fast_config):
    for i in range(2):
        _random_bytes(tmp_path / f"{i}.png", seed=i)
    with pytest.raises(DataError, match="none of the 2 training images"):
        somad.fit(somad.open_dataset(tmp_path), fast_config)


def test_empty_folder_is_a_data_error(tmp_path, fast_config):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no training images"):
        somad.open_dataset(empty)
    with pytest.raises(DataError, match="no training images"):
        somad.fit([], fast_config)


def test_evaluate_without_labelled_test_set_is_a_data_error(fitted, tmp_path):
    folder = tmp_path / "plain"
    folder.mkdir()
    d = demo_arrays(n_train=2, n_test_good=0, n_test_per_defect=0, size=64)
    import cv2

    for i, image in enumerate(d.train):
        cv2.imwrite(str(folder / f"{i}.png"), image)
    with pytest.raises(DataError, match="no labelled test images"):
        somad.evaluate(fitted, somad.open_dataset(folder))


def test_missing_mask_gives_no_pixel_metrics(fitted, demo_copy):
    mask = demo_copy / "ground_truth" / "spot" / "001_mask.png"
    mask.unlink()
    warnings = []
    report = somad.evaluate(fitted, somad.open_dataset(demo_copy), on_error=warnings.append)
    assert report.image_auroc is not None and report.image_auroc >= 0.8
    assert report.pixel_auroc is None and report.pro is None
    for entry in report.per_defect_type.values():
        assert entry["image_auroc"] is not None
        assert entry["pixel_auroc"] is None and entry["pro"] is None
    assert len(warnings) == 1 and "001.png" in str(warnings[0])


def test_evaluate_reuses_given_results(fitted, demo_root, demo_report):
    dataset = somad.open_dataset(demo_root)
    samples = [s for s in dataset.test if s.label >= 0]
    results, _ = somad.score_paths(fitted, [s.path for s in samples])
    report = somad.evaluate(fitted, dataset, results=results)
    assert report.image_auroc == pytest.approx(demo_report.image_auroc)
    assert report.pixel_auroc == pytest.approx(demo_report.pixel_auroc)


def test_store_thresholds_adds_best_f1_and_false_reject(fitted, demo_report):
    model = dataclasses.replace(fitted, thresholds=dict(fitted.thresholds))
    somad.store_thresholds(model, demo_report)
    assert model.thresholds["best_f1"] == pytest.approx(demo_report.best_f1_threshold)
    good = np.asarray(demo_report.good_scores)
    assert model.thresholds["false_reject_1pct"] == pytest.approx(
        somad.decision.threshold_for_false_reject_rate(good, 0.01)
    )
    assert model.thresholds["false_reject_1pct"] >= np.quantile(good, 0.9)
    assert "train_false_reject_1pct" in model.thresholds
    assert model.threshold == model.thresholds["best_f1"]
    assert "best_f1" not in fitted.thresholds  # the shared model was not touched


# -- memory -----------------------------------------------------------------------------------------------
def test_estimate_memory_grows_with_dims_som_and_images(fast_config):
    base = somad.estimate_memory(fast_config, 10)
    more_dims = somad.estimate_memory(fast_config.with_changes(features={"dims": 64}), 10)
    bigger_som = somad.estimate_memory(fast_config.with_changes(som={"rows": 20, "cols": 20}), 10)
    more_images = somad.estimate_memory(fast_config, 100)
    for key in ("features", "statistics", "model", "peak"):
        assert more_dims[key] > base[key], key
    for key in ("som", "statistics", "model", "peak"):
        assert bigger_som[key] > base[key], key
    assert more_images["features"] == 10 * base["features"]
    assert more_images["peak"] > base["peak"]
    # max_train caps the images counted.
    capped = somad.estimate_memory(dataclasses.replace(fast_config, max_train=10), 100)
    assert capped["features"] == base["features"]
    assert base["features"] == 4 * 10 * 16 * 16 * 16 * 5 // 4  # float32, 16 x 16 grid at 64 px, 16 channels,
    # and the aggregated copy (a quarter of the cells)


def test_fit_refuses_when_memory_is_short(demo_root, fast_config, monkeypatch):
    monkeypatch.setattr(memory, "available_memory", lambda device: 1024)
    built = []
    monkeypatch.setattr(training, "FeatureExtractor", lambda *a, **k: built.append(1))
    with pytest.raises(ResourceError, match="--dims"):
        somad.fit(somad.open_dataset(demo_root), fast_config)
    assert not built  # refused before any work


def test_memory_check_measures_the_device_that_is_used(demo_root, fast_config, monkeypatch):
    """On CUDA the features live in GPU memory, so free GPU memory must be what is checked."""
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(training, "resolve_device", lambda name: cuda)
    free = {"cuda": 1024, "cpu": 1 << 50}  # a nearly full GPU, a huge host
    monkeypatch.setattr(memory, "available_memory", lambda device: free[device.type])

    def no_backbone(*args, **kwargs):
        raise AssertionError("the memory check should have refused before building the backbone")

    monkeypatch.setattr(training, "FeatureExtractor", no_backbone)
    with pytest.raises(ResourceError):
        somad.fit(somad.open_dataset(demo_root), fast_config)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (None, "NoneType"),
        ("part.png", "str"),
        (np.zeros((0, 0, 3), np.uint8), "shape"),
        (np.zeros((8, 8, 2), np.uint8), "shape"),
        (np.zeros((32, 32, 3), bool), "boolean"),
        (np.full((32, 32, 3), np.nan, np.float32), "non-finite"),
    ],
)
def test_score_refuses_what_is_not_an_image_in_one_error(fitted, image, message):
    with pytest.raises(DataError, match=message):
        fitted.score([image])


def test_score_takes_grayscale_rgba_and_16_bit_images_as_their_rgb(fitted):
    rng = np.random.default_rng(3)
    gray = rng.integers(0, 256, (64, 64), dtype=np.uint8)
    rgb = np.repeat(gray[:, :, None], 3, axis=2)
    rgba = np.dstack([rgb, np.full((64, 64), 7, np.uint8)])
    deep = rgb.astype(np.uint16) * 257
    scores = [r.score for r in fitted.score([rgb, gray, rgba, deep])]
    assert scores == pytest.approx([scores[0]] * 4, rel=1e-6)


def test_the_stored_threshold_comes_from_held_out_training_images(demo_copy, fast_config):
    from somad.training import calibration_order, held_out

    train = sorted((demo_copy / "train" / "good").glob("*.png"))
    assert held_out(len(train)) == [2, 7] and held_out(9) == []
    ordered, n_learn = calibration_order(train)
    assert n_learn == 10 and ordered[10:] == [train[2], train[7]] and sorted(ordered) == train
    model = somad.fit(somad.open_dataset(demo_copy), fast_config)
    assert model.training_summary["calibration"] == "held-out 2 images"
    assert model.training_summary["n_images"] == 12 and model.detector.fit_summary["n_patches"] > 0
    for path in (train[2], train[7]):  # no readable held-out image: calibrated in-sample, and it says so
        path.write_bytes(b"broken")
    model = somad.fit(somad.open_dataset(demo_copy), fast_config)
    assert model.training_summary["calibration"] == "in-sample" and model.training_summary["n_images"] == 10
