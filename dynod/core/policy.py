"""When to start a dyno again: the crash restart ladder, the daily cycle's jitter, and the one
copy of the dyno supervisor's default numbers (boot, stop and clean-run times, line length).

Pure functions of `now` (plain seconds from any clock) and a random source, so the dyno manager
can be driven by trio's clock and tests by plain floats.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from attrs import define, field

from dynod.errors import DynodError

# Heroku: at once, then cool-offs of 20, 40, 60, 180 and 320 minutes, then every 320 minutes.
PLATFORM_LADDER = (0.0, 1200.0, 2400.0, 3600.0, 10800.0, 19200.0)
# `dynod start`: a developer wants the app back in seconds.
LOCAL_LADDER = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0)
CYCLE_AFTER = 86400.0  # 24 h
CYCLE_JITTER = 12960.0  # up to 216 minutes more, per dyno
BOOT_TIMEOUT = 60.0  # R10: a web dyno must bind its $PORT within a minute of launch
STOP_TIMEOUT = 30.0  # SIGTERM's grace before SIGKILL
CLEAN_AFTER = 600.0  # a run this long forgets the crashes before it
LOCAL_CLEAN_AFTER = 60.0  # `dynod start`'s clean run
MEMORY_SAMPLE = 20.0  # how often each dyno's memory is read
MEMORY_QUOTA_MB = 512.0  # standard-1X: R14 above it, R15 (killed) above twice it
IDLE_AFTER = 1800.0  # an eco app sleeps after 30 minutes without a request
PIDS_MAX = 256  # processes and threads in a dyno's cgroup: Heroku's standard-1X limit


def _steps(steps: Sequence[float]) -> tuple[float, ...]:
    if not steps:
        raise DynodError("the restart ladder is empty: give at least one delay in seconds")
    for step in steps:
        if not (isinstance(step, (int, float)) and math.isfinite(step) and step >= 0):
            raise DynodError(
                f"restart ladder step {step!r} is not a delay: use numbers of seconds, 0 or more"
            )
    return tuple(float(step) for step in steps)


def _clean_after(value: float) -> float:
    if not (isinstance(value, (int, float)) and value >= 0):
        raise DynodError(f"clean run length {value!r} is not a duration: use seconds, 0 or more")
    return float(value)


@define
class RestartLadder:
    """One dyno's crash history since the last reset, and the delay before its next start."""

    steps: tuple[float, ...] = field(default=PLATFORM_LADDER, converter=_steps)
    clean_after: float = field(default=CLEAN_AFTER, converter=_clean_after)
    _crashes: int = field(default=0, init=False)
    _started_at: float | None = field(default=None, init=False)

    @property
    def crashes(self) -> int:
        return self._crashes

    def started(self, now: float) -> None:
        self._started_at = now

    def crashed(self, now: float) -> float:
        """Record a crash at `now`; returns the seconds to wait before starting again."""
        if self._started_at is not None and now - self._started_at >= self.clean_after:
            self.reset()  # a clean run: this crash is a first one again
        self._started_at = None
        delay = self.steps[min(self._crashes, len(self.steps) - 1)]
        self._crashes += 1
        return delay

    def reset(self) -> None:
        """Forget past crashes: a new release, a restart, or scaling to 0."""
        self._crashes = 0


def cycle_delay(
    cycle_after: float = CYCLE_AFTER, jitter: float = CYCLE_JITTER, *, rng: random.Random
) -> float:
    """Seconds until a dyno's daily cycle: `cycle_after` plus its own random 0..`jitter`."""
    return cycle_after + rng.uniform(0.0, jitter)
