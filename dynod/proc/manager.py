"""The dyno manager: keeps a formation running, and runs one-off dynos.

One supervisor for both modes. `dynod start` runs dynos in place (the app directory, a short
restart ladder); `dynod serve` runs them from slugs. The difference is a Workspace (where a
dyno's directory comes from) and ManagerSettings, never a second supervisor.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Protocol

import attrs
import trio

from dynod.core.lifecycle import DynoState, IllegalTransition, Lifecycle
from dynod.core.logline import HEROKU, LogSink
from dynod.core.policy import PLATFORM_LADDER, RestartLadder, cycle_delay
from dynod.errors import DynodError
from dynod.proc.dyno import DynoProcess, DynoSpec, dyno_env, run_dyno
from dynod.proc.reaper import Reaper

PORT_POLL = 0.05  # how often a booting web dyno's port is tried


@attrs.frozen
class ManagerSettings:
    ladder: tuple[float, ...] = PLATFORM_LADDER
    clean_after: float = 600.0
    stop_timeout: float = 30.0
    boot_timeout: float = 60.0
    cycle_after: float | None = 86400.0  # None: never cycle (the local runner)
    cycle_jitter: float = 12960.0
    tty: bool = False
    max_line_bytes: int = 10_000
    exit_on_crash: bool = False
    owner: tuple[int, int] | None = None  # the platform's unprivileged dyno user, when root


@attrs.frozen
class DynoPlan:
    """One dyno the formation (or a one-off request) wants."""

    name: str  # "web.1"
    command: str
    config_vars: Mapping[str, str]
    port: int | None = None
    inherit: Mapping[str, str] | None = None  # the local runner's inherited environment
    home: Path | None = None  # HOME when not the dyno's directory (the local runner)
    slug_id: str | None = None  # what the platform's workspace makes the dyno's directory from

    @property
    def type(self) -> str:
        return self.name.rsplit(".", 1)[0]

    @property
    def web(self) -> bool:
        return self.type == "web"


class Workspace(Protocol):
    """Where a dyno's directory comes from: the app in place, or a fresh copy of a slug."""

    def checkout(self, plan: DynoPlan) -> AbstractAsyncContextManager[Path]: ...


class InPlace:
    """The local runner's workspace: every dyno runs in the app directory itself."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @asynccontextmanager
    async def checkout(self, plan: DynoPlan) -> AsyncIterator[Path]:
        yield self.root


@attrs.define(eq=False)
class DynoSlot:
    """A formation dyno's live record: what `ps` lists and the router reads."""

    plan: DynoPlan
    lifecycle: Lifecycle
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    run_scope: trio.CancelScope | None = None  # the current process's lifetime
    wait_scope: trio.CancelScope | None = None  # a crashed dyno's wait on the ladder
    process: DynoProcess | None = None
    restarting: str = ""  # "Restarting" or "Cycling" while a restart is under way
    last_status: int | None = None

    @property
    def name(self) -> str:
        return self.plan.name

    @property
    def state(self) -> DynoState:
        return self.lifecycle.state


