"""Nothing a dyno starts may outlive dynod: process-group liveness checks, and the reaper.

The reaper is a tiny sidecar process in its own session. dynod tells it, over a pipe, which
process groups are dynos; when the pipe reaches EOF (dynod exited, even by SIGKILL) it sends
SIGTERM to every group it still knows, and SIGKILL half a second later.
"""

from __future__ import annotations

import os
import subprocess
import sys

# Runs under `python -S`: nothing but the standard library, no site packages.
REAPER_CODE = r"""
import os, signal, sys, time
groups = set()
for line in sys.stdin.buffer:
    line = line.strip()
    if line[:1] == b"+":
        groups.add(int(line[1:]))
    elif line[:1] == b"-":
        groups.discard(int(line[1:]))
def send(sig):
    alive = set()
    for pgid in groups:
        try:
            os.killpg(pgid, sig)
            alive.add(pgid)
        except OSError:
            pass
    return alive
groups = send(signal.SIGTERM)
deadline = time.monotonic() + 0.5
while groups and time.monotonic() < deadline:
    time.sleep(0.02)
    groups = send(0)
send(signal.SIGKILL)
"""


class Reaper:
    """Handle on the sidecar. `watch`/`forget` are cheap synchronous writes to its pipe."""

    def __init__(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-S", "-c", REAPER_CODE],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            start_new_session=True,  # out of reach of the terminal's Ctrl-C
        )
        assert self._process.stdin is not None
        self._fd = self._process.stdin.fileno()

    def watch(self, pgid: int) -> None:
        self._send(b"+%d\n" % pgid)

    def forget(self, pgid: int) -> None:
        self._send(b"-%d\n" % pgid)

    def _send(self, message: bytes) -> None:
        try:
            os.write(self._fd, message)
        except OSError:
            pass  # the reaper is gone (killed by hand): dynos lose their safety net, not their work

    def close(self) -> None:
        """A clean exit: every dyno was stopped already; the reaper leaves with nothing to do."""
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def __enter__(self) -> Reaper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def group_alive(pgid: int) -> bool:
    """Whether any process of the group still runs. Zombies do not count: under a PID 1 that
    never reaps, killed orphans would otherwise look alive forever."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not os.path.isdir("/proc/self"):
        return True
    return bool(live_group_members(pgid))


def live_group_members(pgid: int) -> list[int]:
    """The non-zombie processes in a group, read from /proc (Linux)."""
    members: list[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return members  # no procfs (macOS): callers fall back on killpg alone
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may contain spaces and parentheses: parse after its last ')'.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            members.append(int(entry))
    return members

