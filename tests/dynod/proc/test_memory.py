"""Memory (docs/platform.md, "Memory"): each dyno's tree sampled every 20 s, R14 above the
quota, R15 above twice it with SIGKILL at once and a restart on the ladder. On a mock clock with
a fake probe where time is the point; with real processes that allocate where memory is."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import trio
import trio.testing

from dynod.core.lifecycle import DynoState
from dynod.core.logline import HEROKU
from dynod.proc.dyno import DynoProcess
from dynod.proc.manager import Manager
from dynod.proc.memory import MB, tree_rss
from dynod.proc.reaper import Reaper
from dynod.proc.seams import DynoPlan, InPlace, ManagerSettings
from tests.dynod.proc.test_manager_clock import MINUTE, FakeProcesses, reaches
from tests.helpers import PY, Collector, cgroups_used

R14 = "Error R14 (Memory quota exceeded)"
R15 = "Error R15 (Memory quota vastly exceeded)"


class Readings:
    """A fake probe: the MB the test says, and when each sample was taken (trio's clock)."""

    def __init__(self) -> None:
        self.mb = 100.0
        self.times: list[float] = []

    async def sample(self, process: DynoProcess) -> float | None:
        self.times.append(trio.current_time())
        return self.mb


@pytest.mark.trio
async def test_samples_every_20_seconds_r14_while_it_lasts_r15_kills_at_once(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    fake, sink, readings = FakeProcesses(), Collector(), Readings()
    settings = ManagerSettings(cycle_after=None, memory_quotas={"worker": 256.0})
    manager = Manager(
        sink, InPlace(tmp_path), settings, rng=random.Random(1), launcher=fake, memory=readings
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run, [DynoPlan("worker.1", "work", {})])
        first = await fake.launched("worker.1", 1)
        await trio.sleep(61)
        assert [round(t - first.started_at) for t in readings.times] == [20, 40, 60]
        assert sink.texts("worker.1", HEROKU)[-1] == "State changed from starting to up"
        readings.mb = 300.0  # above the worker type's 256 MB: R14 at each sample
        await trio.sleep(40)
        assert sink.texts("worker.1", HEROKU)[-4:] == [
            "Process running mem=300M(117.2%)",
            R14,
            "Process running mem=300M(117.2%)",
            R14,
        ]
        assert manager.slots["worker.1"].memory is not None
        assert manager.slots["worker.1"].memory.mb == 300.0
        readings.mb = 600.0  # above twice: killed at once, a crash on the ladder (at once)
        await fake.launched("worker.1", 2)
        assert fake.starts("worker.1")[1] - first.started_at == 120.0
        texts = sink.texts("worker.1", HEROKU)
        r15 = texts.index(R15)
        assert texts[r15 - 1] == "Process running mem=600M(234.4%)"
        assert "State changed from up to crashed" in texts[r15:]
        assert R14 not in texts[r15:]
        assert fake.hurried == ["worker.1"]  # SIGKILL at once: the stop was hurried
        readings.mb = 100.0
        await trio.sleep(10 * MINUTE)
        manager.stop_all()
    assert len(fake.launches) == 2


@pytest.mark.trio
async def test_a_second_r15_waits_20_minutes_on_the_ladder(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    fake, sink, readings = FakeProcesses(), Collector(), Readings()
    readings.mb = 2000.0  # of 512: R15 at the first sample of every process
    manager = Manager(
        sink,
        InPlace(tmp_path),
        ManagerSettings(cycle_after=None),
        launcher=fake,
        memory=readings,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run, [DynoPlan("web.1", "serve", {})])
        await fake.launched("web.1", 3)
        await reaches(manager, "web.1", DynoState.UP)
        manager.stop_all()
    starts = fake.starts("web.1")
    # killed after 20 s each time; then at once, then after 20 minutes (Heroku's ladder)
    assert [round(b - a) for a, b in zip(starts, starts[1:], strict=False)] == [20, 20 + 1200]
    assert sink.texts("web.1", HEROKU).count(R15) == 2


def test_tree_rss_counts_descendants_and_named_groups(tmp_path: Path) -> None:
    """A child's memory counts for its parent's tree; a process in a session of its own counts
    when its group is named (an escapee the reaper tied to the dyno)."""
    grow = f"{PY} -c \"import time; x = b'1' * (64 << 20); print(1, flush=True); time.sleep(30)\""
    parent = subprocess.Popen(
        ["bash", "-c", f"{grow} & wait"], stdout=subprocess.PIPE, start_new_session=True
    )
    loner = subprocess.Popen(["bash", "-c", grow], stdout=subprocess.PIPE, start_new_session=True)
    try:
        for process in (parent, loner):
            assert process.stdout is not None
            assert process.stdout.readline() == b"1\n"
        assert tree_rss(parent.pid) > 64 * MB
        assert tree_rss(os.getpid()) > 128 * MB  # this test's own children and theirs
        assert tree_rss(loner.pid) > 64 * MB
        assert tree_rss(parent.pid, [loner.pid]) > 128 * MB
        assert tree_rss(999999999) == 0
    finally:
        for process in (parent, loner):
            os.killpg(process.pid, signal.SIGKILL)  # each leads its own group
            process.wait()


# Grows to ~90 MB, then after `GROW` to ~170 MB: R14 then R15 for a quota of 64 MB.
ALLOCATOR = (
    f"{PY} -c \"import os, time; a = b'1' * (80 << 20); print('first', flush=True); "
    "time.sleep(float(os.environ['GROW'])); b = b'2' * (80 << 20); print('second', flush=True); "
    'time.sleep(60)"'
)


def _real(tmp_path: Path, command: str, cgroups: bool) -> Collector:
    sink = Collector()
    settings = ManagerSettings(
        ladder=(0.0, 30.0),
        stop_timeout=10.0,
        cycle_after=None,
        memory_sample=0.2,
        memory_quota_mb=64.0,
    )

    async def main() -> None:
        with Reaper(cgroups=cgroups) as reaper, trio.fail_after(20):
            manager = Manager(sink, InPlace(tmp_path), settings, reaper=reaper)
            async with trio.open_nursery() as nursery:
                await nursery.start(manager.run, [DynoPlan("worker.1", command, {"GROW": "1"})])
                await sink.wait_text(R15)
                await sink.wait_text("State changed from up to crashed")
                began = time.monotonic()
                await sink.wait_for(lambda: sink.texts("worker.1").count("first") == 2)
                assert time.monotonic() - began < 5  # on the ladder: at once
                manager.stop_all()

    trio.run(main)
    return sink


@pytest.mark.parametrize("cgroups", [False, True], ids=["tree", "cgroup"])
def test_a_real_dyno_past_its_quota_gets_r14_then_r15(tmp_path: Path, cgroups: bool) -> None:
    if cgroups and not cgroups_used():
        pytest.skip("dynos get cgroups only as root with cgroup v2 (run as root)")
    texts = _real(tmp_path, ALLOCATOR, cgroups).texts("worker.1", HEROKU)
    first_r15 = texts.index(R15)
    assert R14 in texts[:first_r15]
    assert texts[first_r15 + 1 : first_r15 + 3] == [
        "Stopping all processes with SIGKILL",  # no SIGTERM and no grace
        "Process exited with status 137",
    ]
    assert "Stopping all processes with SIGTERM" not in texts[: first_r15 + 3]
    shown = [t for t in texts[:first_r15] if t.startswith("Process running mem=")]
    assert shown and all(t.endswith("%)") for t in shown)


def test_a_child_that_allocates_counts_for_its_dyno(tmp_path: Path) -> None:
    """The dyno's main process is a shell that allocates nothing; its child does."""
    texts = _real(tmp_path, f"{ALLOCATOR} & wait", False).texts("worker.1", HEROKU)
    assert R14 in texts and R15 in texts
