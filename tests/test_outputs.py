"""The output policy: one writer per destination, result folders that appear whole or not at all."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from somad import DataError, check_output_file, check_output_folder, claimed, staged_folder


def _listing(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_claimed_output_cannot_be_claimed_again_until_released(tmp_path):
    out = tmp_path / "model.somad"
    with claimed(out), pytest.raises(DataError, match="another command is writing"), claimed(out):
        pass
    with claimed(out):  # released: free again
        assert (tmp_path / ".model.somad.lock").exists()
    assert list(tmp_path.iterdir()) == []  # the lock file is removed with the lock


def test_a_claim_held_by_another_process_stops_this_one(tmp_path):
    out = tmp_path / "model.somad"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from somad import claimed\n"
            f"with claimed({str(out)!r}):\n    print('held', flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DataError, match="another command"), claimed(out):
            pass
    finally:
        holder.kill()
        holder.wait()
    with claimed(out):  # a killed holder's lock is gone with its process
        pass


def test_claims_need_the_folder_unless_asked_to_create_it(tmp_path):
    with pytest.raises(DataError, match="output folder does not exist"), claimed(tmp_path / "no" / "x.json"):
        pass
    assert not (tmp_path / "no").exists()
    with claimed(tmp_path / "new" / "results", create_folders=True):
        assert (tmp_path / "new").is_dir()


def test_a_new_result_folder_appears_whole(tmp_path):
    dest = tmp_path / "results"
    with staged_folder(dest) as stage:
        (stage / "a.png").write_bytes(b"a")
        (stage / "scores.csv").write_text("file,score\n")
        assert not dest.exists()  # nothing under the destination's name until the end
    assert _listing(dest) == {"a.png": b"a", "scores.csv": b"file,score\n"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]


def test_a_failed_or_cancelled_run_leaves_the_destination_as_it_was(tmp_path):
    dest = tmp_path / "results"
    for error, seen in (
        (OSError(28, "No space left on device"), DataError),
        (KeyboardInterrupt(), KeyboardInterrupt),
    ):
        with pytest.raises(seen), staged_folder(dest) as stage:
            (stage / "half.png").write_bytes(b"half")
            raise error
        assert list(tmp_path.iterdir()) == []
    dest.mkdir()
    (dest / "old.png").write_bytes(b"old")
    with pytest.raises(DataError, match=r"results.*No space left"), staged_folder(dest) as stage:
        (stage / "old.png").write_bytes(b"new")
        raise OSError(28, "No space left on device")
    assert _listing(dest) == {"old.png": b"old"}


def test_into_an_existing_folder_files_are_replaced_and_others_kept(tmp_path):
    dest = tmp_path / "results"
    dest.mkdir()
    (dest / "a.png").write_bytes(b"old")
    (dest / "notes.txt").write_bytes(b"mine")
    with staged_folder(dest, last=["scores.csv"]) as stage:
        (stage / "a.png").write_bytes(b"new")
        (stage / "scores.csv").write_bytes(b"csv")
    assert _listing(dest) == {"a.png": b"new", "notes.txt": b"mine", "scores.csv": b"csv"}


def test_staging_left_by_a_killed_run_is_removed_by_the_next(tmp_path):
    stale = tmp_path / ".results.staging-abc"
    stale.mkdir()
    (stale / "half.png").write_bytes(b"half")
    with staged_folder(tmp_path / "results") as stage:
        (stage / "a.png").write_bytes(b"a")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]


def test_destinations_are_checked_before_any_work(tmp_path):
    image = tmp_path / "in" / "a.png"
    image.parent.mkdir()
    image.write_bytes(b"png")
    with pytest.raises(DataError, match="input of this command"):
        check_output_file(image, overwrite=True, inputs=[image])
    with pytest.raises(DataError, match="exists; pass --overwrite"):
        check_output_file(image, overwrite=False)
    with pytest.raises(DataError, match="is a folder"):
        check_output_file(tmp_path, overwrite=True)
    with pytest.raises(DataError, match="images this command reads"):
        check_output_folder(tmp_path / "in" / "out", overwrite=True, inputs=[tmp_path / "in"])
    with pytest.raises(DataError, match="not empty"):
        check_output_folder(tmp_path / "in", overwrite=False)
    assert check_output_folder(tmp_path / "new" / "deeper", overwrite=False) == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()
