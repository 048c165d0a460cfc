"""Shared test helpers: a sink that keeps every line, and condition waits with deadlines."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import trio

from dynod.core.logline import LogLine

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


class Collector:
    """A LogSink that keeps every line it is given, in order."""

    def __init__(self) -> None:
        self.lines: list[LogLine] = []
        self.changed = trio.Event()

    def publish(self, source: str, dyno: str, texts: Sequence[str], when: float) -> None:
        self.lines.extend(LogLine(when, source, dyno, text) for text in texts)
        self.changed.set()
        self.changed = trio.Event()

    def texts(self, dyno: str | None = None, source: str | None = None) -> list[str]:
        return [
            line.text
            for line in self.lines
            if (dyno is None or line.dyno == dyno) and (source is None or line.source == source)
        ]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        with trio.fail_after(timeout):
            while not predicate():
                await self.changed.wait()

    async def wait_text(self, text: str, timeout: float = 10.0) -> None:
        await self.wait_for(lambda: any(text in line.text for line in self.lines), timeout)


def pid_alive(pid: int) -> bool:
    """True while the pid runs (zombies count as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :].split()[0] not in (b"Z", b"X")


@functools.cache
def cgroups_used() -> bool:
    """Whether a dynod run by these tests puts its dynos in cgroups (root, cgroup v2 here): the
    README's "Processes" says which way a run uses."""
    from dynod.proc.cgroups import Tree

    tree = Tree.open()
    if tree is None:
        return False
    tree.remove()
    return True


def running(marker: str) -> list[int]:
    """The live processes whose command line holds `marker`."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    named = marker.encode() in f.read()
            except OSError:
                continue
            if named and pid_alive(int(entry)):
                found.append(int(entry))
    return found


def chain_running(marker: str) -> bool:
    """Whether fixtures/hostile/refork.sh's chain `marker` has handed over at least once: a
    process of it runs with the emptied environment (SIGTERM no longer stops it)."""
    for pid in running(marker):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if not f.read():
                    return True
        except OSError:
            continue
    return False


def none_running(marker: str, looks: int = 6) -> bool:
    """No process holds `marker` in `looks` looks 50 ms apart: a chain that hands over to a new
    process can slip past one look at /proc (born after the listing, its parent gone by the
    time it is read), never past several."""
    for _ in range(looks):
        if running(marker):
            return False
        time.sleep(0.05)
    return True


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, every: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return predicate()


def dynod(
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the `dynod` command as a user would, from this checkout."""
    full_env = dict(os.environ if env is None else env)
    return subprocess.run(
        [PY, "-m", "dynod.cli", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
    )


def spawn_dynod(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    full_env = dict(os.environ if env is None else env)
    return subprocess.Popen(
        [PY, "-m", "dynod.cli", *args],
        cwd=cwd,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def start_serve(
    data: Path, log: Path, env: dict[str, str], timeout: float = 60.0
) -> subprocess.Popen[bytes]:
    """`dynod serve` on `data`, its API and router on ports of their own, its output appended
    to `log`; returns once it has written api-url (and fails with the log if it never does)."""
    (data / "api-url").unlink(missing_ok=True)
    with log.open("ab") as out:
        process = subprocess.Popen(
            [
                PY,
                "-m",
                "dynod.cli",
                "serve",
                "--data",
                str(data),
                "--api",
                "127.0.0.1:0",
                "--router",
                "127.0.0.1:0",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    up = wait_until(lambda: (data / "api-url").exists() or process.poll() is not None, timeout)
    assert up and process.poll() is None, log.read_text()
    return process


def stop_serve(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, as a user stops it (dynos stop gracefully); SIGKILL if it hangs a minute."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
