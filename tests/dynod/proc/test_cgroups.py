"""A cgroup per dyno (dynod/proc/cgroups.py): hostile processes that re-fork into new sessions
are stopped with their dyno, and with dynod after `kill -9`; pids.max and memory use."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import trio

from dynod.proc.cgroups import Hierarchies, Tree, detect
from dynod.proc.dyno import DynoSpec, dyno_env, run_dyno
from dynod.proc.reaper import Reaper
from tests.helpers import PY, Collector, chain_running, none_running, wait_until

needs_cgroups = pytest.mark.skipif(
    os.geteuid() != 0 or detect() is None,
    reason="cgroups need root and a cgroup v2 hierarchy (CI runs as root)",
)

# Every 50 ms a new process in a session of its own, its parent gone: never old enough to be
# caught by a sweep. Each one has its argument on its command line.
HOSTILE = Path(__file__).resolve().parents[3] / "fixtures" / "hostile" / "refork.sh"


def spec(tmp_path: Path, command: str, **kw: object) -> DynoSpec:
    env = dyno_env({}, name="run.1", port=None, home=tmp_path)
    return DynoSpec("run.1", command, tmp_path, env, **kw)  # type: ignore[arg-type]


def chain_alive(marker: str) -> bool:
    return not none_running(marker)


def test_without_cgroup_v2_dynod_keeps_process_groups(tmp_path: Path) -> None:
    # A hierarchy where a node can be made but has no cgroup.kill (not cgroupfs, or Linux < 5.14)
    assert Tree.open(found=Hierarchies(tmp_path)) is None
    assert list(tmp_path.iterdir()) == []
    with Reaper(cgroups=False) as reaper:
        assert reaper.cgroups is None and reaper.cgroup("web.1") is None


@pytest.fixture
def reaper() -> Iterator[Reaper]:
    with Reaper() as reaper:
        assert reaper.cgroups is not None
        yield reaper


@needs_cgroups
def test_escapees_of_a_finished_dyno_are_gone_with_its_cgroup(
    tmp_path: Path, reaper: Reaper
) -> None:
    marker = f"chain-{secrets.token_hex(6)}"
    sink = Collector()

    async def main() -> int:
        with trio.fail_after(20):
            command = f"setsid {HOSTILE} {marker} & sleep 0.5; setsid sleep 501 & sleep 0.3"
            return await run_dyno(spec(tmp_path, command), sink, reaper=reaper)

    assert trio.run(main) == 0
    assert not chain_alive(marker)
    assert any(t.startswith("Killed ") for t in sink.texts(source="heroku")), sink.texts()
    assert reaper.cgroups is not None
    assert not reaper.cgroups.children(), "the dyno's cgroup was not removed"


@needs_cgroups
def test_stop_ends_every_process_of_the_cgroup(tmp_path: Path, reaper: Reaper) -> None:
    marker = f"chain-{secrets.token_hex(6)}"
    sink = Collector()

    async def main() -> None:
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                command = f"setsid {HOSTILE} {marker} & echo ready; exec sleep 60"
                dyno = spec(tmp_path, command, stop_timeout=0.5)
                handle = await nursery.start(partial(run_dyno, dyno, sink, reaper=reaper))
                assert handle.cgroup is not None and handle.pid in handle.cgroup.procs()
                assert reaper.cgroups is not None and reaper.cgroups.holds(handle.pid)
                assert not reaper.cgroups.holds(os.getpid())
                await sink.wait_text("ready")
                assert wait_until(lambda: chain_running(marker), 5)
                nursery.cancel_scope.cancel()

    trio.run(main)
    assert not chain_alive(marker)
    heroku = sink.texts(source="heroku")
    assert heroku[0] == "Stopping all processes with SIGTERM"
    assert "Stopping all processes with SIGKILL" in heroku  # the chain shrugs SIGTERM off


@needs_cgroups
def test_kill_9_of_dynod_ends_a_reforking_chain_within_2_s(tmp_path: Path) -> None:
    marker = f"chain-{secrets.token_hex(6)}"
    script = (
        "import sys, trio\n"
        "from functools import partial\n"
        "from pathlib import Path\n"
        "from dynod.proc.dyno import DynoSpec, dyno_env, run_dyno\n"
        "from dynod.proc.reaper import Reaper\n"
        "from tests.helpers import chain_running, Collector\n"
        "home = Path(sys.argv[1])\n"
        "env = dyno_env({}, name='web.1', port=None, home=home)\n"
        f"command = 'setsid {HOSTILE} {marker} & exec sleep 600'\n"
        "with Reaper() as reaper:\n"
        "    assert reaper.cgroups is not None\n"
        "    dyno = DynoSpec('web.1', command, home, env)\n"
        "    trio.run(partial(run_dyno, dyno, Collector(), reaper=reaper))\n"
    )
    root = Path(__file__).resolve().parents[3]
    dynod = subprocess.Popen([PY, "-c", script, str(tmp_path)], cwd=root, start_new_session=True)
    try:
        assert wait_until(lambda: chain_running(marker), 10), "the chain never started"
        os.kill(dynod.pid, signal.SIGKILL)
        dynod.wait(timeout=5)
        assert wait_until(lambda: not chain_alive(marker), 2.0), "the chain outlived dynod"
    finally:
        dynod.kill()
        dynod.wait()


@needs_cgroups
def test_a_dyno_has_a_pids_limit_and_its_memory_is_read(tmp_path: Path) -> None:
    tree = Tree.open(pids_max=20)
    assert tree is not None
    try:
        cgroup = tree.cgroup("web.1", pids_max=tree.pids_max)
        child = subprocess.Popen(
            ["bash", "-c", "for i in $(seq 40); do sleep 30 & done; wait"],
            preexec_fn=cgroup.join,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert wait_until(lambda: len(cgroup.procs()) >= 20, 5)
            assert len(cgroup.procs()) <= 20
            usage = cgroup.memory_usage()
            if tree.roots[1:]:  # this machine's v1 memory hierarchy, or v2's own
                assert usage is not None and usage > 0
        finally:
            cgroup.kill()
            child.wait(timeout=5)
        assert trio.run(cgroup.wait_empty, 2.0)
        cgroup.remove()
        assert not cgroup.path.exists()
    finally:
        tree.remove()
    assert not tree.path.exists()
