"""`dynod serve` as root gives every dyno its own /tmp and /dev/shm (README "How a dyno runs"):
a one-off does not see what web.1 wrote, the host sees neither, and no mount namespace of a
dyno's outlives `kill -9` of dynod."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from dynod.platform.runtime import sweep_scratch
from dynod.proc.mounts import available
from tests.dynod.proc.test_mounts import host_mounts
from tests.dynod.test_hostile import deploy
from tests.dynod.test_serve import call, start
from tests.helpers import cgroups_used, running, wait_until

pytestmark = pytest.mark.skipif(
    not (available() and cgroups_used()),
    reason="needs a root dynod that can make cgroups and unshare mounts (CI runs as root)",
)


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    (data / "dynod.toml").write_text("[dynos]\nstop_timeout = 1\n")
    yield data
    sweep_scratch(data)  # what a dynod killed by the test left


def namespace_used(ns: str) -> bool:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/mnt") == ns:
                    return True
            except OSError:
                continue
    return False


def test_each_dyno_has_its_own_tmp_and_no_mount_outlives_kill_9(
    tmp_path: Path, data_dir: Path
) -> None:
    mark = f"tmp-{secrets.token_hex(6)}"
    before = host_mounts()
    serve, base, token = start(data_dir)
    try:
        deploy(
            tmp_path,
            base,
            token,
            f"web: touch /tmp/{mark} /dev/shm/{mark} && (exec -a {mark}-web sleep 600 &)"
            " && exec python3 web.py\n",
        )
        assert wait_until(lambda: bool(running(f"{mark}-web")), 10), "web.1 never wrote"
        web = running(f"{mark}-web")[0]
        ns = os.readlink(f"/proc/{web}/ns/mnt")
        assert ns != os.readlink(f"/proc/{serve.pid}/ns/mnt")
        assert not Path("/tmp", mark).exists() and not Path("/dev/shm", mark).exists()
        command = f"test -e /tmp/{mark} || test -e /dev/shm/{mark} || exec -a {mark}-run sleep 30"
        call(base, token, "POST", "/apps/hostile/dynos", {"command": command})
        assert wait_until(lambda: bool(running(f"{mark}-run")), 10), "the one-off saw web.1's"
        assert host_mounts(serve.pid) == before
    finally:
        serve.kill()
        serve.communicate(timeout=10)
    assert wait_until(lambda: not namespace_used(ns), 5), "a dyno's mounts outlived dynod"
    assert host_mounts() == before
