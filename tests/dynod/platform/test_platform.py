"""The platform in-process, with real slugs, dynos and files: releases, config vars, scaling,
rollback, the release phase, and what dynos can and cannot see."""

from __future__ import annotations

import os
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

from dynod.core.lifecycle import DynoState
from dynod.platform.root import Platform
from dynod.platform.runtime import sweep_scratch
from dynod.proc.reaper import Reaper
from dynod.slugs.pack import pack_slug
from dynod.state.apps import App
from dynod.state.config import Config
from tests.helpers import ROOT

SAMPLE = ROOT / "fixtures" / "sample"


def with_platform(tmp_path: Path, scenario: Callable[[Platform], Awaitable[None]]) -> None:
    config = Config().replace(dynos={"stop_timeout": 3, "restart_ladder": [0, 1]})

    async def main() -> None:
        with trio.fail_after(90), Reaper() as reaper:
            platform = Platform(config, tmp_path / "data", reaper=reaper)
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(platform.run)
                    await scenario(platform)
                    nursery.cancel_scope.cancel()
            finally:  # the scratch directory `dynod serve` removes when it stops
                sweep_scratch(platform.data_dir)

    trio.run(main)


def slug_of(platform: Platform, source: Path, tmp: Path, procfile: str | None = None) -> str:
    app_dir = tmp / f"src-{len(list(tmp.iterdir()))}"
    shutil.copytree(source, app_dir)
    if procfile is not None:
        (app_dir / "Procfile").write_text(procfile)
    types = dict(
        line.split(": ", 1)
        for line in (app_dir / "Procfile").read_text().splitlines()
        if line and not line.startswith("#")
    )
    info = pack_slug(app_dir, tmp / f"{app_dir.name}.tgz")
    return platform.slugs.put(info.path, types).id


async def http_get(port: int) -> str:
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            data = b""
            while chunk := await stream.receive_some(65536):
                data += chunk
    return data.decode().split("\r\n\r\n", 1)[1]


async def until(platform: Platform, predicate: Callable[[], bool], timeout: float = 20) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            with trio.move_on_after(0.1):
                await platform.formation.changed.wait()


def up(platform: Platform, app: App, count: int, kind: str = "web") -> Callable[[], bool]:
    return lambda: (
        sum(1 for d in platform.formation.dynos(app) if d.type == kind and d.state == "up") == count
    )


def web_port(platform: Platform, app: App, name: str = "web.1") -> int:
    return next(port for dyno, port, _ in platform.formation.web_targets(app) if dyno == name)


def test_deploy_scale_config_rollback(tmp_path: Path) -> None:
    async def scenario(platform: Platform) -> None:
        app = await platform.create_app("shop")
        assert [r.description for r in platform.releases.all(app)] == ["Initial release"]
        slug = slug_of(platform, SAMPLE, tmp_path)
        v2 = await platform.releases.create(
            app, slug_id=slug, config_vars={}, description="Deploy 1234abcd", wait=True
        )
        assert (v2.version, v2.status) == (2, "succeeded")
        assert "release phase: nothing to migrate" in (platform.releases.output(app, 2) or "")
        assert {e.type: e.quantity for e in platform.formation.entries(app)} == {
            "web": 1,
            "worker": 0,
        }
        await until(platform, up(platform, app, 1))
        assert (await http_get(web_port(platform, app))).startswith("Hello from web.1 (hi)")

        v3 = await platform.releases.set_config(app, {"GREETING": "bonjour"})
        assert (v3.version, v3.description) == (3, "Set GREETING config vars")
        await until(platform, lambda: platform.releases.current(app).version == 3)  # type: ignore[union-attr]
        await until(platform, up(platform, app, 1))
        await until(platform, lambda: platform.formation.dynos(app)[0].state == "up")
        assert "(bonjour)" in await http_get(web_port(platform, app))

        await platform.formation.scale(app, {"web": "+2", "worker": 1})
        await until(platform, up(platform, app, 3))
        await until(platform, up(platform, app, 1, "worker"))
        await platform.formation.scale(app, {"web": 1})
        await until(
            platform,
            lambda: [d.name for d in platform.formation.dynos(app) if d.type == "web"] == ["web.1"],
        )

        v4 = await platform.releases.rollback(app, 2)
        assert v4.description == "Rollback to v2"
        await until(platform, lambda: (platform.releases.current(app) or v2).version == 4)
        assert platform.releases.config_vars(app) == {}

    with_platform(tmp_path, scenario)


