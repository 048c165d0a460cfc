"""The supervisor's decisions, pure: events and plain-float times in, actions out."""

from __future__ import annotations

import random

import pytest

from dynod.core.lifecycle import DynoState, Lifecycle
from dynod.core.policy import LOCAL_LADDER, RestartLadder
from dynod.core.supervisor import (
    Action,
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
    Start,
    Stop,
    StopRequested,
    Supervisor,
    Wait,
)

S = DynoState
MINUTE = 60.0
NO_CYCLE = Rules(cycle_after=None)


def up(rules: Rules = NO_CYCLE, *, listens: bool = False, **kw: object) -> Supervisor:
    sup = Supervisor(rules, **kw)  # type: ignore[arg-type]
    assert sup.handle(Begin(), 0.0) == [Start()]
    sup.handle(Launched(listens), 0.0)
    if listens:
        sup.handle(BootSucceeded(), 1.0)
    assert sup.state is S.UP
    return sup


def lines(actions: list[Action]) -> list[str]:
    return [a.text for a in actions if isinstance(a, Log)]


def test_a_worker_is_up_once_launched() -> None:
    sup = Supervisor(NO_CYCLE)
    assert sup.handle(Begin(), 0.0) == [Start()]
    assert sup.handle(Launched(), 0.5) == [Log("State changed from starting to up")]
    assert sup.lifecycle == Lifecycle(S.UP, 0.5)


def test_a_web_dyno_boots_when_its_port_accepts() -> None:
    sup = Supervisor(NO_CYCLE)
    sup.handle(Begin(), 0.0)
    assert sup.handle(Launched(listens=True), 0.0) == [Wait(60.0, BootTimedOut())]
    assert sup.handle(BootSucceeded(), 3.0) == [Log("State changed from starting to up")]
    assert sup.handle(BootTimedOut(), 60.0) == []  # a stale timer changes nothing


def test_r10_stops_the_dyno_and_its_exit_is_a_crash() -> None:
    sup = Supervisor(NO_CYCLE)
    sup.handle(Begin(), 0.0)
    sup.handle(Launched(listens=True), 0.0)
    assert sup.handle(BootTimedOut(), 60.0) == [
        Log(
            "Error R10 (Boot timeout) -> Web process failed to bind to $PORT within 60 "
            "seconds of launch"
        ),
        Stop(),
    ]
    assert sup.handle(BootSucceeded(), 60.1) == []  # too late
    assert sup.handle(Exited(137), 61.0) == [
        Log("State changed from starting to crashed"),
        Wait(0.0, BackoffOver()),
    ]
    assert sup.last_status == 137


def test_crashes_climb_herokus_ladder() -> None:
    sup = up()
    delays, now = [], 0.0
    for _ in range(8):
        actions = sup.handle(Exited(1), now + 1.0)
        assert lines(actions) == ["State changed from up to crashed"]
        wait = actions[-1]
        assert isinstance(wait, Wait) and wait.then == BackoffOver()
        delays.append(wait.delay / MINUTE)
        now += 1.0 + wait.delay
        assert sup.handle(BackoffOver(), now) == [
            Log("State changed from crashed to starting"),
            Start(),
        ]
        sup.handle(Launched(), now)
    assert delays == [0, 20, 40, 60, 180, 320, 320, 320]


def test_a_clean_run_forgets_the_crashes() -> None:
    sup = up()
    for now in (1.0, 2.0):
        sup.handle(Exited(1), now)
        sup.handle(BackoffOver(), now)
        sup.handle(Launched(), now)
    assert sup.handle(Exited(1), 10_000.0)[-1] == Wait(0.0, BackoffOver())


def test_timers_count_only_when_armed() -> None:
    sup = up()
    assert sup.handle(BackoffOver(), 5.0) == []
    assert sup.handle(CycleDue(), 5.0) == []  # this dyno never cycles


@pytest.mark.parametrize("why", list(Restart))
def test_a_restart_stops_the_process_and_starts_afresh(why: Restart) -> None:
    sup = up()
    sup.handle(Exited(1), 1.0)  # one crash on the ladder
    sup.handle(BackoffOver(), 1.0)
    sup.handle(Launched(), 1.0)
    assert sup.handle(RestartRequested(why), 2.0) == [
        Log(why.value),
        Log("State changed from up to starting"),
        Stop(),
    ]
    assert sup.pending is why
    assert sup.handle(Exited(143), 3.0) == [Start()]  # not a crash
    assert sup.pending is None and sup.state is S.STARTING
    sup.handle(Launched(), 3.0)
    assert sup.handle(Exited(1), 4.0)[-1] == Wait(0.0, BackoffOver())  # the ladder was reset


def test_a_restart_while_crashed_starts_at_once() -> None:
    sup = up()
    sup.handle(Exited(1), 1.0)
    sup.handle(BackoffOver(), 1.0)
    sup.handle(Launched(), 1.0)
    assert sup.handle(Exited(1), 2.0)[-1] == Wait(1200.0, BackoffOver())
    assert sup.handle(RestartRequested(), 3.0) == [
        Log("Restarting"),
        Log("State changed from crashed to starting"),
        Start(),
    ]
    assert sup.handle(BackoffOver(), 1202.0) == []  # the old wait is void
    sup.handle(Launched(), 3.0)
    assert sup.handle(Exited(1), 4.0)[-1] == Wait(0.0, BackoffOver())


def test_a_restart_while_booting_replaces_the_process() -> None:
    sup = Supervisor(NO_CYCLE)
    sup.handle(Begin(), 0.0)
    sup.handle(Launched(listens=True), 0.0)
    assert sup.handle(RestartRequested(), 1.0) == [Log("Restarting"), Stop()]
    assert sup.handle(Exited(143), 1.5) == [Start()]
    assert sup.handle(BootTimedOut(), 60.0) == []  # the old process's timer


