"""Sleeping (README, "Sleeping"), with the Sleeping service alone on trio's MockClock (Heroku's 30
minutes, fake dynos) and with the whole platform, real dynos and the router (a short idle): an
eco app sleeps, a request wakes it and is answered, 20 at once during the wake are all answered,
and an app asleep when dynod stops is asleep when it starts, until its first request."""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing

from dynod.core.lifecycle import DynoState
from dynod.core.logline import HEROKU
from dynod.platform.formation import Formation
from dynod.platform.root import Platform
from dynod.platform.runtime import AppRuntime, Ports, SlugWorkspace, sweep_scratch
from dynod.platform.sleeping import Sleeping
from dynod.proc.manager import Manager
from dynod.proc.reaper import Reaper
from dynod.proc.seams import InPlace, ManagerSettings
from dynod.state.apps import App
from dynod.state.config import Config, PortRange
from router.backend import TableBackend
from tests.dynod.platform.stage import SAMPLE, Stage, release, sample_files
from tests.dynod.platform.test_platform import slug_of, until
from tests.dynod.proc.test_manager_clock import MINUTE, FakeProcesses, reaches

TYPES = {"web": "python3 web.py", "worker": "python3 worker.py"}


def states(formation: Formation, app: App) -> list[str]:
    return [dyno.state for dyno in formation.dynos(app)]


@asynccontextmanager
async def sleepy_app(
    tmp_path: Path, nursery: trio.Nursery
) -> AsyncIterator[tuple[Stage, Formation, App, FakeProcesses]]:
    """An app of one eco web dyno whose processes are fakes (a mock clock and real children
    do not mix)."""
    stage, fake = Stage(tmp_path, nursery), FakeProcesses()
    settings = ManagerSettings(cycle_after=None)

    def make(app: App) -> AppRuntime:
        ring = stage.logplex.ring(app.id)
        workspace = SlugWorkspace(stage.slugs, tmp_path, None)
        runtime = AppRuntime(
            app.id, ring, workspace, Ports(PortRange(20000, 29999)), settings, None
        )
        runtime.manager = Manager(
            ring, InPlace(tmp_path), settings, rng=random.Random(1), launcher=fake
        )
        return runtime

    formation = Formation(
        stage.apps,
        stage.slugs,
        TableBackend(),
        user="me@localhost",
        log=stage.log,
        make_runtime=make,
        spawn=stage.spawn,
    )
    app = await stage.app("sleepy")
    await formation.start(app, nursery)
    slug = stage.slug(sample_files(), TYPES)
    await release(stage, app, slug, {})
    await formation.released(app, slug)
    await formation.scale(app, {}, {"web": "eco"})
    await fake.launched("web.1", 1)
    yield stage, formation, app, fake


def heroku_lines(stage: Stage, app: App) -> list[str]:
    return [line.text for line in stage.logplex.ring(app.id).recent(1500) if line.source == HEROKU]


async def recorded(stage: Stage, app: App, *, idle: bool) -> None:
    """Until the record says `idle` (written by a worker thread, which the mock clock does not
    wait for: each round here lets real time pass)."""
    for _ in range(10_000):
        if stage.apps.formation_record(app).idle is idle:
            return
        await trio.to_thread.run_sync(time.sleep, 0.001)
    raise AssertionError(f"the formation record never said idle={idle}")


