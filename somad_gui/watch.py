"""Watching a folder for new images: each new image file under it is reported once, when it has stopped
growing (its size and modification time unchanged between two looks), so a file still being copied is never
read half-written.

A ``QFileSystemWatcher`` on the folder wakes the watcher at once on local disks; a slow timer looks as well,
for sub-folders and network shares, whose changes the system may not report. The folder is listed on a
background thread, so a large or slow folder never holds up the window; :meth:`FolderWatcher.poll` looks at
once, on the caller's thread.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PySide6 import QtCore

import somad

POLL_MS = 2000
SETTLE_MS = 400

Stamps = dict[Path, tuple[int, int]]


def scan(folder: Path, known: set[Path]) -> Stamps:
    """(size, modification time) of the images under ``folder`` that are not in ``known``."""
    found: Stamps = {}
    for path in somad.list_images(folder, recursive=True):
        if path in known:
            continue
        try:
            info = path.stat()
        except OSError:  # gone again, or not readable yet
            continue
        found[path] = (info.st_size, info.st_mtime_ns)
    return found


class FolderWatcher(QtCore.QObject):
    filesReady = QtCore.Signal(list)  # list[Path], in name order
    _scanned = QtCore.Signal(object, object)  # folder, Stamps (from the listing thread)

    def __init__(self, parent: QtCore.QObject | None = None):
        super().__init__(parent)
        self.folder: Path | None = None
        self._known: set[Path] = set()
        self._pending: Stamps = {}
        self._scanning = False
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="somad-watch")
        self._scanned.connect(self._settle)
        self._system = QtCore.QFileSystemWatcher(self)
        self._system.directoryChanged.connect(lambda _p: self._soon.start())
        self._soon = QtCore.QTimer(self, singleShot=True, interval=SETTLE_MS)
        self._soon.timeout.connect(self._look)
        self._timer = QtCore.QTimer(self, interval=POLL_MS)
        self._timer.timeout.connect(self._look)

    @property
    def watching(self) -> bool:
        return self.folder is not None

    def start(self, folder: str | Path, known: Iterable[Path] = ()) -> None:
        """Watch ``folder``; the images in ``known`` (already listed) are not reported."""
        self.stop()
        self.folder = Path(folder)
        self._known = {Path(p) for p in known}
        self._system.addPath(str(self.folder))
        self._timer.start()
        self._soon.start()

    def stop(self) -> None:
        """Stop watching; a listing under way is not waited for (a dead share must not hold the window)."""
        if self.folder is not None and str(self.folder) in self._system.directories():
            self._system.removePath(str(self.folder))
        if self.folder is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="somad-watch")
            self._scanning = False
        self.folder = None
        self._pending.clear()
        self._timer.stop()
        self._soon.stop()

    def poll(self) -> list[Path]:
        """Look once, now: report (and return) the new images that have settled since the last look."""
        if self.folder is None:
            return []
        return self._settle(self.folder, scan(self.folder, set(self._known)))

    def _look(self) -> None:
        """Look on the listing thread; the answer comes back to this thread through ``_scanned``."""
        if self.folder is None or self._scanning:
            return
        self._scanning = True
        folder, known = self.folder, set(self._known)

        def listing() -> None:
            try:
                found = scan(folder, known)
            except Exception:  # the share dropped, a sub-folder went: nothing new this time, look again later
                found = {}
            with contextlib.suppress(RuntimeError):  # the watcher is gone (the window closed meanwhile)
                self._scanned.emit(folder, found)

        self._pool.submit(listing)

    def _settle(self, folder: Path, stamps: Stamps) -> list[Path]:
        self._scanning = False
        if folder != self.folder:
            return []  # stopped, or another folder, meanwhile
        ready = [p for p, stamp in stamps.items() if p not in self._known and self._pending.get(p) == stamp]
        ready = [p for p in ready if stamps[p][0] > 0]
        self._known.update(ready)
        self._pending = {p: s for p, s in stamps.items() if p not in self._known}
        if self._pending:
            self._soon.start()  # look again shortly, so a settled file is not kept waiting for the slow poll
        if ready:
            ready.sort()
            self.filesReady.emit(ready)
        return ready
