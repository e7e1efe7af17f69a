"""The feature cache: hits skip the backbone, a changed image or option invalidates, damaged files re-extract."""

from __future__ import annotations

import os
from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch

import somad
from somad.extraction import AUGMENTATIONS, augment, extract_feature_set, extract_features, run_backbone
from somad.feature_cache import FeatureCache, cache_key
from somad.features import FeatureExtractor
from somad.progress import Monitor
from tests.conftest import make_config


@pytest.fixture
def counted(monkeypatch):
    """Counts backbones built and backbone passes run (every extraction path goes through one of them)."""
    calls = {"built": 0, "passes": 0}
    build = FeatureExtractor.__init__

    def counting_init(self, *args, **kwargs):
        build(self, *args, **kwargs)
        calls["built"] += 1
        self.backbone.register_forward_hook(lambda *_: calls.__setitem__("passes", calls["passes"] + 1))

    monkeypatch.setattr(FeatureExtractor, "__init__", counting_init)
    return calls


def _paths(root, split="train"):
    dataset = somad.open_dataset(root)
    return [s.path for s in (dataset.train if split == "train" else dataset.test)]


def test_second_request_is_served_from_disk_without_the_backbone(demo_copy, tmp_path, counted):
    config = make_config().features
    paths = _paths(demo_copy)
    first = FeatureCache(tmp_path / "cache").get(config, paths)
    assert counted["built"] == 1 and counted["passes"] >= 1 and not first.from_cache
    files = list((tmp_path / "cache").iterdir())
    assert len(files) == 1 and files[0].suffix == ".safetensors"  # written atomically: no temporary left
    assert files[0].stat().st_mode & 0o777 == 0o666 & ~_umask()

    counted.update(built=0, passes=0)
    cache = FeatureCache(tmp_path / "cache")
    second = cache.get(config, paths)
    assert counted == {"built": 0, "passes": 0}
    assert second.from_cache and cache.hits == 1 and cache.misses == 0
    assert torch.equal(first.features.patches, second.features.patches)
    assert first.features.pooled.keys() == second.features.pooled.keys() == {1, 2, 3}
    for stage in (1, 2, 3):
        assert torch.equal(first.features.pooled[stage], second.features.pooled[stage])
    assert second.paths == first.paths and second.sizes == first.sizes == [(96, 96)] * len(paths)
    assert second.weights_origin == "random-init" and second.ms_per_image > 0
    np.testing.assert_array_equal(second.channel_indices, first.channel_indices)


def test_a_changed_image_file_invalidates_the_cache(demo_copy, tmp_path, counted):
    config = make_config().features
    paths = _paths(demo_copy)
    before = FeatureCache(tmp_path / "cache").get(config, paths)
    image = cv2.imread(str(paths[2]))
    cv2.rectangle(image, (20, 20), (60, 60), (0, 0, 255), -1)
    cv2.imwrite(str(paths[2]), image)
    counted.update(built=0, passes=0)
    cache = FeatureCache(tmp_path / "cache")
    after = cache.get(config, paths)
    assert counted["passes"] >= 1 and cache.misses == 1 and not after.from_cache
    assert after.key != before.key
    assert not torch.equal(after.features.patches[2], before.features.patches[2])
    assert torch.equal(after.features.patches[3], before.features.patches[3])
    assert len(list((tmp_path / "cache").iterdir())) == 2


def test_keys_cover_every_feature_option_and_the_image_list(demo_root):
    paths = _paths(demo_root)
    config = make_config().features
    key = cache_key(config, paths)
    assert key == cache_key(config, list(paths)) and len(key) == 64
    changed = [
        replace(config, dims=17),
        replace(config, image_size=72),
        replace(config, seed=1),
        replace(config, layers=(2, 3)),
        replace(config, backbone="resnet34"),
        replace(config, random_init=False),
        replace(config, zero_init_last=True),
    ]
    keys = {cache_key(c, paths) for c in changed}
    assert key not in keys and len(keys) == len(changed)
    assert cache_key(config, paths[:-1]) != key
    assert cache_key(config, paths, augmented=True) != key
    assert cache_key(config, paths, content_hash=True) != key
    assert (
        cache_key(replace(config, batch_size=config.batch_size + 1), paths) == key
    )  # does not shape features


def test_content_hash_ignores_a_touch_but_not_an_edit(demo_copy, tmp_path):
    config = make_config().features
    paths = _paths(demo_copy)
    key = cache_key(config, paths, content_hash=True)
    stat = paths[0].stat()
    os.utime(paths[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert cache_key(config, paths, content_hash=True) == key
    paths[0].write_bytes(paths[1].read_bytes())
    assert cache_key(config, paths, content_hash=True) != key


def test_a_damaged_cache_file_is_extracted_again(demo_root, tmp_path, counted):
    config = make_config().features
    paths = _paths(demo_root)[:4]
    FeatureCache(tmp_path).get(config, paths)
    (file,) = tmp_path.glob("features-*.safetensors")
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    counted.update(built=0, passes=0)
    again = FeatureCache(tmp_path).get(config, paths)
    assert counted["passes"] >= 1 and not again.from_cache and len(again.paths) == 4
    assert FeatureCache(tmp_path).get(config, paths).from_cache  # rewritten whole


def test_unreadable_images_are_skipped_and_remembered(demo_copy, tmp_path):
    config = make_config().features
    paths = _paths(demo_copy)[:5]
    paths[1].write_bytes(b"not an image")
    errors = []
    first = FeatureCache(tmp_path, on_error=errors.append).get(config, paths)
    assert len(first.paths) == 4 and paths[1] not in first.paths and len(errors) == 1
    second = FeatureCache(tmp_path).get(config, paths)
    assert second.from_cache and second.unreadable == [str(paths[1])]
    assert second.features.patches.shape[0] == 4


def test_patch_features_equal_the_extractors_and_pooled_are_stage_means(demo_root):
    config = make_config()
    extractor = FeatureExtractor(config.features, torch.device("cpu"))
    paths = _paths(demo_root)[:5]
    ours = extract_feature_set(extractor, paths, Monitor())
    theirs, _, _ = extract_features(extractor, paths, Monitor())
    assert torch.equal(ours.features.patches, theirs)
    image = somad.read_image(paths[0])
    with torch.inference_mode():
        stages = extractor.backbone(extractor.preprocess([image]))
    for stage, out in zip((1, 2, 3), stages, strict=True):
        torch.testing.assert_close(ours.features.pooled[stage][0], out[0].mean((1, 2)))
    assert ours.features.pooled[3].shape == (5, 256)  # the whole stage, not the dims subset


def test_augmented_features_are_the_pooled_features_of_rotated_and_flipped_copies(demo_root, tmp_path):
    config = make_config().features
    paths = _paths(demo_root)[:3]
    cache = FeatureCache(tmp_path)
    result = cache.get(config, paths, augmented=True)
    assert result.features.patches is None and not result.features.pooled
    assert result.features.augmented[3].shape == (3 * len(AUGMENTATIONS), 256)
    image = somad.read_image(paths[1])
    copies = augment(image)
    np.testing.assert_array_equal(copies[0], np.rot90(image))
    np.testing.assert_array_equal(copies[4], image[::-1])
    _, pooled = run_backbone(cache.extractor(config), copies, patches=False)
    torch.testing.assert_close(result.features.augmented[3][5:10], pooled[3])
    assert FeatureCache(tmp_path).get(config, paths, augmented=True).from_cache


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
