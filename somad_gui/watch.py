"""Watching a folder for new images: each new image file under it is reported once, when it has stopped
growing (its size and modification time unchanged between two looks), so a file still being copied is never
read half-written.

A ``QFileSystemWatcher`` on the folder wakes the watcher at once on local disks; a slow timer polls as well,
for sub-folders and network shares, whose changes the system may not report.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from PySide6 import QtCore

import somad

POLL_MS = 2000
SETTLE_MS = 400


class FolderWatcher(QtCore.QObject):
    filesReady = QtCore.Signal(list)  # list[Path], in name order

    def __init__(self, parent: QtCore.QObject | None = None):
        super().__init__(parent)
        self.folder: Path | None = None
        self._known: set[Path] = set()
        self._pending: dict[Path, tuple[int, int]] = {}
        self._system = QtCore.QFileSystemWatcher(self)
        self._system.directoryChanged.connect(lambda _p: self._soon.start())
        self._soon = QtCore.QTimer(self, singleShot=True, interval=SETTLE_MS)
        self._soon.timeout.connect(self.poll)
        self._timer = QtCore.QTimer(self, interval=POLL_MS)
        self._timer.timeout.connect(self.poll)

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
        if self.folder is not None and str(self.folder) in self._system.directories():
            self._system.removePath(str(self.folder))
        self.folder = None
        self._pending.clear()
        self._timer.stop()
        self._soon.stop()

    def poll(self) -> list[Path]:
        """Look once: report (and return) the new images that have settled since the last look."""
        if self.folder is None:
            return []
        ready: list[Path] = []
        for path in somad.list_images(self.folder, recursive=True):
            if path in self._known:
                continue
            try:
                info = path.stat()
            except OSError:  # gone again, or not readable yet
                self._pending.pop(path, None)
                continue
            stamp = (info.st_size, info.st_mtime_ns)
            if info.st_size > 0 and self._pending.get(path) == stamp:
                ready.append(path)
                self._known.add(path)
                del self._pending[path]
            else:
                self._pending[path] = stamp
        if self._pending:
            self._soon.start()  # look again shortly, so a settled file is not kept waiting for the slow poll
        if ready:
            self.filesReady.emit(ready)
        return ready
