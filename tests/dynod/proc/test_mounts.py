"""A dyno's own mounts (README, "How a dyno runs"): what one dyno writes in /tmp and /dev/shm no
other dyno sees, nor its next start, nor the host; its directory stays where it was even when
it is in /tmp; and no mount of a dyno's is ever in the host's mount table."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import trio

from dynod.errors import DynodError
from dynod.proc.child import Child, joining
from dynod.proc.mounts import Mounts, available, mountable, overlays_work, plan

needs_mounts = pytest.mark.skipif(
    not available(),
    reason="needs root and a kernel that lets dynod unshare a mount namespace (CI runs as root)",
)


def host_mounts(pid: int | str = "self") -> set[str]:
    """The mount points on /tmp and /dev/shm (or below) in the mount tables of `pid`'s namespace
    and of PID 1's: what a dyno's mounts would add there if they leaked."""
    found = set()
    for who in (pid, 1):
        try:
            table = Path(f"/proc/{who}/mountinfo").read_text()
        except OSError:
            continue
        for line in table.splitlines():
            point = line.split()[4]
            if point.startswith(("/tmp", "/dev/shm")):
                found.add(line)
    return found


def test_plan_binds_back_a_directory_a_tmpfs_hides() -> None:
    tmp = os.path.realpath("/tmp")
    found = plan(f"{tmp}/dynod-x/web.1-abc")
    assert found.make == (f"{tmp}/dynod-x".encode(), f"{tmp}/dynod-x/web.1-abc".encode())
    assert found.keep == f"{tmp}/dynod-x/web.1-abc".encode()
    assert plan("/srv/app") == Mounts()
    assert plan("/tmpx/app") == Mounts()


def spawn(script: str, cwd: Path, mounts: Mounts | None) -> Child:
    return Child.spawn(
        ["bash", "-c", script],
        stdin=subprocess.DEVNULL,
        stdout=2,
        stderr=2,
        cwd=str(cwd),
        env={"PATH": "/usr/bin:/bin"},
        mounts=mounts,
    )


async def wait_for(path: Path, child: Child) -> None:
    with trio.fail_after(30):
        while not path.exists():
            assert child.poll() is None, "the dyno ended before it was ready"
            await trio.sleep(0.02)


@needs_mounts
@pytest.mark.trio
async def test_tmp_and_shm_are_each_dynos_own(tmp_path: Path) -> None:
    before = host_mounts()
    mark = f"mark-{os.getpid()}-{tmp_path.name}"
    ready = tmp_path / "ready"  # tmp_path is in /tmp: the dyno sees its directory still
    writer = spawn(
        f"echo a > /tmp/{mark} && echo a > /dev/shm/{mark} && touch {ready} && "
        "grep -q ' /tmp tmpfs ' /proc/self/mounts && exec sleep 60",
        tmp_path,
        plan(str(tmp_path)),
    )
    try:
        await wait_for(ready, writer)
        assert not Path("/tmp", mark).exists() and not Path("/dev/shm", mark).exists()
        assert host_mounts() == before
        other = spawn(
            f"test ! -e /tmp/{mark} && test ! -e /dev/shm/{mark} && test -e {ready} && "
            "echo b > /tmp/b && echo b > /dev/shm/b && test -w ./ready",
            tmp_path,
            plan(str(tmp_path)),
        )
        with trio.fail_after(30):
            assert await other.wait() == 0
    finally:
        os.kill(writer.pid, 9)
        with trio.fail_after(30):
            await writer.wait()
    again = spawn(f"test ! -e /tmp/{mark} && test ! -e /dev/shm/{mark}", tmp_path, Mounts())
    with trio.fail_after(30):
        assert await again.wait() == 0
    assert host_mounts() == before


@needs_mounts
@pytest.mark.trio
async def test_a_dyno_user_gets_a_writable_tmp(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o777)
    script = "echo x > /tmp/x && echo x > /dev/shm/x && test $(id -u) = 65534 && touch done"
    child = Child.spawn(
        ["bash", "-c", script],
        stdin=subprocess.DEVNULL,
        stdout=2,
        stderr=2,
        cwd=str(tmp_path),
        env={"PATH": "/usr/bin:/bin"},
        preexec_fn=joining(None, (65534, 65534), mounts=Mounts()),
    )
    with trio.fail_after(30):
        assert await child.wait() == 0
    assert (tmp_path / "done").exists()


@needs_mounts
def test_a_failing_step_refuses_the_start_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(DynodError, match="private /tmp and /dev/shm") as caught:
        spawn("touch started", tmp_path, Mounts(make=(b"/tmp/no/such/parent",)))
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "started").exists()


def test_paths_overlayfs_options_cannot_name_are_not_used() -> None:
    assert mountable("/var/lib/dynod/slugs/trees")
    assert not any(mountable(f"/data/a{c}b") for c in ",:\\")
    assert not overlays_work(Path("/tmp/a,b"), Path("/tmp"))  # then dynos get copies
