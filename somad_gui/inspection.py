"""Inspecting new parts: images that arrive in the open folder of new images (a watched folder) are added to
the browser and scored in the worker, a batch at a time, with a running OK / NG tally. No Qt widgets here."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from typing import Any

from PySide6 import QtCore

from somad_gui.scoring import ScoringRun, score_entries
from somad_gui.session import Session
from somad_gui.store import ResultStore
from somad_gui.watch import FolderWatcher


class Inspection(QtCore.QObject):
    watchingChanged = QtCore.Signal(bool)
    tallyChanged = QtCore.Signal(dict)  # ResultStore.counts() of the open folder

    def __init__(self, session: Session, parent: QtCore.QObject | None = None):
        super().__init__(parent)
        self.session = session
        self.watcher = FolderWatcher(self)
        self.watcher.filesReady.connect(self.add)
        self._queue: list[int] = []
        session.datasetChanged.connect(self._dataset_changed)
        session.scoringFinished.connect(self._next)
        session.scoringFinished.connect(self._emit_tally)

    @property
    def watching(self) -> bool:
        return self.watcher.watching

    def watch(self, on: bool = True) -> bool:
        """Start (or stop) scoring the images that appear in the open folder of new parts; False when no such
        folder is open."""
        if not on:
            if self.watching:
                self.watcher.stop()
                self.session.info("Stopped watching the folder")
                self.watchingChanged.emit(False)
            return True
        s = self.session
        if not s.inspecting or s.model is None:
            s.error("Watching needs a folder of new images open with a model: File > Inspect new images…")
            return False
        self.watcher.start(s.dataset.root, [e.path for e in s.store.entries])
        s.info(f"Watching {s.dataset.root}: new images are scored as they arrive")
        self.watchingChanged.emit(True)
        return True

    def add(self, paths: list[Path]) -> None:
        """Append new images to the open folder's list and score them when the worker is free."""
        s = self.session
        if not paths or not s.inspecting:
            return
        added = s.store.add_entries(paths)
        s.entriesAdded.emit(len(added))
        self._queue += [e.index for e in added]
        self._next()

    def _next(self) -> None:
        s = self.session
        if not self._queue or s.model is None or s.jobs.is_busy("score") or s.jobs.is_busy("watch"):
            return
        indices, self._queue = self._queue, []
        entries = s.store.indices(indices)
        model, store = s.model, s.store
        job = s.jobs.start(
            "watch",
            partial(score_entries, model, entries, with_metrics=False),
            f"Scoring {len(entries)} new image(s)",
        )
        job.succeeded.connect(lambda run: self._scored(run, model, store))
        job.failed.connect(lambda msg: s.error(f"Scoring new images failed: {msg}"))
        job.finished.connect(self._next)

    def _scored(self, run: ScoringRun, model: Any, store: ResultStore) -> None:
        s = self.session
        if model is not s.model or store is not s.store:
            return  # a new model rescored everything, or another folder is open
        changed = store.add_results(run.results, run.errors)
        if math.isnan(s.threshold):
            s.set_threshold(s.default_threshold())
        for text in run.errors.values():
            s.warn(f"Unreadable image skipped: {text}")
        ng = sum(int(store.verdicts[i]) == 1 for i in run.results)
        s.info(f"Scored {len(run.results)} new image(s): {len(run.results) - ng} OK, {ng} NG")
        s.resultsChanged.emit()
        s.verdictsChanged.emit(changed)
        s.measure_regions()
        self._emit_tally()

    def _emit_tally(self) -> None:
        if self.session.inspecting:
            self.tallyChanged.emit(self.session.store.counts())

    def _dataset_changed(self) -> None:
        s = self.session
        self._queue = []
        if not self.watching:
            return
        if not s.inspecting or Path(s.dataset.root) != self.watcher.folder:
            self.watch(False)
        else:  # the same folder opened again: watch on from what it lists now
            self.watcher.start(s.dataset.root, [e.path for e in s.store.entries])
