"""Atomic writes: a file appears whole or not at all.

Each write goes to a hidden temporary file in the target's folder, is flushed to disk, gets the permissions any
other new file would (0666 less the umask, not ``mkstemp``'s 0600) and is then renamed onto the target, so a
crash, a full disk or a cancel never leaves a truncated file under the target's name.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from somad.errors import DataError


def umask() -> int:
    """The process's file-creation mask."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomically(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(temporary_path)``, flush the file to disk, then rename it onto ``path``; returns ``path``."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise DataError(path, f"cannot write ({err.strerror or err})") from None
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    except OSError as err:  # a full disk, a vanished folder: name the destination, not the temporary file
        Path(tmp).unlink(missing_ok=True)
        raise DataError(path, f"cannot write ({err.strerror or err}); nothing was written") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_bytes_atomically(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return write_atomically(path, lambda tmp: tmp.write_bytes(data))


def write_text_atomically(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically."""
    return write_atomically(path, lambda tmp: tmp.write_text(text, encoding=encoding))
