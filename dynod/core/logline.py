"""Log lines as logplex carries them, and their Heroku rendering.

A LogLine is a NamedTuple rather than an attrs class on purpose: dynos can emit a million lines a
second and producers hand over whole batches (`LogSink.publish`), so a line must be as cheap as a
tuple to make and to store.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from typing import NamedTuple, Protocol

APP = "app"
HEROKU = "heroku"


class LogLine(NamedTuple):
    time: float  # seconds since the epoch, microsecond precision
    source: str  # "app" or "heroku"
    dyno: str  # "web.1", "run.4821", or a component: "router", "api"
    text: str  # one line, no trailing newline

    def render(self) -> str:
        """Heroku's form: `2026-11-26T15:19:10.123456+00:00 app[web.1]: text`."""
        return f"{iso_timestamp(self.time)} {self.source}[{self.dyno}]: {self.text}"


def iso_timestamp(when: float) -> str:
    stamp = _dt.datetime.fromtimestamp(when, _dt.UTC)
    return stamp.isoformat(timespec="microseconds")


class LogSink(Protocol):
    """Where lines go. One call carries the lines a dyno wrote in one read: same source, dyno
    and time. Implementations must not block (no awaiting, no waiting on readers)."""

    def publish(self, source: str, dyno: str, texts: Sequence[str], when: float) -> None: ...
