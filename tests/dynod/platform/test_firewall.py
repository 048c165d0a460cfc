"""Dyno ports closed to other local users (platform/firewall.py): real nftables rules and real
connections from processes of other uids, alone and in a running Platform. Needs root and `nft`
(CI runs as root)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
import trio

from dynod.platform.firewall import PREFIX, Firewall
from dynod.platform.root import Platform
from dynod.platform.runtime import AppPorts, Ports
from dynod.proc.dyno import DYNO_PATH
from dynod.state.config import PortRange
from tests.dynod.platform.test_platform import (
    SAMPLE,
    http_get,
    slug_of,
    until,
    up,
    web_port,
    with_platform,
)

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("nft") is None,
    reason="needs root and nftables (`apt-get install nftables`) to load rules",
)

APP_UID, OTHER_UID = 1900000001, 1900000002  # uids no account uses, as [dynos] uid_range's

CONNECT = (
    "import socket, sys\n"
    "try:\n"
    "    socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5).close()\n"
    "except ConnectionRefusedError:\n"
    "    sys.exit(3)\n"
)


def connects(port: int, uid: int | None) -> bool:
    """Whether a process running as `uid` (None: as this test, root) can connect to `port`."""
    python = shutil.which("python3", path=DYNO_PATH)  # one every uid may run, as dynos do
    assert python is not None
    done = subprocess.run([python, "-c", CONNECT, str(port)], user=uid, timeout=20)
    assert done.returncode in (0, 3)
    return done.returncode == 0


def tables() -> str:
    return subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout


@pytest.mark.trio
async def test_a_dyno_port_admits_only_dynod_and_its_app() -> None:
    firewall = Firewall.here()
    assert firewall is not None and await firewall.open()
    try:
        with socket.socket() as dyno:
            dyno.bind(("127.0.0.1", 0))
            dyno.listen(8)
            port = dyno.getsockname()[1]
            await firewall.guard(port, APP_UID)
            assert not await trio.to_thread.run_sync(connects, port, OTHER_UID)
            assert await trio.to_thread.run_sync(connects, port, APP_UID)
            assert await trio.to_thread.run_sync(connects, port, None)  # dynod: the router
            await firewall.release(port, APP_UID)
            assert await trio.to_thread.run_sync(connects, port, OTHER_UID)  # no dyno's now
    finally:
        await firewall.close()
    assert firewall.table not in tables()


@pytest.mark.trio
async def test_an_app_s_ports_are_guarded_while_held_and_leftovers_are_dropped() -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()  # a dynod that was killed left its table behind
    leftover = Firewall("nft", f"{PREFIX}{gone.pid}-1")
    assert await leftover.open()
    firewall = Firewall.here()
    assert firewall is not None and await firewall.open()
    try:
        assert leftover.table not in tables() and firewall.table in tables()
        ports = AppPorts(Ports(PortRange(64500, 64599)), firewall, APP_UID)
        port = await ports.take()
        with socket.socket() as dyno:
            dyno.bind(("127.0.0.1", port))
            dyno.listen(8)
            assert not await trio.to_thread.run_sync(connects, port, OTHER_UID)
            await ports.give_back(port)
            assert await trio.to_thread.run_sync(connects, port, OTHER_UID)
            assert port not in ports.pool.taken
    finally:
        await firewall.close()


def test_no_app_reaches_another_app_s_dyno_past_the_router(tmp_path: Path) -> None:
    tables_while_running: list[str] = []

    async def scenario(platform: Platform) -> None:
        assert platform.firewall is not None
        tables_while_running.append(platform.firewall.table)
        shop, other = await platform.create_app("shop"), await platform.create_app("other")
        slug = slug_of(platform, SAMPLE, tmp_path)
        await platform.releases.create(
            shop, slug_id=slug, config_vars={}, description="Deploy", wait=True
        )
        await until(platform, up(platform, shop, 1))
        port = web_port(platform, shop)
        shop_uid, other_uid = (platform.users.owner(app.id) or (0, 0) for app in (shop, other))
        assert not await trio.to_thread.run_sync(connects, port, other_uid[0])
        assert await trio.to_thread.run_sync(connects, port, shop_uid[0])
        assert (await http_get(port)).startswith("Hello from web.1")  # dynod itself

    with_platform(tmp_path, scenario)
    assert tables_while_running and tables_while_running[0] not in tables()
