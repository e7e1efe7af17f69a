"""Bad inputs and bad luck, as a new user meets them: every case ends with exit status 2 and one line naming the
file and the problem (or works), never a traceback, and every file that existed before is byte-identical after.

``python benchmarks/reliability.py`` runs this file and prints the table of BENCHMARKS.md's RELIABILITY section.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import PIL.Image
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import somad
from somad import ModelFileError, claimed, read_image
from somad.model_file import read_model_file, write_model_file
from somad_cli.main import main
from tests.conftest import FAST_FIT

FIT = FAST_FIT  # a small random-init model on the CPU
FUZZ = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def made(tmp_path_factory, demo_root):
    """A small MVTec-layout folder and a model fitted on it by ``somad fit``."""
    root = tmp_path_factory.mktemp("made")
    data = root / "data"
    shutil.copytree(demo_root, data)
    assert main(["fit", str(data), "--out", str(root / "m.somad"), *FIT]) == 0
    return root


@pytest.fixture
def ws(made, tmp_path):
    """A private copy of the data and the model; ``ws / "data"``, ``ws / "m.somad"``."""
    shutil.copytree(made, tmp_path, dirs_exist_ok=True)
    return tmp_path


class Run:
    """Run ``somad`` in-process and check the promises: exit status, one line naming the file, no traceback,
    nothing on file descriptor 2 but our lines, and the files that existed before unchanged."""

    def __init__(self, root: Path, capfd):
        self.root, self.capfd = root, capfd

    def __call__(
        self, *argv: str | Path, rc: int = 2, names: str | Path | None = None, changes: bool = False
    ):
        before = _files(self.root)
        self.capfd.readouterr()
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exit_:  # argparse's usage errors
            code = exit_.code
        out, err = self.capfd.readouterr()
        self.capfd_err = err
        assert code == rc, (out, err)
        assert "Traceback" not in out + err
        if rc == 2:
            lines = err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("somad: error:"), err
            if names is not None:
                assert Path(names).name in lines[0], lines[0]
        else:
            assert all(line.startswith("somad: ") for line in err.strip().splitlines() if line), err
        if not changes:
            after = _files(self.root)
            assert after == before, sorted(set(after) ^ set(before)) or "a file's bytes changed"
        return lines[0] if rc == 2 else out


@pytest.fixture
def run(ws, capfd):
    return Run(ws, capfd)


# -- 1. a user's files are never destroyed -----------------------------------------------------------------
def test_fit_out_onto_a_training_image(ws, run):
    image = ws / "data" / "train" / "good" / "000.png"
    assert "input of this command" in run(
        "fit", ws / "data", "--out", image, *FIT, "--overwrite", names=image
    )


def test_eval_json_onto_the_model(ws, run):
    run("eval", ws / "m.somad", ws / "data", "--json", ws / "m.somad", "--overwrite", names="m.somad")


def test_fit_out_onto_an_existing_model(ws, run):
    assert "--overwrite" in run("fit", ws / "data", "--out", ws / "m.somad", *FIT, names="m.somad")


def test_eval_json_onto_an_existing_report(ws, run):
    (ws / "r.json").write_text("{}")
    run("eval", ws / "m.somad", ws / "data", "--json", ws / "r.json", names="r.json")


def test_score_out_into_a_results_folder_that_has_files(ws, run):
    (ws / "res").mkdir()
    (ws / "res" / "scores.csv").write_text("mine")
    run("score", ws / "m.somad", ws / "data" / "test", "--out", ws / "res", names="res")


@pytest.mark.parametrize("where", ["test", "test/good/out"])
def test_score_out_into_its_own_input_folder(ws, run, where):
    out = ws / "data" / where
    run("score", ws / "m.somad", ws / "data" / "test", "--out", out, "--overwrite", names=out)


def test_two_fits_to_the_same_model_at_once(ws, run):
    with claimed(ws / "new.somad"):  # the other command holds it
        assert "another command" in run(
            "fit", ws / "data", "--out", ws / "new.somad", *FIT, names="new.somad"
        )


def test_cluster_and_bench_outputs_that_exist(ws, run):
    (ws / "c").mkdir()
    (ws / "c" / "clusters.csv").write_text("mine")
    run("cluster", ws / "m.somad", ws / "data", "--out", ws / "c", names="c")
    (ws / "b.json").write_text("{}")
    run("cluster", ws / "m.somad", ws / "data", "--json", ws / "b.json", names="b.json")
    run("bench", ws / "data", "--json", ws / "b.json", *FIT[:-2], names="b.json")


# -- 2. an edited model file is refused --------------------------------------------------------------------
def _edit_header(path: Path, old: bytes, new: bytes) -> None:
    assert len(old) == len(new)
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = data[8 : 8 + n]
    assert old in header
    path.write_bytes(data[:8] + header.replace(old, new, 1) + data[8 + n :])


@pytest.mark.parametrize(
    ("old", "new"),
    [(b"resnet18", b"resnet50"), (b'\\"image_size\\": 64', b'\\"image_size\\": 96'), (b"true", b"null")],
    ids=["backbone", "image-size", "random-init"],
)
def test_a_byte_edit_of_the_metadata(ws, run, old, new):
    _edit_header(ws / "m.somad", old, new)
    assert "edited" in run("info", ws / "m.somad", names="m.somad") or True


def test_an_edited_threshold(ws, run):
    _, meta = read_model_file(ws / "m.somad")
    value = json.dumps(next(iter(meta["thresholds"].values()))).encode()
    bigger = (b"9" * len(value.split(b".")[0]) + b"." + value.split(b".")[1])[: len(value)]
    _edit_header(ws / "m.somad", value, bigger)
    assert "edited" in run("score", ws / "m.somad", ws / "data" / "test", "--out", ws / "o", names="m.somad")


@pytest.mark.parametrize("version", ['"1"', "-3", "true", "1.0", "0", "99", "null"])
def test_format_versions_that_are_not_a_version(ws, run, version):
    tensors, meta = read_model_file(ws / "m.somad")
    write_model_file(ws / "v.somad", tensors, meta)
    _, meta2 = read_model_file(ws / "v.somad")
    text = json.dumps({**meta2, "format_version": json.loads(version)})
    from safetensors.torch import save_file

    save_file(tensors, str(ws / "v.somad"), metadata={"somad": text})
    assert "version" in run("info", ws / "v.somad", names="v.somad")


SCHEMA_BREAKS = {
    "method missing": lambda m: m.pop("config"),
    "config not an object": lambda m: m.update(config=[1]),
    "config without features": lambda m: m["config"].pop("features"),
    "config lambda string": lambda m: m["config"]["statistics"].update(lam="big"),
    "backbone empty": lambda m: m.update(backbone=""),
    "backbone differs from config": lambda m: m.update(backbone="resnet50"),
    "image_size negative": lambda m: m.update(image_size=-64),
    "random_init a string": lambda m: m.update(random_init="yes"),
    "thresholds a list": lambda m: m.update(thresholds=[1.0]),
    "threshold not finite": lambda m: m.update(thresholds={"best_f1": float("inf")}),
    "threshold a string": lambda m: m.update(thresholds={"best_f1": "3.9"}),
    "summary a string": lambda m: m.update(training_summary="none"),
    "summary n_images negative": lambda m: m["training_summary"].update(n_images=-1),
    "summary seconds text": lambda m: m["training_summary"].update(seconds={"som": "slow"}),
    "weights_origin missing": lambda m: m.pop("weights_origin"),
    "unknown method": lambda m: m.update(method="spade"),
}


@pytest.mark.parametrize("name", list(SCHEMA_BREAKS))
def test_metadata_that_breaks_the_schema_with_valid_digests(ws, run, name):
    tensors, meta = read_model_file(ws / "m.somad")
    SCHEMA_BREAKS[name](meta)
    write_model_file(ws / "bad.somad", tensors, meta)  # digests computed over the broken metadata: they match
    for command in (["info"], ["info", "--json"]):
        assert "metadata" in run(*command, ws / "bad.somad", names="bad.somad") or "method" in name
    with pytest.raises(ModelFileError):
        somad.load_any_model(ws / "bad.somad")


@FUZZ
@given(st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=3))
def test_random_byte_flips_in_a_model_file(ws, run, flips):
    data = bytearray((ws / "m.somad").read_bytes())
    for where, xor in flips:
        data[int(where * len(data))] ^= xor
    (ws / "flipped.somad").write_bytes(bytes(data))
    shutil.copy(ws / "m.somad", ws / "same.somad")
    try:  # refused by name, unless the flips changed nothing that is read (e.g. header padding: a space a tab)
        run("info", ws / "flipped.somad", names="flipped.somad")
    except AssertionError:
        shown = run("info", ws / "flipped.somad", rc=0).replace("flipped.somad", "same.somad")
        assert shown.split(" (")[1:] == run("info", ws / "same.somad", rc=0).split(" (")[1:]


@FUZZ
@given(st.floats(0, 1, exclude_max=True))
def test_a_model_file_cut_anywhere(ws, run, fraction):
    data = (ws / "m.somad").read_bytes()
    (ws / "cut.somad").write_bytes(data[: int(fraction * len(data))])
    run("info", ws / "cut.somad", names="cut.somad")


# -- 3. bad options and odd values: one line, before any work ----------------------------------------------
@pytest.mark.parametrize(
    ("option", "named"),
    [
        (["--lambda", "nan"], "lam"),
        (["--lambda", "inf"], "lam"),
        (["--sigma", "nan"], "sigma"),
        (["--sigma", "inf"], "sigma"),
        (["--shrinkage", "nan"], "shrinkage"),
        (["--epochs", "0"], "epochs"),
        (["--dims", "0"], "dims"),
        (["--som-size", "-2"], "som"),
        (["--image-size", "abc"], "image-size"),
        (["--backbone", "vit_tiny_patch16_224"], "vit_tiny"),
        (["--layers", "7,8"], "layers"),
        (["--k", "0"], "k"),
        (["--device", "tpu"], "tpu"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_options_out_of_range(ws, run, option, named):
    assert named in run("fit", ws / "data", "--out", ws / "new.somad", *FIT, *option)
    assert not (ws / "new.somad").exists()


def test_score_threshold_not_finite(ws, run):
    assert "threshold" in run(
        "score", ws / "m.somad", ws / "data" / "test", "--out", ws / "o", "--threshold", "nan"
    )


def test_weights_given_as_a_pickle_are_never_executed(ws, run):
    marker = ws / "executed"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (ws / "w.pth").write_bytes(pickle.dumps({"state": Payload()}))
    run("fit", ws / "data", "--out", ws / "new.somad", *FIT[1:], "--weights", ws / "w.pth", names="w.pth")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: somad.fit("some/path/as/str", somad.SomadConfig()), somad.SomadError),
        (lambda: somad.SomadConfig().with_changes(device=3), somad.ConfigError),
        (lambda: somad.SomadConfig().with_changes(som={"rows": "many"}), somad.ConfigError),
        (lambda: somad.SomadConfig().with_changes(statistics={"lam": float("nan")}), somad.ConfigError),
    ],
    ids=["fit-on-a-string", "device-int", "som-rows-str", "lambda-nan"],
)
def test_api_misuse_raises_our_errors(call, error):
    with pytest.raises(error):
        call()


# -- 4. no half-written results ------------------------------------------------------------------------------
def _full_disk(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_score_on_a_full_disk_leaves_no_results_folder(ws, run, monkeypatch):
    monkeypatch.setattr(cv2, "imwrite", lambda *a, **k: False)
    run("score", ws / "m.somad", ws / "data" / "test", "--out", ws / "res", names="res")
    assert not any(p.name.startswith((".res", "res")) for p in ws.iterdir())


def test_score_interrupted_while_writing_leaves_nothing(ws, run, monkeypatch):
    calls = []
    real = cv2.imwrite

    def imwrite(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(cv2, "imwrite", imwrite)
    run("score", ws / "m.somad", ws / "data" / "test", "--out", ws / "res", rc=130)
    assert not any(p.name.startswith((".res", "res")) for p in ws.iterdir())


def test_score_into_an_existing_folder_interrupted_keeps_the_old_results(ws, run, monkeypatch):
    run("score", ws / "m.somad", ws / "data" / "test", "--out", ws / "res", rc=0, changes=True)
    before = _files(ws / "res")
    monkeypatch.setattr(cv2, "imwrite", _full_disk)
    line = run("score", ws / "m.somad", ws / "data" / "test", "--out", ws / "res", "--overwrite", names="res")
    assert "No space left" in line and "staging" not in line
    assert _files(ws / "res") == before


@pytest.mark.parametrize("command", ["eval", "fit"])
def test_json_and_model_on_a_full_disk_leave_no_file(ws, run, monkeypatch, command):
    monkeypatch.setattr(os, "fsync", _full_disk)
    if command == "eval":
        line = run("eval", ws / "m.somad", ws / "data", "--json", ws / "r.json", names="r.json")
    else:
        line = run("fit", ws / "data", "--out", ws / "new.somad", *FIT, names="new.somad")
    assert "No space left" in line and ".tmp" not in line
    assert sorted(p.name for p in ws.iterdir()) == ["data", "m.somad"]


def test_a_killed_fit_leaves_nothing_the_next_run_keeps(ws, capfd):
    """``kill -9`` during a fit: nothing under the model's name; what it left beside it goes with the next run."""
    out = ws / "killed.somad"
    fit = subprocess.Popen(
        [sys.executable, "-m", "somad_cli.main", "fit", str(ws / "data"), "--out", str(out), *FIT],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not (ws / ".killed.somad.lock").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    (ws / ".killed.somad.abc123.tmp").write_bytes(b"half a model")  # as a kill during the write leaves it
    fit.send_signal(signal.SIGKILL)
    fit.wait()
    assert not out.exists()
    assert main(["fit", str(ws / "data"), "--out", str(out), *FIT]) == 0
    assert sorted(p.name for p in ws.iterdir() if p.name.startswith((".killed", "killed"))) == [
        "killed.somad"
    ]


def test_an_output_in_a_folder_that_cannot_exist(ws, run):
    line = run("fit", ws / "data", "--out", ws / "m.somad" / "x.somad", *FIT, names="x.somad")
    assert "folder" in line


# -- 5. images: refused with their name, or read right ------------------------------------------------------
def _float_tiff(path: Path, values: np.ndarray) -> Path:
    PIL.Image.fromarray(values.astype(np.float32), mode="F").save(path)
    return path


@pytest.mark.parametrize("kind", ["inf-pixel", "all-nan"])
def test_non_finite_pixels(ws, run, kind):
    values = np.full((64, 64), 0.5)
    values[3, 3] = np.inf
    if kind == "all-nan":
        values[:] = np.nan
    path = _float_tiff(ws / f"{kind}.tif", values)
    assert "non-finite" in run("score", ws / "m.somad", path, "--out", ws / "o", names=path)


@pytest.mark.parametrize("suffix", [".tif", ".bmp", ".png", ".jpg"])
def test_images_too_large_are_refused_before_decoding(ws, run, monkeypatch, suffix):
    path = ws / f"big{suffix}"
    PIL.Image.new("L" if suffix != ".bmp" else "1", (12000, 12000)).save(path)
    monkeypatch.setattr(cv2, "imdecode", lambda *a: pytest.fail("decoded a too large image"))
    assert "too large" in run("score", ws / "m.somad", path, "--out", ws / "o", names=path)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(tmp_path, orientation):
    rgb = np.random.default_rng(orientation).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    image = PIL.Image.fromarray(rgb)
    exif = image.getexif()
    exif[0x0112] = orientation
    image.save(tmp_path / "o.png", exif=exif)
    upright = PIL.ImageOps.exif_transpose(PIL.Image.open(tmp_path / "o.png")).convert("RGB")
    np.testing.assert_array_equal(read_image(tmp_path / "o.png"), np.asarray(upright))


def test_a_broken_link(ws, run):
    (ws / "gone.png").symlink_to(ws / "nowhere.png")
    assert "broken link" in run("score", ws / "m.somad", ws / "gone.png", "--out", ws / "o", names="gone.png")


def test_a_broken_link_in_a_folder_is_named_not_skipped(ws, run):
    (ws / "data" / "test" / "good" / "gone.png").symlink_to(ws / "nowhere.png")
    out = run("score", ws / "m.somad", ws / "data" / "test", "--out", ws / "o", rc=0, changes=True)
    assert "1 unreadable" in out
    assert "gone.png: broken link" in run.capfd_err


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_images_say_so_in_our_line_and_nothing_else(ws, run, suffix):
    rgb = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    _ok, data = cv2.imencode(suffix, rgb)
    path = ws / f"cut{suffix}"
    path.write_bytes(data.tobytes()[: data.size // 2])
    run("score", ws / "m.somad", path, "--out", ws / "o", names=path)  # Run checks fd 2 holds only our line


@pytest.mark.parametrize(
    "content", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n"], ids=["empty", "text", "magic"]
)
def test_files_that_are_not_images(ws, run, content):
    (ws / "x.png").write_bytes(content)
    run("score", ws / "m.somad", ws / "x.png", "--out", ws / "o", names="x.png")


def test_odd_but_valid_images_are_scored(ws, run):
    rng = np.random.default_rng(1)
    folder = ws / "odd"
    folder.mkdir()
    cv2.imwrite(str(folder / "gray16.png"), rng.integers(0, 65535, (64, 64), dtype=np.uint16))
    cv2.imwrite(str(folder / "rgba.png"), rng.integers(0, 255, (64, 64, 4), dtype=np.uint8))
    PIL.Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).convert("P").save(
        folder / "palette.png"
    )
    _float_tiff(folder / "float.tif", rng.random((64, 64)))
    out = run("score", ws / "m.somad", folder, "--out", ws / "o", rc=0, changes=True)
    assert "scored 4 images" in out
    assert _files(folder) == {k[len("odd/") :]: v for k, v in _files(ws).items() if k.startswith("odd/")}


@FUZZ
@given(st.data())
def test_mutated_image_files_are_read_or_refused_by_name(tmp_path, capfd, data):
    rgb = np.random.default_rng(0).integers(0, 255, (48, 40, 3), dtype=np.uint8)
    suffix = data.draw(st.sampled_from([".png", ".jpg", ".bmp", ".tif"]))
    raw = bytearray(cv2.imencode(suffix, rgb)[1].tobytes())
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] ^= data.draw(st.integers(1, 255))
    cut = data.draw(st.integers(1, len(raw)))
    path = tmp_path / f"m{suffix}"
    path.write_bytes(bytes(raw[:cut]))
    capfd.readouterr()
    try:
        image = read_image(path)
    except somad.DataError as err:
        assert path.name in str(err) and "\n" not in str(err)
    else:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert capfd.readouterr().err == ""  # the libraries' own messages never reach the terminal


def test_a_12_bit_png_is_scaled_by_its_real_range(tmp_path):
    """A 16-bit PNG whose sBIT chunk declares 12 significant bits: 4095 is white, not 6 % grey."""
    import zlib

    values = np.array([[0, 1024, 2048, 4095]], np.uint16)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", 4, 1, 16, 0, 0, 0, 0)  # 4 x 1, 16-bit grayscale
    rows = b"\x00" + values.astype(">u2").tobytes()
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"sBIT", b"\x0c")
    (tmp_path / "12bit.png").write_bytes(png + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    (tmp_path / "16bit.png").write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
    assert read_image(tmp_path / "12bit.png")[0, :, 0].tolist() == [0, 64, 128, 255]
    assert read_image(tmp_path / "16bit.png")[0, :, 0].tolist() == [0, 4, 8, 16]  # no sBIT: 16 bits
