"""Drains alone, over a temporary registry (README, Drains): adding and removing as `app[api]`
events, refusals, the drain's own lines delivered to a syslog listener, and drains that come
back (and deliver) after a restart."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio

from dynod.core.drains import MAX_DRAINS
from dynod.errors import Invalid, NotFound
from dynod.platform.drains import Drains
from dynod.platform.events import ApiEvents
from dynod.state.apps import AppStore
from tests.dynod.logs.test_drains import SyslogListener
from tests.dynod.platform.stage import Stage


def drains_of(stage: Stage, apps: AppStore | None = None) -> Drains:
    return Drains(
        apps or stage.apps,
        stage.logplex,
        events=ApiEvents(stage.log, "me@localhost"),
        spawn=stage.spawn,
        draw=lambda: 0.0,
    )


@pytest.mark.trio
async def test_drains_are_added_listed_and_removed_as_api_events(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        stage = Stage(tmp_path, nursery)
        drains = drains_of(stage)
        app = await stage.app("shop")
        await drains.start(app)
        listener = SyslogListener()
        port = await listener.serve(nursery)
        url = f"syslog://127.0.0.1:{port}"

        drain = await drains.add(app, url)
        assert drain.token.startswith("d.") and len(drain.token) == 38
        await listener.wait_for(1)  # the drain receives its own addition
        assert listener.texts() == [f"Add drain {url} by user me@localhost"]
        assert (listener.frames[0].source, listener.frames[0].dyno) == ("app", "api")
        stage.logplex.ring(app.id).publish("app", "web.1", ["hello"], time.time())
        await listener.wait_for(2)

        secret = await drains.add(app, "https://me:hunter2@127.0.0.1:9/logs")
        assert ("shop", "Add drain https://me:...@127.0.0.1:9/logs by user me@localhost") in (
            stage.logged
        )
        assert drains.all(app) == [drain, secret]
        assert drains.get(app, url) == drains.get(app, drain.token) == drains.get(app, drain.id)
        with pytest.raises(Invalid, match="already a drain of shop"):
            await drains.add(app, url)
        with pytest.raises(Invalid, match="scheme ftp:// is not supported"):
            await drains.add(app, "ftp://127.0.0.1/")
        for n in range(MAX_DRAINS - 2):
            await drains.add(app, f"syslog://127.0.0.1:{n + 1}")
        with pytest.raises(Invalid, match=f"has {MAX_DRAINS} drains"):
            await drains.add(app, "syslog://127.0.0.1:999")

        removed = await drains.remove(app, url)
        assert removed == drain and drain not in drains.all(app)
        assert drains.statistics(drain) is None
        assert ("shop", f"Remove drain {url} by user me@localhost") in stage.logged
        with pytest.raises(NotFound, match="Couldn't find drain"):
            await drains.remove(app, url)
        drains.forget(app)
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_drains_survive_a_restart_and_deliver_again(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        stage = Stage(tmp_path, nursery)
        listener = SyslogListener()
        port = await listener.serve(nursery)
        app = await stage.app("shop")
        first = drains_of(stage)
        await first.start(app)
        drain = await first.add(app, f"syslog://127.0.0.1:{port}")
        first.forget(app)  # as when dynod stops

        again = drains_of(stage, AppStore(tmp_path / "data"))  # a fresh registry read
        await again.start(app)
        assert again.all(app) == [drain]
        stage.logplex.ring(app.id).publish("app", "web.1", ["after the restart"], time.time())
        with trio.fail_after(10):
            while "after the restart" not in listener.texts():
                await listener.changed.wait()
        nursery.cancel_scope.cancel()
