"""The dyno manager on trio's MockClock with Heroku's real numbers: the 0/20/40/60/180/320
minute ladder, R10 at 60 s and the daily cycle at 24 h plus jitter, in milliseconds of wall
time. The processes are fakes whose exits and ports the test controls (a real child and a
mock clock do not mix: the clock would jump while the child runs)."""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing

from dynod.core.lifecycle import DynoState
from dynod.core.logline import HEROKU, LogSink
from dynod.core.policy import cycle_delay
from dynod.errors import DynodError
from dynod.proc.dyno import DynoProcess, DynoSpec
from dynod.proc.manager import Manager
from dynod.proc.ports import Listening
from dynod.proc.seams import DynoPlan, InPlace, ManagerSettings
from tests.helpers import Collector

MINUTE = 60.0
HOUR = 60 * MINUTE
DAY = 24 * HOUR
NO_CYCLE = ManagerSettings(cycle_after=None)


@attrs.define
class FakeProcess:
    name: str
    started_at: float  # trio's clock
    status: int | None = None
    exited: trio.Event = attrs.field(factory=trio.Event)

    def exit(self, status: int) -> None:
        self.status = status
        self.exited.set()


class FakeProcesses:
    """A Launcher whose processes run until the test makes them exit, and whose ports accept
    once the test says they are bound. Stopping one says what the real stop sequence says."""

    def __init__(self) -> None:
        self.running: dict[str, FakeProcess] = {}
        self.launches: list[FakeProcess] = []
        self.bound: set[int] = set()
        self.hurried: list[str] = []  # dynos stopped without grace (R15)
        self.changed = trio.Event()

    async def run(
        self,
        spec: DynoSpec,
        sink: LogSink,
        hurry: trio.Event,
        task_status: trio.TaskStatus[DynoProcess],
    ) -> int:
        process = FakeProcess(spec.name, trio.current_time())
        self.running[spec.name] = process
        self.launches.append(process)
        self._notify()
        task_status.started(DynoProcess(spec.name, 0, time.time()))
        try:
            await process.exited.wait()
        except trio.Cancelled:
            if hurry.is_set():
                self.hurried.append(spec.name)
            sink.publish(HEROKU, spec.name, ["Stopping all processes with SIGTERM"], 0.0)
            sink.publish(HEROKU, spec.name, ["Process exited with status 143"], 0.0)
            raise
        finally:
            del self.running[spec.name]
            self._notify()
        assert process.status is not None
        sink.publish(HEROKU, spec.name, [f"Process exited with status {process.status}"], 0.0)
        return process.status

    async def listens(self, port: int, process: DynoProcess) -> Listening:
        return Listening.OWN if port in self.bound else Listening.NOTHING

    def starts(self, name: str) -> list[float]:
        return [p.started_at for p in self.launches if p.name == name]

    async def until(self, predicate: Callable[[], bool]) -> None:
        with trio.fail_after(30 * DAY):  # of mock time
            while not predicate():
                await self.changed.wait()

    async def launched(self, name: str, count: int) -> FakeProcess:
        await self.until(lambda: len(self.starts(name)) >= count and name in self.running)
        return self.running[name]

    def _notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()


@asynccontextmanager
async def supervising(
    tmp_path: Path, plans: list[DynoPlan], settings: ManagerSettings, seed: int = 1
) -> AsyncIterator[tuple[Manager, FakeProcesses, Collector]]:
    fake, sink = FakeProcesses(), Collector()
    manager = Manager(sink, InPlace(tmp_path), settings, rng=random.Random(seed), launcher=fake)
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run, plans)
        yield manager, fake, sink
        manager.stop_all()


async def reaches(manager: Manager, name: str, state: DynoState) -> None:
    with trio.fail_after(30 * DAY):  # of mock time
        while (slot := manager.slots.get(name) or manager.one_offs.get(name)) is None or (
            slot.state is not state
        ):
            await manager.changed.wait()


def gaps(times: list[float]) -> list[float]:
    return [round((b - a) / MINUTE, 6) for a, b in zip(times, times[1:], strict=False)]


