"""The dyno manager: keeps a formation running, and runs one-off dynos.

One supervisor for both modes. `dynod start` runs dynos in place (the app directory, a short
restart ladder); `dynod serve` runs them from slugs. The difference is a Workspace (where a
dyno's directory comes from) and ManagerSettings (both in proc/seams.py), never a second
supervisor. The decisions are core/supervisor.py's; this module feeds it what real processes do
(exits, ports, memory samples from proc/memory.py, the app's sleep and wake) and performs its
actions.
Every timing decision reads trio's clock (so a MockClock drives it); the wall clock only stamps
log lines and what `ps` shows.
"""

from __future__ import annotations

import random
import time
from contextlib import AsyncExitStack

import attrs
import trio

from dynod.core.lifecycle import DynoState, Lifecycle
from dynod.core.logline import HEROKU, LogSink
from dynod.core.policy import (
    RestartLadder,
)
from dynod.core.supervisor import (
    BackoffOver,
    Begin,
    BootSucceeded,
    BootTimedOut,
    CycleDue,
    Event,
    Exited,
    Finish,
    GiveUp,
    Launched,
    Log,
    MemorySampled,
    Restart,
    RestartRequested,
    Rules,
    SleepRequested,
    Start,
    Stop,
    StopRequested,
    Supervisor,
    Wait,
    WakeRequested,
)
from dynod.errors import DynodError
from dynod.proc.dyno import DynoProcess, DynoSpec, dyno_env
from dynod.proc.memory import MemoryProbe, MemorySample, MemorySampler
from dynod.proc.ports import Listening
from dynod.proc.reaper import Reaper
from dynod.proc.seams import (
    DynoPlan,
    Home,
    Launcher,
    ManagerSettings,
    PortSource,
    Processes,
    Workspace,
)

PORT_POLL = 0.05  # how often a booting web dyno's port is looked at


@attrs.define(eq=False)
class DynoSlot:
    """A dyno's live record (formation or one-off): what `ps` lists and the router reads."""

    plan: DynoPlan
    machine: Supervisor  # its state table, ladder, and `pending`: a Restart under way
    updated_at: float  # wall clock of the last state change: what `ps` shows
    port: int | None = None  # the PORT of its latest process: what the router connects to
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    nursery: trio.Nursery | None = None  # the dyno's process and timer tasks
    run_scope: trio.CancelScope | None = None  # the current process's lifetime
    timer: trio.CancelScope | None = None  # the pending boot, cycle or ladder timer
    hurry: trio.Event | None = None  # set: its current process is killed without grace (R15)
    memory: MemorySample | None = None  # its last memory sample: what `ps --json` shows
    next_start: float | None = None  # crashed: wall clock of its next start on the ladder

    @property
    def name(self) -> str:
        return self.plan.name

    @property
    def state(self) -> DynoState:
        return self.machine.state

    @property
    def last_status(self) -> int | None:
        return self.machine.last_status


