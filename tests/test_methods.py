"""The detector interface and every method: registry, planted defects, save/load, formulas, coreset, pipeline."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
import torch

import somad
from somad import metrics
from somad.config import SomadConfig
from somad.demo import demo_part
from somad.errors import ConfigError, ModelFileError
from somad.extraction import run_backbone
from somad.feature_cache import FeatureCache
from somad.features import FeatureExtractor
from somad.methods import (
    IMAGE_METHODS,
    MAP_METHODS,
    METHODS,
    FeatureSet,
    create_detector,
)
from somad.methods.patchcore import (
    aggregate,
    greedy_coreset,
    greedy_coreset_dense,
    greedy_coreset_pruned,
    nearest_distances,
)
from somad.model import MethodModel, load_any_model, load_model
from somad.model_file import read_model_file, write_model_file
from somad.training import fit_method
from somad_cli.main import main as cli_main
from tests.conftest import make_config

SIZE = 96
RUST = (150, 72, 32)


def _defect(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A rust spot of radius 14 px on the disc: large enough for image-level methods on pooled features."""
    centre = (int(rng.uniform(0.35, 0.65) * SIZE), int(rng.uniform(0.35, 0.65) * SIZE))
    out = image.copy()
    cv2.circle(out, centre, 14, RUST, -1)
    mask = np.zeros(image.shape[:2], np.uint8)
    cv2.circle(mask, centre, 14, 1, -1)
    return out, mask.astype(bool)


@pytest.fixture(scope="module")
def planted():
    """30 good training parts; 6 good and 6 defective test parts with masks; features of a tiny backbone."""
    train = [demo_part(np.random.default_rng([7, 0, i]), SIZE) for i in range(30)]
    good = [demo_part(np.random.default_rng([7, 1, i]), SIZE) for i in range(6)]
    bad = [
        _defect(demo_part(np.random.default_rng([7, 2, i]), SIZE), np.random.default_rng([7, 3, i]))
        for i in range(6)
    ]
    config = make_config(image_size=64, dims=16, som=6, epochs=2)
    extractor = FeatureExtractor(config.features, torch.device("cpu"))

    def features(images):
        grid, pooled = run_backbone(extractor, images)
        return FeatureSet(grid, pooled)

    test_images = good + [b[0] for b in bad]
    masks = [np.zeros((SIZE, SIZE), bool)] * 6 + [b[1] for b in bad]
    return {
        "config": config,
        "train": features(train),
        "test": features(test_images),
        "labels": np.array([0] * 6 + [1] * 6),
        "masks": masks,
        "sizes": [(SIZE, SIZE)] * 12,
    }


def test_registry_describes_every_method_for_a_front_end():
    assert list(METHODS) == ["somad", "padim", "patchcore", "ocsvm", "iforest", "kde", "lof", "elliptic"]
    assert MAP_METHODS == ("somad", "padim", "patchcore")
    assert set(IMAGE_METHODS) == {"ocsvm", "iforest", "kde", "lof", "elliptic"}
    flat = {
        f"{section}.{name}" if isinstance(values, dict) else section
        for section, values in SomadConfig().to_dict().items()
        for name in (values if isinstance(values, dict) else [None])
    }
    for name, info in METHODS.items():
        assert info.name == name and info.detector.name == name and info.label and info.summary
        assert set(info.config_options) <= flat, name
        assert info.validate() == info.defaults()
        assert info.applies("features.backbone") and info.applies("device")
    assert METHODS["somad"].applies("som.epochs") and not METHODS["padim"].applies("som.epochs")
    assert METHODS["padim"].applies("statistics.lam") and not METHODS["patchcore"].applies("statistics.lam")
    assert not METHODS["lof"].applies("scoring.sigma") and not METHODS["lof"].applies("features.dims")
    assert METHODS["patchcore"].validate({"coreset_ratio": "0.05"})["coreset_ratio"] == 0.05
    assert METHODS["kde"].validate({"bandwidth": "silverman"})["bandwidth"] == "silverman"
    with pytest.raises(ConfigError, match="unknown option"):
        METHODS["padim"].validate({"coreset_ratio": 0.1})
    with pytest.raises(ConfigError, match="coreset_ratio"):
        METHODS["patchcore"].validate({"coreset_ratio": 2.0})
    with pytest.raises(ConfigError, match="kernel"):
        METHODS["ocsvm"].validate({"kernel": "cubic"})
    with pytest.raises(ConfigError, match="method"):
        create_detector("spade")


