"""What the dyno manager (proc/manager.py) is given: its settings, each dyno's plan, where a
dyno's directory comes from (a Workspace: the app in place, or a slug's), where platform dynos'
ports come from, and how processes are launched (the real Launcher, `Processes`; tests give
fakes). The local runner's formation as plans is here too."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Protocol

import attrs
import trio

from dynod.core.logline import LogSink
from dynod.core.names import MAX_LINE_BYTES
from dynod.core.policy import (
    BOOT_TIMEOUT,
    CLEAN_AFTER,
    CYCLE_AFTER,
    CYCLE_JITTER,
    MEMORY_QUOTA_MB,
    MEMORY_SAMPLE,
    PLATFORM_LADDER,
    STOP_TIMEOUT,
)
from dynod.proc.attached import Terminal
from dynod.proc.dyno import DynoProcess, DynoSpec, run_dyno
from dynod.proc.mounts import Overlay
from dynod.proc.ports import Listening, listening
from dynod.proc.reaper import Reaper


@attrs.frozen
class ManagerSettings:
    ladder: tuple[float, ...] = PLATFORM_LADDER
    clean_after: float = CLEAN_AFTER
    stop_timeout: float = STOP_TIMEOUT
    boot_timeout: float = BOOT_TIMEOUT
    cycle_after: float | None = CYCLE_AFTER  # None: never cycle (the local runner)
    cycle_jitter: float = CYCLE_JITTER
    tty: bool = False
    max_line_bytes: int = MAX_LINE_BYTES
    exit_on_crash: bool = False
    owner: tuple[int, int] | None = None  # the platform's unprivileged dyno user, when root
    private_tmp: bool = False  # dynos get their own /tmp and /dev/shm (the platform's, as root)
    memory_sample: float | None = MEMORY_SAMPLE  # seconds between samples; None: never
    memory_quota_mb: float = MEMORY_QUOTA_MB  # each dyno's, unless its type has its own
    memory_quotas: Mapping[str, float] = attrs.field(factory=dict)  # by process type
    memory_kill: bool = True  # R15 past twice the quota; False: R14 only (the local runner)

    def quota_of(self, kind: str) -> float:
        return self.memory_quotas.get(kind, self.memory_quota_mb)


@attrs.frozen
class DynoPlan:
    """One dyno the formation (or a one-off request) wants."""

    name: str  # "web.1"
    command: str
    config_vars: Mapping[str, str]
    port: int | None = None  # a fixed PORT (the local runner); else the manager's PortSource's
    inherit: Mapping[str, str] | None = None  # the local runner's inherited environment
    home: Path | None = None  # HOME when not the dyno's directory (the local runner)
    slug_id: str | None = None  # what the platform's workspace makes the dyno's directory from
    release_version: int | None = None  # a one-off's release, for `ps`
    terminal: Terminal | None = None  # an attached one-off's client (proc/attached.py)

    @property
    def type(self) -> str:
        return self.name.rsplit(".", 1)[0]

    @property
    def web(self) -> bool:
        return self.type == "web"


@attrs.frozen
class Home:
    """A dyno's directory: `path`, and when it is an overlay of a slug's tree, the overlay its
    process mounts there in a mount namespace of its own (dynod/proc/mounts.py)."""

    path: Path
    overlay: Overlay | None = None


class Workspace(Protocol):
    """Where a dyno's directory comes from: the app in place, or a fresh one from a slug."""

    def checkout(self, plan: DynoPlan) -> AbstractAsyncContextManager[Home]: ...


class InPlace:
    """The local runner's workspace: every dyno runs in the app directory itself."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @asynccontextmanager
    async def checkout(self, plan: DynoPlan) -> AsyncIterator[Home]:
        yield Home(self.root)


class PortSource(Protocol):
    """Where platform dynos' PORTs come from: a fresh free port at each start, given back
    when that process has ended (platform/runtime.py's AppPorts)."""

    async def take(self) -> int:
        """A free port no other dyno holds; raises DynodError when there is none."""
        ...

    async def give_back(self, port: int) -> None:
        """Done even when the caller is being cancelled."""
        ...


class Launcher(Protocol):
    """How a dyno's process runs: real children (Processes), or a controllable fake in tests."""

    async def run(
        self,
        spec: DynoSpec,
        sink: LogSink,
        hurry: trio.Event,
        task_status: trio.TaskStatus[DynoProcess],
    ) -> int:
        """Run to completion and return the exit status; cancellation stops the process."""
        ...

    async def listens(self, port: int, process: DynoProcess) -> Listening:
        """Who listens on `port`, the PORT of the booting web dyno `process`."""
        ...


class Processes:
    """The real launcher: dynos are process groups (proc/dyno.py). With `members` (the pids of
    a dyno given its leader, e.g. its session), a port is the dyno's only when its own
    processes hold every socket listening on it (the platform, proc/ports.py): a dyno in a
    cgroup is judged by every process of its cgroup instead, whatever sessions they started;
    without `members`, anything accepting TCP on it will do (the local runner: its ports are
    the user's own)."""

    def __init__(
        self,
        reaper: Reaper | None = None,
        *,
        members: Callable[[int], Iterable[int]] | None = None,
    ) -> None:
        self.reaper = reaper
        self.members = members

    async def run(
        self,
        spec: DynoSpec,
        sink: LogSink,
        hurry: trio.Event,
        task_status: trio.TaskStatus[DynoProcess],
    ) -> int:
        return await run_dyno(spec, sink, reaper=self.reaper, hurry=hurry, task_status=task_status)

    async def listens(self, port: int, process: DynoProcess) -> Listening:
        members = self.members
        if members is None:
            return Listening.OWN if await _accepts(port) else Listening.NOTHING
        cgroup = process.cgroup
        pids = cgroup.procs if cgroup is not None else lambda: members(process.pid)
        return await trio.to_thread.run_sync(listening, port, pids)


async def _accepts(port: int) -> bool:
    for host in ("127.0.0.1", "::1"):
        try:
            with trio.move_on_after(1.0):
                stream = await trio.open_tcp_stream(host, port)
                await stream.aclose()
                return True
        except OSError:
            continue
    return False


def local_plans(
    formation: Mapping[str, int],
    commands: Mapping[str, str],
    *,
    port_of: Callable[[str, int], int],
    config_vars: Mapping[str, str],
    inherit: Mapping[str, str] | None,
) -> list[DynoPlan]:
    """The local runner's formation: `web.1 … web.N` per type, ports by foreman's scheme."""
    return [
        DynoPlan(
            f"{name}.{i}",
            commands[name],
            config_vars,
            port=port_of(name, i),
            inherit=inherit,
        )
        for name, count in formation.items()
        for i in range(1, count + 1)
    ]
