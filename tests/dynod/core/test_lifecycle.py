"""The dyno state table: every pair of states, legal or not, against TRANSITIONS."""

from __future__ import annotations

import itertools

import pytest

from dynod.core.lifecycle import RACES, TRANSITIONS, DynoState, IllegalTransition, Lifecycle
from dynod.errors import DynodError

S = DynoState
PAIRS = list(itertools.product(DynoState, repeat=2))


def test_the_table() -> None:
    assert set(TRANSITIONS) == set(DynoState)
    assert TRANSITIONS == {
        S.STARTING: {S.UP, S.CRASHED, S.DOWN, S.IDLE, S.COMPLETE},
        S.UP: {S.STARTING, S.CRASHED, S.DOWN, S.IDLE, S.COMPLETE},
        S.CRASHED: {S.STARTING, S.DOWN, S.IDLE},
        S.DOWN: {S.STARTING},
        S.IDLE: {S.STARTING, S.DOWN},
        S.COMPLETE: set(),
    }
    assert [s.value for s in DynoState] == ["starting", "up", "crashed", "down", "idle", "complete"]


def test_new_dyno_is_starting() -> None:
    assert Lifecycle() == Lifecycle(S.STARTING, 0.0)


@pytest.mark.parametrize(("before", "after"), [p for p in PAIRS if p[1] in TRANSITIONS[p[0]]])
def test_legal_moves(before: DynoState, after: DynoState) -> None:
    life = Lifecycle(before, since=1.0)
    assert life.move(after, now=5.0) == f"State changed from {before.value} to {after.value}"
    assert (life.state, life.since) == (after, 5.0)


ILLEGAL = [p for p in PAIRS if p[1] not in TRANSITIONS[p[0]] | RACES[p[0]]]


@pytest.mark.parametrize(("before", "after"), ILLEGAL)
def test_illegal_moves_raise_and_change_nothing(before: DynoState, after: DynoState) -> None:
    life = Lifecycle(before, since=1.0)
    with pytest.raises(IllegalTransition, match=f"from {before.value} to {after.value}"):
        life.move(after, now=5.0)
    assert (life.state, life.since) == (before, 1.0)


def test_same_state_is_illegal_but_for_the_named_race() -> None:
    assert all(s not in TRANSITIONS[s] for s in DynoState)
    assert [(s, to) for s in DynoState for to in RACES[s]] == [(S.DOWN, S.DOWN)]
    assert len(ILLEGAL) == len(PAIRS) - sum(map(len, TRANSITIONS.values())) - 1


def test_the_race_is_accepted_and_changes_nothing() -> None:
    life = Lifecycle(S.DOWN, since=1.0)
    assert life.move(S.DOWN, now=5.0) is None
    assert (life.state, life.since) == (S.DOWN, 1.0)


def test_heroku_wording_for_a_crash_and_restart() -> None:
    life = Lifecycle()
    lines = [life.move(S.UP, 1.0), life.move(S.CRASHED, 2.0), life.move(S.STARTING, 3.0)]
    assert lines == [
        "State changed from starting to up",
        "State changed from up to crashed",
        "State changed from crashed to starting",
    ]


def test_illegal_transition_is_not_a_user_error() -> None:
    assert not issubclass(IllegalTransition, DynodError)