@pytest.mark.parametrize("name", list(METHODS))
def test_each_detector_finds_planted_defects(planted, name):
    detector = create_detector(name, planted["config"]).fit(planted["train"])
    maps, scores = detector.anomaly_maps(planted["test"], planted["sizes"])
    labels = planted["labels"]
    auroc = metrics.image_auroc(labels, scores)
    shuffled = metrics.image_auroc(np.random.default_rng(3).permutation(labels), scores)
    assert auroc >= 0.9, (name, auroc)
    assert auroc > shuffled + 0.2, (name, auroc, shuffled)
    assert np.all(np.isfinite(scores))
    if detector.gives_maps:
        assert maps is not None and all(m.shape == (SIZE, SIZE) for m in maps)
        assert metrics.pixel_auroc(planted["masks"], maps) >= 0.85, name
        assert scores == pytest.approx([m.max() for m in maps])
    else:
        assert maps is None


@pytest.mark.parametrize("name", list(METHODS))
def test_state_round_trip_through_a_model_file_scores_identically(planted, name, tmp_path):
    config = planted["config"]
    detector = create_detector(name, config, {"augment": False} if name in IMAGE_METHODS else None)
    detector.fit(planted["train"])
    before = detector.score(planted["test"])
    model = MethodModel(name, config, detector, "random-init", np.arange(16))
    path = model.save(tmp_path / f"{name}.somad")
    loaded = load_any_model(path, device="cpu")
    if name == "somad":
        assert isinstance(loaded, somad.SomadModel)
        after = loaded.detector.score(planted["test"])
    else:
        assert isinstance(loaded, MethodModel) and loaded.method == name
        assert loaded.options == detector.options and loaded.random_init
        after = loaded.detector.score(planted["test"])
        with pytest.raises(ModelFileError, match="not supported"):
            load_model(path)  # the SOMAD-only loader keeps refusing other methods
    assert torch.equal(before, after)


def test_model_file_of_a_method_is_checked_when_loaded(planted, tmp_path):
    detector = create_detector("padim", planted["config"]).fit(planted["train"])
    path = MethodModel("padim", planted["config"], detector, "random-init", np.arange(16)).save(
        tmp_path / "padim.somad"
    )
    tensors, meta = read_model_file(path)
    bad = tmp_path / "bad.somad"
    write_model_file(bad, {k: v for k, v in tensors.items() if k != "detector.position_means"}, meta)
    with pytest.raises(ModelFileError, match="position_means"):
        load_any_model(bad, device="cpu")
    write_model_file(bad, tensors, {**meta, "method": "spade"})
    with pytest.raises(ModelFileError, match="unknown method"):
        load_any_model(bad, device="cpu")
    write_model_file(bad, tensors, {**meta, "method_options": {"bogus": 1}})
    with pytest.raises(ModelFileError, match="bogus"):
        load_any_model(bad, device="cpu")


def _pooled(x: np.ndarray, stage: int = 3) -> FeatureSet:
    return FeatureSet(None, {stage: torch.from_numpy(x).float()})


def test_image_level_scores_are_scikit_learns(planted):
    from sklearn.covariance import EllipticEnvelope
    from sklearn.decomposition import PCA
    from sklearn.ensemble import IsolationForest
    from sklearn.neighbors import KernelDensity, LocalOutlierFactor
    from sklearn.svm import OneClassSVM

    rng = np.random.default_rng(0)
    scale = rng.uniform(0.5, 3, 12)
    train = (rng.normal(size=(60, 12)) * scale + 4).astype(np.float32)
    typical = rng.normal(size=(15, 12)) * scale + 4
    outlying = rng.normal(size=(10, 12)) * scale + 4 + 3 * scale * rng.choice([-1, 1], size=(10, 12))
    test = np.concatenate([typical, outlying]).astype(np.float32)
    config = planted["config"]
    scaled = {}
    for name in IMAGE_METHODS:
        det = create_detector(name, config).fit(_pooled(train))
        mean, scale = det.params["mean"].numpy(), det.params["scale"].numpy()
        xs = (train.astype(np.float64) - mean) / scale
        ts = (test.astype(np.float64) - mean) / scale
        ours = det.score(_pooled(test)).numpy()
        if name == "ocsvm":
            expected = -OneClassSVM(kernel="rbf", nu=0.5, gamma="scale").fit(xs).decision_function(ts)
        elif name == "iforest":
            expected = -IsolationForest(random_state=0).fit(xs).score_samples(ts)
        elif name == "kde":
            expected = -KernelDensity(bandwidth="scott").fit(xs).score_samples(ts)
        elif name == "lof":
            expected = -LocalOutlierFactor(n_neighbors=20, novelty=True).fit(xs).score_samples(ts)
        else:
            pca = PCA(n_components=12, random_state=0).fit(xs)
            expected = (
                -EllipticEnvelope(random_state=0).fit(pca.transform(xs)).score_samples(pca.transform(ts))
            )
        np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-9, err_msg=name)
        scaled[name] = ours
    for kernel in ("linear", "poly", "sigmoid"):
        det = create_detector("ocsvm", config, {"kernel": kernel, "gamma": 0.05, "coef0": 0.5}).fit(
            _pooled(train)
        )
        xs = (train.astype(np.float64) - det.params["mean"].numpy()) / det.params["scale"].numpy()
        ts = (test.astype(np.float64) - det.params["mean"].numpy()) / det.params["scale"].numpy()
        svm = OneClassSVM(kernel=kernel, gamma=0.05, coef0=0.5).fit(xs)
        np.testing.assert_allclose(
            det.score(_pooled(test)).numpy(), -svm.decision_function(ts), rtol=1e-6, atol=1e-9
        )
    # Higher means more anomalous: the outlying rows score above the typical ones, for every method.
    labels = np.array([0] * 15 + [1] * 10)
    for name, s in scaled.items():
        assert metrics.image_auroc(labels, s) > 0.9, name


