"""A small HTTP/1.1 server on h11 and trio for dynod's API: connections with keep-alive, request
bodies (capped, or streamed to the caller), JSON answers and chunked streams that end cleanly
when the client goes away, and the one mapping of errors to answers (`error_answer`). Routing
and policy live in the API; this module only moves bytes. A body the handler left unread is
never waited for: the answer closes the connection (docs/platform.md, "The API").
"""

from __future__ import annotations

import json
import logging
import urllib.parse
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import aclosing, contextmanager
from http import HTTPStatus

import attrs
import h11
import trio

from dynod.errors import DynodError
from dynod.state.config import Address
from router.net import listen as listen_sockets

# JSON bodies; uploads pass their own limit. Twice Heroku's 32 kB of config vars: parsing is on
# the event loop the router shares (a megabyte of `[]` held it 0.15 s; 64 kB, 8 ms).
MAX_BODY = 64 << 10
MAX_HEAD = 16 * 1024  # request line and headers together
IDLE_TIMEOUT = 75.0  # a kept-alive connection waiting for its next request
READ_TIMEOUT = 30.0  # each read while a request is in progress
LINGER = 2.0  # after an answer that closes: what the client still sends is read, then dropped
RECEIVE_SIZE = 64 * 1024
MAX_CONNECTIONS = 256  # open at once (each costs a descriptor); see serve_http
_BUSY_BODY = json.dumps(
    {
        "id": "unavailable",
        "message": "dynod's API has too many open connections; retry in a moment.",
    }
).encode()
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Retry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
    % (len(_BUSY_BODY), _BUSY_BODY)
)

INTERNAL_ERROR = "dynod failed to handle this request; see its log."

log = logging.getLogger("dynod.api.server")


class HTTPError(Exception):
    """An answer that stops a request early: `{"id", "message"}` with `status`."""

    def __init__(self, status: int, id: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.id = id
        self.message = message


@attrs.frozen
class Response:
    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    stream: AsyncGenerator[bytes, None] | None = None  # sent chunked instead of `body`


def json_response(
    data: object, status: int = 200, headers: Iterable[tuple[str, str]] = ()
) -> Response:
    body = json.dumps(data).encode()
    return Response(status, (("Content-Type", "application/json"), *headers), body)


def error_response(status: int, id: str, message: str) -> Response:
    return json_response({"id": id, "message": message}, status)


def stream_response(
    chunks: AsyncGenerator[bytes, None],
    content_type: str,
    status: int = 200,
    headers: Iterable[tuple[str, str]] = (),
) -> Response:
    return Response(
        status,
        (("Content-Type", content_type), ("Cache-Control", "no-cache"), *headers),
        stream=chunks,
    )


class Body:
    """A request's body, read at most once: whole (`read`) or chunk by chunk (`chunks`)."""

    def __init__(self, connection: _Connection) -> None:
        self._connection = connection

    async def read(self, limit: int = MAX_BODY) -> bytes:
        parts = [chunk async for chunk in self.chunks(limit)]
        return b"".join(parts)

    async def chunks(self, limit: int) -> AsyncIterator[bytes]:
        """The body as it arrives; HTTPError 413 once it exceeds `limit` bytes."""
        connection = self._connection
        h11conn = connection.h11
        if h11conn.they_are_waiting_for_100_continue:
            await connection.send(h11.InformationalResponse(status_code=100, headers=[]))
        seen = 0
        while h11conn.their_state is h11.SEND_BODY:
            try:
                event = await connection.next_event(READ_TIMEOUT)
            except h11.RemoteProtocolError as err:
                raise HTTPError(400, "bad_request", f"Malformed request body: {err}") from None
            if isinstance(event, h11.Data):
                seen += len(event.data)
                if seen > limit:
                    raise HTTPError(
                        413,
                        "request_entity_too_large",
                        f"The request body is over the limit of {limit} bytes.",
                    )
                yield bytes(event.data)
            elif isinstance(event, h11.ConnectionClosed):
                raise HTTPError(400, "bad_request", "The request body ended early.")


@attrs.frozen
class Request:
    method: str
    path: str  # as sent, without the query string
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: Body

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)


Handler = Callable[[Request], Awaitable[Response]]


class _ClientGone(Exception):
    """The client closed the connection or stopped reading; nothing more can be sent."""


