"""Formation alone, with real dynos from a runtime factory of the test's own: the first deploy's
formation, scaling, the router's view, restarts and stops, and a release command's status."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import trio

from dynod.core.formation import quantity as _quantity
from dynod.errors import Invalid, NotFound
from dynod.platform.formation import Formation
from dynod.platform.runtime import Ports
from dynod.state.apps import App
from dynod.state.config import PortRange
from tests.dynod.platform.stage import Stage, formation_of, release, sample_files, wait_until

SAMPLE_TYPES = {"web": "python3 web.py", "worker": "python3 worker.py"}


def up(formation: Formation, app: App, count: int, kind: str = "web") -> bool:
    return sum(1 for d in formation.dynos(app) if d.type == kind and d.state == "up") == count


async def http_get(port: int) -> str:
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            data = b""
            while chunk := await stream.receive_some(65536):
                data += chunk
    return data.decode().split("\r\n\r\n", 1)[1]


@pytest.mark.trio
async def test_a_release_runs_its_formation_and_scaling_changes_it(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            stage = Stage(tmp_path, nursery)
            formation = formation_of(stage, Ports(PortRange(20000, 29999)))
            app = await stage.app("shop")
            runtime = await formation.start(app, nursery)
            assert formation.dynos(app) == [] and formation.web_targets(app) == []
            slug = stage.slug(sample_files(), SAMPLE_TYPES)
            await release(stage, app, slug, {"GREETING": "bonjour"})
            await formation.released(app, slug)
            assert [(e.type, e.quantity) for e in formation.entries(app)] == [
                ("web", 1),
                ("worker", 0),
            ]
            await wait_until(lambda: up(formation, app, 1), lambda: runtime.manager.changed)
            [(name, port, state)] = formation.web_targets(app)
            assert (name, state) == ("web.1", "up")
            assert await http_get(port) == "Hello from web.1 (bonjour)\n"

            scaled = await formation.scale(app, {"web": "+1", "worker": 1})
            assert [(e.type, e.quantity) for e in scaled] == [("web", 2), ("worker", 1)]
            said = "Scaled to web@2:Standard-1X worker@1:Standard-1X by user me@localhost"
            assert ("shop", said) in stage.logged
            await wait_until(
                lambda: up(formation, app, 2) and up(formation, app, 1, "worker"),
                lambda: runtime.manager.changed,
            )
            with pytest.raises(NotFound, match=r"process type \(release\)"):
                await formation.scale(app, {"release": 1})
            with pytest.raises(Invalid, match="between 0 and 100"):
                await formation.scale(app, {"web": 101})
            assert stage.apps.formation(app) == {"web": 2, "worker": 1}  # nothing half-applied

            await formation.released(app, slug)  # a later release keeps the saved formation
            assert stage.apps.formation(app) == {"web": 2, "worker": 1}

            formation.restart(app, "worker")
            with pytest.raises(NotFound, match="Couldn't find dyno or process type nope"):
                formation.stop(app, "nope")
            v3 = await release(stage, app, slug, {})
            assert await formation.run_command(app, v3, "exit 3", "release.3") == 3  # a phase

            formation.stop_app(app)
            assert formation.web_targets(app) == []
            await wait_until(lambda: not runtime.manager.slots, lambda: runtime.manager.changed)
            nursery.cancel_scope.cancel()


def test_a_number_quantity_is_absolute_and_only_a_string_is_relative() -> None:
    assert [
        _quantity(2, 5, "web"),
        _quantity("2", 5, "web"),
        _quantity("+1", 5, "web"),
        _quantity("-1", 5, "web"),
    ] == [2, 2, 6, 4]
    with pytest.raises(Invalid, match=r"between 0 and 100, not -3\."):
        _quantity(-3, 1, "web")  # a JSON number is never a delta
    for silly, shown in ((True, "true"), (1.5, "1.5"), (None, "null"), ("lots", '"lots"')):
        with pytest.raises(Invalid, match=rf"not {re.escape(shown)}\.$"):
            _quantity(silly, 1, "web")
