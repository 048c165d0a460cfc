"""The restart ladder against a fake clock (plain floats), and the daily cycle's jitter."""

from __future__ import annotations

import random

import pytest

from dynod.core.policy import (
    BOOT_TIMEOUT,
    CLEAN_AFTER,
    CYCLE_AFTER,
    CYCLE_JITTER,
    LOCAL_CLEAN_AFTER,
    LOCAL_LADDER,
    PLATFORM_LADDER,
    STOP_TIMEOUT,
    RestartLadder,
    cycle_delay,
)
from dynod.errors import DynodError

MINUTE = 60.0


def _crash_loop(ladder: RestartLadder, crashes: int, run_for: float = 1.0) -> list[float]:
    """Delays for `crashes` crashes of a dyno that runs `run_for` seconds each time."""
    now, delays = 0.0, []
    for _ in range(crashes):
        ladder.started(now)
        now += run_for
        delay = ladder.crashed(now)
        delays.append(delay)
        now += delay
    return delays


def test_heroku_ladder() -> None:
    assert PLATFORM_LADDER == tuple(m * MINUTE for m in (0, 20, 40, 60, 180, 320))
    ladder = RestartLadder()
    assert _crash_loop(ladder, 9) == [0, 1200, 2400, 3600, 10800, 19200, 19200, 19200, 19200]
    assert ladder.crashes == 9


def test_local_ladder() -> None:
    ladder = RestartLadder(LOCAL_LADDER, clean_after=60.0)
    assert _crash_loop(ladder, 10) == [0, 1, 2, 4, 8, 16, 32, 60, 60, 60]


def test_reset() -> None:
    ladder = RestartLadder()
    _crash_loop(ladder, 3)
    ladder.reset()
    assert ladder.crashes == 0
    assert _crash_loop(ladder, 2) == [0, 1200]


def test_a_clean_run_resets_the_ladder() -> None:
    ladder = RestartLadder()
    _crash_loop(ladder, 4)
    ladder.started(100_000.0)
    assert ladder.crashed(100_000.0 + 600.0) == 0.0
    assert ladder.crashes == 1
    ladder.started(200_000.0)
    assert ladder.crashed(200_000.0 + 1.0) == 1200.0


def test_a_short_run_does_not_reset() -> None:
    ladder = RestartLadder()
    _crash_loop(ladder, 2)
    ladder.started(100_000.0)
    assert ladder.crashed(100_000.0 + 599.9) == 2400.0


def test_crash_without_start_is_not_clean() -> None:
    ladder = RestartLadder()
    assert [ladder.crashed(t) for t in (0.0, 10_000.0, 20_000.0)] == [0.0, 1200.0, 2400.0]


def test_steps_are_validated() -> None:
    assert RestartLadder([5, 10]).steps == (5.0, 10.0)
    for bad in ([], [1.0, -1.0], [float("nan")], [float("inf")], ["5"]):
        with pytest.raises(DynodError, match="restart ladder"):
            RestartLadder(bad)  # type: ignore[arg-type]
    with pytest.raises(DynodError, match="clean run"):
        RestartLadder(clean_after=-1.0)


def test_cycle_delay_bounds() -> None:
    rng = random.Random(4821)
    delays = [cycle_delay(rng=rng) for _ in range(1000)]
    assert all(86400.0 <= d <= 86400.0 + 216 * MINUTE for d in delays)
    assert max(delays) - min(delays) > 200 * MINUTE  # jitter actually spreads dynos out
    assert cycle_delay(100.0, 0.0, rng=rng) == 100.0
    assert cycle_delay(rng=random.Random(1)) == cycle_delay(rng=random.Random(1))


def test_the_supervisors_defaults_live_here() -> None:
    assert (BOOT_TIMEOUT, STOP_TIMEOUT, CLEAN_AFTER, LOCAL_CLEAN_AFTER) == (60.0, 30.0, 600.0, 60.0)
    assert (CYCLE_AFTER, CYCLE_JITTER) == (86400.0, 216 * MINUTE)
    assert RestartLadder().clean_after == CLEAN_AFTER
