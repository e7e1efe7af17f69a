"""Patch features from timm backbones: shapes, seeded random weights, weights files and clear weight errors."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
import torch

from somad.config import FeatureConfig
from somad.errors import WeightsError
from somad.features import FeatureExtractor, draw_channel_indices, ensure_torchvision_ops, read_state_dict

CPU = torch.device("cpu")


def _config(**changes) -> FeatureConfig:
    base = {
        "backbone": "resnet18",
        "layers": (1, 2, 3),
        "image_size": 64,
        "dims": 24,
        "seed": 0,
        "random_init": True,
    }
    return FeatureConfig(**{**base, **changes})


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(2)]


@pytest.fixture(scope="module")
def extractor() -> FeatureExtractor:
    return FeatureExtractor(_config(), CPU)


def test_timm_imports_after_ensure_torchvision_ops():
    ensure_torchvision_ops()
    ensure_torchvision_ops()  # idempotent
    import timm

    assert timm.is_model("resnet18")
    assert hasattr(timm, "create_model")


def test_draw_channel_indices_sorted_unique_seeded():
    a = draw_channel_indices(448, 50, seed=3)
    assert a.dtype == np.int64 and a.shape == (50,)
    assert np.all(np.diff(a) > 0)  # sorted and unique
    assert a.min() >= 0 and a.max() < 448
    np.testing.assert_array_equal(a, draw_channel_indices(448, 50, seed=3))
    assert not np.array_equal(a, draw_channel_indices(448, 50, seed=4))
    np.testing.assert_array_equal(draw_channel_indices(10, 10, seed=0), np.arange(10))
    np.testing.assert_array_equal(draw_channel_indices(10, 99, seed=0), np.arange(10))


def test_resnet18_feature_shape(extractor, images):
    feats = extractor(images)
    assert feats.shape == (2, 24, 16, 16)
    assert feats.dtype == torch.float32 and torch.isfinite(feats).all()
    assert extractor.grid_shape == (16, 16)
    assert extractor.layout.stage_channels == (64, 128, 256)
    assert extractor.layout.stage_strides == (4, 8, 16)
    assert extractor.layout.dims == 24
    assert extractor.weights_origin == "random-init"
    # Every stage contributes channels that vary over the grid (the upsampled stages included).
    assert feats.std(dim=(2, 3)).min() > 0


def test_convnextv2_nano_feature_shape(images):
    ext = FeatureExtractor(_config(backbone="convnextv2_nano", layers=(0, 1, 2), dims=32), CPU)
    feats = ext(images)
    assert feats.shape == (2, 32, 16, 16)
    assert ext.layout.stage_strides == (4, 8, 16)
    assert torch.isfinite(feats).all()


def test_images_of_any_size_are_resized_to_the_input(extractor):
    rng = np.random.default_rng(1)
    odd = [
        rng.integers(0, 256, (50, 90, 3), dtype=np.uint8),
        rng.integers(0, 256, (130, 70, 3), dtype=np.uint8),
    ]
    assert extractor(odd).shape == (2, 24, 16, 16)


def test_random_init_is_seeded(extractor, images):
    same = FeatureExtractor(_config(), CPU)
    torch.testing.assert_close(extractor(images), same(images), rtol=0, atol=0)
    other = FeatureExtractor(_config(seed=1), CPU, channel_indices=extractor.layout.channel_indices)
    assert not torch.allclose(extractor(images), other(images))
    # The seed also draws the channel subset.
    assert not np.array_equal(
        FeatureExtractor(_config(seed=1), CPU).layout.channel_indices, extractor.layout.channel_indices
    )


def test_random_init_does_not_disturb_the_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    FeatureExtractor(_config(), CPU)
    torch.testing.assert_close(torch.rand(3), expected)


def test_zero_init_last_changes_features(extractor, images):
    zeroed = FeatureExtractor(_config(zero_init_last=True), CPU)
    np.testing.assert_array_equal(zeroed.layout.channel_indices, extractor.layout.channel_indices)
    assert not torch.allclose(zeroed(images), extractor(images))


def test_explicit_channel_indices_are_used(images):
    picked = np.array([0, 63, 64, 191, 192, 447])  # first/last channel of each stage
    ext = FeatureExtractor(_config(), CPU, channel_indices=picked)
    assert ext(images).shape == (2, 6, 16, 16)
    with pytest.raises(WeightsError, match="out of range"):
        FeatureExtractor(_config(), CPU, channel_indices=np.array([0, 448]))


@pytest.fixture(scope="module")
def seeded_weights():
    """A resnet18 backbone's state dict that no config seed of the tests reproduces (seed 5)."""
    source = FeatureExtractor(_config(seed=5), CPU)
    return source, {k: v.clone() for k, v in source.backbone.state_dict().items()}


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_weights_file_is_loaded(tmp_path, images, seeded_weights, extractor, suffix):
    from safetensors.torch import save_file

    source, state = seeded_weights
    path = tmp_path / f"backbone{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    loaded = FeatureExtractor(
        _config(random_init=False, weights=str(path)), CPU, channel_indices=source.layout.channel_indices
    )
    assert loaded.weights_origin.startswith("file:")
    assert loaded.weights_origin == f"file:{path.name}"
    torch.testing.assert_close(loaded(images), source(images))
    # The file's weights replaced the seeded random ones.
    baseline = FeatureExtractor(_config(), CPU, channel_indices=source.layout.channel_indices)
    assert not torch.allclose(loaded(images), baseline(images))