class Manager:
    def __init__(
        self,
        sink: LogSink,
        workspace: Workspace,
        settings: ManagerSettings = ManagerSettings(),
        *,
        reaper: Reaper | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.sink = sink
        self.workspace = workspace
        self.settings = settings
        self.reaper = reaper
        self.rng = rng or random.Random()
        self.slots: dict[str, DynoSlot] = {}
        self.hurry = trio.Event()  # set: stop sequences skip their grace and SIGKILL at once
        self.changed = trio.Event()  # replaced after every state change (router, tests, ps)
        self.crash: tuple[str, int] | None = None  # with exit_on_crash: who crashed, status
        self._nursery: trio.Nursery | None = None

    # ----- the formation

    async def run(
        self,
        plans: list[DynoPlan],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Supervise the formation until `stop_all` (or cancellation); returns once all are down."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for plan in plans:
                self.start_dyno(plan)
            task_status.started()
            await trio.sleep_forever()

    def start_dyno(self, plan: DynoPlan) -> DynoSlot:
        assert self._nursery is not None, "Manager.run is not running"
        slot = DynoSlot(plan, Lifecycle(DynoState.STARTING, time.time()))
        self.slots[plan.name] = slot
        self._nursery.start_soon(self._supervise, slot, name=f"dyno {plan.name}")
        self._notify()  # the router holds requests for a starting web dyno instead of H14
        return slot

    def stop_dyno(self, name: str) -> None:
        slot = self.slots.get(name)
        if slot is not None:
            self._move(slot, DynoState.DOWN)
            slot.scope.cancel()

    def stop_all(self) -> None:
        for name in list(self.slots):
            self.stop_dyno(name)
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def restart_dyno(self, name: str, why: str = "Restarting") -> None:
        """Stop the dyno's process and start a fresh one at once (on its current plan); a
        restart resets the crash ladder."""
        slot = self.slots.get(name)
        if slot is None or slot.state is DynoState.DOWN:
            return
        self._say(slot.name, why)
        if slot.state is DynoState.UP:
            self._move(slot, DynoState.STARTING)
        slot.restarting = why
        for scope in (slot.run_scope, slot.wait_scope):
            if scope is not None:
                scope.cancel()

    def reconcile(self, plans: list[DynoPlan]) -> None:
        """Make the running formation match `plans`: dynos no longer wanted stop (highest
        numbers first), new ones start, and those whose plan changed (a new release, new
        config) restart on it."""
        wanted = {plan.name: plan for plan in plans}
        for name in sorted((n for n in self.slots if n not in wanted), key=_instance, reverse=True):
            self.stop_dyno(name)
        for plan in plans:
            slot = self.slots.get(plan.name)
            if slot is None or slot.state is DynoState.DOWN:
                self.start_dyno(plan)
            elif slot.plan != plan:
                slot.plan = plan
                self.restart_dyno(plan.name)

    def web_dynos(self) -> list[DynoSlot]:
        return [slot for slot in self.slots.values() if slot.plan.web]

    async def _supervise(self, slot: DynoSlot) -> None:
        ladder = RestartLadder(self.settings.ladder, self.settings.clean_after)
        with slot.scope:
            try:
                while True:
                    status = await self._run_once(slot, ladder)
                    if slot.restarting:
                        slot.restarting = ""
                        ladder.reset()
                        continue
                    slot.last_status = status
                    self._move(slot, DynoState.CRASHED)
                    if self.settings.exit_on_crash:
                        self.crash = (slot.name, status)
                        self.stop_all()
                        return
                    delay = ladder.crashed(trio.current_time())
                    with trio.CancelScope() as slot.wait_scope:
                        await trio.sleep(delay)
                    slot.wait_scope = None
                    if slot.restarting:
                        slot.restarting = ""
                        ladder.reset()
                    self._move(slot, DynoState.STARTING)
            finally:
                self._move(slot, DynoState.DOWN)
                if self.slots.get(slot.name) is slot:
                    del self.slots[slot.name]
                self._notify()

    async def _run_once(self, slot: DynoSlot, ladder: RestartLadder) -> int:
        """One process lifetime: start, wait for it to be up, run until exit (or restart)."""
        plan = slot.plan
        exited = trio.Event()
        result: list[int] = []
        async with AsyncExitStack() as stack:
            home = await self._checkout(stack, plan)
            if home is None:
                return 1  # no directory to run in (a refused slug): a crash, on the ladder
            spec = self._spec(plan, home)
            self._say(plan.name, f"Starting process with command `{plan.command}`")

            async def process(task_status: trio.TaskStatus[DynoProcess]) -> None:
                try:
                    result.append(
                        await run_dyno(
                            spec,
                            self.sink,
                            reaper=self.reaper,
                            hurry=self.hurry,
                            task_status=task_status,
                        )
                    )
                finally:
                    exited.set()

            with trio.CancelScope() as slot.run_scope:
                async with trio.open_nursery() as nursery:
                    slot.process = await nursery.start(process)
                    if await self._boot(slot, exited):
                        ladder.started(trio.current_time())
                        self._move(slot, DynoState.UP)
                        await self._wait_or_cycle(slot, exited)
                    elif not exited.is_set():
                        nursery.cancel_scope.cancel()  # R10: stop it; counts as a crash
            slot.run_scope = None
            slot.process = None
        return result[0] if result else 137

    async def _boot(self, slot: DynoSlot, exited: trio.Event) -> bool:
        """A web dyno is up once its PORT accepts connections; others once started."""
        port = slot.plan.port
        if not slot.plan.web or port is None:
            return True
        with trio.move_on_after(self.settings.boot_timeout):
            while not exited.is_set():
                if await _accepts(port):
                    return True
                with trio.move_on_after(PORT_POLL):
                    await exited.wait()
            return False
        seconds = f"{self.settings.boot_timeout:g}"
        self._say(
            slot.name,
            "Error R10 (Boot timeout) -> Web process failed to bind to $PORT within "
            f"{seconds} seconds of launch",
        )
        return False

    async def _wait_or_cycle(self, slot: DynoSlot, exited: trio.Event) -> None:
        if self.settings.cycle_after is None:
            await exited.wait()
            return
        delay = cycle_delay(self.settings.cycle_after, self.settings.cycle_jitter, rng=self.rng)
        with trio.move_on_after(delay):
            await exited.wait()
            return
        self.restart_dyno(slot.name, "Cycling")
        await exited.wait()

    # ----- one-off dynos (the release phase, `dynod run`, run.N)

    async def run_one_off(self, plan: DynoPlan) -> int:
        """Run a dyno once to completion (never restarted); returns its exit status."""
        lifecycle = Lifecycle(DynoState.STARTING, time.time())
        result: list[int] = []
        async with AsyncExitStack() as stack:
            home = await self._checkout(stack, plan)
            if home is None:
                return 1
            spec = self._spec(plan, home)
            self._say(plan.name, f"Starting process with command `{plan.command}`")

            async def process(task_status: trio.TaskStatus[DynoProcess]) -> None:
                result.append(
                    await run_dyno(
                        spec,
                        self.sink,
                        reaper=self.reaper,
                        hurry=self.hurry,
                        task_status=task_status,
                    )
                )

            async with trio.open_nursery() as nursery:
                await nursery.start(process)
                self._say(plan.name, lifecycle.move(DynoState.UP, time.time()))
            self._say(plan.name, lifecycle.move(DynoState.COMPLETE, time.time()))
        return result[0]

    # ----- helpers

    async def _checkout(self, stack: AsyncExitStack, plan: DynoPlan) -> Path | None:
        """The dyno's directory, or None after saying why there is none (a slug refused at
        unpacking, such as R17): one dyno fails, never the manager or dynod."""
        try:
            return await stack.enter_async_context(self.workspace.checkout(plan))
        except DynodError as err:
            self._say(plan.name, str(err))
            return None

    def _spec(self, plan: DynoPlan, home: Path) -> DynoSpec:
        env = dyno_env(
            plan.config_vars,
            name=plan.name,
            port=plan.port,
            home=plan.home or home,
            inherit=plan.inherit,
        )
        env["PWD"] = str(home)
        return DynoSpec(
            plan.name,
            plan.command,
            home,
            env,
            tty=self.settings.tty,
            stop_timeout=self.settings.stop_timeout,
            max_line_bytes=self.settings.max_line_bytes,
            owner=self.settings.owner,
        )

    def _move(self, slot: DynoSlot, to: DynoState) -> None:
        try:
            text = slot.lifecycle.move(to, time.time())
        except IllegalTransition:
            return  # already there (a stop racing a crash): nothing to say
        self._say(slot.name, text)
        self._notify()

    def _notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    def _say(self, dyno: str, text: str) -> None:
        self.sink.publish(HEROKU, dyno, [text], time.time())


def _instance(name: str) -> tuple[str, int]:
    kind, _, number = name.rpartition(".")
    return (kind, int(number) if number.isdigit() else 0)


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
