"""Builds alone, with the hello fixture buildpack and a Releases whose formation side is fake:
a build releases its slug with the app's config vars, a failing one releases nothing, and a
build that dynod's stop cut short is failed at the next start."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from dynod.platform.builds import Builds
from dynod.platform.releases import Releases
from dynod.platform.runtime import DynoUsers, scratch_dir
from dynod.slugs.model import Slug
from dynod.state.apps import App
from dynod.state.config import BuildConfig, DynosConfig
from dynod.state.ledger import Release
from tests.dynod.platform.stage import Stage
from tests.helpers import ROOT

HELLO = ROOT / "fixtures" / "buildpacks" / "hello"


def builds_of(stage: Stage, released: list[str | None]) -> tuple[Builds, Releases]:
    async def run_command(app: App, release: Release, command: str, name: str) -> int:
        raise AssertionError("the hello buildpack's slug has no release phase")

    async def record(app: App, slug: Slug | None) -> None:
        released.append(slug.id if slug else None)

    releases = Releases(
        stage.apps,
        stage.slugs,
        stage.logplex,
        user="me@localhost",
        log=stage.log,
        run_command=run_command,
        released=record,
        spawn=stage.spawn,
    )
    users = DynoUsers(DynosConfig(), root=False)
    builds = Builds(
        stage.apps,
        stage.slugs,
        releases,
        users,
        BuildConfig(),
        scratch=scratch_dir(stage.root, passable=False),
        reaper=None,
        spawn=stage.spawn,
    )
    return builds, releases


def source(root: Path) -> Path:
    root.mkdir()
    (root / "hello.txt").write_text("hi\n")
    (root / "Procfile").write_text("web: ./serve\n")
    return root


@pytest.mark.trio
async def test_a_build_releases_its_slug_and_a_failed_one_releases_nothing(
    tmp_path: Path,
) -> None:
    released: list[str | None] = []
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            stage = Stage(tmp_path, nursery)
            builds, releases = builds_of(stage, released)
            app = await stage.app("built")
            await releases.set_config(app, {"GREETING": "from the config"})
            app_dir = source(tmp_path / "app")
            build = await builds.create(
                app, source_url=str(app_dir), version="0123abcd", buildpacks=[str(HELLO)]
            )
            assert build.status == "pending" and builds.get(app, build.id) == build
            lines = [line async for line in builds.output(app, build.id)]
            done = builds.get(app, build.id)
            assert (done.status, done.release_version) == ("succeeded", 3), lines
            assert "-----> Saying hello" in lines and "       Released v3" in lines
            v3 = releases.current(app)
            assert v3 is not None and v3.slug_id == done.slug_id and v3.slug_id is not None
            assert v3.description == "Deploy 0123abcd"
            assert dict(v3.config_vars) == {"GREETING": "from the config"}
            assert dict(stage.slugs.get(v3.slug_id).process_types)["web"] == "./serve"
            assert released == [None, v3.slug_id]  # the config:set, then the build's release

            await releases.set_config(app, {"HELLO_FAIL": "1"})
            failed = await builds.create(
                app, source_url=str(app_dir), version=None, buildpacks=[str(HELLO)]
            )
            lines = [line async for line in builds.output(app, failed.id)]
            assert builds.get(app, failed.id).status == "failed"
            assert " !     HELLO_FAIL is set: failing as asked" in lines
            assert [r.version for r in releases.all(app)] == [1, 2, 3, 4]  # none for the build
            assert {b.id for b in builds.all(app)} == {build.id, failed.id}


@pytest.mark.trio
async def test_a_build_cut_short_is_failed_at_the_next_start(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            stage = Stage(tmp_path, nursery)
            builds, _ = builds_of(stage, [])
            app = await stage.app("cut")
            slow = tmp_path / "slow-pack"
            (slow / "bin").mkdir(parents=True)
            (slow / "bin" / "detect").write_text("#!/bin/sh\necho Slow\n")
            (slow / "bin" / "compile").write_text("#!/bin/sh\necho compiling; exec sleep 60\n")
            for script in (slow / "bin").iterdir():
                script.chmod(0o755)
            build = await builds.create(
                app, source_url=str(source(tmp_path / "app")), version="1", buildpacks=[str(slow)]
            )
            async for line in builds.output(app, build.id):
                if "compiling" in line:
                    break
            nursery.cancel_scope.cancel()  # dynod stops mid-build

        async with trio.open_nursery() as nursery:
            stage = Stage(tmp_path, nursery)
            builds, _ = builds_of(stage, [])
            app = stage.apps.find("cut")
            assert builds.get(app, build.id).status == "pending"
            await builds.interrupted(app)
            assert builds.get(app, build.id).status == "failed"
