"""Background jobs: every heavy core call runs in a QObject worker moved to a QThread of its own.

A :class:`Job` wraps one call ``fn(progress=..., cancel=...)`` (core's progress callback and cancel check, see
``somad.progress``) and turns it into Qt signals delivered on the GUI thread: ``progress(stage, done, total)``
(throttled to about 20 per second), then exactly one of ``succeeded(result)``, ``failed(message)`` or
``cancelled()``, then ``finished()`` once the thread has stopped. :class:`JobRunner` keeps the running jobs so
the window can cancel them and wait for their threads when it closes.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from PySide6 import QtCore

import somad

log = logging.getLogger(__name__)

MAX_PROGRESS_RATE_HZ = 20.0

JobFunction = Callable[..., Any]


class ProgressThrottle:
    """Forward ``progress(stage, done, total)`` at most ``rate_hz`` times a second.

    A new stage and the last step of a stage (``done >= total``) always pass, so the view never misses where
    a stage starts or ends.
    """

    def __init__(
        self,
        emit: Callable[[str, int, int], None],
        rate_hz: float = MAX_PROGRESS_RATE_HZ,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._emit = emit
        self._interval = 1.0 / rate_hz
        self._clock = clock
        self._stage: str | None = None
        self._last = float("-inf")

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = self._clock()
        if stage != self._stage or done >= total or now - self._last >= self._interval:
            self._stage = stage
            self._last = now
            self._emit(str(stage), int(done), int(total))


def compute_threads() -> int:
    """Threads a worker's numeric library may use: all cores but one, so the GUI thread always has one."""
    return max(1, (os.cpu_count() or 2) - 1)


_threads_limited = False


def limit_compute_threads() -> None:
    """Keep intra-op thread pools off the core the GUI thread runs on (called in the worker before heavy work).

    The pipeline sizes torch's pool to every core unless ``OMP_NUM_THREADS`` is set; setting it here (when the
    user has not) makes the limit hold for every later call too.
    """
    global _threads_limited
    if _threads_limited:
        return
    _threads_limited = True
    n = compute_threads()
    if "OMP_NUM_THREADS" in os.environ:
        return
    os.environ["OMP_NUM_THREADS"] = str(n)
    try:
        import torch  # the pipeline's numeric library; only its global thread count is touched

        torch.set_num_threads(n)
    except Exception:  # pragma: no cover - torch missing or its pool already busy
        log.debug("could not limit torch threads", exc_info=True)


WORKER_NICENESS = 10


def lower_thread_priority(increment: int = WORKER_NICENESS) -> None:
    """Make the calling thread yield the CPU to the GUI thread when cores are busy.

    On Linux the nice value is a per-thread attribute (and threads a worker starts inherit it); elsewhere the
    QThread priority given at start does the same job.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        tid = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, current + increment))
    except (OSError, AttributeError):  # pragma: no cover - not permitted or not supported
        log.debug("could not lower the worker's priority", exc_info=True)


def error_message(exc: BaseException) -> str:
    """One line for the user: core's errors already name the file and the reason."""
    if isinstance(exc, somad.SomadError):
        return str(exc) or type(exc).__name__
    if isinstance(exc, MemoryError):
        return "out of memory: try fewer training images, a smaller image size or fewer dims"
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.filename}: {exc.strerror or exc}"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


class _Worker(QtCore.QObject):
    progressed = QtCore.Signal(str, int, int)
    succeeded = QtCore.Signal(object)
    failed = QtCore.Signal(str, str)
    cancelled = QtCore.Signal()
    done = QtCore.Signal()

    def __init__(self, fn: JobFunction, cancel_event: threading.Event):
        super().__init__()
        self._fn = fn
        self._cancel_event = cancel_event

    @QtCore.Slot()
    def run(self) -> None:
        throttle = ProgressThrottle(self.progressed.emit)
        try:
            lower_thread_priority()
            limit_compute_threads()
            result = self._fn(progress=throttle, cancel=self._cancel_event.is_set)
        except somad.Cancelled:
            self.cancelled.emit()
        except BaseException as exc:
            if self._cancel_event.is_set() and not isinstance(exc, somad.SomadError):
                self.cancelled.emit()
            else:
                if not isinstance(exc, somad.SomadError):
                    log.error("unexpected error in a background job", exc_info=True)
                self.failed.emit(error_message(exc), traceback.format_exc())
        else:
            if self._cancel_event.is_set():
                self.cancelled.emit()
            else:
                self.succeeded.emit(result)
        finally:
            # Hand the worker back to the GUI thread so it can be collected there once the thread stops.
            app = QtCore.QCoreApplication.instance()
            if app is not None:
                self.moveToThread(app.thread())
            self.done.emit()


