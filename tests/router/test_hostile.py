"""Hostile clients: oversized or malformed requests never reach a dyno, slow ones are cut off
without hurting the others, and the connection cap holds."""

from __future__ import annotations

import errno
import re
import socket

import pytest
import trio

from router.net import listen
from tests.router.support import (
    Client,
    DynoRequest,
    FakeDyno,
    Lines,
    backend_for,
    get,
    raw,
    run,
    start_router,
)

HOST = b"Host: app.localhost\r\n"
HOSTILE = {
    "request line over 8192": (b"GET /" + b"a" * 8200 + b" HTTP/1.1\r\n" + HOST + b"\r\n", 414),
    "header line over 8192": (
        b"GET / HTTP/1.1\r\n" + HOST + b"X-Big: " + b"v" * 8200 + b"\r\n\r\n",
        431,
    ),
    "1001 headers": (
        b"GET / HTTP/1.1\r\n" + HOST + b"".join(b"X-%d: v\r\n" % i for i in range(1000)) + b"\r\n",
        431,
    ),
    "head over 64 KiB": (
        b"GET / HTTP/1.1\r\n"
        + HOST
        + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 8000) for i in range(9))
        + b"\r\n",
        431,
    ),
    "garbage": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 hello\r\n\r\n", 400),
    "two hosts in one Host": (
        b"GET / HTTP/1.1\r\nHost: app.localhost, other.localhost\r\n\r\n",
        400,
    ),
    "a path in Host": (b"GET / HTTP/1.1\r\nHost: app.localhost/x\r\n\r\n", 400),
    "no version": (b"GET /\r\n" + HOST + b"\r\n", 400),
    "HTTP/2.0 in an HTTP/1 request line": (b"GET / HTTP/2.0\r\n" + HOST + b"\r\n", 505),
    "HTTP/0.9 with a version": (b"GET / HTTP/0.9\r\n" + HOST + b"\r\n", 505),
    "space in header name": (b"GET / HTTP/1.1\r\n" + HOST + b"Bad Name: v\r\n\r\n", 400),
    "bad content-length": (b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: abc\r\n\r\n", 400),
    "negative content-length": (b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: -1\r\n\r\n", 400),
    "conflicting content-length": (
        b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        400,
    ),
    "content-length and chunked": (
        b"POST / HTTP/1.1\r\n"
        + HOST
        + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "unknown transfer-encoding": (
        b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: gzip\r\n\r\n",
        501,
    ),
    "conflicting host": (b"GET / HTTP/1.1\r\n" + HOST + b"Host: other.localhost\r\n\r\n", 400),
    "missing host": (b"GET / HTTP/1.1\r\n\r\n", 400),
    "connect": (b"CONNECT app.localhost:443 HTTP/1.1\r\n" + HOST + b"\r\n", 405),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_request_is_refused_and_never_reaches_the_dyno(name: str) -> None:
    data, status = HOSTILE[name]

    async def scenario() -> None:
        dyno = FakeDyno()
        async with trio.open_nursery() as nursery:
            await dyno.start(nursery)
            address = await start_router(nursery, backend_for([dyno.address]))
            answer = await raw(address, data)  # returns once the router has closed
            assert answer.startswith(b"HTTP/1.1 %d " % status), answer[:80]
            assert b"Connection: close" in answer
            assert dyno.requests == [] and dyno.connections == 0
            assert (await get(address)).status == 200  # and the router still serves others
            nursery.cancel_scope.cancel()

    run(scenario)


@pytest.mark.parametrize(
    "start, status",
    [
        (b"GET /" + b"a" * 9000, 414),  # a request line that has not ended yet
        (b"GET / HTTP/1.1\r\n" + HOST + b"X-Big: " + b"v" * 9000, 431),  # a header line
        (b"GET / HTTP/1.1\r\n" + HOST + b"X-Big: " + b"v" * 5000, 431),  # sent in two pieces
    ],
)
def test_an_overlong_line_is_refused_before_it_ends(start: bytes, status: int) -> None:
    async def scenario() -> None:
        dyno = FakeDyno()
        async with trio.open_nursery() as nursery:
            await dyno.start(nursery)
            address = await start_router(nursery, backend_for([dyno.address]), header_timeout=60)
            stream = await trio.open_tcp_stream(*address)
            await stream.send_all(start)
            if len(start) < 9000:
                await trio.sleep(0.05)  # the router has read the first piece
                await stream.send_all(b"v" * 4000)
            answer = b""
            with trio.fail_after(5):  # at once, not at the header timeout or 64 KiB
                while chunk := await stream.receive_some(65536):
                    answer += chunk
            assert answer.startswith(b"HTTP/1.1 %d " % status), answer[:80]
            assert dyno.requests == [] and dyno.connections == 0
            await stream.aclose()
            nursery.cancel_scope.cancel()

    run(scenario)


def test_a_request_hidden_in_a_body_stays_the_body() -> None:
    # `Connection: content-length` asks the router to drop the body's framing; if it did, the
    # dyno would take the body for a second request that no check saw, forged headers and all.
    smuggled = b"GET /admin HTTP/1.1\r\nHost: app.localhost\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n"
    bodies: list[bytes] = []

    async def keep_body(req: DynoRequest) -> None:
        bodies.append(await req.body())
        await req.respond(200, b"ok")

    async def scenario() -> None:
        dyno = FakeDyno(handler=keep_body)
        async with trio.open_nursery() as nursery:
            await dyno.start(nursery)
            address = await start_router(nursery, backend_for([dyno.address]))
            answer = await raw(
                address,
                b"POST / HTTP/1.1\r\n"
                + HOST
                + b"Connection: close, content-length\r\n"
                + b"Content-Length: %d\r\n\r\n" % len(smuggled)
                + smuggled,
            )
            assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"ok")
            assert bodies == [smuggled]
            assert [r.target for r in dyno.requests] == [b"/"]
            nursery.cancel_scope.cancel()

    run(scenario)


def test_limit_breakers_are_logged_when_they_name_an_app() -> None:
    async def scenario() -> None:
        lines = Lines()
        async with trio.open_nursery() as nursery:
            address = await start_router(nursery, backend_for([], lines))
            await raw(address, HOSTILE["header line over 8192"][0])
            assert lines.texts()[0].startswith(
                'at=error code=H25 desc="HTTP restriction: header line too long"'
            )
            assert " status=431 " in lines.texts()[0]
            assert re.search(r" request_id=[A-Za-z0-9+/=-]{20,200} ", lines.texts()[0])
            # a request id the client gave is the one logged, as for a forwarded request
            given = b"X-Request-Id: abcdefghij0123456789-given\r\n"
            await raw(address, HOSTILE["header line over 8192"][0].replace(HOST, HOST + given, 1))
            assert " request_id=abcdefghij0123456789-given " in lines.texts()[1]
            nursery.cancel_scope.cancel()

    run(scenario)


def test_slowloris_is_cut_off_while_others_are_served() -> None:
    async def scenario() -> None:
        dyno = FakeDyno()
        async with trio.open_nursery() as nursery:
            await dyno.start(nursery)
            address = await start_router(nursery, backend_for([dyno.address]), header_timeout=0.5)
            silent = await trio.open_tcp_stream(*address)
            slow = await trio.open_tcp_stream(*address)
            await slow.send_all(b"GET / HTTP/1.1\r\n")
            started = trio.current_time()
            answer = b""
            served = 0
            while True:  # a header byte every 50 ms: never finishes, never idle
                try:
                    await slow.send_all(b"X")
                except trio.BrokenResourceError:
                    break
                with trio.move_on_after(0.05):
                    chunk = await slow.receive_some(4096)
                    answer += chunk
                    if not chunk:
                        break
                assert (await get(address)).body == b"web.1"
                served += 1
            elapsed = trio.current_time() - started
            assert answer.startswith(b"HTTP/1.1 408 ") or answer == b""
            assert 0.4 <= elapsed < 3 and served >= 3
            assert await silent.receive_some(10) == b""  # connected, said nothing: closed too
            assert dyno.requests and all(r.target == b"/" for r in dyno.requests)
            assert len(dyno.requests) == served
            nursery.cancel_scope.cancel()

    run(scenario)


def test_connection_cap() -> None:
    async def scenario() -> None:
        dyno = FakeDyno()
        async with trio.open_nursery() as nursery:
            await dyno.start(nursery)
            address = await start_router(nursery, backend_for([dyno.address]), max_connections=2)
            first, second = await Client.open(address), await Client.open(address)
            assert (await first.request()).status == 200
            assert (await second.request()).status == 200
            turned_away = await raw(address, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            assert turned_away == b"" or turned_away.startswith(b"HTTP/1.1 503 ")
            await first.aclose()
            while True:  # the router frees the slot once it sees the close
                reply = await raw(
                    address, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
                )
                if reply.startswith(b"HTTP/1.1 200 "):
                    break
                await trio.sleep(0.01)
            assert len(dyno.requests) == 3
            nursery.cancel_scope.cancel()

    run(scenario)


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_a_listener_on_127_0_0_1_holds_its_port_on_ipv6_too() -> None:
    """Otherwise a dyno could bind [::1] on the router's (or the API's) port and take the
    clients that try IPv6 first."""
    sockets = listen(("127.0.0.1", 0))
    try:
        port = sockets[0].getsockname()[1]
        assert [s.getsockname()[:2] for s in sockets] == [("127.0.0.1", port), ("::1", port)]
        with socket.socket(socket.AF_INET6) as dyno:
            dyno.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            with pytest.raises(OSError) as taken:
                dyno.bind(("::1", port))
            assert taken.value.errno == errno.EADDRINUSE
    finally:
        for sock in sockets:
            sock.close()
    with socket.socket(socket.AF_INET6) as squatter:  # held on [::1] already: refused
        squatter.bind(("::1", 0))
        squatter.listen()
        with pytest.raises(OSError) as refused:
            listen(("127.0.0.1", squatter.getsockname()[1]))
        assert refused.value.errno == errno.EADDRINUSE
