"""Which web dyno a request goes to: round-robin over `up` dynos, quarantine of refusers,
and the H14/H10/wait verdicts when none is up.

Pure: no trio, no I/O; the time is passed in, so tests use plain numbers as a clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import attrs
from attrs import define

from .backend import DynoState, WebDyno
from .config import Address

# Decisions are NamedTuples, as one is made per request.


class Try(NamedTuple):
    """Dynos to try in this order: the round-robin turn first, quarantined ones last."""

    dynos: tuple[WebDyno, ...]


class Wait(NamedTuple):
    """No dyno is up yet but some are starting or asleep: hold the request (H20 on timeout)."""

    wake: bool  # some are asleep: ask the backend to wake the app


class Refuse(NamedTuple):
    code: str  # "H14" (no web dynos) or "H10" (all crashed)


Decision = Try | Wait | Refuse


@define
class Balancer:
    quarantine_seconds: float = 5.0
    _turn: dict[str, int] = attrs.field(factory=dict, init=False)
    _quarantined: dict[tuple[str, Address], float] = attrs.field(factory=dict, init=False)
    # Per app, the last dyno table seen and, for each turn, the order its up dynos are tried
    # in: tables change rarely, requests come all the time.
    _orders: dict[str, tuple[Sequence[WebDyno], tuple[Try, ...]]] = attrs.field(
        factory=dict, init=False
    )

    def choose(self, app: str, dynos: Sequence[WebDyno], now: float) -> Decision:
        seen = self._orders.get(app)
        if seen is not None and seen[0] is dynos:
            orders = seen[1]
        else:
            up = tuple(d for d in dynos if d.state is DynoState.UP)
            orders = tuple(Try(up[turn:] + up[:turn]) for turn in range(len(up)))
            self._orders[app] = (dynos, orders)
        if not orders:
            return _without_up(dynos)
        turn = self._turn.get(app, 0)
        self._turn[app] = turn + 1
        order = orders[turn % len(orders)]
        if not self._quarantined:
            return order
        if max(self._quarantined.values()) <= now:  # all served their time
            self._quarantined.clear()
            return order
        fresh = tuple(d for d in order.dynos if not self._is_quarantined(d, now))
        held = tuple(d for d in order.dynos if self._is_quarantined(d, now))
        return Try(fresh + held)

    def quarantine(self, dyno: WebDyno, now: float) -> None:
        """Skip `dyno` for the next `quarantine_seconds` while other up dynos remain."""
        self._quarantined = {k: t for k, t in self._quarantined.items() if t > now}
        self._quarantined[(dyno.name, dyno.address)] = now + self.quarantine_seconds

    def _is_quarantined(self, dyno: WebDyno, now: float) -> bool:
        return self._quarantined.get((dyno.name, dyno.address), now) > now


def _without_up(dynos: Sequence[WebDyno]) -> Decision:
    if not dynos:
        return Refuse("H14")
    waiting = [d for d in dynos if d.state in (DynoState.STARTING, DynoState.IDLE)]
    if not waiting:
        return Refuse("H10")
    return Wait(wake=any(d.state is DynoState.IDLE for d in waiting))
