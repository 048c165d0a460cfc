"""The API's own events in the app's log (README, Drains): Heroku's wording, `by user`, and
each release's event before its `Release vN created` line."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from dynod.core.logline import APP
from dynod.platform.events import ApiEvents
from dynod.state.apps import App
from tests.dynod.platform.stage import Stage
from tests.dynod.platform.test_releases import Fakes, releases_of


@pytest.mark.trio
async def test_api_events_come_before_their_release_line_in_herokus_words(
    tmp_path: Path,
) -> None:
    async with trio.open_nursery() as nursery:
        stage = Stage(tmp_path, nursery)
        releases = releases_of(stage, Fakes(stage))
        app = await stage.app("shop")
        slug = stage.slug({"web.py": ""}, {"web": "python3 web.py"})
        await releases.create(app, slug_id=slug.id, config_vars={}, description="Deploy abc1234")
        await releases.set_config(app, {"FOO": "1", "BAR": "2"})
        await releases.set_config(app, {"FOO": None})
        await releases.rollback(app, "v2")
        lines = stage.logplex.ring(app.id).recent(20)
        assert {(line.source, line.dyno) for line in lines} == {(APP, "api")}
        assert [line.text for line in lines] == [
            "Deploy abc1234 by user me@localhost",
            "Release v2 created by user me@localhost",
            "Set FOO, BAR config vars by user me@localhost",
            "Release v3 created by user me@localhost",
            "Remove FOO config vars by user me@localhost",
            "Release v4 created by user me@localhost",
            "Rollback to v2 by user me@localhost",
            "Release v5 created by user me@localhost",
        ]
        nursery.cancel_scope.cancel()


def test_an_api_event_is_one_call_with_the_app_and_the_text() -> None:
    said: list[tuple[str, str]] = []
    events = ApiEvents(lambda app, text: said.append((app.name, text)), "me@localhost")
    events(App("id", "shop", "", ""), "Attach REDIS (redis-1)")
    assert said == [("shop", "Attach REDIS (redis-1) by user me@localhost")]
