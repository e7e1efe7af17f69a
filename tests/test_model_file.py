"""``.somad`` model files: round trip, metadata, refusal of damaged or foreign files, atomic writes, no pickle."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import stat
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import somad
import somad.atomic as atomic
import somad.model_file as model_file
from somad.config import SomadConfig
from somad.demo import demo_arrays
from somad.errors import ModelFileError
from somad.model import load_model
from somad.model_file import read_model_file, write_model_file

REQUIRED_METADATA = (
    "format",
    "format_version",
    "method",
    "config",
    "weights_origin",
    "random_init",
    "thresholds",
    "training_summary",
)


@pytest.fixture(scope="module")
def saved(fitted, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny.somad"
    assert fitted.save(path) == path
    return path


@pytest.fixture(scope="module")
def test_images() -> list[np.ndarray]:
    d = demo_arrays(n_train=1, n_test_good=2, n_test_per_defect=1, size=96, seed=7)
    return d.test


def _header(path: Path) -> dict:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n])


def _data_offset(path: Path) -> int:
    (n,) = struct.unpack("<Q", path.read_bytes()[:8])
    return 8 + n


def _copy(saved: Path, tmp_path: Path, name: str = "copy.somad") -> Path:
    target = tmp_path / name
    target.write_bytes(saved.read_bytes())
    return target


def _refused(path: Path, match: str) -> ModelFileError:
    with pytest.raises(ModelFileError, match=match) as info:
        load_model(path, device="cpu")
    assert info.value.path == path
    assert path.name in str(info.value)
    return info.value


# -- round trip and contents ------------------------------------------------------------------------------
def test_round_trip_gives_identical_scores(fitted, saved, test_images):
    loaded = load_model(saved, device="cpu")
    before = fitted.score(test_images)
    after = loaded.score(test_images)
    for a, b in zip(before, after, strict=True):
        assert a.score == b.score
        np.testing.assert_array_equal(a.anomaly_map, b.anomaly_map)
        np.testing.assert_array_equal(a.nearest_nodes, b.nearest_nodes)
    assert loaded.config == fitted.config
    assert loaded.thresholds == pytest.approx(fitted.thresholds)
    assert loaded.weights_origin == fitted.weights_origin == "random-init"
    assert loaded.random_init
    np.testing.assert_array_equal(loaded.channel_indices, fitted.channel_indices)
    torch.testing.assert_close(loaded.som_weights, fitted.som_weights.cpu())
    np.testing.assert_array_equal(loaded.hit_counts(), fitted.hit_counts())
    assert loaded.grid_shape == fitted.grid_shape


def test_file_is_safetensors_with_complete_metadata(fitted, saved):
    header = _header(saved)
    assert {
        "som_weights",
        "node_means",
        "node_inverse_cholesky_lower",
        "node_counts",
        "channel_indices",
    } <= set(header)
    meta = json.loads(header["__metadata__"]["somad"])
    for key in REQUIRED_METADATA:
        assert key in meta, key
    assert meta["format"] == model_file.FORMAT_NAME
    assert meta["format_version"] == model_file.FORMAT_VERSION
    assert meta["method"] == "somad"
    assert meta["random_init"] is True
    assert SomadConfig.from_dict(meta["config"]) == fitted.config
    assert meta["thresholds"]["train_false_reject_1pct"] == pytest.approx(
        fitted.thresholds["train_false_reject_1pct"]
    )
    assert meta["training_summary"]["n_images"] == fitted.training_summary["n_images"]
    assert len(meta["sha256"]) == 64
    # The same file read through the module's reader.
    tensors, metadata = read_model_file(saved)
    assert metadata["sha256"] == model_file.tensor_digest(tensors)
    assert tensors["node_inverse_cholesky_lower"].shape == (100, 48 * 49 // 2)  # lower triangles only


def test_write_leaves_no_temporary_files(fitted, tmp_path):
    path = tmp_path / "m.somad"
    fitted.save(path)
    fitted.save(path)  # overwrite
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.somad"]


def test_failed_replace_keeps_the_old_file(fitted, saved, tmp_path, monkeypatch):
    path = _copy(saved, tmp_path, "keep.somad")
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", broken_replace)
    changed = dataclasses.replace(fitted, thresholds={"best_f1": 123.0})
    with pytest.raises(somad.DataError, match=r"keep\.somad: cannot write \(No space left on device\)"):
        changed.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.somad"]
    assert load_model(path, device="cpu").thresholds == pytest.approx(fitted.thresholds)


def test_missing_output_folder_is_refused(fitted, tmp_path):
    with pytest.raises(ModelFileError, match="folder does not exist"):
        fitted.save(tmp_path / "nowhere" / "m.somad")


def test_load_does_not_unpickle(saved, monkeypatch, test_images):
    def forbidden(*args, **kwargs):
        raise AssertionError("pickle must not be used to load a model file")

    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    model = load_model(saved, device="cpu")
    assert model.score(test_images[:1])[0].anomaly_map.shape == (96, 96)
    assert b"pickle" not in saved.read_bytes()[: _data_offset(saved)]


# -- refusals ----------------------------------------------------------------------------------------------
def test_missing_file_and_folder_are_refused(tmp_path):
    _refused(tmp_path / "absent.somad", "not found")
    folder = tmp_path / "dir.somad"
    folder.mkdir()
    _refused(folder, "not a file")


@pytest.mark.parametrize("keep", [0.5, 0.99, 16 / 10**9])
def test_truncated_file_is_refused(saved, tmp_path, keep):
    path = tmp_path / "truncated.somad"
    raw = saved.read_bytes()
    path.write_bytes(raw[: max(1, int(len(raw) * keep))])
    _refused(path, "truncated")


def test_random_bytes_are_refused(tmp_path):
    path = tmp_path / "noise.somad"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    _refused(path, "not a SOMAD model file")


def test_empty_file_is_refused(tmp_path):
    path = tmp_path / "empty.somad"
    path.write_bytes(b"")
    _refused(path, "not a SOMAD model file")


def test_flipped_byte_in_tensor_data_fails_the_checksum(saved, tmp_path):
    path = _copy(saved, tmp_path, "flipped.somad")
    raw = bytearray(path.read_bytes())
    position = _data_offset(path) + (len(raw) - _data_offset(path)) // 2
    raw[position] ^= 0x01
    path.write_bytes(bytes(raw))
    _refused(path, "checksum mismatch")


def test_safetensors_without_our_metadata_is_refused(tmp_path):
    path = tmp_path / "foreign.somad"
    save_file({"weight": torch.zeros(4, 4)}, str(path))
    _refused(path, "without SOMAD metadata")
    other = tmp_path / "other_meta.somad"
    save_file({"weight": torch.zeros(4)}, str(other), metadata={"format": "pt"})
    _refused(other, "without SOMAD metadata")


def test_corrupt_metadata_json_is_refused(tmp_path):
    path = tmp_path / "badjson.somad"
    save_file({"weight": torch.zeros(4)}, str(path), metadata={"somad": "{not json"})
    _refused(path, "invalid JSON")


def test_foreign_format_name_is_refused(saved, tmp_path):
    tensors, meta = read_model_file(saved)
    path = tmp_path / "renamed.somad"
    raw = model_file.save_bytes(tensors, metadata={"somad": json.dumps({**meta, "format": "something-else"})})
    path.write_bytes(raw)
    _refused(path, "unknown format")


def test_future_format_version_is_refused(saved, tmp_path, monkeypatch):
    tensors, meta = read_model_file(saved)
    path = tmp_path / "future.somad"
    monkeypatch.setattr(model_file, "FORMAT_VERSION", model_file.FORMAT_VERSION + 1)
    write_model_file(path, tensors, meta)
    monkeypatch.undo()
    _refused(path, "newer than this program reads")


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("som_weights", lambda t: t[:-1]),
        ("node_means", lambda t: t[:, :-1]),
        ("node_inverse_cholesky_lower", lambda t: t[:, :-1].contiguous()),
        ("node_counts", lambda t: t[:5]),
    ],
)
def test_wrong_tensor_shapes_are_refused(saved, tmp_path, name, change):
    tensors, meta = read_model_file(saved)
    tensors[name] = change(tensors[name]).contiguous()
    path = tmp_path / "shapes.somad"
    write_model_file(path, tensors, meta)
    read_model_file(path)  # a consistent file as far as the checksum goes
    _refused(path, f"tensor {name} has shape")


def test_missing_tensor_is_refused(saved, tmp_path):
    tensors, meta = read_model_file(saved)
    del tensors["node_means"]
    path = tmp_path / "missing.somad"
    write_model_file(path, tensors, meta)
    _refused(path, "missing tensors: node_means")


def test_invalid_configuration_is_refused(saved, tmp_path):
    tensors, meta = read_model_file(saved)
    path = tmp_path / "config.somad"
    bad = json.loads(json.dumps(meta))
    bad["config"]["som"]["bogus_option"] = 1
    write_model_file(path, tensors, bad)
    _refused(path, "invalid configuration")
    bad = json.loads(json.dumps(meta))
    bad["config"]["features"]["dims"] = 0
    write_model_file(path, tensors, bad)
    _refused(path, "invalid configuration")


def test_other_method_is_refused(saved, tmp_path):
    tensors, meta = read_model_file(saved)
    path = tmp_path / "padim.somad"
    write_model_file(path, tensors, {**meta, "method": "padim"})
    _refused(path, "not supported")


def test_written_file_replaces_atomically_even_when_the_target_is_read(fitted, saved, tmp_path):
    """A reader holding the old file open keeps reading the old bytes after a save (rename semantics)."""
    path = _copy(saved, tmp_path, "live.somad")
    old = path.read_bytes()
    with open(path, "rb") as handle:
        changed = dataclasses.replace(fitted, thresholds={"best_f1": 7.0})
        changed.save(path)
        assert handle.read() == old
    assert load_model(path, device="cpu").thresholds == {"best_f1": 7.0}
    assert os.path.getsize(path) > 0


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_saved_model_gets_the_usual_file_permissions(fitted, tmp_path):
    reference = tmp_path / "reference.txt"
    reference.write_bytes(b"")  # created like any other output (scores.csv, overlays): 0666 & ~umask
    path = fitted.save(tmp_path / "shared.somad")
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(reference.stat().st_mode)


def test_description_of_a_file_and_of_the_loaded_model_agree(fitted, saved):
    from somad.model import load_any_model, model_metadata
    from somad.model_file import describe_model

    _, meta = read_model_file(saved)
    rows = describe_model(meta)
    assert rows == describe_model(model_metadata(load_any_model(saved, device="cpu")))
    text = dict(rows)
    assert text["method"] == "SOMAD: anomaly maps" and "RANDOM INIT" in text["weights"]
    assert text["SOM"].startswith(f"{fitted.config.som.rows} x {fitted.config.som.cols}")


def test_channel_count_that_disagrees_with_the_state_is_refused(saved, tmp_path):
    tensors, meta = read_model_file(saved)
    tensors["channel_indices"] = tensors["channel_indices"][:-1].contiguous()
    path = tmp_path / "channels.somad"
    write_model_file(path, tensors, meta)
    _refused(path, "feature channels")


@pytest.mark.parametrize("version", ["1", -3, 0, True, 1.0, None])
def test_format_version_must_be_a_whole_number_from_one(saved, tmp_path, version):
    tensors, meta = read_model_file(saved)
    path = tmp_path / "version.somad"
    raw = model_file.save_bytes(tensors, metadata={"somad": json.dumps({**meta, "format_version": version})})
    path.write_bytes(raw)
    _refused(path, "format version")


def _edit_metadata(path: Path, change) -> None:
    """Rewrite a file's JSON metadata in place, tensors and digests untouched (as a hand edit would)."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    meta = json.loads(header["__metadata__"][model_file.METADATA_KEY])
    change(meta)
    header["__metadata__"][model_file.METADATA_KEY] = json.dumps(meta)
    new = json.dumps(header).encode()
    new += b" " * (-len(new) % 8)
    path.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n :])


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m["thresholds"].update(train_false_reject_1pct=3.9e17),
        lambda m: m.update(backbone="resnet50"),
        lambda m: m["config"]["scoring"].update(k=1),
        lambda m: m.pop("training_summary"),
    ],
)
def test_an_edit_of_the_metadata_is_refused(saved, tmp_path, change):
    path = _copy(saved, tmp_path, "edited.somad")
    load_model(path, device="cpu")  # the copy as saved loads
    _edit_metadata(path, change)
    _refused(path, "metadata was edited")


def test_format_1_files_are_read_with_their_tensor_digest_only():
    data = Path(__file__).resolve().parent / "data" / "format1_somad.somad"
    _, meta = read_model_file(data)
    assert meta["format_version"] == 1 and "metadata_sha256" not in meta
    assert meta["config"]["features"]["normalisation"] == "imagenet"  # the upgrade step's default
    assert meta["config"]["som"]["search_dims"] == 0  # their nearest nodes were searched exactly
