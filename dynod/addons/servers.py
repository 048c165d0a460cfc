"""One app's add-on servers under the same supervisor as its dynos (proc/manager.py: the
restart ladder on a crash, the stop sequence, a cgroup each where dynod makes them), in a dyno
manager of their own: the formation's reconciling never touches them. A server runs in its
data directory; where it runs as a uid of its own, that directory is bound at BOUND_HOME in
its own mount namespace (dynod's private data directory above it is closed to that uid)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio

from dynod.addons.provider import BOUND_HOME
from dynod.core.logline import LogSink
from dynod.proc.dyno import DynoProcess, DynoSpec
from dynod.proc.manager import DynoSlot, Manager
from dynod.proc.reaper import Reaper
from dynod.proc.seams import DynoPlan, Home, ManagerSettings, Processes


class _Launcher(Processes):
    """Real processes; bound: in a mount namespace of their own with their directory bound."""

    def __init__(self, reaper: Reaper | None, bound: bool) -> None:
        super().__init__(reaper)
        self.bound = bound

    async def run(
        self,
        spec: DynoSpec,
        sink: LogSink,
        hurry: trio.Event,
        task_status: trio.TaskStatus[DynoProcess],
    ) -> int:
        if self.bound:
            spec = attrs.evolve(spec, private_tmp=True, bind_at=BOUND_HOME)
        return await super().run(spec, sink, hurry, task_status)


class Servers:
    """The servers of one app's add-ons, by add-on name. Their output goes to `sink` (the app's
    log ring) as `app[redis-1]`."""

    def __init__(
        self, sink: LogSink, settings: ManagerSettings, reaper: Reaper | None, *, bound: bool
    ) -> None:
        self.bound = bound
        self.homes: dict[str, Path] = {}
        settings = attrs.evolve(settings, cycle_after=None, tty=False, private_tmp=False)
        self.manager = Manager(sink, self, settings, launcher=_Launcher(reaper, bound))

    def home(self, directory: Path) -> str:
        """Where a server sees its data directory."""
        return BOUND_HOME if self.bound else str(directory)

    @asynccontextmanager
    async def checkout(self, plan: DynoPlan) -> AsyncIterator[Home]:
        yield Home(self.homes[plan.name])

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.manager.run([], task_status=task_status)

    def start(self, name: str, directory: Path, command: str, port: int) -> DynoSlot:
        self.homes[name] = directory
        home = Path(self.home(directory))
        return self.manager.start_dyno(DynoPlan(name, command, {}, port=port, home=home))

    def running(self, name: str) -> bool:
        return name in self.manager.slots

    async def stop(self, name: str) -> None:
        """Stop a server gracefully and wait until it is down."""
        self.manager.stop_dyno(name)
        while True:
            changed = self.manager.changed
            if name not in self.manager.slots:
                break
            await changed.wait()
        self.homes.pop(name, None)

    def restart(self, name: str) -> None:
        self.manager.restart_dyno(name)

    def close(self) -> None:
        self.manager.stop_all()
