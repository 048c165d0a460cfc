"""Nothing a dyno starts may outlive dynod: process-group liveness checks, and the reaper.

The reaper is a tiny sidecar process in its own session. dynod tells it, over a pipe, which
process groups are dynos; when the pipe reaches EOF (dynod exited, even by SIGKILL) it sends
SIGTERM to every group it still knows, and SIGKILL half a second later (its program is
dynod/proc/reaper_child.py). Where dynod makes cgroups (dynod/proc/cgroups.py) it empties
dynod's cgroups the same way, with `cgroup.kill`, and removes them.

If the reaper dies too (both killed at once), the platform's record of running dyno groups
(`Reaper(record=…)`, an append-only file in the data directory) lets the next dynod find and end
what is left before it starts anything; and the trees of cgroups under the same data
directory's node.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from dynod.core.policy import PIDS_MAX
from dynod.proc import orphans
from dynod.proc.cgroups import Cgroup, Tree, tree_base

# The sidecar's program, run by path: under `-I -S` dynod's package is not importable.
CHILD_PROGRAM = Path(__file__).with_name("reaper_child.py")


class Reaper:
    """Handle on the sidecar. `watch`/`forget` are cheap synchronous writes to its pipe (and,
    with `record`, to the record file)."""

    def __init__(
        self, record: Path | None = None, *, cgroups: bool = True, pids_max: int = PIDS_MAX
    ) -> None:
        """`record`: the data directory's record of running groups. `cgroups`: run dynos and
        builds in cgroups where dynod can make them (`self.cgroups` says whether it could);
        `pids_max`, each dyno's limit there."""
        self.record = record
        self.leftovers: list[int] = []  # groups of an earlier dynod this one ended at start
        self.cgroups: Tree | None = None
        if cgroups:
            base = tree_base(record.parent) if record is not None else None
            self.cgroups = Tree.open(base, pids_max)
        self.emptied = 0  # processes left in an earlier dynod's cgroups, ended at start
        self._groups: dict[int, int] = {}  # pgid -> its leader's start time
        self._leaders: set[int] = set()  # every watched group (its leader's pid): dynos, builds
        self._dynos: dict[int, tuple[str, str]] = {}  # dyno pgid -> its (DYNO, PORT)
        self.escaped: dict[int, int] = {}  # group that left a dyno -> that dyno's pgid
        self._record_fd = -1
        self._record_lines = 0
        if record is not None:
            self.leftovers = end_leftovers(read_record(record))
            self._rewrite_record()
            if self.cgroups is not None:
                self.emptied = self.cgroups.empty_others()
        roots = [str(root) for root in self.cgroups.roots] if self.cgroups is not None else []
        self._process = subprocess.Popen(
            [sys.executable, "-I", "-S", str(CHILD_PROGRAM), *roots],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            start_new_session=True,  # out of reach of the terminal's Ctrl-C
        )
        assert self._process.stdin is not None
        self._fd = self._process.stdin.fileno()

    def cgroup(self, label: str, *, dyno: bool = True) -> Cgroup | None:
        """A new cgroup for dyno (or build) `label`, None where dynod makes no cgroups. A dyno's
        gets `pids_max`."""
        if self.cgroups is None:
            return None
        return self.cgroups.cgroup(label, pids_max=self.cgroups.pids_max if dyno else None)

    def watch(self, pgid: int, identity: tuple[str, str] | None = None) -> None:
        """Watch a group dynod started; `identity`, the (DYNO, PORT) of a dyno's group."""
        self._leaders.add(pgid)
        if identity is not None:
            self._dynos[pgid] = identity
        self._watch(pgid)

    def forget(self, pgid: int) -> None:
        self._leaders.discard(pgid)
        self._dynos.pop(pgid, None)
        self._forget(pgid)

    def _watch(self, pgid: int) -> None:
        self._send(b"+%d\n" % pgid)
        if self.record is not None:
            self._groups[pgid] = start_time(pgid) or 0
            self._note(b"+%d %d\n" % (pgid, self._groups[pgid]))

    def _forget(self, pgid: int) -> None:
        self._send(b"-%d\n" % pgid)
        if self.record is not None and self._groups.pop(pgid, None) is not None:
            self._note(b"-%d\n" % pgid)

    # ----- groups that left their dyno (dynod/proc/orphans.py)

    def escapees_of(self, pgid: int) -> list[int]:
        return [group for group, owner in self.escaped.items() if owner == pgid]

    def end_escapees(self, pgid: int) -> int:
        """SIGKILL what is left of the groups that left dyno `pgid`; how many processes that was."""
        killed = 0
        for group in self.escapees_of(pgid):
            members = live_group_members(group)
            killed += len(members)
            orphans.kill_groups([group], signal.SIGKILL)
            del self.escaped[group]
            self._forget(group)
        return killed

    def sweep(self) -> None:
        """Deal with dynod's adopted orphans (see dynod/proc/orphans.py): reap the dead, tie
        escapees
        to their dyno (or kill them when their dyno has ended). With cgroups, an escapee stays in
        its dyno's cgroup and ends with it: only the dead are reaped, and orphans outside the
        cgroups (a `git gc` dynod ran) are dealt with as before."""
        for group in [g for g in self.escaped if not group_alive(g)]:
            del self.escaped[group]
            self._forget(group)
        own = -1
        for pid in orphans.children():
            if pid == self._process.pid or pid in self._leaders:
                continue  # the sidecar; dynos and builds (trio waits for them)
            if own < 0:
                own = os.getpgrp()
            info = orphans.stat(pid)
            if info is None or info.pgrp == own:
                continue  # gone; or run by subprocess in dynod's own group (it waits for it)
            if info.state in ("Z", "X"):
                orphans.reap(pid)
                continue
            if self.cgroups is not None and self.cgroups.holds(pid):
                continue  # it ends with its dyno's (or build's) cgroup
            if info.pgrp in self._leaders or info.pgrp in self.escaped:
                continue  # still in a known group: it ends with that group
            identity = orphans.identity(pid)
            owner = next((g for g, known in self._dynos.items() if known == identity), None)
            if owner is not None:
                self.escaped[info.pgrp] = owner
                self._watch(info.pgrp)  # so that it ends with dynod too, even after kill -9
            elif identity is not None:
                orphans.kill_groups([info.pgrp], signal.SIGKILL)  # its dyno has ended
            else:  # not from a dyno (a build's daemon): it ends with dynod
                self.escaped[info.pgrp] = 0
                self._watch(info.pgrp)

    def _note(self, line: bytes) -> None:
        if self._record_lines > 10_000 + 2 * len(self._groups):
            self._rewrite_record()  # keep the append-only file small: only the live groups
            return
        try:
            os.write(self._record_fd, line)
            self._record_lines += 1
        except OSError:
            pass  # a full disk costs the restart safety net, not the dyno

    def _rewrite_record(self) -> None:
        assert self.record is not None
        if self._record_fd >= 0:
            os.close(self._record_fd)
        fresh = self.record.with_name(self.record.name + ".new")
        fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        os.write(fd, b"".join(b"+%d %d\n" % item for item in self._groups.items()))
        os.replace(fresh, self.record)
        self._record_fd, self._record_lines = fd, len(self._groups)

    def _send(self, message: bytes) -> None:
        try:
            os.write(self._fd, message)
        except OSError:
            pass  # the reaper is gone (killed by hand): dynos lose their safety net, not their work

    def close(self) -> None:
        """A clean exit: every dyno was stopped already; the reaper leaves with nothing to do."""
        if self._record_fd >= 0:
            os.close(self._record_fd)
            self._record_fd = -1
            if not self._groups and self.record is not None:
                self.record.unlink(missing_ok=True)
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self.cgroups is not None:
            self.cgroups.remove()  # the reaper did; unless it was killed

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
        fields = orphans.proc_stat(entry)
        if fields is None or len(fields) < 3:
            continue
        if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            members.append(int(entry))
    return members


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), None if it is gone."""
    fields = orphans.proc_stat(pid)
    return int(fields[19]) if fields is not None and len(fields) > 19 else None


def read_record(path: Path) -> dict[int, int]:
    """The groups an earlier dynod had running when it stopped writing: {pgid: start time}.
    A torn last line (killed mid-write) is ignored."""
    groups: dict[int, int] = {}
    try:
        data = path.read_bytes()
    except OSError:
        return groups
    for line in data.split(b"\n")[:-1]:  # what follows the last newline is torn or empty
        parts = line.split()
        try:
            if line[:1] == b"+" and len(parts) == 2:
                groups[int(parts[0][1:])] = int(parts[1])
            elif line[:1] == b"-":
                groups.pop(int(parts[0][1:]), None)
        except (ValueError, IndexError):
            continue
    return groups


def end_leftovers(groups: dict[int, int]) -> list[int]:
    """End the recorded groups that still run. A group is the same one we started when its
    leader is still the process we recorded (same start time), or when the leader is gone but
    members remain: Linux never hands out a process id still in use as a group id."""
    ours = []
    for pgid, started in groups.items():
        if not group_alive(pgid):
            continue
        leader = start_time(pgid)
        if leader is None or leader == started:
            ours.append(pgid)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pgid in ours:
            try:
                os.killpg(pgid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + 2.0
        while sig == signal.SIGTERM and time.monotonic() < deadline and any(map(group_alive, ours)):
            time.sleep(0.02)
    return ours