def test_image_level_options_stage_and_augmentation(planted):
    config = planted["config"]
    train = planted["train"]
    det = create_detector("kde", config, {"stage": 2}).fit(train)
    assert det.params["train"].shape == (30, 128)  # resnet18 stage 2 has 128 channels, all of them kept
    with pytest.raises(ConfigError, match="stage 4"):
        create_detector("kde", config, {"stage": 4})
    with pytest.raises(ConfigError, match="augmented"):
        create_detector("kde", config, {"augment": True}).fit(train)
    augmented = FeatureSet(train.patches, train.pooled, {3: torch.cat([train.pooled[3]] * 5) + 0.01})
    det = create_detector("kde", config, {"augment": True}).fit(augmented)
    assert det.wants_augmented and det.params["train"].shape[0] == 30 * 6


def test_padim_is_the_per_position_gaussian_of_the_paper():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20, 3, 4, 5)) * rng.uniform(0.2, 2.0, 5)
    test = rng.normal(size=(2, 3, 4, 5))
    config = make_config().with_changes(statistics={"lam": 0.01})
    det = create_detector("padim", config).fit(FeatureSet(torch.from_numpy(x).float()))
    ours = det.score(FeatureSet(torch.from_numpy(test).float())).numpy()
    flat = x.reshape(20, 12, 5)
    expected = np.empty((2, 12))
    for p in range(12):
        mu = flat[:, p].mean(0)
        cov = np.cov(flat[:, p], rowvar=False) + 0.01 * np.eye(5)
        diff = test.reshape(2, 12, 5)[:, p] - mu
        expected[:, p] = np.sqrt(np.einsum("bi,ij,bj->b", diff, np.linalg.inv(cov), diff))
    np.testing.assert_allclose(ours, expected.reshape(2, 3, 4), rtol=1e-4)


def _coverage(points: np.ndarray, selected: np.ndarray) -> float:
    d = ((points[:, None, :] - points[None, selected, :]) ** 2).sum(-1)
    return float(np.sqrt(d.min(1).max()))


def test_greedy_coreset_pruned_equals_dense_and_the_textbook_algorithm():
    rng = np.random.default_rng(5)
    clusters = rng.normal(size=(40, 8)) * 5
    points = (clusters[rng.integers(0, 40, 3000)] + rng.normal(size=(3000, 8))).astype(np.float32)
    x = torch.from_numpy(points)
    dense = greedy_coreset_dense(x, 400, start=11).numpy()
    pruned = greedy_coreset_pruned(x, 400, start=11).numpy()
    np.testing.assert_array_equal(dense, pruned)
    assert len(set(pruned.tolist())) == 400 and pruned[0] == 11
    # Textbook Gonzalez in float64: add the point farthest from the selection, one at a time.
    p64 = points.astype(np.float64)
    reference = [11]
    m = ((p64 - p64[11]) ** 2).sum(1)
    for _ in range(59):
        reference.append(int(np.argmax(m)))
        m = np.minimum(m, ((p64 - p64[reference[-1]]) ** 2).sum(1))
    np.testing.assert_array_equal(pruned[:60], reference)
    assert _coverage(points, pruned) <= _coverage(points, rng.choice(3000, 400, replace=False))
    auto = greedy_coreset(x, 50, seed=3)
    assert torch.equal(auto, greedy_coreset(x, 50, seed=3, algorithm="dense"))


