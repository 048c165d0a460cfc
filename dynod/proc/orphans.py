"""Processes that leave their dyno's process group: a `setsid` child, a double-forking daemon
(`redis-server --daemonize yes`). Stopping a dyno signals its process group, which they left.

On Linux dynod makes itself a child subreaper (prctl PR_SET_CHILD_SUBREAPER): a process orphaned
anywhere below it is re-parented to dynod instead of init. A sweep twice a second looks at the
orphans dynod adopted:

- an orphan still in a dyno's group is left to that group's stop, and reaped once it exits;
- an orphan in a session of its own (an escapee) is tied back to its dyno by the `DYNO` and
  `PORT` it inherited, and stopped with that dyno; the reaper sidecar watches its group too, so
  it ends with dynod even after `kill -9`. An escapee whose dyno has ended is killed at once.

dynod's other children are left alone: the reaper sidecar and the process-group leaders it
watches (dynos and builds, which trio waits for), and children in dynod's own process group
(`cp`, `git` run by subprocess, which wait for them).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import NamedTuple

_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Orphans below dynod come to dynod rather than to init (Linux only)."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes  # here: only `dynod start` and `dynod serve` need it, once

    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the running program's libc; no ldconfig run
        return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def children() -> list[int]:
    """dynod's main thread's children: the orphans it adopted (the kernel hands them to the
    main thread), the reaper sidecar, dynos (spawned from the event loop's thread, and watched
    by the reaper before the loop runs anything else, so never mistaken for orphans), and
    builds (spawned by worker threads: listed here once that thread has exited)."""
    pid = os.getpid()
    try:
        with open(f"/proc/{pid}/task/{pid}/children", "rb") as f:
            return [int(p) for p in f.read().split()]
    except (OSError, ValueError):
        return []


def proc_stat(pid: int | str) -> list[bytes] | None:
    """The fields of /proc/PID/stat from the 3rd (state) on, or None if the process is gone. The
    command name before them may hold spaces and parentheses: they start after its last ')'."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return raw[raw.rfind(b")") + 2 :].split()


class Stat(NamedTuple):
    state: str
    pgrp: int


def stat(pid: int) -> Stat | None:
    fields = proc_stat(pid)
    if fields is None or len(fields) < 3:
        return None
    return Stat(fields[0].decode(), int(fields[2]))  # fields 3 (state) and 5 (pgrp)


def identity(pid: int) -> tuple[str, str] | None:
    """The (DYNO, PORT) a process inherited from its dyno, if it kept them."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            entries = f.read().split(b"\0")
    except OSError:
        return None
    env = dict(entry.split(b"=", 1) for entry in entries if b"=" in entry)
    dyno, port = env.get(b"DYNO"), env.get(b"PORT")
    if dyno is None:
        return None
    return dyno.decode(errors="replace"), (port or b"").decode(errors="replace")


def kill_groups(pgids: Iterable[int], signum: int) -> None:
    for pgid in pgids:
        try:
            os.killpg(pgid, signum)
        except OSError:
            pass


def reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