class Manager:
    def __init__(
        self,
        sink: LogSink,
        workspace: Workspace,
        settings: ManagerSettings = ManagerSettings(),
        *,
        reaper: Reaper | None = None,
        rng: random.Random | None = None,
        launcher: Launcher | None = None,
        ports: PortSource | None = None,
        memory: MemorySampler | None = None,
    ) -> None:
        self.sink = sink
        self.workspace = workspace
        self.settings = settings
        self.launcher: Launcher = launcher or Processes(reaper)
        if memory is None and isinstance(self.launcher, Processes):
            memory = MemoryProbe(self.launcher.reaper)  # fakes sample nothing unless given one
        self.memory = memory
        self.ports = ports  # None: every plan has its fixed port, or none
        self.rng = rng or random.Random()
        self.slots: dict[str, DynoSlot] = {}
        self.one_offs: dict[str, DynoSlot] = {}  # running one-offs: release phase, run.N
        self.hurry = trio.Event()  # set: stop sequences skip their grace and SIGKILL at once
        self.changed = trio.Event()  # replaced after every state change (router, tests, ps)
        self.crash: tuple[str, int] | None = None  # with exit_on_crash: who crashed, status
        self.sleeping = False  # the app sleeps: its formation dynos are idle, new ones too
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
        slot = self._slot(plan, one_off=False)
        self.slots[plan.name] = slot
        self._nursery.start_soon(self._supervise, slot, self.slots, name=f"dyno {plan.name}")
        self._notify()  # the router holds requests for a starting web dyno instead of H14
        return slot

    def stop_dyno(self, name: str) -> None:
        slot = self.slots.get(name)
        if slot is not None:
            self._feed(slot, StopRequested())

    def stop_all(self) -> None:
        for name in list(self.slots):
            self.stop_dyno(name)
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def restart_dyno(self, name: str, why: Restart = Restart.RESTART) -> None:
        """Stop the dyno's process and start a fresh one at once (on its current plan); a
        restart resets the crash ladder."""
        slot = self.slots.get(name)
        if slot is not None:
            self._feed(slot, RestartRequested(why))

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

    def sleep(self) -> None:
        """Every formation dyno stops and stays idle until `wake` (README, "Sleeping")."""
        self.sleeping = True
        for slot in list(self.slots.values()):
            self._feed(slot, SleepRequested())

    def wake(self) -> bool:
        """Start the idle dynos again; False when the app was not asleep."""
        if not self.sleeping:
            return False
        self.sleeping = False
        for slot in list(self.slots.values()):
            if slot.nursery is not None:  # else its supervision, about to begin, wakes it
                self._feed(slot, WakeRequested())
        return True

    def web_dynos(self) -> list[DynoSlot]:
        return [slot for slot in self.slots.values() if slot.plan.web]

    # ----- one-off dynos (the release phase, `dynod run`, run.N)

    def add_one_off(self, plan: DynoPlan) -> DynoSlot:
        """List a one-off as starting at once (its name is taken); `run_one_off` runs it."""
        slot = self.one_offs[plan.name] = self._slot(plan, one_off=True)
        self._notify()
        return slot

    async def run_one_off(self, plan: DynoPlan) -> int:
        """Run a dyno once to completion (never restarted); returns its exit status."""
        slot = self.one_offs.get(plan.name) or self.add_one_off(plan)
        await self._supervise(slot, self.one_offs)
        return slot.last_status if slot.last_status is not None else 137

    # ----- driving the supervisor

    def _slot(self, plan: DynoPlan, *, one_off: bool) -> DynoSlot:
        settings = self.settings
        machine = Supervisor(
            Rules(
                boot_timeout=settings.boot_timeout,
                cycle_after=settings.cycle_after,
                cycle_jitter=settings.cycle_jitter,
                exit_on_crash=settings.exit_on_crash,
                memory_kill=settings.memory_kill,
            ),
            RestartLadder(settings.ladder, settings.clean_after),
            self.rng,
            one_off=one_off,
            lifecycle=Lifecycle(
                DynoState.IDLE if self.sleeping and not one_off else DynoState.STARTING,
                trio.current_time(),
            ),
        )
        return DynoSlot(plan, machine, time.time())

    async def _supervise(self, slot: DynoSlot, registry: dict[str, DynoSlot]) -> None:
        """The dyno's tasks live here until the supervisor says Finish (or cancellation)."""
        with slot.scope:
            try:
                async with trio.open_nursery() as slot.nursery:
                    self._feed(slot, Begin())
                    if slot.state is DynoState.IDLE and not self.sleeping:
                        self._feed(slot, WakeRequested())  # made asleep, woken since
                    await trio.sleep_forever()
            finally:
                slot.nursery = None
                self._feed(slot, StopRequested())  # cancelled from outside: down
                if registry.get(slot.name) is slot:
                    del registry[slot.name]
                self._notify()

    def _feed(self, slot: DynoSlot, event: Event) -> None:
        """Hand the dyno's supervisor an event at trio's now, and do what it says."""
        before = slot.state
        for action in slot.machine.handle(event, trio.current_time()):
            match action:
                case Log(text=text):
                    self._say(slot.name, text)
                case Start():
                    assert slot.nursery is not None
                    slot.run_scope = trio.CancelScope()
                    slot.nursery.start_soon(self._run, slot, slot.run_scope)
                case Wait(delay=delay, then=then):
                    assert slot.nursery is not None
                    if slot.timer is not None:
                        slot.timer.cancel()
                    slot.timer = trio.CancelScope()
                    slot.nursery.start_soon(self._timer, slot, slot.timer, delay, then)
                    if isinstance(then, BackoffOver):
                        slot.next_start = time.time() + delay
                case Stop(hurry=hurry):
                    if hurry and slot.hurry is not None:
                        slot.hurry.set()
                    if slot.run_scope is not None:
                        slot.run_scope.cancel()
                case Finish():
                    slot.scope.cancel()
                case GiveUp(status=status):
                    self.crash = (slot.name, status)
                    self.stop_all()
        if slot.state is not before:
            slot.updated_at = time.time()
            if slot.state is not DynoState.CRASHED:
                slot.next_start = None
            self._notify()

    async def _timer(
        self,
        slot: DynoSlot,
        scope: trio.CancelScope,
        delay: float,
        then: BootTimedOut | CycleDue | BackoffOver,
    ) -> None:
        with scope:
            await trio.sleep(delay)
            slot.timer = None
            self._feed(slot, then)

    async def _run(self, slot: DynoSlot, scope: trio.CancelScope) -> None:
        """One process lifetime: check out, take a port, start, watch its port, run until exit
        (or Stop)."""
        status = 137  # stopped before it exited by itself
        with scope:
            async with AsyncExitStack() as stack:
                home = await self._checkout(stack, slot.plan)
                if home is None or not await self._take_port(stack, slot):
                    status = 1  # no directory (a refused slug) or no port: a crash, on the ladder
                else:
                    spec = self._spec(slot.plan, home, slot.port)
                    self._say(slot.name, f"Starting process with command `{slot.plan.command}`")
                    status = await self._launch(slot, spec)
        if slot.run_scope is scope:
            slot.run_scope = None
        self._feed(slot, Exited(status))

    async def _launch(self, slot: DynoSlot, spec: DynoSpec) -> int:
        result: list[int] = []
        hurry = slot.hurry = trio.Event()  # the manager's hurry, or this dyno's own (R15)
        # Passes the manager's hurry on while the process stops (its stop is a cancellation).
        forward = trio.CancelScope(shield=True)
        async with trio.open_nursery() as nursery:

            async def process(task_status: trio.TaskStatus[DynoProcess]) -> None:
                try:
                    result.append(await self.launcher.run(spec, self.sink, hurry, task_status))
                finally:
                    forward.cancel()
                    nursery.cancel_scope.cancel()  # the watches end with the process

            async def hurried() -> None:
                with forward:
                    await self.hurry.wait()
                    hurry.set()

            nursery.start_soon(hurried)

            try:
                started: DynoProcess = await nursery.start(process)
            except DynodError as err:  # not started (its own mounts failed): a crash, on the ladder
                self._say(slot.name, str(err))
                return 1
            port = slot.port if slot.plan.web else None
            self._feed(slot, Launched(listens=port is not None))
            if port is not None and slot.machine.booting:
                nursery.start_soon(self._watch_port, slot, port, started)
            if self.memory is not None and self.settings.memory_sample is not None:
                nursery.start_soon(self._watch_memory, slot, self.memory, started)
        return result[0] if result else 137

    async def _watch_memory(
        self, slot: DynoSlot, memory: MemorySampler, process: DynoProcess
    ) -> None:
        """Every `memory_sample` seconds, the dyno's memory to its supervisor (R14, R15)."""
        assert self.settings.memory_sample is not None
        quota = self.settings.quota_of(slot.plan.type)
        while True:
            await trio.sleep(self.settings.memory_sample)
            mb = await memory.sample(process)
            if mb is not None:
                slot.memory = MemorySample(mb, quota, time.time())
                self._feed(slot, MemorySampled(mb, quota))

    async def _watch_port(self, slot: DynoSlot, port: int, process: DynoProcess) -> None:
        """A web dyno is up once its PORT is listened on; on the platform, by its own processes
        only: a socket another process holds there never makes it up (docs/platform.md,
        "Ports")."""
        said = False
        while (found := await self.launcher.listens(port, process)) is not Listening.OWN:
            if found is Listening.FOREIGN and not said:
                said = True
                self._say(slot.name, f"Port {port} is held by a process outside this dyno")
            await trio.sleep(PORT_POLL)
        self._feed(slot, BootSucceeded())

    # ----- helpers

    async def _take_port(self, stack: AsyncExitStack, slot: DynoSlot) -> bool:
        """Set the process's PORT: the plan's fixed one, or a fresh one from the port source,
        given back when the process has ended. False after saying why there is none."""
        if slot.plan.port is not None or self.ports is None:
            slot.port = slot.plan.port
            return True
        try:
            slot.port = await self.ports.take()
        except DynodError as err:
            self._say(slot.name, str(err))
            return False
        stack.push_async_callback(self.ports.give_back, slot.port)
        return True

    async def _checkout(self, stack: AsyncExitStack, plan: DynoPlan) -> Home | None:
        """The dyno's directory, or None after saying why there is none (a slug refused at
        unpacking, such as R17): one dyno fails, never the manager or dynod."""
        try:
            return await stack.enter_async_context(self.workspace.checkout(plan))
        except DynodError as err:
            self._say(plan.name, str(err))
            return None

    def _spec(self, plan: DynoPlan, home: Home, port: int | None) -> DynoSpec:
        env = dyno_env(
            plan.config_vars,
            name=plan.name,
            port=port,
            home=plan.home or home.path,
            inherit=plan.inherit,
        )
        env["PWD"] = str(home.path)
        return DynoSpec(
            plan.name,
            plan.command,
            home.path,
            env,
            tty=self.settings.tty,
            stop_timeout=self.settings.stop_timeout,
            max_line_bytes=self.settings.max_line_bytes,
            owner=self.settings.owner,
            private_tmp=self.settings.private_tmp,
            overlay=home.overlay,
            terminal=plan.terminal,
        )

    def _notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    def _say(self, dyno: str, text: str) -> None:
        self.sink.publish(HEROKU, dyno, [text], time.time())


def _instance(name: str) -> tuple[str, int]:
    kind, _, number = name.rpartition(".")
    return (kind, int(number) if number.isdigit() else 0)
