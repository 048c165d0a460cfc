"""The port hijack of issue 11, by a hostile app: its dyno loops binding another app's web port
(found in /proc/net/tcp) while that dyno restarts. The squatter never gets a request, and the
victim comes up on a fresh port, the one the router is given."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from dynod.platform.routing import web_table
from dynod.platform.runtime import Ports
from dynod.state.config import PortRange
from router.backend import DynoState, WebDyno
from tests.dynod.platform.stage import Stage, formation_of, release, sample_files, wait_until
from tests.dynod.platform.test_formation import http_get, up

SQUAT = """\
import os, socket, time
target = int(os.environ["TARGET"])
for _ in range(60000):  # about a minute of tries, a millisecond apart
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", target))
        break
    except OSError:
        s.close()
        time.sleep(0.001)
s.listen()
print(f"squatting {target}", flush=True)
while True:
    conn, _ = s.accept()
    print("stolen request", conn.recv(65536)[:40], flush=True)
    conn.close()
"""


@pytest.mark.trio
async def test_a_port_squatter_never_gets_a_request(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            stage = Stage(tmp_path, nursery)
            formation = formation_of(stage, Ports(PortRange(20000, 29999)))
            shop, hostile = await stage.app("shop"), await stage.app("hostile")
            runtime = await formation.start(shop, nursery)
            await formation.start(hostile, nursery)

            # The victim binds its PORT half a second after it starts: the restart's gap.
            slug = stage.slug(sample_files(), {"web": "sleep 0.5; exec python3 web.py"})
            await release(stage, shop, slug, {})
            await formation.released(shop, slug)
            await wait_until(lambda: up(formation, shop, 1), lambda: runtime.manager.changed)
            [(_, held, _)] = formation.web_targets(shop)

            squat = stage.slug({"squat.py": SQUAT}, {"worker": "python3 squat.py"})
            await release(stage, hostile, squat, {"TARGET": str(held)})
            await formation.released(hostile, squat)
            await formation.scale(hostile, {"worker": 1})
            await wait_until(lambda: up(formation, hostile, 1, "worker"), lambda: formation.changed)

            formation.restart(shop, "web.1")
            victim, squatter = stage.logplex.ring(shop.id), stage.logplex.ring(hostile.id)

            def said(ring_lines: list[str], text: str) -> int:
                return sum(1 for line in ring_lines if text in line)

            def settled() -> bool:
                victim_said = [line.text for line in victim.recent(500)]
                squatter_said = [line.text for line in squatter.recent(500)]
                return (
                    said(victim_said, "State changed from starting to up") >= 2
                    and said(squatter_said, f"squatting {held}") == 1
                )

            await wait_until(settled, lambda: formation.changed)
            [(name, port, state)] = formation.web_targets(shop)
            assert (name, state) == ("web.1", "up") and port != held
            assert web_table(runtime.manager) == [
                WebDyno("web.1", ("127.0.0.1", port), DynoState.UP)
            ]
            assert await http_get(port) == "Hello from web.1 (hi)\n"
            assert not [line for line in squatter.recent(500) if "stolen" in line.text]
            nursery.cancel_scope.cancel()
