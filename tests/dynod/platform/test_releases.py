"""Releases alone, over a temporary registry: config vars, rollback, the release phase (with a
fake command runner), releases cut short by a stop, and many config:sets at once."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio
import trio.testing

from dynod.core.logline import APP
from dynod.errors import Invalid, NotFound
from dynod.platform.releases import Releases
from dynod.slugs.model import Slug
from dynod.state.apps import App
from dynod.state.ledger import Ledger, Release
from tests.dynod.platform.stage import Stage

TYPES = {"web": "python3 web.py", "release": "python3 migrate.py"}


class Fakes:
    """The formation's side, recorded: what was released, which commands ran."""

    def __init__(self, stage: Stage, status: int = 0) -> None:
        self.stage = stage
        self.status = status
        self.released: list[tuple[str, str | None]] = []  # (app name, slug id)
        self.commands: list[tuple[str, int, str, str]] = []  # (app, version, command, dyno)
        self.hold = trio.Event()  # a command waits for it when status is None

    async def run_command(self, app: App, release: Release, command: str, name: str) -> int:
        self.commands.append((app.name, release.version, command, name))
        ring = self.stage.logplex.ring(app.id)
        ring.publish(APP, name, ["migrating"], time.time())
        ring.publish(APP, "web.1", ["not the release's"], time.time())
        await self.hold.wait()
        return self.status

    async def released_(self, app: App, slug: Slug | None) -> None:
        self.released.append((app.name, slug.id if slug else None))


def releases_of(stage: Stage, fakes: Fakes) -> Releases:
    return Releases(
        stage.apps,
        stage.slugs,
        stage.logplex,
        user="me@localhost",
        log=stage.log,
        run_command=fakes.run_command,
        released=fakes.released_,
        spawn=stage.spawn,
    )


@pytest.mark.trio
async def test_config_vars_and_rollback(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        stage = Stage(tmp_path, nursery)
        fakes = Fakes(stage)
        releases = releases_of(stage, fakes)
        app = await stage.app("shop")
        slug = stage.slug({"web.py": ""}, {"web": "python3 web.py"})
        v2 = await releases.create(
            app, slug_id=slug.id, config_vars={}, description="Deploy 1234abcd"
        )
        v3 = await releases.set_config(app, {"GREETING": "hi"})
        assert (v3.version, v3.description, v3.slug_id) == (3, "Set GREETING config vars", slug.id)
        assert releases.config_vars(app) == {"GREETING": "hi"}
        v4 = await releases.rollback(app, "v2")
        assert (v4.description, v4.config_vars, v4.slug_id) == ("Rollback to v2", {}, slug.id)
        assert releases.current(app) == v4 and releases.get(app, v2.id) == v2
        assert fakes.released == [("shop", slug.id)] * 3 and fakes.commands == []
        assert ("shop", "Release v4 created by user me@localhost") in stage.logged
        with pytest.raises(Invalid, match="v1 has no slug to roll back to"):
            await releases.rollback(app, 1)
        with pytest.raises(NotFound, match="Couldn't find release v9"):
            releases.get(app, "v9")
        assert [r.version for r in Ledger(stage.apps.dir(app) / "releases.ledger").releases()] == [
            1,
            2,
            3,
            4,
        ]


@pytest.mark.trio
async def test_config_sets_at_once_all_land_one_after_the_other(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        stage = Stage(tmp_path, nursery)
        releases = releases_of(stage, Fakes(stage))
        app = await stage.app("busy")
        async with trio.open_nursery() as burst:
            for n in range(20):
                burst.start_soon(releases.set_config, app, {f"VAR{n}": str(n)})
        expected = {f"VAR{n}": str(n) for n in range(20)}
        assert releases.config_vars(app) == expected  # no config:set lost another's change
        reloaded = Ledger(stage.apps.dir(app) / "releases.ledger")
        assert [r.version for r in reloaded.releases()] == list(range(1, 22))
        assert dict(reloaded.releases()[-1].config_vars) == expected


@pytest.mark.trio
async def test_a_config_set_during_a_release_phase_releases_the_new_slug(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        stage = Stage(tmp_path, nursery)
        fakes = Fakes(stage)
        releases = releases_of(stage, fakes)
        app = await stage.app("racing")
        slug = stage.slug({"web.py": "", "migrate.py": ""}, TYPES)
        v2 = await releases.create(app, slug_id=slug.id, config_vars={}, description="Deploy")
        v3 = await releases.set_config(app, {"A": "1"})  # v2's release phase still runs
        assert (v2.status, v3.status, v3.slug_id) == ("pending", "pending", slug.id)
        fakes.hold.set()
        with trio.fail_after(5):
            while releases.current(app) != releases.get(app, 3):
                await trio.sleep(0.01)
        assert releases.current(app).slug_id == slug.id  # type: ignore[union-attr]
        assert fakes.released == [("racing", slug.id)] * 2


@pytest.mark.trio
async def test_the_release_phase_decides_whether_a_release_becomes_current(
    tmp_path: Path,
) -> None:
    async with trio.open_nursery() as nursery:
        stage = Stage(tmp_path, nursery)
        fakes = Fakes(stage)
        fakes.hold.set()
        releases = releases_of(stage, fakes)
        app = await stage.app("phased")
        slug = stage.slug({"web.py": "", "migrate.py": ""}, TYPES)
        v2 = await releases.create(
            app, slug_id=slug.id, config_vars={"A": "1"}, description="Deploy", wait=True
        )
        assert v2.status == "succeeded" and releases.current(app) == v2
        assert fakes.commands == [("phased", 2, "python3 migrate.py", "release.2")]
        assert releases.output(app, 2) == "migrating\n"  # only the release dyno's lines
        assert fakes.released == [("phased", slug.id)]

        fakes.status = 3
        failed = await releases.create(
            app, slug_id=slug.id, config_vars={"B": "2"}, description="Deploy", wait=True
        )
        assert failed.status == "failed" and releases.current(app) == v2
        assert fakes.released == [("phased", slug.id)]  # nothing more released
        assert ("phased", "Release v3 failed: the release command exited with status 3") in (
            stage.logged
        )


@pytest.mark.trio
async def test_a_release_phase_cut_short_fails_at_the_next_start(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        stage = Stage(tmp_path, nursery)
        fakes = Fakes(stage)  # the command never ends: `hold` is never set
        releases = releases_of(stage, fakes)
        app = await stage.app("cut")
        slug = stage.slug({"web.py": "", "migrate.py": ""}, TYPES)
        pending = await releases.create(app, slug_id=slug.id, config_vars={}, description="x")
        assert pending.status == "pending" and releases.current(app) is not None
        await trio.testing.wait_all_tasks_blocked()
        assert fakes.commands  # the release phase runs in the background
        nursery.cancel_scope.cancel()  # dynod stops

    async with trio.open_nursery() as nursery:
        stage = Stage(tmp_path, nursery)  # dynod starts again, on the same data
        fakes = Fakes(stage)
        releases = releases_of(stage, fakes)
        app = stage.apps.find("cut")
        await releases.interrupted(app)
        assert [(r.version, r.status) for r in releases.all(app)] == [
            (1, "succeeded"),
            (2, "failed"),
        ]
        assert "dynod stopped while the release command ran" in (releases.output(app, 2) or "")
        assert fakes.released == []
