"""A crashed dyno as `ps` shows it (README, "Dynos, router, logs"): its status and the
wall-clock time of its next start on the ladder, on a mock clock."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio
import trio.testing

from dynod.core.lifecycle import DynoState
from dynod.proc.manager import Manager
from dynod.proc.seams import DynoPlan, InPlace, ManagerSettings
from tests.dynod.proc.test_manager_clock import MINUTE, FakeProcesses, reaches
from tests.helpers import Collector


@pytest.mark.trio
async def test_a_crashed_dyno_knows_when_its_next_start_is_due(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """What `ps` shows of a crash (README, "Dynos, router, logs"): since when, the status,
    and the wall-clock time the ladder starts it again; gone once it starts."""
    fake = FakeProcesses()
    manager = Manager(
        Collector(), InPlace(tmp_path), ManagerSettings(cycle_after=None), launcher=fake
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run, [DynoPlan("worker.1", "crash", {})])
        (await fake.launched("worker.1", 1)).exit(3)
        (await fake.launched("worker.1", 2)).exit(3)
        await reaches(manager, "worker.1", DynoState.CRASHED)
        slot = manager.slots["worker.1"]
        assert slot.last_status == 3
        assert slot.next_start is not None
        assert abs(slot.next_start - (time.time() + 20 * MINUTE)) < 5
        await fake.launched("worker.1", 3)
        assert slot.next_start is None
        manager.stop_all()
