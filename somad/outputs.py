"""Where results go: one policy for every file and folder the project writes.

- A destination is checked before the work starts (:func:`check_output_file`, :func:`check_output_folder`): its
  folder exists and is writable, it is not an input of the same command, and it is not replaced unless the user
  asked (``overwrite``). Errors name the destination, never a temporary file.
- One writer at a time (:func:`claimed`): an exclusive lock beside the destination, held for the whole command,
  so a second command writing the same output stops at once instead of both claiming to have written it.
- Single files are written atomically (:mod:`somad.atomic`); a folder of results is written into a hidden staging
  folder beside it (:func:`staged_folder`) and moved into place only when complete, so a cancel, an error or a
  full disk leaves nothing. A killed run leaves only hidden files beside the destination (a temporary file, a
  staging folder, the lock's file), which the next command writing it removes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from somad.atomic import umask
from somad.errors import DataError

try:  # POSIX advisory locks; elsewhere an exclusively created lock file stands in
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

STAGING = ".staging-"


def _same(a: str | Path, b: Path) -> bool:
    return Path(a).expanduser().resolve() == b


def check_output_file(path: str | Path, *, overwrite: bool, inputs: Iterable[str | Path] = ()) -> Path:
    """The destination of one output file, checked before any work starts: its folder exists and is writable,
    it is none of the command's ``inputs``, and it does not exist unless ``overwrite``."""
    out = Path(path).expanduser()
    if out.is_dir():
        raise DataError(out, "is a folder; name a file")
    if not out.parent.is_dir():
        raise DataError(out, "output folder does not exist")
    if not os.access(out.parent, os.W_OK):
        raise DataError(out, "output folder is not writable")
    target = out.resolve()
    if any(_same(p, target) for p in inputs):
        raise DataError(out, "is an input of this command; choose another output")
    if out.exists() and not overwrite:
        raise DataError(out, "exists; pass --overwrite to replace it")
    return out


def check_output_folder(path: str | Path, *, overwrite: bool, inputs: Iterable[str | Path] = ()) -> Path:
    """The destination folder of many output files, checked before any work starts: not a folder the inputs
    lie in (the next run would read its own outputs), writable, and empty or new unless ``overwrite``."""
    out = Path(path).expanduser()
    if out.exists() and not out.is_dir():
        raise DataError(out, "is a file; name a folder")
    target = out.resolve()
    for p in inputs:
        p = Path(p).expanduser().resolve()
        inside_input = p.is_dir() and p in target.parents
        if target == p or target in p.parents or inside_input:
            raise DataError(out, "holds or lies in images this command reads; choose another output folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise DataError(out, "is not empty; pass --overwrite to write into it")
    existing = next((p for p in (out, *out.parents) if p.exists()), None)
    if existing is not None and not os.access(existing, os.W_OK):
        raise DataError(out, f"cannot be written ({existing} is not writable)")
    return out


@contextlib.contextmanager
def claimed(path: str | Path | None, *, create_folders: bool = False) -> Iterator[Path | None]:
    """Hold an exclusive lock on the output ``path`` (file or folder) for the ``with`` block; a
    :class:`DataError` names it when another command holds it. ``None`` claims nothing. The lock is a hidden
    file beside ``path``, removed on release; the folders above ``path`` must exist unless ``create_folders``.
    Check the destination again inside the block: another command may have finished it meanwhile."""
    if path is None:
        yield None
        return
    out = Path(path).expanduser()
    if create_folders:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise DataError(out, f"cannot create its folder ({err.strerror or err})") from None
    elif not out.parent.is_dir():
        raise DataError(out, "output folder does not exist")
    lock = out.parent / f".{out.name}.lock"
    busy = DataError(out, "another command is writing it now; wait for it to finish or choose another output")
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | (0 if fcntl else os.O_EXCL), 0o666)
        except FileExistsError:
            raise busy from None
        except OSError as err:
            raise DataError(out, f"cannot be written ({err.strerror or err})") from None
        if fcntl is None:
            break
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise busy from None
        try:  # the holder before us may have removed the file after we opened it: lock the current one
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    _remove_leftovers(out)
    try:
        yield out
    finally:
        with contextlib.suppress(OSError):
            lock.unlink()
        os.close(fd)


def _remove_leftovers(out: Path) -> None:
    """Remove what a killed command writing ``out`` left beside it: temporary files of atomic writes and
    staging folders. Only called with the lock held, so no live command owns them."""
    for stale in out.parent.glob(f".{out.name}.*.tmp"):
        with contextlib.suppress(OSError):
            stale.unlink()
    for stale in out.parent.glob(f".{out.name}{STAGING}*"):
        shutil.rmtree(stale, ignore_errors=True)


@contextlib.contextmanager
def staged_folder(dest: str | Path, last: Sequence[str] = ()) -> Iterator[Path]:
    """A hidden, empty folder beside ``dest`` to write a folder of results into.

    When the block ends normally, a new ``dest`` is the staging folder renamed; into an existing ``dest`` each
    file is moved (renamed, so each is whole), the names in ``last`` after the others (e.g. the table that lists
    the images). When it ends with an error or a cancel, the staging folder is removed and ``dest`` is as it
    was. Staging folders left by killed runs are removed first; hold :func:`claimed` on ``dest`` around it.
    """
    dest = Path(dest).expanduser()
    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(dest)
    stage = Path(tempfile.mkdtemp(prefix=f".{dest.name}{STAGING}", dir=dest.parent))
    try:
        yield stage
        try:
            _flush(stage)
            if not dest.exists():
                os.chmod(stage, 0o777 & ~umask())
                os.replace(stage, dest)
                return
            names = sorted(p.name for p in stage.iterdir())
            for name in [n for n in names if n not in last] + [n for n in last if n in names]:
                os.replace(stage / name, dest / name)
        except OSError as err:
            raise DataError(dest, f"cannot write the results ({err.strerror or err})") from None
    except OSError as err:  # raised while writing into the staging folder
        raise DataError(
            dest, f"cannot write the results ({err.strerror or err}); nothing was written"
        ) from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _flush(folder: Path) -> None:
    """Flush every file in ``folder`` to disk, so a rename never lands before its data."""
    for file in folder.iterdir():
        if file.is_file():
            with open(file, "rb+") as handle:
                os.fsync(handle.fileno())
