"""Background jobs: results, errors and cancellation arrive as signals on the GUI thread, throttled."""

from __future__ import annotations

import threading
import time

import pytest

import somad
from somad_gui.workers import JobRunner, ProgressThrottle, error_message


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_throttle_limits_rate_but_keeps_stage_changes_and_ends():
    clock = FakeClock()
    seen: list[tuple[str, int, int]] = []
    throttle = ProgressThrottle(lambda *a: seen.append(a), rate_hz=20, clock=clock)
    for i in range(1000):  # 1000 steps over one second
        clock.now = i / 1000
        throttle("features", i, 1000)
    throttle("features", 1000, 1000)
    clock.now = 1.0001
    throttle("som", 0, 5)
    assert len(seen) <= 23
    assert seen[0] == ("features", 0, 1000)
    assert ("features", 1000, 1000) in seen
    assert seen[-1] == ("som", 0, 5)


def test_job_runs_in_another_thread_and_delivers_result(qtbot):
    runner = JobRunner()
    gui_thread = threading.get_ident()
    seen_thread: list[int] = []

    def work(*, progress, cancel):
        seen_thread.append(threading.get_ident())
        progress("step", 1, 1)
        return 42

    job = runner.start("test", work)
    with qtbot.waitSignal(job.finished, timeout=10_000):
        pass
    assert job.outcome == "succeeded" and job.result == 42
    assert seen_thread and seen_thread[0] != gui_thread
    assert not runner.is_busy()


def test_job_failure_carries_core_message(qtbot):
    runner = JobRunner()

    def work(*, progress, cancel):
        raise somad.ImageReadError("/data/broken.png", "cannot decode image")

    job = runner.start("test", work)
    with qtbot.waitSignal(job.failed, timeout=10_000) as blocker:
        pass
    assert blocker.args == ["/data/broken.png: cannot decode image"]
    qtbot.waitUntil(lambda: not runner.is_busy())


def test_cancel_stops_the_call_and_shutdown_waits(qtbot):
    runner = JobRunner()
    started = threading.Event()

    def work(*, progress, cancel):
        started.set()
        while True:
            if cancel():
                raise somad.Cancelled("cancelled by the user")
            time.sleep(0.01)

    job = runner.start("test", work)
    assert started.wait(5)
    with qtbot.waitSignal(job.cancelled, timeout=5_000):
        job.cancel()
    assert runner.shutdown(5_000)
    assert not job.is_running()
    with pytest.raises(RuntimeError):
        runner.start("late", work)


def test_progress_signals_are_throttled_to_about_20_per_second(qtbot):
    runner = JobRunner()
    received: list[int] = []

    def work(*, progress, cancel):
        t0 = time.monotonic()
        i = 0
        while time.monotonic() - t0 < 0.5:
            progress("loop", i, 10**9)
            i += 1
        return i

    job = runner.start("test", work)
    job.progress.connect(lambda _s, done, _t: received.append(done))
    with qtbot.waitSignal(job.finished, timeout=10_000):
        pass
    assert job.result > 1000  # the callback was called far more often than signals were sent
    assert 3 <= len(received) <= 14


def test_error_message_is_one_line():
    assert error_message(somad.ModelFileError("/m.somad", "truncated")) == "/m.somad: truncated"
    assert error_message(ValueError("bad\nsecond line")) == "ValueError: bad"
    assert "out of memory" in error_message(MemoryError())
