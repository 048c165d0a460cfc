"""Who listens on a dyno's PORT: the listening sockets of /proc/net/tcp and tcp6, and whether
they all belong to the dyno's own processes (docs/platform.md, "Ports"). A squatter's socket
never makes a dyno up, so the router never sends it the dyno's requests."""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Iterable

import attrs

from dynod.proc.orphans import proc_stat

_LISTEN = "0A"  # TCP_LISTEN in the `st` column


class Listening(enum.Enum):
    NOTHING = "nothing listens on the port"
    OWN = "only the dyno's own processes listen on it"
    FOREIGN = "a process outside the dyno listens on it"


@attrs.frozen
class Listener:
    port: int
    uid: int
    inode: int


def parse_listeners(table: str) -> list[Listener]:
    """The listening sockets of one /proc/net/tcp or tcp6 table: each line after the header is
    `sl local_address rem_address st … uid timeout inode …`, the address as HEX:PORT."""
    found = []
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != _LISTEN:
            continue
        found.append(
            Listener(int(fields[1].rpartition(":")[2], 16), int(fields[7]), int(fields[9]))
        )
    return found


def judge(listeners: Iterable[Listener], own_inodes: set[int]) -> Listening:
    """OWN only when something listens and every listener is one of the dyno's sockets: one
    foreign socket (on any address, or sharing the port through SO_REUSEPORT) could take the
    router's connections."""
    inodes = [listener.inode for listener in listeners]
    if not inodes:
        return Listening.NOTHING
    return Listening.OWN if all(inode in own_inodes for inode in inodes) else Listening.FOREIGN


def listeners(port: int) -> list[Listener]:
    """Every TCP socket listening on `port`, IPv4 and IPv6 (blocking reads: run on a thread)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                text = f.read()
        except OSError:
            continue  # no IPv6
        found += [listener for listener in parse_listeners(text) if listener.port == port]
    return found


def socket_inodes(pids: Iterable[int]) -> set[int]:
    """The inodes of the sockets the processes `pids` hold open."""
    inodes = set()
    for pid in pids:
        try:
            names = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue  # gone
        for name in names:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{name}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    return inodes


def session_members(leader: int) -> list[int]:
    """The live processes of the session `leader` started: a dyno's processes (its cgroup's,
    once dynos have one, is the stronger answer: a process can leave a session)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = proc_stat(entry)  # state, ppid, pgrp, session, …
        if fields is not None and len(fields) > 3 and int(fields[3]) == leader:
            if fields[0] not in (b"Z", b"X"):
                members.append(int(entry))
    return members


def listening(port: int, members: Callable[[], Iterable[int]]) -> Listening:
    """Who listens on `port`, judged against the sockets of the dyno's processes, `members()`
    (only asked when something listens). Blocking reads of /proc: run on a thread."""
    found = listeners(port)
    if not found:
        return Listening.NOTHING
    return judge(found, socket_inodes(members()))
