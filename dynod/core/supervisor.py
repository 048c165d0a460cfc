"""The dyno supervisor's decisions, sans-I/O: events in, actions out, with an injected clock.

One Supervisor per dyno holds its Lifecycle and RestartLadder. `handle(event, now)` takes what
happened (an exit, a boot timeout, a restart, a cycle, a memory sample, the app's sleep) at
`now`, plain seconds from whatever clock the driver uses, and returns what to do: start, wait,
stop, say a line (Heroku's wording), or give up. proc/manager.py performs the actions on real
processes.
"""

from __future__ import annotations

import enum
import random

from attrs import define, field, frozen

from dynod.core.lifecycle import DynoState, Lifecycle
from dynod.core.policy import (
    BOOT_TIMEOUT,
    CYCLE_AFTER,
    CYCLE_JITTER,
    RestartLadder,
    cycle_delay,
)

_S = DynoState


class Restart(str, enum.Enum):  # noqa: UP042 - the value is the line the dyno manager says
    """Why a dyno's process is being replaced, as the dyno manager says it."""

    RESTART = "Restarting"
    CYCLE = "Cycling"
    STOP = "Stopping"  # `ps:stop`: the formation starts a fresh one


# ----- events


@frozen
class Begin:
    """The dyno was created (formation or one-off)."""


@frozen
class Launched:
    """Its process runs; `listens`: a web dyno that is up only once it listens on its $PORT."""

    listens: bool = False


@frozen
class BootSucceeded:
    """A web dyno listens on its $PORT (on the platform: only its own processes do)."""


@frozen
class BootTimedOut:
    """The boot timer ran out (R10 when the dyno is still booting)."""


@frozen
class Exited:
    status: int


@frozen
class RestartRequested:
    why: Restart = Restart.RESTART


@frozen
class CycleDue:
    """The daily cycle's timer ran out."""


@frozen
class BackoffOver:
    """A crashed dyno's wait on the restart ladder is over."""


@frozen
class StopRequested:
    """Stop for good: scaled away, the app deleted, dynod stopping."""


@frozen
class SleepRequested:
    """The app sleeps (no request for `[dynos] idle_after`): stop, and stay idle."""


@frozen
class WakeRequested:
    """A request (or a scale, restart or release) wakes the sleeping app: start again."""


@frozen
class MemorySampled:
    mb: float
    quota_mb: float


Event = (
    Begin
    | Launched
    | BootSucceeded
    | BootTimedOut
    | Exited
    | RestartRequested
    | CycleDue
    | BackoffOver
    | StopRequested
    | MemorySampled
    | SleepRequested
    | WakeRequested
)


# ----- actions


@frozen
class Start:
    """Start a process on the dyno's current plan."""


@frozen
class Wait:
    """Deliver `then` after `delay` seconds; replaces the dyno's previous timer."""

    delay: float
    then: BootTimedOut | CycleDue | BackoffOver


@frozen
class Stop:
    """Stop the running process (its exit comes back as Exited); `hurry`: SIGKILL at once."""

    hurry: bool = False


@frozen
class Log:
    text: str


@frozen
class Finish:
    """The dyno is done for good: end its supervision."""


@frozen
class GiveUp:
    """Exit-on-crash: a dyno crashed, stop everything with its status."""

    status: int


Action = Start | Wait | Stop | Log | Finish | GiveUp


@frozen
class Rules:
    """The numbers the decisions use (policy's defaults)."""

    boot_timeout: float = BOOT_TIMEOUT
    cycle_after: float | None = CYCLE_AFTER  # None: never cycle (the local runner)
    cycle_jitter: float = CYCLE_JITTER
    exit_on_crash: bool = False
    memory_kill: bool = True  # False: past twice the quota is only R14 (the local runner's)


def memory_line(mb: float, quota_mb: float) -> str:
    return f"Process running mem={mb:.0f}M({100 * mb / quota_mb:.1f}%)"


