"""The dyno state table, sans-I/O in the manner of h11: one table of legal moves, in one place.

A Lifecycle holds a dyno's state and since when; `move` either follows the table and returns the
line the dyno manager logs (Heroku's wording), accepts the one race named in RACES (and changes
nothing), or raises IllegalTransition and changes nothing. Formation and one-off dynos alike.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType

from attrs import define


class DynoState(str, enum.Enum):  # noqa: UP042 - str() and f-strings must keep giving the name
    STARTING = "starting"
    UP = "up"
    CRASHED = "crashed"
    DOWN = "down"
    IDLE = "idle"  # asleep: the app went without HTTP traffic
    COMPLETE = "complete"  # a one-off that finished


_S = DynoState
TRANSITIONS: Mapping[DynoState, frozenset[DynoState]] = MappingProxyType(
    {
        # -> idle: the app sleeps, whatever each of its dynos was doing.
        _S.STARTING: frozenset({_S.UP, _S.CRASHED, _S.DOWN, _S.IDLE, _S.COMPLETE}),
        # up -> starting is a restart or a daily cycle.
        _S.UP: frozenset({_S.STARTING, _S.CRASHED, _S.DOWN, _S.IDLE, _S.COMPLETE}),
        _S.CRASHED: frozenset({_S.STARTING, _S.DOWN, _S.IDLE}),
        _S.DOWN: frozenset({_S.STARTING}),
        _S.IDLE: frozenset({_S.STARTING, _S.DOWN}),
        _S.COMPLETE: frozenset(),  # terminal: a finished one-off is never started again
    }
)


# The one race the table allows: stopping a dyno that is already down (a scale-down and a
# shutdown's stop-everything, or exit-on-crash, both stop it before its task has wound down).
# Nothing moves and nothing is said.
RACES: Mapping[DynoState, frozenset[DynoState]] = MappingProxyType(
    {state: frozenset({_S.DOWN} if state is _S.DOWN else ()) for state in DynoState}
)


class IllegalTransition(Exception):
    """A move the table does not allow: a bug in the caller, never the user's doing."""


@define
class Lifecycle:
    state: DynoState = DynoState.STARTING
    since: float = 0.0

    def move(self, to: DynoState, now: float) -> str | None:
        """Enter `to` at `now`; returns `State changed from starting to up`, or None for the
        race in RACES."""
        if to in RACES[self.state]:
            return None
        if to not in TRANSITIONS[self.state]:
            raise IllegalTransition(f"a dyno cannot go from {self.state.value} to {to.value}")
        line = f"State changed from {self.state.value} to {to.value}"
        self.state, self.since = to, now
        return line
