"""The reaper's own program: the sidecar dynod/proc/reaper.py starts, watching dyno groups.

Run as `python -I -S reaper_child.py [CGROUP...]` (by path: standard library only, no site
packages). It reads `+PGID` / `-PGID` lines from stdin; at EOF (dynod exited, even by SIGKILL) it
sends SIGTERM to every group it still knows and to the groups their descendants started, and to
every process in dynod's cgroups (its arguments: the v2 node first, then the v1 ones), SIGKILL
half a second later (`cgroup.kill` for the cgroups), then removes the cgroups.
"""

from __future__ import annotations

import os
import signal
import sys
import time

GRACE = 0.5  # seconds between SIGTERM and SIGKILL
NAP = 0.02  # seconds between reads of the pipe, and between checks while groups end


def read_groups() -> set[int]:
    """The groups dynod watches, until EOF on stdin. It reads what is there, then naps before
    reading again: a formation starting 100 dynos then costs dynod a few wake-ups of this process,
    not one per dyno (a woken reader takes the CPU from the writer at once), and the end of dynod
    is still noticed within the nap."""
    groups: set[int] = set()
    pending = b""
    while True:
        chunk = os.read(0, 65536)
        if not chunk:
            return groups
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            if line[:1] == b"+":
                groups.add(int(line[1:]))
            elif line[:1] == b"-":
                groups.discard(int(line[1:]))
        time.sleep(NAP)


def descendants(groups: set[int]) -> set[int]:
    """Sessions that processes of the groups started (setsid) are theirs too: every group holding
    a descendant of a member joins them (read once, before anything is signalled)."""
    kids: dict[int, list[int]] = {}
    pgrp: dict[int, int] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                raw = f.read()
        except (OSError, ValueError):
            continue
        fields = raw[raw.rfind(b")") + 2 :].split()
        pid = int(entry)
        kids.setdefault(int(fields[1]), []).append(pid)
        pgrp[pid] = int(fields[2])
    todo = [pid for pid, group in pgrp.items() if group in groups]
    seen = set(todo)
    while todo:
        for kid in kids.get(todo.pop(), ()):
            if kid not in seen:
                seen.add(kid)
                todo.append(kid)
    return {pgrp[pid] for pid in seen}


def send(groups: set[int], sig: int) -> set[int]:
    """Signal every group; the ones that still exist."""
    alive = set()
    for pgid in groups:
        try:
            os.killpg(pgid, sig)
            alive.add(pgid)
        except OSError:
            pass
    return alive


def cgroups(node: str) -> list[str]:
    """The node and every cgroup below it, deepest first."""
    found: list[str] = []
    for top, dirs, _ in os.walk(node, topdown=False):
        found.extend(os.path.join(top, name) for name in dirs)
    return [*found, node]


def populated(node: str) -> bool:
    try:
        with open(os.path.join(node, "cgroup.events")) as f:
            return "populated 1" in f.read()
    except OSError:
        return False


def terminate(node: str) -> None:
    """SIGTERM to every process in the cgroups (each list read until it holds no one new)."""
    for cgroup in cgroups(node):
        sent: set[int] = set()
        for _ in range(100):
            try:
                with open(os.path.join(cgroup, "cgroup.procs")) as f:
                    fresh = {int(pid) for pid in f.read().split()} - sent
            except (OSError, ValueError):
                break
            if not fresh:
                break
            for pid in fresh:
                try:
                    os.kill(pid, signal.SIGTERM)
                except OSError:
                    pass
            sent |= fresh


def kill_and_remove(nodes: list[str]) -> None:
    """`cgroup.kill` the v2 node (its whole subtree), wait until it is empty, remove every
    node's cgroups."""
    try:
        with open(os.path.join(nodes[0], "cgroup.kill"), "w") as f:
            f.write("1")
    except OSError:
        pass
    deadline = time.monotonic() + 2.0
    while populated(nodes[0]) and time.monotonic() < deadline:
        time.sleep(NAP)
    for node in nodes:
        for cgroup in cgroups(node) if os.path.isdir(node) else ():
            try:
                os.rmdir(cgroup)
            except OSError:
                pass
        base = os.path.dirname(node)
        if os.path.basename(base).startswith("dynod-"):  # a data directory's node, if now empty
            try:
                os.rmdir(base)
            except OSError:
                pass


def main() -> None:
    nodes = sys.argv[1:]
    groups = read_groups()
    try:
        groups |= descendants(groups)
    except Exception:
        pass
    groups = send(groups, signal.SIGTERM)
    if nodes:
        terminate(nodes[0])
    deadline = time.monotonic() + GRACE
    while (groups or (nodes and populated(nodes[0]))) and time.monotonic() < deadline:
        time.sleep(NAP)
        groups = send(groups, 0)
    send(groups, signal.SIGKILL)
    if nodes:
        kill_and_remove(nodes)


if __name__ == "__main__":
    main()
