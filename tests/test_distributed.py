"""``somad score --engine ray``: a local two-CPU Ray gives exactly the local engine's scores.csv."""

from __future__ import annotations

import pytest

from somad_cli.main import main
from tests.conftest import FAST_FIT

pytest.importorskip("ray", reason="Ray is installed by the test extra")


def test_ray_engine_writes_the_local_engines_scores_csv(demo_root, tmp_path, capfd):
    model = tmp_path / "m.somad"
    assert main(["fit", str(demo_root), "--out", str(model), *FAST_FIT]) == 0
    (tmp_path / "broken.png").write_bytes(b"not an image")
    inputs = [str(demo_root / "test"), str(tmp_path / "broken.png")]
    assert main(["score", str(model), *inputs, "--out", str(tmp_path / "local")]) == 0
    capfd.readouterr()
    assert (
        main(
            [
                "score",
                str(model),
                *inputs,
                "--out",
                str(tmp_path / "ray"),
                "--engine",
                "ray",
                "--workers",
                "2",
            ]
        )
        == 0
    )
    err = capfd.readouterr().err
    local = (tmp_path / "local" / "scores.csv").read_text()
    assert (tmp_path / "ray" / "scores.csv").read_text() == local
    assert "broken.png,,unreadable" in local
    assert [line for line in err.splitlines() if line.strip()] == [
        f"somad: warning: {tmp_path / 'broken.png'}: cannot decode image (corrupt, truncated or unsupported format)"
    ]  # Ray's own logging stays off the terminal
    local_files = sorted(p.name for p in (tmp_path / "local").iterdir())
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == local_files
    assert len(local_files) == 1 + 2 * len(list((demo_root / "test").rglob("*.png")))
    for name in local_files:  # the same pictures, byte for byte: the colours are the model's, not the run's
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name


def test_ray_engine_refuses_no_workers(demo_root, tmp_path, capsys):
    model = tmp_path / "m.somad"
    assert main(["fit", str(demo_root), "--out", str(model), *FAST_FIT]) == 0
    capsys.readouterr()
    rc = main(
        [
            "score",
            str(model),
            str(demo_root / "test"),
            "--out",
            str(tmp_path / "o"),
            "--engine",
            "ray",
            "--workers",
            "0",
        ]
    )
    assert rc == 2 and "--workers" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
