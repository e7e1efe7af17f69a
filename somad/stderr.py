"""Messages that libraries write straight to file descriptor 2 (libpng, libjpeg, OpenCV, Ray), collected so they
become part of our one-line messages, or are dropped, instead of appearing beside them."""

from __future__ import annotations

import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_LOCK = threading.RLock()


@contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Collect what is written to file descriptor 2 during the block; the non-empty lines, stripped, are in the
    yielded list once the block ends. Blocks are serialised (file descriptor 2 is one per process)."""
    lines: list[str] = []
    with _LOCK, tempfile.TemporaryFile() as sink:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines += [
                line.strip() for line in sink.read().decode(errors="replace").splitlines() if line.strip()
            ]