def test_a_failing_release_command_keeps_the_old_release_serving(tmp_path: Path) -> None:
    async def scenario(platform: Platform) -> None:
        app = await platform.create_app("fails")
        good = slug_of(platform, SAMPLE, tmp_path)
        await platform.releases.create(
            app, slug_id=good, config_vars={}, description="Deploy good", wait=True
        )
        await until(platform, up(platform, app, 1))
        bad = slug_of(
            platform,
            SAMPLE,
            tmp_path,
            "web: python3 web.py\nrelease: echo migration broke; exit 3\n",
        )
        v3 = await platform.releases.create(
            app, slug_id=bad, config_vars={}, description="Deploy bad", wait=True
        )
        assert v3.status == "failed"
        assert platform.releases.current(app).version == 2  # type: ignore[union-attr]
        assert "migration broke" in (platform.releases.output(app, 3) or "")
        assert (await http_get(web_port(platform, app))).startswith("Hello from web.1")

    with_platform(tmp_path, scenario)


def test_a_release_phase_cut_short_by_a_stop_fails_at_the_next_start(tmp_path: Path) -> None:
    async def interrupted(platform: Platform) -> None:
        app = await platform.create_app("cut")
        good = slug_of(platform, SAMPLE, tmp_path)
        await platform.releases.create(
            app, slug_id=good, config_vars={}, description="Deploy good", wait=True
        )
        slow = slug_of(
            platform,
            SAMPLE,
            tmp_path,
            "web: python3 web.py\nrelease: echo migrating; exec sleep 60\n",
        )
        v3 = await platform.releases.create(
            app, slug_id=slow, config_vars={}, description="Deploy slow"
        )
        assert v3.status == "pending"
        await until(
            platform, lambda: "migrating" in [line.text for line in platform.ring(app).recent(50)]
        )

    async def restarted(platform: Platform) -> None:
        app = platform.apps.by_name("cut")
        assert app is not None
        assert [(r.version, r.status) for r in platform.releases.all(app)][1:] == [
            (2, "succeeded"),
            (3, "failed"),
        ]
        assert platform.releases.current(app).version == 2  # type: ignore[union-attr]
        assert "dynod stopped while the release command ran" in (
            platform.releases.output(app, 3) or ""
        )

    with_platform(tmp_path, interrupted)
    with_platform(tmp_path, restarted)


def test_dynos_see_only_their_own_files_and_environment(tmp_path: Path) -> None:
    os.environ["DYNOD_SECRET_OF_THE_DAEMON"] = "leak"
    procfile = (
        "web: python3 web.py\n"
        "writer: echo mine > note.txt; echo wrote; env | grep -c DYNOD_SECRET || true; exec "
        "sleep 60\n"
        "reader: sleep 1; ls note.txt 2>/dev/null || echo absent; exec sleep 60\n"
    )

    async def scenario(platform: Platform) -> None:
        app = await platform.create_app("isolated")
        slug = slug_of(platform, SAMPLE, tmp_path, procfile)
        await platform.releases.create(
            app, slug_id=slug, config_vars={}, description="Deploy", wait=True
        )
        await platform.formation.scale(app, {"writer": 1, "reader": 1})
        ring = platform.ring(app)
        await until(platform, lambda: any(line.text == "absent" for line in ring.recent(1500)))
        texts = [(line.dyno, line.text) for line in ring.recent(1500) if line.source == "app"]
        assert ("writer.1", "wrote") in texts and ("writer.1", "0") in texts
        platform.formation.restart(app, "writer")
        await until(
            platform, lambda: sum(1 for line in ring.recent(1500) if line.text == "wrote") == 2
        )
        assert platform.formation.dynos(app)[1].state in (
            DynoState.UP.value,
            DynoState.STARTING.value,
        )

    try:
        with_platform(tmp_path, scenario)
    finally:
        del os.environ["DYNOD_SECRET_OF_THE_DAEMON"]


