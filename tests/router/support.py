"""Test furniture for the router: in-process dynos on trio + h11, child-process dynos that
answer their DYNO, an HTTP client, and the router started on port 0 with a log collector."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import attrs
import h11
import trio
from attrs import define, frozen

from router.backend import TableBackend, WebDyno, static_backend
from router.config import Address, RouterConfig
from router.server import serve

Headers = list[tuple[bytes, bytes]]


def run(scenario: Callable[[], Awaitable[None]], timeout: float = 15.0) -> None:
    async def main() -> None:
        with trio.fail_after(timeout):
            await scenario()

    trio.run(main)


async def next_event(stream: trio.abc.Stream, conn: h11.Connection) -> Any:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(bytes(await stream.receive_some(65536)))


# --- dynos ---------------------------------------------------------------------------------


@define(eq=False)
class DynoRequest:
    stream: trio.SocketStream
    conn: h11.Connection
    request: h11.Request
    dyno: FakeDyno

    def header(self, name: bytes) -> list[bytes]:
        return [v for k, v in self.request.headers if k == name]

    async def body(self) -> bytes:
        parts: list[bytes] = []
        while True:
            event = await next_event(self.stream, self.conn)
            if type(event) is h11.EndOfMessage:
                return b"".join(parts)
            parts.append(event.data)

    async def send(self, *events: Any) -> None:
        await self.stream.send_all(b"".join(self.conn.send(e) or b"" for e in events))

    async def respond(
        self, status: int = 200, body: bytes = b"", headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> None:
        framing = [(b"Content-Length", b"%d" % len(body))]
        data = [] if self.request.method == b"HEAD" else [h11.Data(data=body)]
        await self.send(
            h11.Response(status_code=status, headers=[*framing, *headers]),
            *data,
            h11.EndOfMessage(),
        )


Handler = Callable[[DynoRequest], Awaitable[None]]


async def say_name(req: DynoRequest) -> None:
    await req.body()
    await req.respond(200, req.dyno.name.encode())


@define(eq=False)
class FakeDyno:
    """A web dyno in the test's own trio run; `requests` is everything it was sent."""

    name: str = "web.1"
    handler: Handler = say_name
    address: Address = ("", 0)
    requests: list[h11.Request] = attrs.field(factory=list)
    connections: int = 0

    async def start(self, nursery: trio.Nursery) -> FakeDyno:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, self._serve, 0, host="127.0.0.1")
        )
        host, port = listeners[0].socket.getsockname()[:2]
        self.address = (host, port)
        return self

    def web(self, **kw: Any) -> WebDyno:
        return WebDyno(self.name, self.address, **kw)

    async def _serve(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                event = await next_event(stream, conn)
                if type(event) is not h11.Request:
                    return
                self.requests.append(event)
                await self.handler(DynoRequest(stream, conn, event, self))
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
            pass
        finally:
            await stream.aclose()


# A dyno as its own process, answering with its DYNO; prints its port once listening.
CHILD_DYNO = """
import http.server, os, sys
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    def do_GET(self):
        body = os.environ["DYNO"].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


@define(eq=False)
class ChildDyno:
    name: str
    process: subprocess.Popen[bytes]
    address: Address

    @classmethod
    def start(cls, name: str) -> ChildDyno:
        env = {"DYNO": name, "PATH": os.environ.get("PATH", "")}
        process = subprocess.Popen(
            [sys.executable, "-c", CHILD_DYNO], stdout=subprocess.PIPE, env=env
        )
        assert process.stdout is not None
        port = int(process.stdout.readline())
        return cls(name, process, ("127.0.0.1", port))

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


# --- router ----------------------------------------------------------------------------------


@define
class Lines:
    """The router lines handed to the backend's log, per app."""

    lines: list[tuple[str, str]] = attrs.field(factory=list)

    def __call__(self, app: str, text: str) -> None:
        self.lines.append((app, text))

    def texts(self) -> list[str]:
        return [text for _, text in self.lines]


async def start_router(nursery: trio.Nursery, backend: Any, **settings: Any) -> Address:
    config = RouterConfig(listen="127.0.0.1:0", **settings)
    bound = await nursery.start(serve, config, backend)
    return bound[0]  # type: ignore[no-any-return]


def backend_for(addresses: Iterable[Address], lines: Lines | None = None) -> TableBackend:
    return static_backend(list(addresses), sink=lines)


# --- clients ---------------------------------------------------------------------------------


@frozen
class Reply:
    status: int
    headers: Headers
    body: bytes

    def header(self, name: bytes) -> list[bytes]:
        return [v for k, v in self.headers if k == name]


@define(eq=False)
class Client:
    """One keep-alive client connection speaking h11."""

    stream: trio.SocketStream
    conn: h11.Connection = attrs.field(factory=lambda: h11.Connection(h11.CLIENT))

    @classmethod
    async def open(cls, address: Address) -> Client:
        return cls(await trio.open_tcp_stream(*address))

    async def request(
        self,
        method: str = "GET",
        target: str = "/",
        headers: Sequence[tuple[bytes, bytes]] = (),
        body: bytes = b"",
    ) -> Reply:
        if self.conn.our_state is h11.DONE:
            self.conn.start_next_cycle()
        framing = [(b"Content-Length", b"%d" % len(body))] if body else []
        has_host = any(k.lower() == b"host" for k, _ in headers)
        head = [] if has_host else [(b"Host", b"app.localhost")]
        await self.stream.send_all(
            self.conn.send(
                h11.Request(method=method, target=target, headers=[*head, *framing, *headers])
            )
            + (self.conn.send(h11.Data(data=body)) if body else b"")
            + self.conn.send(h11.EndOfMessage())
        )
        return await self.reply()

    async def reply(self) -> Reply:
        response = await next_event(self.stream, self.conn)
        while type(response) is h11.InformationalResponse:
            response = await next_event(self.stream, self.conn)
        parts = []
        while True:
            event = await next_event(self.stream, self.conn)
            if type(event) is h11.EndOfMessage:
                break
            parts.append(event.data)
        return Reply(response.status_code, list(response.headers), b"".join(parts))

    async def aclose(self) -> None:
        await self.stream.aclose()


async def get(
    address: Address, target: str = "/", headers: Sequence[tuple[bytes, bytes]] = ()
) -> Reply:
    client = await Client.open(address)
    try:
        return await client.request("GET", target, headers)
    finally:
        await client.aclose()


async def raw(address: Address, data: bytes) -> bytes:
    """Send `data`, then read until the router closes the connection."""
    stream = await trio.open_tcp_stream(*address)
    try:
        await stream.send_all(data)
        got = []
        while True:
            try:
                chunk = await stream.receive_some(65536)
            except trio.BrokenResourceError:  # reset: the router closed with bytes unread
                break
            if not chunk:
                break
            got.append(chunk)
        return b"".join(got)
    finally:
        await stream.aclose()
