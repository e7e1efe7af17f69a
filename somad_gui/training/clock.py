"""Time left: of the current stage (from its rate since it began), and of a whole fit (from the typical share
of each stage in a fit's time, so the estimate covers the stages still to come)."""

from __future__ import annotations

import time

#: The stages of a fit, in order, per method kind; the last takes the held-out calibration images in
#: (``Detector.absorb``: SOMAD's statistics over all images, other methods fit again).
FIT_PLANS = {
    "somad": ("backbone", "features", "som", "statistics", "calibration", "statistics"),
    "padim": ("backbone", "features", "statistics", "calibration", "statistics"),
    "patchcore": ("backbone", "features", "coreset", "calibration", "coreset"),
}
IMAGE_LEVEL_PLAN = ("backbone", "features", "fit", "calibration", "fit")
#: Typical shares of each plan's stages in a fit's time. SOMAD's are measured on bottle at the defaults (features
#: 13 %, SOM 56 %, statistics 10 %, calibration 3 %, statistics over all images 19 %); the others are rougher.
PLAN_SHARES = {
    "somad": (0.01, 0.12, 0.56, 0.09, 0.03, 0.19),
    "padim": (0.01, 0.30, 0.30, 0.09, 0.30),
    "patchcore": (0.01, 0.10, 0.40, 0.09, 0.40),
}
IMAGE_LEVEL_SHARES = (0.01, 0.40, 0.25, 0.09, 0.25)


class StageClock:
    """Time left in the current stage, from the rate since the stage began."""

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self.stage: str | None = None
        self._start = 0.0
        self._done0 = 0

    def update(self, stage: str, done: int, total: int) -> float | None:
        now = self._clock()
        if stage != self.stage:
            self.stage, self._start, self._done0 = stage, now, done
            return None
        progressed = done - self._done0
        elapsed = now - self._start
        if progressed <= 0 or elapsed < 0.5 or total <= 0:
            return None
        return elapsed / progressed * max(total - done, 0)


class FitClock:
    """Time left in a whole fit of ``method``: ``elapsed (1 - f) / f`` with ``f`` the share done, the finished
    stages' shares plus the current stage's share times its fraction done. A stage name that comes back (the
    statistics over all images after the calibration) counts as the plan's next stage of that name."""

    def __init__(self, method: str, clock=time.monotonic):
        self._clock = clock
        self.plan = FIT_PLANS.get(method, IMAGE_LEVEL_PLAN)
        shares = PLAN_SHARES.get(method, IMAGE_LEVEL_SHARES)
        total = sum(shares)
        self.shares = [s / total for s in shares]
        self._position = 0
        self._start: float | None = None

    def fraction(self, stage: str, done: int, total: int) -> float:
        """The share of the fit done when ``stage`` (at or after the current one in the plan) is at ``done``."""
        ahead = [i for i in range(self._position, len(self.plan)) if self.plan[i] == stage]
        if not ahead:
            return sum(self.shares[: self._position])
        self._position = ahead[0]
        finished = sum(self.shares[: self._position])
        return finished + self.shares[self._position] * (min(done, total) / total if total > 0 else 0.0)

    def update(self, stage: str, done: int, total: int) -> float | None:
        now = self._clock()
        if self._start is None:
            self._start = now
        f = self.fraction(stage, done, total)
        elapsed = now - self._start
        if f <= 0.02 or elapsed < 1.0:
            return None
        return elapsed * (1.0 - f) / f
