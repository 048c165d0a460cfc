"""What the router asks of dynod: the web dynos behind a host, waking an app, logging a line.

`Backend` is the whole interface. `TableBackend` is a ready implementation fed by `update()`
(dynod and the tests use it); `static_backend` fixes one table for the CLI and the bench.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import attrs
import trio
from attrs import define, frozen

from .config import Address


class DynoState(enum.Enum):
    UP = "up"
    STARTING = "starting"
    IDLE = "idle"  # asleep: a request wakes the app, then waits like STARTING
    CRASHED = "crashed"


@frozen
class WebDyno:
    name: str  # "web.1"
    address: Address
    state: DynoState = DynoState.UP


@frozen
class AppTable:
    """A snapshot of one app's web dynos. `changed` is set once a newer snapshot exists, so a
    request held while dynos boot waits on it and looks the app up again."""

    app: str
    dynos: tuple[WebDyno, ...]
    changed: trio.Event = attrs.field(factory=trio.Event, eq=False, repr=False)


class Backend(Protocol):
    def lookup(self, name: str) -> AppTable | None:
        """The app a request names, or None (the router answers 404). `name` is `<app>` for a
        Host of `<app>.<domain>[:port]`, else the whole Host without its port, lowercased."""

    def wake(self, app: str) -> None:
        """Start a sleeping app's dynos; must not block."""

    def log(self, app: str, text: str) -> None:
        """Hand one router line (`at=info method=…`) to logplex as `heroku[router]`; must not
        block."""


@define
class TableBackend:
    """Tables set from outside. With `any_host` set, every Host routes to that app (local mode)."""

    any_host: str | None = None
    sink: Callable[[str, str], None] | None = None
    on_wake: Callable[[str], None] | None = None
    # Called with the app's name at each lookup (a request arrived, or one held while dynos
    # boot looks again): how dynod knows an app is not idle while requests wait for it.
    on_request: Callable[[str], None] | None = None
    _tables: dict[str, AppTable] = attrs.field(factory=dict, init=False)

    def update(self, app: str, dynos: Iterable[WebDyno]) -> None:
        """Replace an app's web dynos and wake every request waiting on the old snapshot."""
        old = self._tables.get(app)
        self._tables[app] = AppTable(app, tuple(dynos))
        if old is not None:
            old.changed.set()

    def remove(self, app: str) -> None:
        old = self._tables.pop(app, None)
        if old is not None:
            old.changed.set()

    def lookup(self, name: str) -> AppTable | None:
        table = self._tables.get(self.any_host if self.any_host is not None else name)
        if table is not None and self.on_request is not None:
            self.on_request(table.app)
        return table

    def wake(self, app: str) -> None:
        if self.on_wake is not None:
            self.on_wake(app)

    def log(self, app: str, text: str) -> None:
        if self.sink is not None:
            self.sink(app, text)


def static_backend(
    addresses: Sequence[Address],
    *,
    app: str = "local",
    sink: Callable[[str, str], None] | None = None,
) -> TableBackend:
    """Every Host reaches `app`, whose dynos web.1 … web.N sit at `addresses` and are up."""
    backend = TableBackend(any_host=app, sink=sink)
    backend.update(app, [WebDyno(f"web.{i}", addr) for i, addr in enumerate(addresses, 1)])
    return backend
