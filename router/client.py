"""The client side of a connection: reading each request head (plain ones directly, the rest
through h11, see request.py), the state a request body is read in, and the bytes a client sent
past its request.
"""

from __future__ import annotations

import h11
import trio
from attrs import define

from .config import RouterConfig
from .net import Stream, StreamTimeout
from .records import error_page
from .request import RequestHead, from_h11, plain_request

_INF = float("inf")
GONE = (OSError, trio.ClosedResourceError)  # the peer reset or closed the connection


@define(slots=True, eq=False)
class Client:
    """A client connection. Between requests, what it sent sits in `buffer`; a request that
    is not plain is read by an h11.Connection of its own (`conn`), which also reads its body.
    The router writes the answers itself (framing.py)."""

    stream: Stream
    ip: str
    port: int  # the router's port it reached
    max_head: int
    buffer: bytes = b""
    closed: bool = False  # the client has shut its side (b"" read into `buffer`)
    conn: h11.Connection | None = None

    def to_h11(self) -> h11.Connection:
        """Hand what is buffered to a fresh h11.Connection, which reads this request."""
        conn = self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.max_head)
        if self.buffer:
            conn.receive_data(self.buffer)
            self.buffer = b""
        if self.closed:
            conn.receive_data(b"")
        return conn

    @property
    def request_done(self) -> bool:
        """The request was read to its end (a dyno may answer before it is)."""
        return self.conn is None or self.conn.their_state is h11.DONE

    @property
    def trailing_data(self) -> bytes:
        """What the client sent past the current request."""
        return self.buffer if self.conn is None else self.conn.trailing_data[0]

    def next_request(self) -> None:
        """The current request is answered: take back what h11 read past it, if h11 read it."""
        if self.conn is not None:
            self.buffer, self.closed = self.conn.trailing_data
            self.conn = None


async def read_request(config: RouterConfig, client: Client, first: bool) -> RequestHead | None:
    """The next request head, or None when the connection should end (after a 4xx if due)."""
    # The first request must be complete `header_timeout` after the accept; a kept-alive
    # connection may idle `idle_timeout`, then gets `header_timeout` from its next first byte.
    deadline = trio.current_time() + config.header_timeout if first else _INF
    timeout = _INF if first else config.idle_timeout
    begun = False  # a connection that said nothing is closed without a word
    conn = client.conn
    # While h11 waits for the rest of a head: the length of its unfinished line, and whether
    # the request line is behind it. h11 caps only the whole head (64 KiB), not a line.
    unfinished, newline = 0, False
    while True:
        if conn is None and client.buffer:
            found = plain_request(client.buffer)
            if found is not None:
                request, end = found
                client.buffer = client.buffer[end:]
                return request
            unfinished, newline = _last_line(client.buffer, 0, False)
            conn = client.to_h11()
        if conn is not None:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                await send_page(client, exc.error_status_hint)
                return None
            if type(event) is h11.Request:
                if not event.http_version.startswith(b"1."):  # h11 takes any digit.digit
                    await send_page(client, 505)
                    return None
                return from_h11(event)
            if event is not h11.NEED_DATA:
                return None  # ConnectionClosed
            if unfinished > config.max_line_bytes:  # no need to wait for the end of it
                await send_page(client, 431 if newline else 414)
                return None
        elif client.closed:
            return None
        if begun and deadline == _INF:  # a head that came in pieces (rare): start its clock
            deadline = trio.current_time() + config.header_timeout
        try:
            # A kept-alive client sends its next request only once it has the last answer.
            data = await client.stream.receive(timeout, deadline, settle=not first and not begun)
        except StreamTimeout:
            if begun:
                await send_page(client, 408)
            return None
        except GONE:
            return None
        if data:
            begun = True
            timeout = _INF
        if conn is not None:
            conn.receive_data(data)
            unfinished, newline = _last_line(data, unfinished, newline)
        elif data:
            client.buffer = data
        else:
            client.closed = True


def _last_line(data: bytes, unfinished: int, newline: bool) -> tuple[int, bool]:
    """(`unfinished`, `newline`) of `read_request` once `data` has followed."""
    end = data.rfind(b"\n")
    if end < 0:
        return unfinished + len(data), newline
    return len(data) - end - 1, True


async def send_page(client: Client, status: int, *, body: bool = True) -> int:
    """The router's own answer (the connection closes after it); the bytes sent."""
    page = error_page(status, body=body)
    try:
        await client.stream.send_all(page, 1.0)
    except (StreamTimeout, *GONE):
        return 0
    return len(page)
