"""OneOffs alone, over a Formation with real dynos: `run.N` runs once on the current release with
its extra variables, is listed while it runs, and is gone when it ends."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from dynod.errors import Invalid
from dynod.platform.oneoffs import OneOffs
from dynod.platform.runtime import Ports
from dynod.state.config import PortRange
from tests.dynod.platform.stage import Stage, formation_of, release, sample_files, wait_until


@pytest.mark.trio
async def test_a_one_off_runs_once_and_is_listed_while_it_runs(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            stage = Stage(tmp_path, nursery)
            formation = formation_of(stage, Ports(PortRange(20000, 29999)))
            one_offs = OneOffs(formation, spawn=stage.spawn)
            app = await stage.app("tasks")
            runtime = await formation.start(app, nursery)
            with pytest.raises(Invalid, match="deploy it first"):
                await one_offs.run_detached(app, "echo never")

            slug = stage.slug(sample_files(), {"shout": 'echo "$WORD $EXTRA"; exec sleep 60'})
            v2 = await release(stage, app, slug, {"WORD": "hello", "EXTRA": "config"})
            await formation.released(app, slug)
            dyno = await one_offs.run_detached(app, "shout", env={"EXTRA": "from -e"})
            assert dyno.name.startswith("run.") and dyno.type == "run"
            assert (dyno.command, dyno.state, dyno.release_version) == (
                'echo "$WORD $EXTRA"; exec sleep 60',  # a process type names its command
                "starting",
                v2.version,
            )
            ring = stage.logplex.ring(app.id)
            await wait_until(
                lambda: any(
                    line.dyno == dyno.name and line.text == "hello from -e"
                    for line in ring.recent(200)
                ),
                lambda: formation.changed,
            )
            [listed] = formation.dynos(app)
            assert (listed.name, listed.state) == (dyno.name, "up")

            quick = await one_offs.run_detached(app, "true")
            assert quick.name != dyno.name
            await wait_until(
                lambda: [d.name for d in formation.dynos(app)] == [dyno.name],
                lambda: formation.changed,
            )
            assert runtime.manager.one_offs.keys() == {dyno.name}
            nursery.cancel_scope.cancel()
