"""The ``somad`` command line, run in-process: fit, info, eval, score, and one-line errors on bad input."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

import somad.features
from somad_cli.main import main
from tests.conftest import FAST_FIT


@pytest.fixture(scope="module")
def cli_model(demo_root, tmp_path_factory):
    """``somad fit`` on the demo set; returns the model path and what the command printed."""
    out = tmp_path_factory.mktemp("cli") / "demo.somad"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        rc = main(["fit", str(demo_root), "--out", str(out), *FAST_FIT])
    return out, rc, stdout.getvalue(), stderr.getvalue()


def _one_error_line(capsys, rc: int) -> str:
    captured = capsys.readouterr()
    assert rc == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("somad: error:")
    assert "Traceback" not in captured.err and "Traceback" not in captured.out
    return lines[0]


def _csv_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def _truncated(model: Path, tmp_path: Path) -> Path:
    path = tmp_path / "truncated.somad"
    raw = model.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    return path


# -- the happy path --------------------------------------------------------------------------------------------
def test_fit_writes_a_model_and_says_so(cli_model):
    path, rc, out, err = cli_model
    assert rc == 0, err
    assert path.is_file() and path.stat().st_size > 0
    assert f"wrote {path}" in out
    assert "fitted 12 images of 'demo_parts'" in out
    assert "random-init" in out
    assert sorted(p.name for p in path.parent.iterdir()) == ["demo.somad"]


def test_info_describes_the_model(cli_model, capsys):
    path = cli_model[0]
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "resnet18" in out and "RANDOM INIT" in out
    assert "6 x 6, 2 epochs" in out
    assert "16 channels" in out and "at 64 px" in out
    assert main(["info", str(path), "--json"]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["format"] == "somad-inspector" and meta["random_init"] is True
    assert meta["config"]["features"]["dims"] == 16
    assert meta["config"]["scoring"]["k"] == 3
    assert meta["training_summary"]["n_images"] == 12
    assert "sha256" not in meta


def test_eval_writes_json_report(cli_model, demo_root, tmp_path, capsys):
    report = tmp_path / "report.json"
    rc = main(["eval", str(cli_model[0]), str(demo_root), "--json", str(report), "--device", "cpu"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "demo_parts: image AUROC" in out and "scratch" in out and "spot" in out
    data = json.loads(report.read_text())
    for key in ("image_auroc", "pixel_auroc", "pro"):
        assert isinstance(data[key], float) and 0.0 <= data[key] <= 1.0, key
    assert data["random_init"] is True
    category = data["categories"]["demo_parts"]
    assert sorted(category["per_defect_type"]) == ["scratch", "spot"]
    assert category["per_defect_type"]["spot"]["count"] == 4
    assert len(category["images"]) == 12
    assert data["image_auroc"] == pytest.approx(category["image_auroc"])


def test_eval_of_a_root_with_several_categories(cli_model, demo_root, tmp_path, capsys):
    root = tmp_path / "root"
    root.mkdir()
    shutil.copytree(demo_root, root / "a_parts")
    shutil.copytree(demo_root, root / "b_parts")
    report = tmp_path / "all.json"
    assert main(["eval", str(cli_model[0]), str(root), "--json", str(report)]) == 0
    capsys.readouterr()
    data = json.loads(report.read_text())
    assert sorted(data["categories"]) == ["a_parts", "b_parts"]
    a, b = data["categories"]["a_parts"], data["categories"]["b_parts"]
    assert data["image_auroc"] == pytest.approx((a["image_auroc"] + b["image_auroc"]) / 2)


def test_eval_store_thresholds(cli_model, demo_root, tmp_path, capsys):
    model = tmp_path / "copy.somad"
    shutil.copy(cli_model[0], model)
    assert main(["eval", str(model), str(demo_root), "--store-thresholds"]) == 0
    assert "stored thresholds" in capsys.readouterr().out
    assert main(["info", str(model), "--json"]) == 0
    thresholds = json.loads(capsys.readouterr().out)["thresholds"]
    assert {"best_f1", "false_reject_1pct", "train_false_reject_1pct"} <= set(thresholds)


def test_score_writes_csv_and_pictures(cli_model, demo_root, tmp_path, capsys):
    out = tmp_path / "scored"
    test_folder = demo_root / "test"
    rc = main(["score", str(cli_model[0]), str(test_folder), "--out", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0
    assert "scored 12 images" in printed
    rows = _csv_rows(out / "scores.csv")
    assert rows[0][:6] == ["file", "score", "verdict", "threshold", "defect_area_px", "model"]
    assert rows[0][6:] == ["regions", "largest_region_px", "region_boxes", "pixel_threshold", "min_area_px"]
    assert len(rows) == 13
    meta_threshold = None
    for row in rows[1:]:
        assert Path(row[0]).is_file()
        assert row[2] in ("OK", "NG")
        assert (float(row[1]) >= float(row[3])) == (row[2] == "NG")
        assert int(row[4]) >= 0 and (int(row[4]) > 0) == (row[2] == "NG")
        assert row[5] == str(cli_model[0])
        boxes = [b for b in row[8].split(";") if b]
        assert int(row[6]) == len(boxes) and (int(row[6]) > 0) == (row[2] == "NG")
        assert int(row[7]) <= int(row[4]) and (int(row[6]) != 1 or int(row[7]) == int(row[4]))
        assert row[9] == row[3] and row[10] == "0"
        meta_threshold = meta_threshold or row[3]
        assert row[3] == meta_threshold  # one threshold for every image
    overlays = sorted(out.glob("*_overlay.png"))
    heatmaps = sorted(out.glob("*_heatmap.png"))
    assert len(overlays) == len(heatmaps) == 12  # same file names in good/, scratch/, spot/ do not collide
    image = cv2.imread(str(overlays[0]))
    assert image is not None and image.shape == (96, 96, 3)


def test_an_image_gone_after_scoring_keeps_its_row_without_pictures(
    cli_model, demo_root, tmp_path, monkeypatch, capsys
):
    import somad

    images = sorted((demo_root / "test").rglob("*.png"))[:3]
    gone, replaced = images[1], images[2]
    real = somad.read_image

    def read_image(path, *args, **kwargs):  # the pictures' second read: one file gone, one replaced
        if Path(path) == gone:
            raise somad.ImageReadError(path, "no such file")
        image = real(path, *args, **kwargs)
        return image[:40] if Path(path) == replaced else image

    monkeypatch.setattr(somad.score_report, "read_image", read_image)
    out = tmp_path / "o"
    assert main(["score", str(cli_model[0]), *map(str, images), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"{gone}: no pictures: no such file" in err
    assert f"{replaced}: no pictures: changed since it was scored" in err
    rows = {r[0]: r for r in _csv_rows(out / "scores.csv")[1:]}
    assert rows[str(gone)][2] in ("OK", "NG") and len(rows) == 3
    assert not (out / f"{gone.stem}_overlay.png").exists() or gone.stem == images[0].stem


def test_minimum_area_turns_small_defects_ok(cli_model, demo_root, tmp_path, capsys):
    out = tmp_path / "plain"
    assert main(["score", str(cli_model[0]), str(demo_root / "test"), "--out", str(out)]) == 0
    plain = {r[0]: r for r in _csv_rows(out / "scores.csv")[1:]}
    largest = sorted(int(r[7]) for r in plain.values() if r[2] == "NG")
    cut = largest[len(largest) // 2]  # a minimum area that keeps about half of the NG images
    out = tmp_path / "filtered"
    assert (
        main(["score", str(cli_model[0]), str(demo_root / "test"), "--out", str(out), "--min-area", str(cut)])
        == 0
    )
    for row in _csv_rows(out / "scores.csv")[1:]:
        before = plain[row[0]]
        assert row[1] == before[1] and row[10] == str(cut)  # the same scores; only the verdict moves
        assert row[2] == ("NG" if before[2] == "NG" and int(before[7]) >= cut else "OK")
    assert any(plain[r[0]][2] == "NG" and r[2] == "OK" for r in _csv_rows(out / "scores.csv")[1:])
    rc = main(
        [
            "score",
            str(cli_model[0]),
            str(demo_root / "test"),
            "--out",
            str(tmp_path / "x"),
            "--min-area",
            "-3",
        ]
    )
    assert rc == 2 and "minimum defect area" in capsys.readouterr().err


def test_pictures_do_not_depend_on_the_other_images_of_the_run(cli_model, demo_root, tmp_path):
    model = cli_model[0]
    images = sorted((demo_root / "test").rglob("*.png"))
    assert main(["score", str(model), str(images[0]), "--out", str(tmp_path / "one")]) == 0
    assert main(["score", str(model), *map(str, images), "--out", str(tmp_path / "all")]) == 0
    assert (
        main(["score", str(model), *map(str, images), "--out", str(tmp_path / "bare"), "--no-pictures"]) == 0
    )
    for kind in (
        "heatmap",
        "overlay",
    ):  # alone or in a batch: scores agree to 1e-6, colours to a level or two
        name = f"{images[0].stem}_{kind}.png"
        one = cv2.imread(str(tmp_path / "one" / name)).astype(int)
        every = cv2.imread(str(tmp_path / "all" / name)).astype(int)
        assert np.abs(one - every).max() <= 8 and np.mean(one != every) < 0.01
    assert [p.name for p in (tmp_path / "bare").iterdir()] == ["scores.csv"]


def test_score_with_explicit_threshold_and_a_non_square_image(cli_model, tmp_path, capsys):
    picture = np.random.default_rng(0).integers(0, 256, (60, 140, 3), dtype=np.uint8)
    path = tmp_path / "wide.png"
    cv2.imwrite(str(path), picture)
    out = tmp_path / "wide_out"
    assert main(["score", str(cli_model[0]), str(path), "--out", str(out), "--threshold", "-1"]) == 0
    capsys.readouterr()
    rows = _csv_rows(out / "scores.csv")
    assert rows[1][2] == "NG" and float(rows[1][3]) == -1.0
    assert int(rows[1][4]) == 60 * 140  # every pixel is above a negative threshold
    assert cv2.imread(str(out / "wide_overlay.png")).shape == (60, 140, 3)
    assert cv2.imread(str(out / "wide_heatmap.png")).shape == (60, 140, 3)


def test_score_skips_an_unreadable_image_with_a_warning(cli_model, demo_root, tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    good = demo_root / "test" / "good" / "000.png"
    out = tmp_path / "mixed"
    assert main(["score", str(cli_model[0]), str(good), str(bad), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "somad: warning:" in captured.err and "broken.png" in captured.err
    assert "1 unreadable" in captured.out
    rows = _csv_rows(out / "scores.csv")
    assert [r[2] for r in rows[1:]][1] == "unreadable"
    assert not (out / "broken_overlay.png").exists()


# -- bad input: exit 2 and one line --------------------------------------------------------------------------
def test_fit_missing_data_folder(tmp_path, capsys):
    rc = main(["fit", str(tmp_path / "no_such_folder"), "--out", str(tmp_path / "m.somad"), *FAST_FIT])
    line = _one_error_line(capsys, rc)
    assert "no_such_folder" in line
    assert not (tmp_path / "m.somad").exists()


def test_fit_missing_output_folder(demo_root, tmp_path, capsys):
    rc = main(["fit", str(demo_root), "--out", str(tmp_path / "nowhere" / "m.somad"), *FAST_FIT])
    assert "output folder does not exist" in _one_error_line(capsys, rc)


def test_fit_zero_dims(demo_root, tmp_path, capsys):
    args = [a if a != "16" else "0" for a in FAST_FIT]
    rc = main(["fit", str(demo_root), "--out", str(tmp_path / "m.somad"), *args])
    assert "dims" in _one_error_line(capsys, rc)
    assert not (tmp_path / "m.somad").exists()


def test_fit_bad_layers(demo_root, tmp_path, capsys):
    rc = main(["fit", str(demo_root), "--out", str(tmp_path / "m.somad"), *FAST_FIT, "--layers", "1,x"])
    assert "--layers" in _one_error_line(capsys, rc)


def test_fit_offline_without_weights_or_random_init(demo_root, tmp_path, capsys, monkeypatch):
    def offline(config):
        raise somad.features._offline_error(config, OSError("no network"))

    monkeypatch.setattr(somad.features, "_check_hub_reachable", offline)
    args = [a for a in FAST_FIT if a != "--random-init"]
    rc = main(["fit", str(demo_root), "--out", str(tmp_path / "m.somad"), *args])
    line = _one_error_line(capsys, rc)
    assert "--weights" in line and "--random-init" in line
    assert not (tmp_path / "m.somad").exists()


def test_fit_with_a_wrong_weights_file(demo_root, tmp_path, capsys):
    weights = tmp_path / "junk.safetensors"
    weights.write_bytes(bytes(range(256)) * 4)
    args = [a for a in FAST_FIT if a != "--random-init"]
    rc = main(["fit", str(demo_root), "--out", str(tmp_path / "m.somad"), *args, "--weights", str(weights)])
    assert "junk.safetensors" in _one_error_line(capsys, rc)


@pytest.mark.parametrize("command", ["info", "score", "eval"])
def test_truncated_model(cli_model, demo_root, tmp_path, capsys, command):
    model = _truncated(cli_model[0], tmp_path)
    argv = {
        "info": ["info", str(model)],
        "score": ["score", str(model), str(demo_root / "test" / "good"), "--out", str(tmp_path / "o")],
        "eval": ["eval", str(model), str(demo_root)],
    }[command]
    line = _one_error_line(capsys, main(argv))
    assert "truncated.somad" in line
    assert not (tmp_path / "o").exists()


def test_score_missing_image(cli_model, tmp_path, capsys):
    rc = main(["score", str(cli_model[0]), str(tmp_path / "ghost.png"), "--out", str(tmp_path / "o")])
    assert "ghost.png" in _one_error_line(capsys, rc)


def test_eval_folder_without_categories(cli_model, tmp_path, capsys):
    empty = tmp_path / "nothing"
    empty.mkdir()
    rc = main(["eval", str(cli_model[0]), str(empty)])
    assert "no category found" in _one_error_line(capsys, rc)


def test_eval_store_thresholds_needs_one_category(cli_model, demo_root, tmp_path, capsys):
    root = tmp_path / "root"
    root.mkdir()
    shutil.copytree(demo_root, root / "a")
    shutil.copytree(demo_root, root / "b")
    model = tmp_path / "m.somad"
    shutil.copy(cli_model[0], model)
    before = model.read_bytes()
    rc = main(["eval", str(model), str(root), "--store-thresholds"])
    assert "single category" in _one_error_line(capsys, rc)
    assert model.read_bytes() == before


def test_scores_csv_threshold_column_is_the_same_on_every_row(cli_model, demo_root, tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    good = demo_root / "test" / "good" / "000.png"
    out = tmp_path / "mixed"
    argv = ["score", str(cli_model[0]), str(good), str(bad), "--out", str(out), "--threshold", "1.23456789"]
    assert main(argv) == 0
    capsys.readouterr()
    rows = _csv_rows(out / "scores.csv")
    assert [r[2] for r in rows[1:]][1] == "unreadable"
    assert rows[1][3] == rows[2][3]


def test_fit_any_method_with_its_options(demo_root, tmp_path, capsys):
    out = tmp_path / "patchcore.somad"
    args = ["--method", "patchcore", "--option", "coreset_ratio=0.2", "--option", "stride=1"]
    assert main(["fit", str(demo_root), "--out", str(out), *FAST_FIT, *args]) == 0
    assert "fitted PatchCore on" in capsys.readouterr().out
    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "PatchCore: anomaly maps" in info and "coreset_ratio 0.2" in info and "stride 1" in info
    assert main(["score", str(out), str(demo_root / "test" / "scratch"), "--out", str(tmp_path / "o")]) == 0
    assert any((tmp_path / "o").glob("*_overlay.png"))


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--method", "spade"], "method"),
        (["--method", "patchcore", "--option", "coreset_ratio"], "KEY=VALUE"),
        (["--method", "patchcore", "--option", "coreset_ratio=2"], "coreset_ratio"),
        (["--method", "lof", "--option", "radius=3"], "radius"),
        (["--option", "k=3"], "somad"),
    ],
)
def test_fit_bad_method_or_option(demo_root, tmp_path, capsys, extra, expected):
    out = tmp_path / "m.somad"
    rc = main(["fit", str(demo_root), "--out", str(out), *FAST_FIT, *extra])
    assert expected in _one_error_line(capsys, rc)
    assert not out.exists()


def test_info_on_a_checksummed_file_with_a_missing_field_is_one_line(cli_model, tmp_path, capsys):
    from somad.model_file import read_model_file, write_model_file

    tensors, meta = read_model_file(cli_model[0])
    del meta["config"]
    path = tmp_path / "no_config.somad"
    write_model_file(
        path, tensors, {k: v for k, v in meta.items() if k not in ("format", "format_version", "sha256")}
    )
    line = _one_error_line(capsys, main(["info", str(path)]))
    assert "no_config.somad" in line and "metadata" in line


def test_pickled_weights_file_is_refused_in_one_line(demo_root, tmp_path, capsys):
    import pickle

    bad = tmp_path / "weights.pt"
    bad.write_bytes(pickle.dumps({"conv.weight": object()}))
    fast = [a for a in FAST_FIT if a != "--random-init"]
    rc = main(["fit", str(demo_root), "--out", str(tmp_path / "m.somad"), *fast, "--weights", str(bad)])
    rc_line = _one_error_line(capsys, rc)
    assert "weights.pt" in rc_line


# -- a user's files are never written over without --overwrite ---------------------------------------------
def test_fit_never_writes_over_an_input_or_an_existing_model(demo_copy, cli_model, tmp_path, capsys):
    image = demo_copy / "train" / "good" / "000.png"
    before = image.read_bytes()
    line = _one_error_line(capsys, main(["fit", str(demo_copy), "--out", str(image), *FAST_FIT]))
    assert "000.png" in line and "input" in line and image.read_bytes() == before
    existing = tmp_path / "m.somad"
    existing.write_bytes(cli_model[0].read_bytes())
    line = _one_error_line(capsys, main(["fit", str(demo_copy), "--out", str(existing), *FAST_FIT]))
    assert "--overwrite" in line and existing.read_bytes() == cli_model[0].read_bytes()
    os.utime(existing, ns=(0, 0))
    assert main(["fit", str(demo_copy), "--out", str(existing), *FAST_FIT, "--overwrite"]) == 0
    assert existing.stat().st_mtime_ns > 0  # written anew (a same-seed fit may well give the same bytes)


def test_eval_never_writes_over_the_model_or_an_existing_report(demo_root, cli_model, tmp_path, capsys):
    model = tmp_path / "m.somad"
    model.write_bytes(cli_model[0].read_bytes())
    line = _one_error_line(capsys, main(["eval", str(model), str(demo_root), "--json", str(model)]))
    assert "input" in line and model.read_bytes() == cli_model[0].read_bytes()
    report = tmp_path / "r.json"
    report.write_text("mine")
    line = _one_error_line(capsys, main(["eval", str(model), str(demo_root), "--json", str(report)]))
    assert "--overwrite" in line and report.read_text() == "mine"
    assert main(["eval", str(model), str(demo_root), "--json", str(report), "--overwrite"]) == 0
    assert json.loads(report.read_text())["categories"]


def test_score_never_writes_into_its_inputs_or_a_used_folder(demo_copy, cli_model, tmp_path, capsys):
    images = demo_copy / "test" / "good"
    for out in (images, images / "results", demo_copy):
        line = _one_error_line(capsys, main(["score", str(cli_model[0]), str(images), "--out", str(out)]))
        assert "reads" in line
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    line = _one_error_line(capsys, main(["score", str(cli_model[0]), str(images), "--out", str(used)]))
    assert "--overwrite" in line and sorted(p.name for p in used.iterdir()) == ["keep.txt"]
    assert main(["score", str(cli_model[0]), str(images), "--out", str(used), "--overwrite"]) == 0
    assert (used / "scores.csv").is_file() and (used / "keep.txt").read_text() == "mine"
