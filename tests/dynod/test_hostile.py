"""Hostile processes against `dynod serve`: a chain that re-forks into a new session every 50 ms
(fixtures/hostile/refork.sh) is gone within 2 s of `kill -9` of dynod, and of the restart after
dynod and its reaper were both killed; escapees of a one-off and of a destroyed app are gone too.
Only a cgroup per dyno holds them (README "How a dyno runs")."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from dynod.core.procfile import load_procfile
from dynod.platform.runtime import sweep_scratch
from dynod.slugs.pack import pack_slug
from tests.dynod.test_serve import SAMPLE, call, start, stop
from tests.helpers import (
    ROOT,
    cgroups_used,
    chain_running,
    none_running,
    pid_alive,
    running,
    wait_until,
)

pytestmark = pytest.mark.skipif(
    not cgroups_used(), reason="needs a root dynod that can make cgroups (CI runs as root)"
)

HOSTILE = ROOT / "fixtures" / "hostile" / "refork.sh"


@pytest.fixture
def marker() -> str:
    """A name no other process has: the chain's argument (the file it notes pids in)."""
    return f"chain-{secrets.token_hex(6)}"


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    (data / "dynod.toml").write_text("[dynos]\nstop_timeout = 1\n")
    yield data
    sweep_scratch(data)  # what a dynod killed by the test left (a next start would sweep it)


def deploy(tmp_path: Path, base: str, token: str, procfile: str) -> None:
    """The sample app with the hostile script beside it; returns once web.1 is up."""
    app_dir = tmp_path / "hostile-app"
    shutil.copytree(SAMPLE, app_dir)
    shutil.copy(HOSTILE, app_dir / "refork.sh")
    (app_dir / "Procfile").write_text(procfile)
    tarball = pack_slug(app_dir, tmp_path / "app.tgz").path.read_bytes()
    types = {t.name: t.command for t in load_procfile(app_dir / "Procfile").types}
    call(base, token, "POST", "/apps", {"name": "hostile"})
    slug = call(base, token, "POST", "/apps/hostile/slugs", {"process_types": types})
    call(base, None, "PUT", slug["blob"]["url"], data=tarball)
    call(base, token, "POST", "/apps/hostile/releases", {"slug": slug["id"]})
    assert wait_until(
        lambda: [d["state"] for d in call(base, token, "GET", "/apps/hostile/dynos")] == ["up"],
        60,
    )


def web_with_chain(marker: str) -> str:
    """A web process that starts a chain; each start's has a marker of its own, `marker-N`."""
    return f"web: setsid ./refork.sh {marker}-$(date +%s%N) & exec python3 web.py\n"


def full_marker(marker: str) -> str:
    """The marker of the chain running now (its last argument)."""
    for pid in running(marker):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                return f.read().rstrip(b"\0").split(b"\0")[-1].decode()
        except OSError:
            continue
    raise AssertionError(f"no chain {marker} runs")


def reaper_of(serve: subprocess.Popen[str]) -> int:
    """The reaper sidecar's pid: dynod's child running reaper_child.py."""
    with open(f"/proc/{serve.pid}/task/{serve.pid}/children") as f:
        children = [int(pid) for pid in f.read().split()]
    for pid in children:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"reaper_child.py" in f.read():
                return pid
    raise AssertionError(f"dynod {serve.pid} has no reaper among {children}")


def test_a_reforking_chain_is_gone_within_2_s_of_kill_9_of_dynod(
    tmp_path: Path, data_dir: Path, marker: str
) -> None:
    serve, base, token = start(data_dir)
    try:
        deploy(tmp_path, base, token, web_with_chain(marker))
        assert wait_until(lambda: chain_running(marker), 10), "the chain never started"
    finally:
        serve.kill()
        serve.communicate(timeout=10)
    assert wait_until(lambda: none_running(marker), 2.0), "the chain outlived dynod"


def test_a_restart_ends_the_chain_when_dynod_and_its_reaper_were_killed(
    tmp_path: Path, data_dir: Path, marker: str
) -> None:
    serve, base, token = start(data_dir)
    try:
        deploy(tmp_path, base, token, web_with_chain(marker))
        assert wait_until(lambda: chain_running(marker), 10), "the chain never started"
        reaper = reaper_of(serve)
        os.kill(reaper, signal.SIGKILL)
    finally:
        serve.kill()
        serve.communicate(timeout=10)
    assert wait_until(lambda: not pid_alive(reaper), 5)
    first = full_marker(marker)  # the restarted app starts a chain of its own: not this one
    assert not none_running(first), "nothing left for the restart to end"
    again, base, token = start(data_dir)
    try:
        assert wait_until(lambda: none_running(first), 2.0), "the chain outlived the restart"
    finally:
        out = stop(again, signal.SIGTERM)
    assert "left in the cgroups of an earlier dynod" in out, out


def test_escapees_of_a_one_off_are_gone_when_it_ends(
    tmp_path: Path, data_dir: Path, marker: str
) -> None:
    serve, base, token = start(data_dir)
    try:
        deploy(tmp_path, base, token, "web: exec python3 web.py\n")
        sleeper = f"sleep 501.{secrets.randbelow(10**6)}"
        command = f"setsid ./refork.sh {marker} & setsid {sleeper} & sleep 1"
        dyno = call(base, token, "POST", "/apps/hostile/dynos", {"command": command})
        assert wait_until(lambda: chain_running(marker) and bool(running(sleeper)), 10)
        assert wait_until(
            lambda: (
                dyno["name"]
                not in [d["name"] for d in call(base, token, "GET", "/apps/hostile/dynos")]
            ),
            20,
        )
        assert wait_until(lambda: none_running(marker) and not running(sleeper), 2.0)
    finally:
        stop(serve, signal.SIGTERM)


def test_escapees_of_a_destroyed_app_are_gone(tmp_path: Path, data_dir: Path, marker: str) -> None:
    serve, base, token = start(data_dir)
    try:
        deploy(tmp_path, base, token, web_with_chain(marker))
        assert wait_until(lambda: chain_running(marker), 10), "the chain never started"
        call(base, token, "DELETE", "/apps/hostile")
        # the chain shrugs SIGTERM off: gone once the 1 s grace is over
        assert wait_until(lambda: none_running(marker), 5.0), "the chain outlived its app"
    finally:
        stop(serve, signal.SIGTERM)
