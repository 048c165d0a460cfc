"""The logplex ring: each app's last lines in memory, and the readers that follow new ones.

A LogRing is one app's stream. It keeps the last `history` lines, hands every batch inline to
subscribers (lossless: the terminal printer) and copies it into tails (bounded buffers that drop
their oldest lines and say so with L11: `dyno logs --tail`, later drains). No reader can slow a
producer down: publishing is synchronous and never waits.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from itertools import chain, islice, repeat
from types import TracebackType
from typing import TypeVar

import attrs
import trio

from dynod.core.logline import APP, HEROKU, LogLine, iso_timestamp
from dynod.core.names import LOG_HISTORY, LOG_TAIL_BUFFER
from dynod.errors import DynodError

HISTORY = LOG_HISTORY  # dynod.toml's [logplex] defaults are the same names
TAIL_BUFFER = LOG_TAIL_BUFFER
L11 = "Error L11 (Tail buffer overflow) -> This tail session dropped {n} messages since {since}."
OVERFLOW_DYNO = "logplex"  # overflow notices read `heroku[logplex]: Error L11 …`

# The same arguments as LogSink.publish: source, dyno, texts, when.
Subscriber = Callable[[str, str, Sequence[str], float], None]
# A LogLine's fields as a plain tuple: zip() makes these in C, so storing costs no Python per line.
Row = tuple[float, str, str, str]
# One publish as a tail holds it, (when, source, dyno, texts): a tail costs nothing per line
# until it is read, so readers that drop most of a storm (drains, slow tails) cost no more.
Batch = tuple[float, str, str, Sequence[str]]
_T = TypeVar("_T")


def _check_source(_: object, __: object, value: str | None) -> None:
    if value not in (None, APP, HEROKU):
        raise DynodError(f"unknown log source {value!r}: use {APP} or {HEROKU}")


@attrs.frozen
class LogFilter:
    """Which lines a reader wants; None matches anything. `dyno` is exact (`web.1`); `ps` is a
    process type (`web` matches `web.1`, `web.2` and a component named `web`, not `webby.1`)."""

    dyno: str | None = None
    ps: str | None = None
    source: str | None = attrs.field(default=None, validator=_check_source)

    def matches(self, source: str, dyno: str) -> bool:
        return (
            (self.source is None or source == self.source)
            and (self.dyno is None or dyno == self.dyno)
            and (self.ps is None or dyno.partition(".")[0] == self.ps)
        )


_EVERYTHING = LogFilter()
_Match = Callable[[str, str], bool]


@attrs.frozen
class LogRingStatistics:
    lines_published: int  # since the ring was made
    lines_held: int  # in the ring now (at most `history`)
    tails: int
    subscribers: int
    lines_dropped: int  # by slow tails, all of them, since the ring was made


def _lines(rows: Iterable[Row]) -> list[LogLine]:
    # tuple.__new__ in C rather than LogLine._make, which is a Python call per line.
    return list(map(tuple.__new__, repeat(LogLine), rows))


def _without(items: tuple[_T, ...], item: _T) -> tuple[_T, ...]:
    for index, candidate in enumerate(items):
        if candidate is item:
            return items[:index] + items[index + 1 :]
    return items


def _check_size(key: str, value: int) -> None:
    if value < 1:
        raise DynodError(f"[logplex] {key} must be a positive number of lines, not {value}")


class LogTail:
    """A reader following a ring's new lines through a buffer of at most `size` lines.

    `async for line in tail` (or `await tail.receive_batch()` for whole batches) yields lines
    oldest first. When the reader falls behind, the oldest buffered lines are dropped and the next
    thing it reads is one overflow line (L11) saying how many and since when (the time of the
    batch that first overflowed). `close()`, or leaving `with tail:`, unregisters it and ends the
    iteration. One reader task per tail; use from the trio thread only.
    """

    def __init__(
        self, ring: LogRing, match: _Match | None, size: int, overflow: str, backlog: list[Row]
    ) -> None:
        self._ring = ring
        self._match = match
        self._size = size
        self._overflow = overflow
        # The held lines asked for (`last`, up to the ring's history) wait apart from the
        # buffer, so that `logs -n 1500 -t` gets all 1500, not the buffer's 1024.
        self._backlog = backlog
        self._buffer: deque[Batch] = deque()
        self._held = 0  # lines in the buffer's batches, at most `size`
        self._dropped = 0  # since the last overflow line was delivered
        self._since = 0.0
        self._closed = False
        self._lot = trio.lowlevel.ParkingLot()
        self._taken: list[LogLine] = []  # for __anext__: a received batch, newest first

    @property
    def size(self) -> int:
        return self._size

    def _offer(
        self, source: str, dyno: str, texts: Sequence[str], when: float, skipped: int
    ) -> int:
        """The ring's hand-off of one batch, of which the oldest `skipped` lines were cut before
        it came (no reader holds that many); returns how many lines this tail just dropped."""
        if self._match is not None and not self._match(source, dyno):
            return 0
        self._buffer.append((when, source, dyno, texts))
        self._held += len(texts)
        if self._lot:
            self._lot.unpark_all()  # one wake-up per batch, and only for a parked reader
        over = self._held + skipped - self._size
        if over <= 0:
            return 0
        self._trim(self._held - self._size)
        if not self._dropped:
            self._since = when
        self._dropped += over
        return over

    def _trim(self, excess: int) -> None:
        """Drop the `excess` oldest buffered lines: whole batches, then the start of one."""
        buffer = self._buffer
        while excess > 0:
            when, source, dyno, texts = buffer[0]
            if len(texts) <= excess:
                buffer.popleft()
                excess -= len(texts)
                self._held -= len(texts)
            else:
                buffer[0] = (when, source, dyno, texts[excess:])
                self._held -= excess
                excess = 0

    def _ready(self) -> bool:
        return bool(self._buffer) or self._dropped > 0 or self._closed or bool(self._backlog)

    async def receive_runs(self) -> list[Batch]:
        """Everything buffered as it was published, runs of (when, source, dyno, texts), oldest
        first (behind an overflow line if lines were dropped), waiting while there is nothing;
        [] once the tail is closed. A reader that handles a run at once (a drain) makes no
        object per line."""
        if self._ready():
            await trio.lowlevel.checkpoint()
        while not self._ready():
            await self._lot.park()
        if self._closed:
            return []
        runs: list[Batch] = []
        if self._dropped:
            text = self._overflow.format(n=self._dropped, since=iso_timestamp(self._since))
            runs.append((time.time(), HEROKU, OVERFLOW_DYNO, (text,)))
            self._dropped = 0
        if self._backlog:
            runs.extend((when, source, dyno, (text,)) for when, source, dyno, text in self._backlog)
            self._backlog = []
        runs.extend(self._buffer)
        self._buffer.clear()
        self._held = 0
        return runs

    async def receive_batch(self) -> list[LogLine]:
        """receive_runs's lines, one LogLine each."""
        runs = await self.receive_runs()
        return _lines(
            chain.from_iterable(
                zip(repeat(when), repeat(source), repeat(dyno), texts)
                for when, source, dyno, texts in runs
            )
        )

    def __aiter__(self) -> LogTail:
        return self

    async def __anext__(self) -> LogLine:
        # One checkpoint per batch taken from the buffer, not per line: a fast reader costs a
        # list pop per line. Lines taken are held here, so a cancelled reader loses none.
        if not self._taken:
            batch = await self.receive_batch()
            if not batch:
                raise StopAsyncIteration
            batch.reverse()
            self._taken = batch
        return self._taken.pop()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._backlog = []
        self._buffer.clear()
        self._held = 0
        self._taken.clear()
        self._dropped = 0
        self._ring._forget(self)
        self._lot.unpark_all()

    def __enter__(self) -> LogTail:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class LogRing:
    """One app's log stream: a LogSink that keeps the last `history` lines and feeds readers.

    Producers must hand over whole lines already split at `[logplex] max_line_bytes` (the dyno's
    LineSplitter does): the ring stores texts as given. Use from the trio thread only.
    """

    def __init__(self, *, history: int = HISTORY, tail_buffer: int = TAIL_BUFFER) -> None:
        _check_size("history", history)
        _check_size("tail_buffer", tail_buffer)
        self.history = history
        self.tail_buffer = tail_buffer
        self._lines: deque[Row] = deque(maxlen=history)
        self._subscribers: tuple[Subscriber, ...] = ()  # replaced, never mutated: publish may
        self._tails: tuple[LogTail, ...] = ()  # run while a reader (un)registers
        self._keep = history  # no reader wants more than this many lines of one batch
        self._published = 0
        self._dropped = 0

    def publish(self, source: str, dyno: str, texts: Sequence[str], when: float) -> None:
        """Take one batch: lines read together from one dyno (same source, dyno and time).

        The hot path (a dyno can write a million lines a second): the work per line is C-level
        tuple making; filters are applied per batch. Never waits on a reader.
        """
        count = len(texts)
        if not count:
            return
        self._published += count
        kept = texts if count <= self._keep else texts[-self._keep :]
        self._lines.extend(zip(repeat(when), repeat(source), repeat(dyno), kept))
        if self._tails:
            shared = tuple(kept)  # the tails' own copy, whatever the producer does with its list
            skipped = count - len(kept)  # dropped by every tail it reaches: L11 counts them
            for tail in self._tails:
                self._dropped += tail._offer(source, dyno, shared, when, skipped)
        # Last, so that a subscriber that raises has not cost the ring or the tails their lines.
        for subscriber in self._subscribers:
            subscriber(source, dyno, texts, when)

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call `subscriber` inline with every batch, in order, whole; returns unsubscribe.
        A subscriber must not block; an exception it raises reaches the producer."""
        self._subscribers = (*self._subscribers, subscriber)

        def unsubscribe() -> None:
            self._subscribers = _without(self._subscribers, subscriber)

        return unsubscribe

    def recent(self, n: int = 100, filters: LogFilter | None = None) -> list[LogLine]:
        """The last `n` matching lines, oldest first (all the ring holds when it has fewer)."""
        return _lines(self._recent_rows(n, _matcher(filters)))

    def tail(
        self,
        filters: LogFilter | None = None,
        *,
        buffer: int | None = None,
        last: int = 0,
        overflow: str = L11,
    ) -> LogTail:
        """Follow new matching lines, starting with the last `last` held ones (`logs -n N -t`).

        `buffer` defaults to the ring's `tail_buffer`. `overflow` is the notice for dropped lines,
        formatted with `n` and `since`: L11 for tail sessions; a drain passes its L10.
        """
        size = self.tail_buffer if buffer is None else buffer
        _check_size("tail buffer", size)
        match = _matcher(filters)
        tail = LogTail(self, match, size, overflow, self._recent_rows(last, match))
        self._tails = (*self._tails, tail)
        self._keep = max(self._keep, size)
        return tail

    def _forget(self, tail: LogTail) -> None:
        self._tails = _without(self._tails, tail)
        self._keep = max([self.history, *(t.size for t in self._tails)])

    def _recent_rows(self, n: int, match: _Match | None) -> list[Row]:
        lines = self._lines
        if n <= 0:
            return []
        if match is None:
            return list(islice(lines, max(0, len(lines) - n), None))
        picked = []
        for row in reversed(lines):
            if match(row[1], row[2]):
                picked.append(row)
                if len(picked) == n:
                    break
        picked.reverse()
        return picked

    def close(self) -> None:
        """The app is gone: end every tail and drop the subscribers."""
        for tail in self._tails:
            tail.close()
        self._subscribers = ()

    def statistics(self) -> LogRingStatistics:
        return LogRingStatistics(
            lines_published=self._published,
            lines_held=len(self._lines),
            tails=len(self._tails),
            subscribers=len(self._subscribers),
            lines_dropped=self._dropped,
        )


def _matcher(filters: LogFilter | None) -> _Match | None:
    # None lets the common unfiltered reader skip the per-batch (or per-line) test entirely.
    return None if filters is None or filters == _EVERYTHING else filters.matches


class Logplex:
    """Every app's ring, made on first use with the same settings (`[logplex]` in dynod.toml)."""

    def __init__(self, *, history: int = HISTORY, tail_buffer: int = TAIL_BUFFER) -> None:
        _check_size("history", history)
        _check_size("tail_buffer", tail_buffer)
        self.history = history
        self.tail_buffer = tail_buffer
        self._rings: dict[str, LogRing] = {}

    def ring(self, app: str) -> LogRing:
        ring = self._rings.get(app)
        if ring is None:
            ring = self._rings[app] = LogRing(history=self.history, tail_buffer=self.tail_buffer)
        return ring

    def remove(self, app: str) -> None:
        """Forget an app's lines and end its readers (`apps:destroy`)."""
        ring = self._rings.pop(app, None)
        if ring is not None:
            ring.close()