@define
class Supervisor:
    """One dyno's decisions. A one-off is never restarted: it ends complete."""

    rules: Rules = Rules()
    ladder: RestartLadder = field(factory=RestartLadder)
    rng: random.Random = field(factory=random.Random)
    one_off: bool = False
    lifecycle: Lifecycle = field(factory=Lifecycle)
    pending: Restart | None = None  # a restart under way, until the old process is gone
    running: bool = False  # from Start until its Exited
    booting: bool = False  # a web dyno launched, its $PORT not yet accepting
    last_status: int | None = None

    @property
    def state(self) -> DynoState:
        return self.lifecycle.state

    def handle(self, event: Event, now: float) -> list[Action]:
        out: list[Action] = []
        if self.state is _S.COMPLETE or (
            self.state is _S.DOWN and not isinstance(event, StopRequested)
        ):
            return out  # done for good: a late exit, timer or request changes nothing
        match event:
            case Begin():
                if self.state is not _S.IDLE:  # made asleep (its app slept when dynod stopped)
                    self._start(out)
            case Launched(listens=listens):
                if self.pending is not None or self.state is _S.IDLE:
                    pass  # a restart (or sleep) came first: this process is being stopped
                elif listens and not self.one_off:
                    self.booting = True
                    out.append(Wait(self.rules.boot_timeout, BootTimedOut()))
                else:
                    self._up(out, now)
            case BootSucceeded():
                if self.booting:
                    self.booting = False
                    self._up(out, now)
            case BootTimedOut():
                if self.booting:
                    self.booting = False
                    out.append(
                        Log(
                            "Error R10 (Boot timeout) -> Web process failed to bind to $PORT "
                            f"within {self.rules.boot_timeout:g} seconds of launch"
                        )
                    )
                    out.append(Stop())
            case Exited(status=status):
                self._exited(out, status, now)
            case RestartRequested(why=why):
                self._restart(out, why, now)
            case CycleDue():
                if (
                    self.state is _S.UP
                    and self.pending is None
                    and self.rules.cycle_after is not None
                ):
                    self._restart(out, Restart.CYCLE, now)
            case BackoffOver():
                if self.state is _S.CRASHED:
                    self._move(out, _S.STARTING, now)
                    self._start(out)
            case StopRequested():
                self._move(out, _S.DOWN, now, say=not self.one_off)
                self.pending = None
                if self.running:
                    out.append(Stop())  # its exit, once down, changes nothing
                self.running = self.booting = False
                out.append(Finish())
            case SleepRequested():
                if not self.one_off and self.state in (_S.UP, _S.STARTING, _S.CRASHED):
                    # Heroku's words: the dyno goes "down"; `ps` shows it idle.
                    out += [Log("Idling"), Log(f"State changed from {self.state.value} to down")]
                    self._move(out, _S.IDLE, now, say=False)
                    self.pending = None
                    self.booting = False
                    if self.running:
                        out.append(Stop())
            case WakeRequested():
                if self.state is _S.IDLE:
                    out += [Log("Unidling"), Log("State changed from down to starting")]
                    self._move(out, _S.STARTING, now, say=False)
                    self.ladder.reset()
                    if self.running:  # still stopping from its sleep: start once it has ended
                        self.pending = Restart.RESTART
                    else:
                        self._start(out)
            case MemorySampled(mb=mb, quota_mb=quota):
                if self.running and mb > quota:
                    out.append(Log(memory_line(mb, quota)))
                    if mb > 2 * quota and self.rules.memory_kill:
                        out.append(Log("Error R15 (Memory quota vastly exceeded)"))
                        self.booting = False
                        out.append(Stop(hurry=True))  # its exit is a crash, on the ladder
                    else:
                        out.append(Log("Error R14 (Memory quota exceeded)"))
        return out

    def _start(self, out: list[Action]) -> None:
        self.running = True
        out.append(Start())

    def _up(self, out: list[Action], now: float) -> None:
        self.ladder.started(now)
        self._move(out, _S.UP, now)
        if self.rules.cycle_after is not None and not self.one_off:
            delay = cycle_delay(self.rules.cycle_after, self.rules.cycle_jitter, rng=self.rng)
            out.append(Wait(delay, CycleDue()))

    def _exited(self, out: list[Action], status: int, now: float) -> None:
        self.running = self.booting = False
        if self.one_off:
            self.last_status = status
            # A one-off that never launched (its slug refused) ends without a word, as it did.
            self._move(out, _S.COMPLETE, now, say=self.state is _S.UP)
            out.append(Finish())
            return
        if self.pending is not None:
            self.pending = None
            self.ladder.reset()
            self._start(out)
            return
        if self.state is _S.IDLE:
            return  # stopped by its app's sleep: it stays idle
        self.last_status = status
        self._move(out, _S.CRASHED, now)
        if self.rules.exit_on_crash:
            out.append(GiveUp(status))
            return
        out.append(Wait(self.ladder.crashed(now), BackoffOver()))

    def _restart(self, out: list[Action], why: Restart, now: float) -> None:
        if self.one_off or self.state is _S.IDLE:
            return  # one-offs are never restarted; an idle dyno starts when its app wakes
        out.append(Log(why.value))
        if self.state is _S.UP:
            self._move(out, _S.STARTING, now)
        if self.running:
            self.pending = why
            self.booting = False  # a late BootSucceeded is the old process's
            out.append(Stop())
        elif self.state is _S.CRASHED:  # waiting on the ladder: start at once, afresh
            self.ladder.reset()
            self._move(out, _S.STARTING, now)
            self._start(out)

    def _move(self, out: list[Action], to: DynoState, now: float, *, say: bool = True) -> None:
        line = self.lifecycle.move(to, now)
        if line is not None and say:
            out.append(Log(line))
