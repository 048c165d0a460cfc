"""Delivering an app's log to a drain: a logplex reader (a tail with the drain's own bounded
buffer, whose overflow notice is L10) and a sender that frames what it reads and delivers it,
over TCP or TLS to a syslog drain or as HTTP POSTs, retrying with backoff and jitter.

Nothing here can slow a producer: the ring hands lines to the tail without waiting, a drain that
cannot keep up loses its oldest lines (and says so with L10), and each sender paces itself so
that its work takes at most CPU_SHARE of the event loop's time (docs/platform.md, Log
drains).
"""

from __future__ import annotations

import base64
import logging
import random
import select
import ssl
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol
from urllib.parse import unquote

import attrs
import h11
import trio

from dynod.core.drains import MAX_BATCH, DrainTarget, Run, backoff, frames
from dynod.logs.logplex import LogTail

CPU_SHARE = 0.03  # of the loop's time one drain's work may take; past it, it drops lines
SEND_TIMEOUT = 30.0  # one try: connecting, writing, and for HTTP reading the answer
RECEIVE_SIZE = 16 * 1024
USER_AGENT = "dynod-logplex"

_log = logging.getLogger("dynod.logs.drains")


class DeliveryFailed(Exception):
    """The drain refused or dropped a delivery (an HTTP status outside 2xx, a closed socket)."""


# What a failed try can raise: each is retried after a backoff.
FAILURES = (
    OSError,
    DeliveryFailed,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    trio.TooSlowError,
    h11.ProtocolError,
    ssl.SSLError,
)


class Transport(Protocol):
    async def send(self, body: bytes, count: int, frame_id: str) -> None:
        """Deliver `body` (`count` framed lines); raise one of FAILURES if it may not have."""

    async def close(self) -> None:
        """Drop the connection (the next send makes a new one)."""


async def _connect(target: DrainTarget, tls: ssl.SSLContext | None) -> trio.abc.Stream:
    stream = await trio.open_tcp_stream(target.host, target.port)
    if not target.tls:
        return stream
    secure = trio.SSLStream(
        stream, tls or ssl.create_default_context(), server_hostname=target.host
    )
    try:
        await secure.do_handshake()
    except BaseException:
        await trio.aclose_forcefully(secure)
        raise
    return secure


def _hung_up(stream: trio.abc.Stream) -> bool:
    """Whether the peer has closed its side: a syslog drain never writes to us, so a hang-up
    is the only thing to see, and seeing it before writing saves the batch from a dead socket."""
    raw = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
    if not isinstance(raw, trio.SocketStream):
        return False
    poller = select.poll()
    poller.register(raw.socket.fileno(), select.POLLRDHUP)
    return bool(poller.poll(0))


class SyslogTransport:
    """Octet-counted RFC 5424 messages on one long-lived TCP (or TLS) connection."""

    def __init__(self, target: DrainTarget, tls: ssl.SSLContext | None = None) -> None:
        self.target = target
        self.tls = tls
        self._stream: trio.abc.Stream | None = None

    async def send(self, body: bytes, count: int, frame_id: str) -> None:
        if self._stream is not None and _hung_up(self._stream):
            await self.close()
        if self._stream is None:
            self._stream = await _connect(self.target, self.tls)
        await self._stream.send_all(body)

    async def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            await trio.aclose_forcefully(stream)


class HttpTransport:
    """Heroku's HTTPS drain protocol: each batch one POST of `application/logplex-1` (the
    frames back to back) with Logplex-Msg-Count, -Frame-Id and -Drain-Token, on a kept-alive
    connection; any answer but 2xx is a failure. A retry sends the same Frame-Id."""

    def __init__(self, target: DrainTarget, token: str, tls: ssl.SSLContext | None = None) -> None:
        self.target = target
        self.token = token
        self.tls = tls
        self._headers = [("Host", target.authority), ("Content-Type", "application/logplex-1")]
        if target.userinfo is not None:
            credentials = base64.b64encode(unquote(target.userinfo).encode()).decode()
            self._headers.append(("Authorization", f"Basic {credentials}"))
        self._headers += [("Logplex-Drain-Token", token), ("User-Agent", USER_AGENT)]
        self._stream: trio.abc.Stream | None = None
        self._h11 = h11.Connection(h11.CLIENT)

    async def send(self, body: bytes, count: int, frame_id: str) -> None:
        reused = self._stream is not None
        try:
            await self._post(body, count, frame_id)
        except FAILURES:
            if not reused:
                raise
            # A kept-alive connection the drain had closed meanwhile: once more on a new one.
            await self.close()
            await self._post(body, count, frame_id)

    async def _post(self, body: bytes, count: int, frame_id: str) -> None:
        if self._stream is None:
            self._stream = await _connect(self.target, self.tls)
            self._h11 = h11.Connection(h11.CLIENT)
        stream, conn = self._stream, self._h11
        headers = [
            *self._headers,
            ("Logplex-Msg-Count", str(count)),
            ("Logplex-Frame-Id", frame_id),
            ("Content-Length", str(len(body))),
        ]
        request = h11.Request(method="POST", target=self.target.target, headers=headers)
        out = [conn.send(request), conn.send(h11.Data(data=body)), conn.send(h11.EndOfMessage())]
        await stream.send_all(b"".join(part for part in out if part))
        status = await self._answer(stream, conn)
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        else:
            await self.close()
        if not 200 <= status < 300:
            raise DeliveryFailed(f"the drain answered HTTP {status}")

    async def _answer(self, stream: trio.abc.Stream, conn: h11.Connection) -> int:
        status = 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(bytes(await stream.receive_some(RECEIVE_SIZE)))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.EndOfMessage):
                return status
            elif isinstance(event, h11.ConnectionClosed):
                raise DeliveryFailed("the drain closed the connection without an answer")

    async def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            await trio.aclose_forcefully(stream)


