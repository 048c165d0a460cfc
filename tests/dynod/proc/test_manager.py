"""The dyno manager with real processes: boot detection on a real port, real exits and crash
restarts, exit-on-crash, the stop sequence of a restart, one-off dynos. The ladder, R10 and
daily cycling with Heroku's numbers are in test_manager_clock.py, on a mock clock."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

from dynod.core.lifecycle import DynoState
from dynod.proc.manager import Manager
from dynod.proc.seams import DynoPlan, InPlace, ManagerSettings
from tests.helpers import PY, Collector

FAST = ManagerSettings(ladder=(0.0, 0.2), stop_timeout=2.0, boot_timeout=5.0, cycle_after=None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


WEB = (
    f'{PY} -c "import os, socket, time; s = socket.socket(); '
    "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
    "time.sleep(float(os.environ.get('DELAY', '0'))); "
    "s.bind(('127.0.0.1', int(os.environ['PORT']))); s.listen(); print('bound', flush=True); "
    'time.sleep(60)"'
)


def run_manager(
    tmp_path: Path,
    plans: list[DynoPlan],
    settings: ManagerSettings,
    scenario: Callable[[Manager, Collector], Awaitable[None]],
) -> Collector:
    sink = Collector()

    async def main() -> None:
        with trio.fail_after(30):
            manager = Manager(sink, InPlace(tmp_path), settings)
            async with trio.open_nursery() as nursery:
                await nursery.start(manager.run, plans)
                await scenario(manager, sink)
                manager.stop_all()

    trio.run(main)
    return sink


def test_a_web_dyno_is_up_once_its_port_accepts(tmp_path: Path) -> None:
    port = free_port()
    plan = DynoPlan("web.1", WEB, {"DELAY": "0.5"}, port=port)

    async def scenario(manager: Manager, sink: Collector) -> None:
        await sink.wait_text("State changed from starting to up")
        assert "bound" in sink.texts(source="app")
        assert manager.slots["web.1"].state is DynoState.UP

    sink = run_manager(tmp_path, [plan], FAST, scenario)
    assert sink.texts("web.1", "heroku")[-3:] == [
        "State changed from up to down",
        "Stopping all processes with SIGTERM",
        "Process exited with status 143",
    ]


def test_crashes_restart_on_the_ladder(tmp_path: Path) -> None:
    plan = DynoPlan("worker.1", "echo run; exit 3", {})

    async def scenario(manager: Manager, sink: Collector) -> None:
        await sink.wait_for(lambda: sink.texts("worker.1", "app").count("run") >= 3)

    sink = run_manager(tmp_path, [plan], FAST, scenario)
    heroku = sink.texts("worker.1", "heroku")
    assert heroku[:5] == [
        "Starting process with command `echo run; exit 3`",
        "State changed from starting to up",
        "Process exited with status 3",
        "State changed from up to crashed",
        "State changed from crashed to starting",
    ]


def test_exit_on_crash_stops_everything_with_the_status(tmp_path: Path) -> None:
    plans = [
        DynoPlan("worker.1", "sleep 0.3; exit 7", {}),
        DynoPlan("clock.1", "exec sleep 60", {}),
    ]
    settings = ManagerSettings(stop_timeout=2.0, cycle_after=None, exit_on_crash=True)
    sink = Collector()

    async def main() -> Manager:
        with trio.fail_after(20):
            manager = Manager(sink, InPlace(tmp_path), settings)
            await manager.run(plans)
            return manager

    manager = trio.run(main)
    assert manager.crash == ("worker.1", 7)
    assert "Process exited with status 143" in sink.texts("clock.1", "heroku")


def test_a_restart_stops_the_real_process_and_starts_a_fresh_one(tmp_path: Path) -> None:
    plan = DynoPlan("worker.1", "echo started; exec sleep 60", {})

    async def scenario(manager: Manager, sink: Collector) -> None:
        await sink.wait_for(lambda: "started" in sink.texts("worker.1", "app"))  # it runs
        await sink.wait_text("State changed from starting to up")
        manager.restart_dyno("worker.1")
        await sink.wait_for(lambda: sink.texts("worker.1", "app").count("started") >= 2)

    sink = run_manager(tmp_path, [plan], FAST, scenario)
    heroku = sink.texts("worker.1", "heroku")
    restart = heroku.index("Restarting")
    assert heroku[restart : restart + 5] == [
        "Restarting",
        "State changed from up to starting",
        "Stopping all processes with SIGTERM",
        "Process exited with status 143",
        "Starting process with command `echo started; exec sleep 60`",
    ]
    assert "State changed from up to crashed" not in heroku


def test_one_off_dynos_complete_and_are_not_restarted(tmp_path: Path) -> None:
    sink = Collector()

    async def main() -> int:
        with trio.fail_after(20):
            manager = Manager(sink, InPlace(tmp_path), FAST)
            return await manager.run_one_off(DynoPlan("release.1", "echo migrating; exit 4", {}))

    assert trio.run(main) == 4
    assert sink.texts("release.1", "heroku") == [
        "Starting process with command `echo migrating; exit 4`",
        "State changed from starting to up",
        "Process exited with status 4",
        "State changed from up to complete",
    ]


def test_reconcile_scales_up_down_highest_first_and_restarts_changed_plans(tmp_path: Path) -> None:
    def plans(n: int, version: str) -> list[DynoPlan]:
        return [
            DynoPlan(f"worker.{i}", "echo v=$V; exec sleep 60", {"V": version})
            for i in range(1, n + 1)
        ]

    async def scenario(manager: Manager, sink: Collector) -> None:
        manager.reconcile(plans(3, "1"))
        await sink.wait_for(lambda: sink.texts(source="app").count("v=1") == 3)
        manager.reconcile(plans(1, "1"))
        with trio.fail_after(10):
            while list(manager.slots) != ["worker.1"]:
                await manager.changed.wait()
        manager.reconcile(plans(1, "2"))
        await sink.wait_text("v=2")

    sink = run_manager(tmp_path, [], FAST, scenario)
    downs = [line.dyno for line in sink.lines if line.text == "State changed from up to down"]
    assert downs[:2] == ["worker.3", "worker.2"]
    assert "Restarting" in sink.texts("worker.1", "heroku")
