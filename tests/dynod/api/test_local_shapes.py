"""A local run's API answers in dynod serve's shapes (docs/api.md): the same keys for a dyno, a
process type and an app, so `dyno` and the interactive shell read both alike."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from dynod.api import common
from dynod.api.local import LocalApi
from dynod.api.local_run import LocalDyno, LocalType
from dynod.platform.formation import DynoInfo, FormationEntry
from dynod.state.apps import App

APP = App("id", "shop", "2026-12-07T00:00:00Z", "2026-12-07T00:00:00Z")


def local_api() -> LocalApi:
    return LocalApi(cast(Any, SimpleNamespace(name="shop", root=Path("/w/shop"))))


def test_a_dyno_and_a_process_type_have_the_platforms_keys() -> None:
    api = local_api()
    dyno = api.dyno_json(LocalDyno("web.1", "web", "python app.py", "up", 0.0))
    served = common.dyno_json(
        cast(Any, None), APP, DynoInfo("web.1", "web", "python app.py", "up", "", None)
    )
    assert dyno.keys() == served.keys()
    assert dyno["app"] == {"id": api.id, "name": "shop"}
    entry = api.formation_json(LocalType("web", 2, "python app.py"))
    assert entry.keys() == common.formation_json(APP, FormationEntry("web", 2, "x")).keys()
    assert (entry["type"], entry["quantity"], entry["size"]) == ("web", 2, "standard-1X")


def test_the_app_has_the_platforms_keys() -> None:
    platform = SimpleNamespace(
        releases=SimpleNamespace(current=lambda app: None),
        user="me@example.com",
        config=SimpleNamespace(router=SimpleNamespace(domain="localhost")),
        git_url=lambda app: "",
    )
    state = cast(Any, SimpleNamespace(platform=platform, router=SimpleNamespace(port=80)))
    assert local_api().app_json().keys() == common.app_json(state, APP).keys()