def test_weights_file_wrapped_in_state_dict_key(tmp_path, seeded_weights, images):
    source, state = seeded_weights
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": state, "epoch": 3}, path)
    assert set(read_state_dict(path)) == set(state)
    loaded = FeatureExtractor(
        _config(random_init=False, weights=str(path)), CPU, channel_indices=source.layout.channel_indices
    )
    torch.testing.assert_close(loaded(images), source(images))


def test_weights_of_another_architecture_are_refused(tmp_path):
    from safetensors.torch import save_file

    other = FeatureExtractor(_config(backbone="convnextv2_nano", layers=(0, 1, 2)), CPU)
    path = tmp_path / "convnext.safetensors"
    save_file({k: v.contiguous() for k, v in other.backbone.state_dict().items()}, str(path))
    with pytest.raises(WeightsError, match=r"convnext\.safetensors") as info:
        FeatureExtractor(_config(random_init=False, weights=str(path)), CPU)
    assert "resnet18" in str(info.value)


@pytest.mark.parametrize("name", ["garbage.safetensors", "garbage.pt"])
def test_random_bytes_weights_are_refused(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(WeightsError, match=re.escape(name)):
        FeatureExtractor(_config(random_init=False, weights=str(path)), CPU)


def test_missing_weights_file_is_refused(tmp_path):
    path = tmp_path / "nowhere.safetensors"
    with pytest.raises(WeightsError, match=r"nowhere\.safetensors"):
        FeatureExtractor(_config(random_init=False, weights=str(path)), CPU)


def test_pickled_object_in_weights_file_is_refused(tmp_path):
    """``torch.load`` runs with ``weights_only``: arbitrary pickled objects are rejected, not executed."""
    path = tmp_path / "evil.pt"
    torch.save({"conv1.weight": torch.zeros(1), "payload": _Unsafe()}, path)
    with pytest.raises(WeightsError, match=r"evil\.pt"):
        read_state_dict(path)


class _Unsafe:
    pass


def test_unknown_backbone_is_refused():
    with pytest.raises(WeightsError, match="no_such_net"):
        FeatureExtractor(_config(backbone="no_such_net"), CPU)


def test_pretrained_offline_names_both_ways_out(monkeypatch, tmp_path):
    """Pretrained weights without network or cache: one clear error naming --weights and --random-init.

    DNS is made to fail and the hub cache points at an empty folder, so this never downloads anything.
    """
    import socket

    from huggingface_hub import constants

    def no_dns(*args, **kwargs):
        raise socket.gaierror("no network in tests")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    env_before = dict(os.environ)
    with pytest.raises(WeightsError) as info:
        FeatureExtractor(_config(random_init=False), CPU)
    message = str(info.value)
    assert "--weights" in message and "--random-init" in message
    assert "resnet18" in message
    assert dict(os.environ) == env_before  # the temporary offline switch was undone
    assert constants.HF_HUB_OFFLINE is False


def test_grid_shape_matches_the_features_when_the_size_is_not_a_multiple_of_four(images, tmp_path):
    import cv2

    from somad.extraction import extract_features
    from somad.progress import Monitor

    ext = FeatureExtractor(_config(backbone="convnextv2_nano", layers=(0, 1, 2), image_size=66, dims=16), CPU)
    paths = []
    for i, image in enumerate(images):
        paths.append(tmp_path / f"{i}.png")
        cv2.imwrite(str(paths[-1]), image)
    feats, kept, _ = extract_features(ext, paths, Monitor())  # RuntimeError: 17 x 17 expected, 16 x 16 given
    assert kept == paths
    assert tuple(feats.shape[1:3]) == ext.grid_shape == tuple(ext(images).shape[-2:])
