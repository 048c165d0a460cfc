"""How much memory a dyno uses: its cgroup's count where it has one, else the resident memory
of its whole process tree read from /proc (the main process, every descendant, what is still
in its process group, and the escapees tied to it: dynod/proc/orphans.py).

The reads are blocking (a walk of /proc): `sample` runs them in a worker thread, and the dyno
manager (proc/manager.py) calls it every `[dynos] memory_sample` seconds on trio's clock.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import trio

from dynod.core.policy import MEMORY_QUOTA_MB
from dynod.proc.dyno import DynoProcess
from dynod.proc.orphans import proc_stat
from dynod.proc.reaper import Reaper
from dynod.state.files import heroku_time

if TYPE_CHECKING:  # the local runner reads no dynod.toml unless there is one
    from dynod.state.config import DynosConfig

MB = 1024 * 1024
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def tree_rss(pid: int, groups: Iterable[int] = ()) -> int:
    """Bytes resident in process `pid`, its descendants, and the members of process groups
    `groups` (and theirs), from one pass over /proc. 0 when /proc shows none of them."""
    wanted = set(groups)
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    seeds = [pid]
    try:
        entries = os.listdir("/proc")
    except OSError:
        return 0
    for entry in entries:
        if not entry.isdigit():
            continue
        fields = proc_stat(entry)
        # From the state on: ppid is the 2nd, pgrp the 3rd, rss (pages) the 22nd.
        if fields is None or len(fields) < 22 or fields[0] in (b"Z", b"X"):
            continue
        child = int(entry)
        rss[child] = int(fields[21]) * _PAGE
        children.setdefault(int(fields[1]), []).append(child)
        if int(fields[2]) in wanted:
            seeds.append(child)
    seen: set[int] = set()
    while seeds:
        current = seeds.pop()
        if current in seen:
            continue
        seen.add(current)
        seeds.extend(children.get(current, ()))
    return sum(rss.get(p, 0) for p in seen)


class MemorySampler(Protocol):
    """How much memory a dyno uses, in MB (None: nothing to read): MemoryProbe, or a fake in
    tests of the dyno manager."""

    async def sample(self, process: DynoProcess) -> float | None: ...


class MemoryProbe:
    """The real probe: a dyno's memory in MB, or None when nothing can be read."""

    def __init__(self, reaper: Reaper | None = None) -> None:
        self.reaper = reaper

    async def sample(self, process: DynoProcess) -> float | None:
        # The escapees are read here, on the loop's thread, where the reaper's sweep changes them.
        escaped = self.reaper.escapees_of(process.pgid) if self.reaper is not None else []
        return await trio.to_thread.run_sync(read, process, [process.pgid, *escaped])


def read(process: DynoProcess, groups: Iterable[int]) -> float | None:
    """MB used by the dyno: its cgroup's count, else its tree's (with `groups`); None when
    it is gone. Blocking."""
    used = process.memory_usage()
    if used is None:
        used = tree_rss(process.pid, groups)
        if not used:
            return None
    return used / MB


@attrs.frozen
class MemorySample:
    """A dyno's last reading: what `ps --json` shows."""

    mb: float
    quota_mb: float
    at: float  # wall clock

    def to_json(self) -> dict[str, Any]:
        """As the API shows it (docs/api.md): resident MB, the quota, and when."""
        return {
            "rss_mb": round(self.mb, 1),
            "quota_mb": self.quota_mb,
            "percent": round(100 * self.mb / self.quota_mb, 1),
            "sampled_at": heroku_time(self.at),
        }


def memory_settings(config: DynosConfig, *, kill: bool) -> dict[str, Any]:
    """ManagerSettings' memory fields from `[dynos]`: a quota set there always kills (R15);
    without one, only when `kill` (the platform, not the local runner)."""
    quota = config.memory_quota_mb
    return {
        "memory_sample": config.memory_sample,
        "memory_quota_mb": quota.default if quota is not None else MEMORY_QUOTA_MB,
        "memory_quotas": quota.by_type() if quota is not None else {},
        "memory_kill": kill or quota is not None,
    }
