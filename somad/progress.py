"""Progress reporting and cancellation shared by every long-running core function.

A *progress callback* is any callable ``progress(stage, done, total)``; ``stage`` is a short human-readable name
("features", "som", "statistics", "scoring"), ``done``/``total`` count work units of that stage.
A *cancel check* is any callable returning ``True`` when the caller wants to stop (``threading.Event().is_set``
fits). Long loops call :meth:`Monitor.step` often enough that a cancel is honoured within a second.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from somad.errors import Cancelled

ProgressCallback = Callable[[str, int, int], None]
CancelCheck = Callable[[], bool]


@dataclass
class Monitor:
    """Couples an optional progress callback with an optional cancel check."""

    progress: ProgressCallback | None = None
    cancel: CancelCheck | None = None

    def check(self) -> None:
        """Raise :class:`Cancelled` if the caller asked to stop."""
        if self.cancel is not None and self.cancel():
            raise Cancelled("cancelled by the user")

    def step(self, stage: str, done: int, total: int) -> None:
        """Report progress of ``stage`` and honour a pending cancel."""
        self.check()
        if self.progress is not None:
            self.progress(stage, done, total)