def test_apps_come_back_after_a_restart_of_the_platform(tmp_path: Path) -> None:
    async def first(platform: Platform) -> None:
        app = await platform.create_app("durable")
        slug = slug_of(platform, SAMPLE, tmp_path)
        await platform.releases.create(
            app, slug_id=slug, config_vars={"A": "1"}, description="Deploy", wait=True
        )
        await platform.formation.scale(app, {"web": 2})
        await until(platform, up(platform, app, 2))

    async def second(platform: Platform) -> None:
        app = platform.apps.find("durable")
        assert platform.releases.config_vars(app) == {"A": "1"}
        assert [r.version for r in platform.releases.all(app)] == [1, 2]
        await until(platform, up(platform, app, 2))

    with_platform(tmp_path, first)
    with_platform(tmp_path, second)


def test_a_build_from_a_directory_deploys_and_a_failed_build_releases_nothing(
    tmp_path: Path,
) -> None:
    async def scenario(platform: Platform) -> None:
        app = await platform.create_app("built")
        build = await platform.builds.create(
            app, source_url=str(SAMPLE), version=None, buildpacks=[]
        )
        lines = [line async for line in platform.builds.output(app, build.id)]
        done = platform.builds.get(app, build.id)
        assert done.status == "succeeded", lines
        assert any(line.startswith("-----> ") for line in lines)
        assert done.release_version == 2
        assert platform.releases.all(app)[-1].description.startswith("Deploy ")
        await until(platform, up(platform, app, 1))

        broken = tmp_path / "broken"
        broken.mkdir()
        (broken / "README").write_text("no Procfile, no dependency file\n")
        failed = await platform.builds.create(
            app, source_url=f"file://{broken}", version=None, buildpacks=[]
        )
        lines = [line async for line in platform.builds.output(app, failed.id)]
        assert platform.builds.get(app, failed.id).status == "failed"
        assert any(line.startswith(" !     ") for line in lines)
        assert len(platform.releases.all(app)) == 2

    with_platform(tmp_path, scenario)


def test_apps_are_reached_through_the_router_round_robin(tmp_path: Path) -> None:
    from router.config import RouterConfig
    from router.server import serve

    async def scenario(platform: Platform) -> None:
        app = await platform.create_app("routed")
        slug = slug_of(platform, SAMPLE, tmp_path)
        await platform.releases.create(
            app, slug_id=slug, config_vars={}, description="Deploy", wait=True
        )
        await platform.formation.scale(app, {"web": 3})
        async with trio.open_nursery() as nursery:
            (host, port), *_ = await nursery.start(
                serve, RouterConfig(listen="127.0.0.1:0"), platform.router
            )
            await until(platform, up(platform, app, 3))
            answers = []
            for _ in range(6):
                stream = await trio.open_tcp_stream(host, port)
                async with stream:
                    await stream.send_all(
                        f"GET / HTTP/1.0\r\nHost: routed.localhost:{port}\r\n\r\n".encode()
                    )
                    data = b""
                    while chunk := await stream.receive_some(65536):
                        data += chunk
                answers.append(data.decode().split("\r\n\r\n", 1)[1].split()[2])
            nursery.cancel_scope.cancel()
        assert sorted(answers[:3]) == ["web.1", "web.2", "web.3"] and answers[3:] == answers[:3]
        assert any(
            "at=info method=GET" in line.text and line.dyno == "router"
            for line in platform.ring(app).recent(1500)
        )

    with_platform(tmp_path, scenario)
