"""Sleeping in the supervisor and the sizes that sleep (README, "Sleeping"): Heroku's `Idling`
and `Unidling` lines, `down` in the log and `idle` in `ps`, and nothing an idle dyno's late
exit or timers change."""

from __future__ import annotations

import pytest

from dynod.core.lifecycle import DynoState, Lifecycle
from dynod.core.policy import RestartLadder
from dynod.core.sizes import size_of, sleeps
from dynod.core.supervisor import (
    BackoffOver,
    Begin,
    CycleDue,
    Exited,
    Launched,
    Log,
    Restart,
    RestartRequested,
    Rules,
    SleepRequested,
    Start,
    Stop,
    Supervisor,
    Wait,
    WakeRequested,
)
from dynod.errors import Invalid

S = DynoState
NO_CYCLE = Rules(cycle_after=None)


def up() -> Supervisor:
    sup = Supervisor(NO_CYCLE)
    sup.handle(Begin(), 0.0)
    sup.handle(Launched(), 0.0)
    assert sup.state is S.UP
    return sup


def test_an_up_dyno_idles_then_wakes() -> None:
    sup = up()
    assert sup.handle(SleepRequested(), 10.0) == [
        Log("Idling"),
        Log("State changed from up to down"),
        Stop(),
    ]
    assert sup.state is S.IDLE
    assert sup.handle(Exited(143), 11.0) == []  # its stop: no crash
    assert sup.handle(CycleDue(), 12.0) == []
    assert sup.state is S.IDLE
    assert sup.handle(WakeRequested(), 20.0) == [
        Log("Unidling"),
        Log("State changed from down to starting"),
        Start(),
    ]
    assert sup.handle(Launched(), 20.0) == [Log("State changed from starting to up")]


def test_a_wake_while_the_old_process_still_stops_starts_once_it_has_ended() -> None:
    sup = up()
    sup.handle(SleepRequested(), 10.0)
    assert sup.handle(WakeRequested(), 10.5) == [
        Log("Unidling"),
        Log("State changed from down to starting"),
    ]
    assert sup.handle(Exited(143), 11.0) == [Start()]
    assert sup.state is S.STARTING


def test_a_crashed_dyno_sleeps_off_its_ladder_and_wakes_afresh() -> None:
    sup = Supervisor(NO_CYCLE, RestartLadder((0.0, 100.0)))
    sup.handle(Begin(), 0.0)
    sup.handle(Launched(), 0.0)
    sup.handle(Exited(1), 1.0)
    sup.handle(BackoffOver(), 1.0)
    sup.handle(Launched(), 1.0)
    assert sup.handle(Exited(1), 2.0)[-1] == Wait(100.0, BackoffOver())
    assert sup.handle(SleepRequested(), 3.0) == [
        Log("Idling"),
        Log("State changed from crashed to down"),
    ]
    assert sup.handle(BackoffOver(), 102.0) == []  # the ladder's wait means nothing asleep
    assert sup.handle(WakeRequested(), 200.0)[-1] == Start()
    sup.handle(Launched(), 200.0)
    assert sup.handle(Exited(1), 201.0)[-1] == Wait(0.0, BackoffOver())  # the ladder was reset


def test_a_dyno_made_asleep_starts_nothing_until_woken() -> None:
    sup = Supervisor(NO_CYCLE, lifecycle=Lifecycle(S.IDLE, 0.0))
    assert sup.handle(Begin(), 0.0) == []
    assert sup.handle(WakeRequested(), 5.0)[-1] == Start()


def test_an_idle_dyno_ignores_restarts_and_cycles_until_woken() -> None:
    sup = up()
    sup.handle(SleepRequested(), 1.0)
    sup.handle(Exited(143), 1.5)
    assert sup.handle(RestartRequested(), 2.0) == []
    assert sup.handle(RestartRequested(Restart.STOP), 2.0) == []
    assert sup.state is S.IDLE


def test_one_offs_never_sleep() -> None:
    sup = Supervisor(NO_CYCLE, one_off=True)
    sup.handle(Begin(), 0.0)
    sup.handle(Launched(), 0.0)
    assert sup.handle(SleepRequested(), 1.0) == []
    assert sup.state is S.UP


def test_sizes() -> None:
    assert size_of("Eco") == "eco"
    assert size_of("STANDARD-1x") == "standard-1X"
    with pytest.raises(Invalid, match="Unknown dyno size 'huge': use one of eco, basic"):
        size_of("huge")
    assert sleeps({"web": 1}, {"web": "eco"})
    assert sleeps({"web": 1, "worker": 0}, {"web": "free"})
    assert not sleeps({"web": 1, "worker": 1}, {"web": "eco"})  # a standard-1X worker
    assert not sleeps({"web": 0, "worker": 1}, {"worker": "eco"})  # no web dyno to wake it
    assert not sleeps({"web": 1}, {})