@pytest.mark.trio
async def test_an_eco_app_sleeps_after_30_minutes_and_wakes(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Times are read from the dyno's state table (trio's clock at each change): the mock clock
    also moves while a worker thread writes the formation record."""
    async with trio.open_nursery() as nursery:
        async with sleepy_app(tmp_path, nursery) as (stage, formation, app, fake):
            manager = formation.runtime(app).manager
            sleeping = Sleeping(stage.apps, formation, idle_after=30 * MINUTE, spawn=stage.spawn)
            nursery.start_soon(sleeping.watch)
            await trio.sleep(20 * MINUTE)
            sleeping.request(app)  # a request: 30 more minutes from now
            asked = trio.current_time()
            await reaches(manager, "web.1", DynoState.IDLE)
            assert since(formation, app) == asked + 30 * MINUTE
            await fake.until(lambda: not fake.running)
            await trio.testing.wait_all_tasks_blocked()
            assert heroku_lines(stage, app)[-4:] == [
                "Idling",
                "State changed from up to down",
                "Stopping all processes with SIGTERM",
                "Process exited with status 143",
            ]
            await recorded(stage, app, idle=True)  # durable

            sleeping.wake(app)  # the router's hook: a request came
            woke = trio.current_time()
            await fake.launched("web.1", 2)
            await reaches(manager, "web.1", DynoState.UP)
            texts = heroku_lines(stage, app)
            assert texts[texts.index("Unidling") :][:4] == [
                "Unidling",
                "State changed from down to starting",
                "Starting process with command `python3 web.py`",
                "State changed from starting to up",
            ]
            await reaches(manager, "web.1", DynoState.IDLE)
            assert since(formation, app) == woke + 30 * MINUTE

            formation.restart(app)  # a restart wakes it too; so does scaling
            woke = trio.current_time()
            await fake.launched("web.1", 3)
            await reaches(manager, "web.1", DynoState.IDLE)
            assert since(formation, app) == woke + 30 * MINUTE
            await formation.scale(app, {"web": 2})
            await fake.launched("web.2", 1)
            await reaches(manager, "web.1", DynoState.UP)
            await reaches(manager, "web.2", DynoState.UP)

            await reaches(manager, "web.2", DynoState.IDLE)
            launches = len(fake.launches)
            slug = stage.slug(sample_files(), TYPES)
            await release(stage, app, slug, {"NEW": "1"})
            await formation.released(app, slug)  # a release wakes it: each dyno starts once
            await reaches(manager, "web.1", DynoState.UP)
            await reaches(manager, "web.2", DynoState.UP)
            assert len(fake.launches) == launches + 2
            assert "Restarting" not in heroku_lines(stage, app)

            await formation.scale(app, {}, {"web": "standard-1X"})  # opts out
            await trio.sleep(3 * 30 * MINUTE)
            assert states(formation, app) == ["up", "up"]
            nursery.cancel_scope.cancel()


def since(formation: Formation, app: App) -> float:
    return formation.runtime(app).manager.slots["web.1"].machine.lifecycle.since


# ----- the platform, with real dynos and the router


def with_platform(tmp_path: Path, scenario: Callable[[Platform, int], Awaitable[None]]) -> None:
    from router.config import RouterConfig
    from router.server import serve

    config = Config().replace(dynos={"stop_timeout": 3, "restart_ladder": [0, 1], "idle_after": 2})

    async def main() -> None:
        with trio.fail_after(90), Reaper() as reaper:
            platform = Platform(config, tmp_path / "data", reaper=reaper)
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(platform.run)
                    (_, port), *_ = await nursery.start(
                        serve, RouterConfig(listen="127.0.0.1:0"), platform.router
                    )
                    await scenario(platform, port)
                    nursery.cancel_scope.cancel()
            finally:
                sweep_scratch(platform.data_dir)

    trio.run(main)


async def get(port: int, app: str) -> str:
    with trio.fail_after(30):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(f"GET / HTTP/1.0\r\nHost: {app}.localhost\r\n\r\n".encode())
            data = b""
            while chunk := await stream.receive_some(65536):
                data += chunk
    return data.decode()


def asleep(platform: Platform, app: App) -> Callable[[], bool]:
    return lambda: states(platform.formation, app) == ["idle"]


def test_a_sleeping_app_wakes_for_requests_and_stays_asleep_across_a_restart(
    tmp_path: Path,
) -> None:
    async def first(platform: Platform, port: int) -> None:
        app = await platform.create_app("napper")
        slug = slug_of(platform, SAMPLE, tmp_path)
        await platform.releases.create(
            app, slug_id=slug, config_vars={}, description="Deploy", wait=True
        )
        await platform.formation.scale(app, {}, {"web": "eco"})
        assert platform.formation.dynos(app)[0].size == "eco"
        await until(platform, asleep(platform, app))
        answer = await get(port, "napper")
        assert answer.startswith("HTTP/1.1 200") and "Hello from web.1" in answer
        texts = [line.text for line in platform.ring(app).recent(1500)]
        assert "Idling" in texts and "Unidling" in texts

        await until(platform, asleep(platform, app))
        answers: list[str] = []

        async def one() -> None:
            answers.append(await get(port, "napper"))

        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(one)
        assert len(answers) == 20
        assert all(a.startswith("HTTP/1.1 200") and "Hello from web.1" in a for a in answers)
        await until(platform, asleep(platform, app))
        await until(platform, lambda: platform.apps.formation_record(app).idle)

    async def second(platform: Platform, port: int) -> None:
        app = platform.apps.find("napper")
        assert states(platform.formation, app) == ["idle"]  # asleep from the start
        texts = [line.text for line in platform.ring(app).recent(1500)]
        assert not any(text.startswith("Starting process") for text in texts)
        answer = await get(port, "napper")
        assert "Hello from web.1" in answer

    with_platform(tmp_path, first)
    with_platform(tmp_path, second)