class Job(QtCore.QObject):
    """One background call. Create it, connect its signals, then :meth:`start` it."""

    progress = QtCore.Signal(str, int, int)
    succeeded = QtCore.Signal(object)
    failed = QtCore.Signal(str)
    cancelled = QtCore.Signal()
    finished = QtCore.Signal()

    def __init__(
        self, kind: str, fn: JobFunction, description: str = "", parent: QtCore.QObject | None = None
    ):
        super().__init__(parent)
        self.kind = kind
        self.description = description or kind
        self.result: Any = None
        self.error: str | None = None
        self.details: str | None = None
        self.outcome: str | None = None  # "succeeded", "failed" or "cancelled"
        self.started_at: float | None = None
        self._cancel_event = threading.Event()
        self._thread = QtCore.QThread()
        self._thread.setObjectName(f"somad-{kind}")
        self._worker = _Worker(fn, self._cancel_event)
        self._worker.moveToThread(self._thread)
        self._thread.started.connect(self._worker.run)
        # Direct: the thread must stop even while the GUI thread is blocked waiting for it (window closing).
        self._worker.done.connect(self._thread.quit, QtCore.Qt.ConnectionType.DirectConnection)
        self._worker.progressed.connect(self._on_progress)
        self._worker.succeeded.connect(self._on_succeeded)
        self._worker.failed.connect(self._on_failed)
        self._worker.cancelled.connect(self._on_cancelled)
        self._thread.finished.connect(self._on_thread_finished)
        self._finished_emitted = False

    # -- control -----------------------------------------------------------------------------------------
    def start(self) -> Job:
        self.started_at = time.monotonic()
        self._thread.start(QtCore.QThread.Priority.LowPriority)
        return self

    def cancel(self) -> None:
        """Ask the call to stop; core honours it within about a second. ``cancelled`` follows."""
        self._cancel_event.set()

    @property
    def cancel_requested(self) -> bool:
        return self._cancel_event.is_set()

    def is_running(self) -> bool:
        return self._thread.isRunning()

    def wait(self, timeout_ms: int | None = None) -> bool:
        """Block until the thread has stopped; True when it did (within ``timeout_ms`` if given)."""
        if timeout_ms is None:
            return self._thread.wait()
        return self._thread.wait(QtCore.QDeadlineTimer(int(timeout_ms)))

    # -- slots (GUI thread) --------------------------------------------------------------------------------
    @QtCore.Slot(str, int, int)
    def _on_progress(self, stage: str, done: int, total: int) -> None:
        self.progress.emit(stage, done, total)

    @QtCore.Slot(object)
    def _on_succeeded(self, result: Any) -> None:
        self.result = result
        self.outcome = "succeeded"
        self.succeeded.emit(result)

    @QtCore.Slot(str, str)
    def _on_failed(self, message: str, details: str) -> None:
        self.error = message
        self.details = details
        self.outcome = "failed"
        log.debug("job %s failed: %s\n%s", self.kind, message, details)
        self.failed.emit(message)

    @QtCore.Slot()
    def _on_cancelled(self) -> None:
        self.outcome = "cancelled"
        self.cancelled.emit()

    @QtCore.Slot()
    def _on_thread_finished(self) -> None:
        if not self._finished_emitted:
            self._finished_emitted = True
            self.finished.emit()


class JobRunner(QtCore.QObject):
    """Starts jobs and keeps them until their thread has stopped."""

    jobStarted = QtCore.Signal(object)
    busyChanged = QtCore.Signal(bool)

    def __init__(self, parent: QtCore.QObject | None = None):
        super().__init__(parent)
        self._jobs: list[Job] = []
        self._retired: list[Job] = []
        self._closing = False

    def start(self, kind: str, fn: JobFunction, description: str = "") -> Job:
        """Create and start a job; connect to its signals right away (they are queued, none is missed)."""
        if self._closing:
            raise RuntimeError("the window is closing: no new background work")
        job = Job(kind, fn, description)
        self._jobs.append(job)
        job.finished.connect(self._on_job_finished)
        was_busy = len(self._jobs) > 1
        job.start()
        self.jobStarted.emit(job)
        if not was_busy:
            self.busyChanged.emit(True)
        return job

    def jobs(self, kind: str | None = None) -> list[Job]:
        return [j for j in self._jobs if kind is None or j.kind == kind]

    def is_busy(self, kind: str | None = None) -> bool:
        return bool(self.jobs(kind))

    def cancel(self, kind: str | None = None) -> None:
        for job in self.jobs(kind):
            job.cancel()

    def shutdown(self, timeout_ms: int | None = None) -> bool:
        """Cancel every job and wait for its thread; True when all stopped. No new job starts afterwards."""
        self._closing = True
        for job in list(self._jobs):
            job.cancel()
        ok = True
        for job in list(self._jobs):
            ok = job.wait(timeout_ms) and ok
        return ok

    @QtCore.Slot()
    def _on_job_finished(self) -> None:
        job = self.sender()
        if job in self._jobs:
            self._jobs.remove(job)
            # Keep a reference until the emission that called this slot has returned.
            self._retired.append(job)
            QtCore.QTimer.singleShot(0, self._retired.clear)
        if not self._jobs:
            self.busyChanged.emit(False)
