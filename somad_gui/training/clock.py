"""Time left: of the current stage (from its rate since it began), and of a whole fit (from the typical share
of each stage in a fit's time, so the estimate covers the stages still to come)."""

from __future__ import annotations

import time

#: Typical shares of a fit's time per stage, measured on the bench categories at the defaults (SOMAD: features
#: 10 %, SOM 65 %, statistics 13 %, calibration 12 %); PaDiM's statistics and PatchCore's coreset take the
#: SOM's place, an image-level method's fit too.
STAGE_SHARES = {
    "backbone": 0.01,
    "features": 0.10,
    "som": 0.64,
    "coreset": 0.64,
    "fit": 0.64,
    "statistics": 0.13,
    "calibration": 0.12,
}
#: The stages of a fit, in order, per method kind.
FIT_PLANS = {
    "somad": ("backbone", "features", "som", "statistics", "calibration"),
    "padim": ("backbone", "features", "statistics", "calibration"),
    "patchcore": ("backbone", "features", "coreset", "calibration"),
}
IMAGE_LEVEL_PLAN = ("backbone", "features", "fit", "calibration")


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
    stages' shares plus the current stage's share times its fraction done."""

    def __init__(self, method: str, clock=time.monotonic):
        self._clock = clock
        self.plan = FIT_PLANS.get(method, IMAGE_LEVEL_PLAN)
        total = sum(STAGE_SHARES[s] for s in self.plan)
        self.shares = {s: STAGE_SHARES[s] / total for s in self.plan}
        self._start: float | None = None

    def fraction(self, stage: str, done: int, total: int) -> float:
        if stage not in self.shares:
            return 0.0
        finished = sum(self.shares[s] for s in self.plan[: self.plan.index(stage)])
        return finished + self.shares[stage] * (min(done, total) / total if total > 0 else 0.0)

    def update(self, stage: str, done: int, total: int) -> float | None:
        now = self._clock()
        if self._start is None:
            self._start = now
        f = self.fraction(stage, done, total)
        elapsed = now - self._start
        if f <= 0.02 or elapsed < 1.0:
            return None
        return elapsed * (1.0 - f) / f