@pytest.mark.parametrize("listens", [False, True])
def test_a_restart_before_the_launch_is_reported_wins(listens: bool) -> None:
    sup = Supervisor(NO_CYCLE)
    sup.handle(Begin(), 0.0)
    assert sup.handle(RestartRequested(), 0.1) == [Log("Restarting"), Stop()]
    assert sup.handle(Launched(listens), 0.1) == []  # the process being stopped
    assert sup.handle(BootSucceeded(), 0.2) == []
    assert sup.handle(Exited(143), 0.3) == [Start()]
    assert sup.handle(Launched(), 0.4) == [Log("State changed from starting to up")]


def test_daily_cycling_with_jitter() -> None:
    sup = Supervisor(Rules(), rng=random.Random(7))
    sup.handle(Begin(), 0.0)
    actions = sup.handle(Launched(), 0.0)
    wait = actions[-1]
    assert isinstance(wait, Wait) and wait.then == CycleDue()
    assert 86400.0 <= wait.delay <= 86400.0 + 216 * MINUTE
    assert sup.handle(CycleDue(), wait.delay) == [
        Log("Cycling"),
        Log("State changed from up to starting"),
        Stop(),
    ]
    assert sup.handle(CycleDue(), wait.delay) == []  # already cycling
    assert sup.handle(Exited(143), wait.delay + 1) == [Start()]


def test_the_local_runner_never_cycles() -> None:
    sup = Supervisor(NO_CYCLE)
    sup.handle(Begin(), 0.0)
    assert not any(isinstance(a, Wait) for a in sup.handle(Launched(), 0.0))


def test_exit_on_crash_gives_up_with_the_status() -> None:
    sup = up(Rules(cycle_after=None, exit_on_crash=True))
    assert sup.handle(Exited(7), 1.0) == [
        Log("State changed from up to crashed"),
        GiveUp(7),
    ]


@pytest.mark.parametrize("running", [True, False])
def test_stop_is_for_good(running: bool) -> None:
    sup = up(ladder=RestartLadder(LOCAL_LADDER))
    if not running:
        sup.handle(Exited(1), 1.0)
    before = sup.state.value
    assert sup.handle(StopRequested(), 2.0) == [
        Log(f"State changed from {before} to down"),
        *([Stop()] if running else []),
        Finish(),
    ]
    late: list[Event] = [Exited(143), BackoffOver(), RestartRequested(), CycleDue(), Begin()]
    assert [sup.handle(event, 3.0) for event in late] == [[]] * len(late)


def test_stopping_twice_is_the_named_race() -> None:
    sup = up()
    sup.handle(StopRequested(), 1.0)
    assert sup.handle(StopRequested(), 2.0) == [Finish()]
    assert sup.lifecycle == Lifecycle(S.DOWN, 1.0)


def test_a_one_off_completes_and_is_never_restarted() -> None:
    sup = Supervisor(one_off=True)
    assert sup.handle(Begin(), 0.0) == [Start()]
    assert sup.handle(Launched(listens=True), 0.0) == [Log("State changed from starting to up")]
    assert sup.handle(RestartRequested(), 1.0) == []
    assert sup.handle(Exited(4), 2.0) == [Log("State changed from up to complete"), Finish()]
    assert (sup.state, sup.last_status) == (S.COMPLETE, 4)
    assert sup.handle(StopRequested(), 3.0) == []  # complete is terminal


def test_a_one_off_that_never_launched_completes_silently() -> None:
    sup = Supervisor(one_off=True)
    sup.handle(Begin(), 0.0)
    assert sup.handle(Exited(1), 0.5) == [Finish()]
    assert sup.state is S.COMPLETE


def test_a_one_off_stopped_goes_down_silently() -> None:
    sup = Supervisor(one_off=True)
    sup.handle(Begin(), 0.0)
    sup.handle(Launched(), 0.0)
    assert sup.handle(StopRequested(), 1.0) == [Stop(), Finish()]
    assert sup.state is S.DOWN


def test_memory_within_quota_says_nothing() -> None:
    assert up().handle(MemorySampled(512.0, 512.0), 1.0) == []


def test_r14_memory_quota_exceeded() -> None:
    sup = up()
    assert sup.handle(MemorySampled(612.5, 512.0), 1.0) == [
        Log("Process running mem=612M(119.6%)"),
        Log("Error R14 (Memory quota exceeded)"),
    ]
    assert sup.state is S.UP


def test_r15_memory_quota_vastly_exceeded_restarts_on_the_ladder() -> None:
    sup = up()
    assert sup.handle(MemorySampled(1100.0, 512.0), 1.0) == [
        Log("Process running mem=1100M(214.8%)"),
        Log("Error R15 (Memory quota vastly exceeded)"),
        Stop(hurry=True),
    ]
    assert sup.handle(Exited(137), 1.5) == [
        Log("State changed from up to crashed"),
        Wait(0.0, BackoffOver()),
    ]


def test_memory_samples_of_a_stopped_process_are_ignored() -> None:
    sup = up()
    sup.handle(Exited(1), 1.0)
    assert sup.handle(MemorySampled(4096.0, 512.0), 1.5) == []


def test_without_memory_kill_twice_the_quota_is_only_r14() -> None:
    sup = up(Rules(cycle_after=None, memory_kill=False))
    assert sup.handle(MemorySampled(1100.0, 512.0), 1.0) == [
        Log("Process running mem=1100M(214.8%)"),
        Log("Error R14 (Memory quota exceeded)"),
    ]
    assert sup.state is S.UP