def test_greedy_coreset_with_duplicates_and_full_ratio_selects_every_point_once():
    x = torch.randn(30, 3, generator=torch.Generator().manual_seed(0)).repeat(3, 1)
    for fn in (greedy_coreset_dense, greedy_coreset_pruned):
        chosen = fn(x, 90, start=0)
        assert sorted(chosen.tolist()) == list(range(90))
        assert torch.unique(x[chosen[:30]], dim=0).shape[0] == 30  # the distinct points come first


def test_patchcore_nearest_distances_are_exact_and_chunking_does_not_matter():
    g = torch.Generator().manual_seed(2)
    q, bank = torch.randn(300, 7, generator=g), torch.randn(500, 7, generator=g)
    exact = torch.cdist(q.double(), bank.double()).min(1).values.float()
    torch.testing.assert_close(nearest_distances(q, bank), exact, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(nearest_distances(q, bank, block=1 << 12), nearest_distances(q, bank))
    patches = torch.randn(2, 8, 8, 4, generator=g)
    assert aggregate(patches, 3, 2).shape == (2, 4, 4, 4)
    torch.testing.assert_close(aggregate(patches, 1, 1), patches)
    config = make_config()
    full = create_detector("patchcore", config, {"coreset_ratio": 1.0, "stride": 1}).fit(FeatureSet(patches))
    assert full.bank.shape == (2 * 8 * 8, 4)
    assert float(full.score(FeatureSet(patches)).abs().max()) < 1e-2  # every training patch is in the bank
    small = create_detector("patchcore", config, {"coreset_ratio": 0.25, "stride": 1}).fit(
        FeatureSet(patches)
    )
    assert small.bank.shape == (32, 4)


def test_somad_detector_on_cached_features_equals_core_fit(demo_root, fast_config):
    dataset = somad.open_dataset(demo_root)
    model = somad.fit(dataset, fast_config)
    cache = FeatureCache(None)
    # the core fits on the images before the held-out ones, then takes in all of them
    ordered, n_learn = somad.training.calibration_order([s.path for s in dataset.train])
    train = cache.get(fast_config.features, ordered)
    test = cache.get(fast_config.features, [s.path for s in dataset.test[:6]])
    detector = create_detector("somad", fast_config).fit(train.features.head(n_learn)).absorb(train.features)
    torch.testing.assert_close(detector.som_weights, model.som_weights)
    torch.testing.assert_close(detector.gaussians.inverse_cholesky, model.gaussians.inverse_cholesky)
    maps, scores = detector.anomaly_maps(test.features, test.sizes)
    expected = model.score([somad.read_image(p) for p in test.paths])
    assert scores == pytest.approx([r.score for r in expected], rel=1e-5)
    np.testing.assert_allclose(maps[0], expected[0].anomaly_map, rtol=1e-5, atol=1e-5)


def test_fit_method_scores_files_saves_and_loads(demo_root, fast_config, tmp_path, capsys):
    dataset = somad.open_dataset(demo_root)
    paths = [s.path for s in dataset.test]
    seen = []
    padim = fit_method(dataset, "padim", fast_config, progress=lambda stage, *_: seen.append(stage))
    assert isinstance(padim, MethodModel) and padim.gives_maps and padim.random_init
    assert {"features", "statistics", "calibration"} <= set(seen)
    assert padim.threshold == padim.thresholds["train_false_reject_1pct"]
    assert padim.training_summary["n_images"] == len(dataset.train)
    results, errors = somad.score_paths(padim, paths)
    assert not errors and all(
        r.anomaly_map.shape == somad.read_image(p).shape[:2] for r, p in zip(results, paths, strict=True)
    )
    loaded = load_any_model(padim.save(tmp_path / "padim.somad"), device="cpu")
    again, _ = somad.score_paths(loaded, paths)
    assert [r.score for r in again] == [r.score for r in results]

    lof = fit_method(dataset, "lof", fast_config, {"n_neighbors": 5})
    assert not lof.gives_maps and lof.options["n_neighbors"] == 5
    results, _ = somad.score_paths(lof, paths)
    assert all(r.anomaly_map is None and np.isfinite(r.score) for r in results)
    loaded = load_any_model(lof.save(tmp_path / "lof.somad"), device="cpu")
    assert [r.score for r in somad.score_paths(loaded, paths)[0]] == [r.score for r in results]
    assert cli_main(["info", str(tmp_path / "lof.somad")]) == 0
    out = capsys.readouterr().out
    assert "Local Outlier Factor: image scores only" in out and "n_neighbors 5" in out
    assert "SOM " not in out
    assert cli_main(["info", str(tmp_path / "padim.somad")]) == 0
    out = capsys.readouterr().out
    assert "PaDiM: anomaly maps" in out and "statistics.lam 0.01" in out

    fitted = fit_method(dataset, "somad", fast_config)
    assert isinstance(fitted, somad.SomadModel)
    assert (fitted.method, fitted.label, fitted.gives_maps, fitted.options) == ("somad", "SOMAD", True, {})
    with pytest.raises(ConfigError, match="unknown option"):
        fit_method(dataset, "somad", fast_config, {"k": 3})
    with pytest.raises(ConfigError, match="method"):
        fit_method(dataset, "spade", fast_config)


def test_somad_files_are_unchanged_and_load_through_both_loaders(fitted, tmp_path):
    path = fitted.save(tmp_path / "model.somad")
    _, meta = read_model_file(path)
    assert meta["method"] == "somad" and meta["format_version"] == 2 and "method_options" not in meta
    a, b = load_model(path, device="cpu"), load_any_model(path, device="cpu")
    assert isinstance(b, somad.SomadModel)
    assert torch.equal(a.gaussians.inverse_cholesky, b.gaussians.inverse_cholesky)
    assert dataclasses.asdict(a.config) == dataclasses.asdict(b.config)


@pytest.mark.parametrize(
    ("name", "stage"), [("padim", "statistics"), ("patchcore", "coreset"), ("lof", "calibration")]
)
def test_fit_method_honours_cancel_at_each_stage(demo_root, fast_config, name, stage):
    stages = []

    def progress(s, done, total):
        stages.append(s)

    with pytest.raises(somad.Cancelled):
        fit_method(
            somad.open_dataset(demo_root),
            name,
            fast_config,
            progress=progress,
            cancel=lambda: stage in stages,
        )
    assert stage in stages
    assert stages[-1] == stage  # stopped at the first check after the stage began


def test_memory_estimates_match_the_fitted_models(demo_root, fast_config):
    dataset = somad.open_dataset(demo_root)
    n = len(dataset.train)
    for name, options in (("padim", {}), ("patchcore", {"coreset_ratio": 0.2})):
        estimate = somad.estimate_memory(fast_config, n, name, options)
        model = fit_method(dataset, name, fast_config, options)
        assert estimate["model"] == model.detector.nbytes, name  # exact: the grid is known from the config
        assert estimate["features"] == 4 * n * 16 * 16 * 16  # 16 x 16 grid at 64 px, 16 channels
        assert estimate["peak"] > estimate["features"] + estimate["model"]
    plain = somad.estimate_memory(fast_config, n, "lof")
    augmented = somad.estimate_memory(fast_config, n, "lof", {"augment": True})
    lof = fit_method(dataset, "lof", fast_config, {"augment": True})
    assert augmented["model"] == 6 * plain["model"] >= lof.detector.nbytes  # an upper bound
    padim_big = somad.estimate_memory(dataclasses.replace(fast_config, max_train=4), n, "padim")
    assert padim_big["features"] == 4 * 4 * 16 * 16 * 16  # max_train caps the images counted
    with pytest.raises(ConfigError, match="method"):
        somad.estimate_memory(fast_config, n, "spade")
    with pytest.raises(ConfigError, match="coreset_ratio"):
        somad.estimate_memory(fast_config, n, "patchcore", {"coreset_ratio": 2})


def test_fit_method_refuses_when_memory_is_short(demo_root, fast_config, monkeypatch):
    from somad import memory
    from somad.errors import ResourceError

    monkeypatch.setattr(memory, "available_memory", lambda device: 1024)
    with pytest.raises(ResourceError, match="GiB"):
        fit_method(somad.open_dataset(demo_root), "padim", fast_config)


def test_results_carry_som_arrays_only_for_methods_with_a_som(demo_root, fast_config):
    dataset = somad.open_dataset(demo_root)
    images = [somad.read_image(s.path) for s in dataset.test[:2]]
    for method, options in (("somad", None), ("padim", None), ("lof", {"n_neighbors": 3})):
        model = fit_method(dataset, method, fast_config, options)
        result = model.score(images)[0]
        if method == "somad":
            assert result.best_node.shape == result.grid_shape == model.grid_shape
            assert result.nearest_nodes.shape[:2] == result.grid_shape
        else:
            assert result.nearest_nodes is None and result.best_node is None
        if method == "lof":
            assert result.anomaly_map is None and result.grid_shape is None
        else:
            assert result.grid_shape == tuple(model.training_summary["grid_shape"])