@pytest.mark.trio
async def test_crashes_climb_herokus_ladder(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with supervising(tmp_path, [DynoPlan("worker.1", "crash", {})], NO_CYCLE) as (
        manager,
        fake,
        sink,
    ):
        for n in range(1, 9):
            (await fake.launched("worker.1", n)).exit(1)
        await fake.launched("worker.1", 9)
        assert manager.slots["worker.1"].last_status == 1
    assert gaps(fake.starts("worker.1")) == [0, 20, 40, 60, 180, 320, 320, 320]
    assert sink.texts("worker.1", HEROKU)[:6] == [
        "Starting process with command `crash`",
        "State changed from starting to up",
        "Process exited with status 1",
        "State changed from up to crashed",
        "State changed from crashed to starting",
        "Starting process with command `crash`",
    ]


@pytest.mark.trio
async def test_a_clean_run_and_a_restart_reset_the_ladder(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with supervising(tmp_path, [DynoPlan("worker.1", "crash", {})], NO_CYCLE) as (
        manager,
        fake,
        _,
    ):
        for n in (1, 2, 3):  # waits 0, 20, 40 minutes
            (await fake.launched("worker.1", n)).exit(1)
        process = await fake.launched("worker.1", 4)
        await trio.sleep(10 * MINUTE)  # a clean run
        process.exit(1)
        (await fake.launched("worker.1", 5)).exit(1)  # at once: the ladder was reset
        await reaches(manager, "worker.1", DynoState.CRASHED)
        await trio.sleep(5 * MINUTE)  # 20 minutes to wait; a restart starts it now
        manager.restart_dyno("worker.1")
        (await fake.launched("worker.1", 6)).exit(1)
        await fake.launched("worker.1", 7)
    # 10 minutes clean then at once; a crash waiting 20 minutes restarted after 5, then at once
    assert gaps(fake.starts("worker.1")) == [0, 20, 40, 10, 5, 0]


@pytest.mark.trio
async def test_r10_after_60_seconds_then_the_ladder(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    plan = DynoPlan("web.1", "serve", {}, port=5000)
    async with supervising(tmp_path, [plan], NO_CYCLE) as (manager, fake, sink):
        first = await fake.launched("web.1", 1)
        await fake.launched("web.1", 2)
        r10 = sink.texts("web.1", HEROKU).index(
            "Error R10 (Boot timeout) -> Web process failed to bind to $PORT within 60 "
            "seconds of launch"
        )
        assert sink.texts("web.1", HEROKU)[r10 : r10 + 5] == [
            sink.texts("web.1", HEROKU)[r10],
            "Stopping all processes with SIGTERM",
            "Process exited with status 143",
            "State changed from starting to crashed",
            "State changed from crashed to starting",
        ]
        assert fake.starts("web.1")[1] - first.started_at == 60.0  # R10, then a wait of 0
        await trio.sleep(59.0)
        fake.bound.add(5000)  # this time it binds just in time
        await reaches(manager, "web.1", DynoState.UP)
        assert trio.current_time() - fake.starts("web.1")[1] < 60.0
        await trio.sleep(HOUR)
        assert len(fake.launches) == 2


@pytest.mark.trio
async def test_daily_cycling_after_24_hours_and_jitter(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    settings = ManagerSettings()  # Heroku's numbers
    async with supervising(tmp_path, [DynoPlan("worker.1", "work", {})], settings, seed=5) as (
        _,
        fake,
        sink,
    ):
        await fake.launched("worker.1", 3)
    rng = random.Random(5)
    expected = [cycle_delay(rng=rng), cycle_delay(rng=rng)]
    starts = fake.starts("worker.1")
    assert [b - a for a, b in zip(starts, starts[1:], strict=False)] == pytest.approx(expected)
    assert all(DAY <= delay <= DAY + 216 * MINUTE for delay in expected)
    heroku = sink.texts("worker.1", HEROKU)
    cycle = heroku.index("Cycling")
    assert heroku[cycle : cycle + 5] == [
        "Cycling",
        "State changed from up to starting",
        "Stopping all processes with SIGTERM",
        "Process exited with status 143",
        "Starting process with command `work`",
    ]
    assert "State changed from up to crashed" not in heroku


@pytest.mark.trio
async def test_a_stop_while_waiting_on_the_ladder(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with supervising(tmp_path, [DynoPlan("worker.1", "crash", {})], NO_CYCLE) as (
        manager,
        fake,
        sink,
    ):
        (await fake.launched("worker.1", 1)).exit(1)
        (await fake.launched("worker.1", 2)).exit(1)
        await reaches(manager, "worker.1", DynoState.CRASHED)
        manager.stop_dyno("worker.1")
        manager.stop_dyno("worker.1")  # the named race: said once
        with trio.fail_after(DAY):
            while manager.slots:
                await manager.changed.wait()
        await trio.sleep(DAY)
    assert len(fake.launches) == 2
    assert sink.texts("worker.1", HEROKU)[-1] == "State changed from crashed to down"


@pytest.mark.trio
async def test_one_offs_go_through_the_table_and_are_listed_while_they_run(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with supervising(tmp_path, [], NO_CYCLE) as (manager, fake, sink):
        plan = DynoPlan("run.1234", "bash", {}, port=5001)
        slot = manager.add_one_off(plan)
        assert (manager.one_offs, slot.state) == ({"run.1234": slot}, DynoState.STARTING)
        statuses: list[int] = []

        async def run() -> None:
            statuses.append(await manager.run_one_off(plan))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)
            process = await fake.launched("run.1234", 1)
            await reaches(manager, "run.1234", DynoState.UP)  # its port is never waited for
            assert trio.current_time() == process.started_at
            manager.restart_dyno("run.1234")  # not a formation dyno: nothing happens
            await trio.sleep(DAY)  # and it never cycles
            process.exit(0)
        assert (statuses, slot.state, manager.one_offs) == ([0], DynoState.COMPLETE, {})
    assert sink.texts("run.1234", HEROKU) == [
        "Starting process with command `bash`",
        "State changed from starting to up",
        "Process exited with status 0",
        "State changed from up to complete",
    ]


class RefusingFirst(FakeProcesses):
    """Refuses the first start as a dyno whose mounts cannot be made is refused."""

    async def run(
        self,
        spec: DynoSpec,
        sink: LogSink,
        hurry: trio.Event,
        task_status: trio.TaskStatus[DynoProcess],
    ) -> int:
        if not self.launches:
            self.launches.append(FakeProcess("refused", trio.current_time()))
            raise DynodError("could not give the process a private /tmp")
        return await super().run(spec, sink, hurry, task_status)


@pytest.mark.trio
async def test_a_refused_start_is_a_crash_not_the_managers_end(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    fake, sink = RefusingFirst(), Collector()
    manager = Manager(sink, InPlace(tmp_path), NO_CYCLE, launcher=fake)
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run, [DynoPlan("worker.1", "run", {})])
        await fake.launched("worker.1", 1)
        assert manager.slots["worker.1"].last_status == 1
        assert "could not give the process a private /tmp" in sink.texts("worker.1", HEROKU)
        manager.stop_all()