class _Connection:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)

    async def send(self, event: h11.Event) -> None:
        data = self.h11.send(event)
        if data:
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                raise _ClientGone from None

    def body_received(self) -> bool:
        """Take in what of the request's body has arrived already, without waiting for more;
        True when that is all of it (the connection can then take the next request)."""
        while self.h11.their_state is h11.SEND_BODY:
            try:
                if self.h11.next_event() is h11.NEED_DATA:
                    return False
            except h11.RemoteProtocolError:
                return False
        return True

    async def next_event(self, timeout: float) -> h11.Event | type[h11.PAUSED]:
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event  # type: ignore[return-value]
            with trio.move_on_after(timeout) as waited:
                data = await self._receive()
            if waited.cancelled_caught:
                raise _ClientGone
            self.h11.receive_data(data)

    async def _receive(self) -> bytes:
        try:
            return await self.stream.receive_some(RECEIVE_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return b""

    async def respond(self, response: Response) -> None:
        headers = [("Server", "dynod"), *response.headers]
        if response.stream is None:
            headers.append(("Content-Length", str(len(response.body))))
        try:
            reason = HTTPStatus(response.status).phrase.encode()
        except ValueError:
            reason = b""
        await self.send(h11.Response(status_code=response.status, headers=headers, reason=reason))
        if response.stream is None:
            if response.body:
                await self.send(h11.Data(data=response.body))
            await self.send(h11.EndOfMessage())
            return
        async with aclosing(response.stream) as chunks, trio.open_nursery() as nursery:
            # Reading while streaming notices a client that went away even when the stream
            # has nothing to send (a quiet log tail), and ends the stream then.
            nursery.start_soon(self._watch_for_close, nursery.cancel_scope)
            async for chunk in chunks:
                if chunk:
                    await self.send(h11.Data(data=chunk))
            await self.send(h11.EndOfMessage())
            nursery.cancel_scope.cancel()
        if self.h11.our_state is not h11.DONE:
            raise _ClientGone

    async def _watch_for_close(self, scope: trio.CancelScope) -> None:
        while True:
            data = await self._receive()
            if not data:
                scope.cancel()
                return
            self.h11.receive_data(data)  # a pipelined next request: kept for later


def _request(event: h11.Request, connection: _Connection) -> Request:
    target = event.target.decode("ascii", "replace")
    path, _, query = target.partition("?")
    headers: dict[str, str] = {}
    for name, value in event.headers:
        key, text = name.decode("ascii").lower(), value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return Request(
        event.method.decode("ascii"),
        path,
        dict(urllib.parse.parse_qsl(query)),
        headers,
        Body(connection),
    )


async def _serve_connection(
    stream: trio.SocketStream,
    handler: Handler,
    waiting: dict[int, trio.CancelScope] | None = None,
) -> None:
    """`waiting`: where the connection lists itself while it waits for a request's head, so
    that the server can close it to make room (see serve_http)."""
    connection = _Connection(stream)
    try:
        while True:
            event: h11.Event | type[h11.PAUSED] | None = None
            refused: Response | None = None
            with _waiting(waiting) as wait:
                try:
                    event = await connection.next_event(IDLE_TIMEOUT)
                except h11.RemoteProtocolError as err:
                    if connection.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                        refused = error_response(
                            err.error_status_hint, "bad_request", f"Malformed HTTP request: {err}"
                        )
            if wait.cancelled_caught:
                return  # closed to make room for a newer connection
            if refused is not None:
                await connection.respond(_closing(refused))
                await _linger(connection, waiting)
                return
            if not isinstance(event, h11.Request):
                return  # the client closed the connection between requests
            request = _request(event, connection)
            oversized = _head_size(event) > MAX_HEAD  # h11 caps only a head in pieces
            if oversized:
                response = error_response(
                    431,
                    "request_header_fields_too_large",
                    f"The request line and headers are over the limit of {MAX_HEAD} bytes.",
                )
            else:
                response = await _answer(handler, request)
            # A body the handler did not read (a refused request's) is not waited for: a
            # client sending it byte by byte would hold a place (docs/platform.md).
            if oversized or not connection.body_received():
                await connection.respond(_closing(response))
                await _linger(connection, waiting)
                return
            await connection.respond(response)
            if connection.h11.our_state is not h11.DONE:
                return
            connection.h11.start_next_cycle()
    except (_ClientGone, h11.LocalProtocolError, h11.RemoteProtocolError):
        return
    except Exception:  # a stream that failed halfway: end this connection, never the server
        log.exception("dynod API: a response failed while it was being sent")
    finally:
        await stream.aclose()


@contextmanager
def _waiting(waiting: dict[int, trio.CancelScope] | None) -> Iterator[trio.CancelScope]:
    """A scope the server may cancel to make room: the connection waits for a client and
    holds nothing (see serve_http)."""
    with trio.CancelScope() as scope:
        if waiting is not None:
            waiting[id(scope)] = scope
        try:
            yield scope
        finally:
            if waiting is not None:
                waiting.pop(id(scope), None)


def _closing(response: Response) -> Response:
    return attrs.evolve(response, headers=(*response.headers, ("Connection", "close")))


def _head_size(event: h11.Request) -> int:
    """The request line and headers as sent, give or take their spacing."""
    line = len(event.method) + len(event.target) + len(" HTTP/1.1\r\n")
    return line + sum(len(name) + len(value) + 4 for name, value in event.headers) + 2


async def _linger(connection: _Connection, waiting: dict[int, trio.CancelScope] | None) -> None:
    """Close after an answer while the client may still be sending: unread data makes the close
    a reset, which can destroy the answer before the client reads it. So: end our side, read
    and drop what comes for at most LINGER seconds, as a connection that can make room."""
    try:
        await connection.stream.send_eof()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return
    with trio.move_on_after(LINGER), _waiting(waiting):
        while await connection._receive():
            pass


async def _answer(handler: Handler, request: Request) -> Response:
    try:
        return await handler(request)
    except _ClientGone:
        raise
    except Exception as err:
        return error_answer(err, request)


def error_answer(err: Exception, request: Request) -> Response:
    """The one mapping of errors to answers: an HTTPError as it says; a DynodError by its own
    `status_hint` and `id` (dynod/errors.py); damaged state (a hint of 500) and any other
    exception are dynod's failure, not the caller's: one 500 for the client, the traceback in
    dynod's log for whoever runs it."""
    if isinstance(err, HTTPError):
        return error_response(err.status, err.id, err.message)
    if isinstance(err, DynodError) and err.status_hint < 500:
        return error_response(err.status_hint, err.id, str(err))
    log.error("dynod API: %s %s failed", request.method, request.path, exc_info=err)
    return error_response(500, "internal_error", INTERNAL_ERROR)


async def serve_http(
    listen: Address,
    handler: Handler,
    *,
    max_connections: int = MAX_CONNECTIONS,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `handler` on `listen` until cancelled; reports the bound (host, port), so that
    port 0 can be used.

    At most `max_connections` open at once: a new one past that closes the connection that has
    waited longest for a request's head (idle, or sending it byte by byte); when every one is
    busy with a request (log tails are), the new one gets a 503. Holding sockets open without
    a token keeps no one out."""
    # 127.0.0.1 holds [::1] on the same port too: no dyno can take the API's port there.
    listeners = [
        trio.SocketListener(trio.socket.from_stdlib_socket(sock))
        for sock in listen_sockets((listen.host, listen.port))
    ]
    sockname = listeners[0].socket.getsockname()
    task_status.started((str(sockname[0]), int(sockname[1])))
    await serve_listeners(listeners, handler, max_connections=max_connections)


async def serve_listeners(
    listeners: Iterable[trio.abc.Listener[trio.SocketStream]],
    handler: Handler,
    *,
    max_connections: int = MAX_CONNECTIONS,
) -> None:
    """Serve `handler` on listening sockets already made (TCP, or a local run's Unix socket)
    until cancelled, with serve_http's cap on open connections."""
    open_now = 0
    waiting: dict[int, trio.CancelScope] = {}  # connections waiting for a request, oldest first
    async with trio.open_nursery() as nursery:

        async def connection(stream: trio.SocketStream) -> None:
            nonlocal open_now
            if open_now >= max_connections and waiting:
                waiting.pop(next(iter(waiting))).cancel()  # it ends, and its count with it
            elif open_now >= max_connections:
                with trio.move_on_after(1.0):
                    try:
                        await stream.send_all(_BUSY)
                        await stream.send_eof()
                        # Read what the client sent before closing: unread data makes the
                        # close a reset, which can destroy the 503 before the client reads it.
                        while len(await stream.receive_some(RECEIVE_SIZE)):
                            pass
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass  # the client left first
                await trio.aclose_forcefully(stream)
                return
            open_now += 1
            try:
                await _serve_connection(stream, handler, waiting)
            finally:
                open_now -= 1

        await trio.serve_listeners(connection, list(listeners), handler_nursery=nursery)