def transport_for(target: DrainTarget, token: str, tls: ssl.SSLContext | None = None) -> Transport:
    if target.syslog:
        return SyslogTransport(target, tls)
    return HttpTransport(target, token, tls)


@attrs.define
class DrainStatistics:
    delivered: int = 0  # lines the drain took (overflow notices included)
    deliveries: int = 0  # POSTs or syslog writes that succeeded
    failures: int = 0  # tries that failed, each followed by a backoff
    last_error: str | None = None


class DrainSender:
    """Reads `tail` and delivers what it reads through `transport`, at most MAX_BATCH lines a
    try; a failed try is retried after `backoff` (jitter drawn from `draw`) until it succeeds,
    while the tail's buffer takes new lines and drops its oldest when full. `run` returns when
    the tail is closed (the drain removed, the app destroyed)."""

    def __init__(
        self,
        tail: LogTail,
        transport: Transport,
        *,
        name: str,
        draw: Callable[[], float] = random.random,
        share: float = CPU_SHARE,
    ) -> None:
        self.tail = tail
        self.transport = transport
        self.name = name
        self.draw = draw
        self.share = share
        self.statistics = DrainStatistics()

    async def run(self) -> None:
        try:
            while runs := await self.tail.receive_runs():
                for chunk, count in _chunks(runs, MAX_BATCH):
                    await self._deliver(chunk, count)
        finally:
            with trio.CancelScope(shield=True):
                await self.transport.close()

    async def _deliver(self, runs: Sequence[Run], count: int) -> None:
        work = _OwnTime()
        with work:
            body = frames(runs)
        frame_id = uuid.uuid4().hex.upper()
        failures = 0
        while True:
            try:
                with trio.fail_after(SEND_TIMEOUT), work:
                    await self.transport.send(body, count, frame_id)
                break
            except FAILURES as err:
                failures += 1
                self.statistics.failures += 1
                self.statistics.last_error = str(err) or type(err).__name__
                if failures == 1:
                    _log.warning(
                        "dynod: drain %s: delivery failed (%s); retrying with backoff",
                        self.name,
                        self.statistics.last_error,
                    )
                await self.transport.close()
                await trio.sleep(backoff(failures, self.draw()))
        if failures:
            _log.warning("dynod: drain %s: delivering again after %d tries", self.name, failures)
        self.statistics.delivered += count
        self.statistics.deliveries += 1
        # Resting long enough keeps the drain within its share of the loop whatever the app
        # writes; the lines arriving meanwhile wait in the tail.
        await trio.sleep(work.seconds * (1 / self.share - 1))


class _OwnTime(trio.abc.Instrument):
    """The loop thread's CPU time inside `with` blocks run by the current task, less the
    other tasks' turns meanwhile (what a send lets run while it waits): the drain's own work.
    Installed only inside the blocks, so the loop pays for it only while a drain works."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._task: trio.lowlevel.Task | None = None
        self._began = 0.0
        self._turn = 0.0

    def __enter__(self) -> None:
        self._task = trio.lowlevel.current_task()
        trio.lowlevel.add_instrument(self)
        self._began = time.thread_time()

    def __exit__(self, *exc: object) -> None:
        self.seconds += time.thread_time() - self._began
        trio.lowlevel.remove_instrument(self)

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is not self._task:
            self._turn = time.thread_time()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is not self._task:
            self.seconds -= time.thread_time() - self._turn


def _chunks(runs: Sequence[Run], most: int) -> Iterator[tuple[list[Run], int]]:
    """The runs in deliveries of at most `most` lines (a long run split), with their counts."""
    chunk: list[Run] = []
    count = 0
    for when, source, dyno, texts in runs:
        start = 0
        while start < len(texts):
            taken = texts[start : start + most - count]
            chunk.append((when, source, dyno, taken))
            count += len(taken)
            start += len(taken)
            if count == most:
                yield chunk, count
                chunk, count = [], 0
    if chunk:
        yield chunk, count
