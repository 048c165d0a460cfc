"""The router between real clients and real dynos on loopback: routing, headers, H codes with
short timeouts, keep-alive on both sides."""

from __future__ import annotations

import re
import time

import h11
import pytest
import trio
import trio.testing

from router.backend import DynoState, TableBackend, WebDyno
from tests.router.support import (
    ChildDyno,
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

UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def one_line(lines: Lines) -> str:
    assert len(lines.lines) == 1, lines.lines
    return lines.lines[0][1]


def test_round_robin_over_three_child_dynos() -> None:
    dynos = [ChildDyno.start(f"web.{i}") for i in (1, 2, 3)]
    try:

        async def scenario() -> None:
            lines = Lines()
            async with trio.open_nursery() as nursery:
                address = await start_router(
                    nursery, backend_for([d.address for d in dynos], lines)
                )
                client = await Client.open(address)
                bodies = [(await client.request()).body for _ in range(6)]
                assert bodies == [b"web.1", b"web.2", b"web.3"] * 2
                assert [(await get(address)).body for _ in range(3)] == [
                    b"web.1",
                    b"web.2",
                    b"web.3",
                ]
                served_by = [re.findall("dyno=(\\S+)", t)[0] for t in lines.texts()]
                assert served_by[:3] == ["web.1", "web.2", "web.3"]
                nursery.cancel_scope.cancel()

        run(scenario)
    finally:
        for dyno in dynos:
            dyno.kill()


def test_request_and_response_headers() -> None:
    async def answer(req: DynoRequest) -> None:
        await req.body()
        await req.respond(
            200, b"ok", [(b"Connection", b"X-Private"), (b"X-Private", b"1"), (b"Via", b"1.0 app")]
        )

    async def scenario() -> None:
        lines = Lines()
        dyno = FakeDyno(handler=answer)
        async with trio.open_nursery() as nursery:
            await dyno.start(nursery)
            address = await start_router(nursery, backend_for([dyno.address], lines))
            before = int(time.time() * 1000)
            reply = await get(
                address,
                "/path?q=1",
                [
                    (b"Host", b"myapp.localhost:%d" % address[1]),
                    (b"X-Forwarded-For", b"203.0.113.7"),
                    (b"X-Forwarded-Proto", b"https"),
                    (b"Connection", b"keep-alive, X-Hop"),
                    (b"X-Hop", b"secret"),
                    (b"Keep-Alive", b"timeout=9"),
                    (b"TE", b"trailers"),
                    (b"Proxy-Authorization", b"Basic eDp5"),
                    (b"Accept", b"text/plain"),
                ],
            )
            after = int(time.time() * 1000)
            assert reply.status == 200 and reply.body == b"ok"
            assert reply.header(b"via") == [b"1.0 app, 1.1 dynod"]
            assert reply.header(b"x-private") == []
            seen = dyno.requests[0]
            got = {k: v for k, v in seen.headers}
            assert seen.target == b"/path?q=1"
            assert got[b"host"] == b"myapp.localhost:%d" % address[1]
            assert got[b"x-forwarded-for"] == b"203.0.113.7, 127.0.0.1"
            assert got[b"x-forwarded-proto"] == b"http"
            assert got[b"x-forwarded-port"] == b"%d" % address[1]
            assert before <= int(got[b"x-request-start"]) <= after
            assert UUID.fullmatch(got[b"x-request-id"])
            assert got[b"via"] == b"1.1 dynod"
            assert got[b"accept"] == b"text/plain"
            for hop in (b"connection", b"x-hop", b"keep-alive", b"te", b"proxy-authorization"):
                assert hop not in got
            line = one_line(lines)
            assert line.startswith('at=info method=GET path="/path?q=1" host=myapp.localhost:')
            assert (
                f'request_id={got[b"x-request-id"].decode()} fwd="203.0.113.7, 127.0.0.1" '
                "dyno=web.1 " in line
            )
            assert re.search(
                r" connect=\d+ms service=\d+ms status=200 bytes=\d+ protocol=http$", line
            )

            mine = b"my-request-id-0123456789"
            await get(address, "/", [(b"X-Request-Id", mine)])
            await get(address, "/", [(b"X-Request-Id", b"too-short")])
            assert dict(dyno.requests[1].headers)[b"x-request-id"] == mine
            assert UUID.fullmatch(dict(dyno.requests[2].headers)[b"x-request-id"])
            nursery.cancel_scope.cancel()

    run(scenario)


def test_unknown_host_is_a_404_naming_nothing() -> None:
    async def scenario() -> None:
        dyno = FakeDyno()
        backend = TableBackend()
        async with trio.open_nursery() as nursery:
            await dyno.start(nursery)
            backend.update("myapp", [dyno.web()])
            address = await start_router(nursery, backend)
            assert (await get(address, "/", [(b"Host", b"myapp.localhost")])).body == b"web.1"
            reply = await get(address, "/", [(b"Host", b"other.localhost")])
            assert reply.status == 404 and b"myapp" not in reply.body and b"web" not in reply.body
            nursery.cancel_scope.cancel()

    run(scenario)


def test_keep_alive_is_reused_on_both_sides() -> None:
    async def scenario() -> None:
        dyno = FakeDyno()
        async with trio.open_nursery() as nursery:
            await dyno.start(nursery)
            address = await start_router(nursery, backend_for([dyno.address]))
            client = await Client.open(address)
            for _ in range(5):
                assert (await client.request()).body == b"web.1"
            await get(address)  # a second client connection reuses the pooled dyno connection
            assert len(dyno.requests) == 6 and dyno.connections == 1
            nursery.cancel_scope.cancel()

    run(scenario)


@pytest.mark.parametrize(
    "states, code, desc",
    [
        ((), "H14", "No web processes running"),
        ((DynoState.CRASHED, DynoState.CRASHED), "H10", "App crashed"),
        ((DynoState.STARTING, DynoState.CRASHED), "H20", "App boot timeout"),
    ],
)
def test_no_up_dyno_errors(states: tuple[DynoState, ...], code: str, desc: str) -> None:
    async def scenario() -> None:
        lines = Lines()
        backend = TableBackend(any_host="app", sink=lines)
        backend.update(
            "app", [WebDyno(f"web.{i}", ("127.0.0.1", 9), s) for i, s in enumerate(states, 1)]
        )
        async with trio.open_nursery() as nursery:
            address = await start_router(nursery, backend, boot_wait=0.3)
            reply = await get(address)
            assert reply.status == 503 and b"Application error" in reply.body
            line = one_line(lines)
            assert line.startswith(f'at=error code={code} desc="{desc}" method=GET path="/" ')
            assert " dyno= connect= service= status=503 " in line
            nursery.cancel_scope.cancel()

    run(scenario)


def test_request_waits_for_a_booting_dyno() -> None:
    async def scenario() -> None:
        dyno = FakeDyno()
        woken: list[str] = []
        backend = TableBackend(any_host="app", on_wake=woken.append)
        backend.update("app", [WebDyno("web.1", ("127.0.0.1", 9), DynoState.IDLE)])
        async with trio.open_nursery() as nursery:
            await dyno.start(nursery)
            address = await start_router(nursery, backend, boot_wait=30)
            replies: list[bytes] = []

            async def ask() -> None:
                replies.append((await get(address)).body)

            nursery.start_soon(ask)
            while not woken:  # the request reached the router and asked to wake the app
                await trio.sleep(0.01)
            backend.update("app", [WebDyno("web.1", ("127.0.0.1", 9), DynoState.STARTING)])
            await trio.testing.wait_all_tasks_blocked()  # the router saw it, and holds on
            assert replies == []
            backend.update("app", [dyno.web()])
            while not replies:
                await trio.sleep(0.01)
            assert replies == [b"web.1"] and woken == ["app"]
            nursery.cancel_scope.cancel()

    run(scenario)


async def _never_answer(req: DynoRequest) -> None:
    await trio.sleep_forever()


def test_h12_request_timeout() -> None:
    async def scenario() -> None:
        lines = Lines()
        dyno = FakeDyno(handler=_never_answer)
        async with trio.open_nursery() as nursery:
            await dyno.start(nursery)
            address = await start_router(
                nursery, backend_for([dyno.address], lines), request_timeout=0.3
            )
            started = trio.current_time()
            reply = await get(address)
            assert reply.status == 503 and trio.current_time() - started >= 0.3
            line = one_line(lines)
            assert line.startswith('at=error code=H12 desc="Request timeout" method=GET')
            assert " dyno=web.1 " in line and " status=503 " in line
            assert int(re.search(r"service=(\d+)ms", line).group(1)) >= 300  # type: ignore[union-attr]
            nursery.cancel_scope.cancel()

    run(scenario)


def test_h13_dyno_closes_without_response() -> None:
    async def hang_up(req: DynoRequest) -> None:
        await req.stream.aclose()

    async def scenario() -> None:
        lines = Lines()
        dyno = FakeDyno(handler=hang_up)
        async with trio.open_nursery() as nursery:
            await dyno.start(nursery)
            address = await start_router(nursery, backend_for([dyno.address], lines))
            assert (await get(address)).status == 503
            assert one_line(lines).startswith(
                'at=error code=H13 desc="Connection closed without response"'
            )
            nursery.cancel_scope.cancel()

    run(scenario)


def test_refusing_dyno_is_skipped_and_quarantined() -> None:
    async def scenario() -> None:
        lines = Lines()
        dyno = FakeDyno(name="web.2")
        closed = trio.socket.socket()
        await closed.bind(("127.0.0.1", 0))
        dead = closed.getsockname()  # bound but not listening: connections are refused
        async with trio.open_nursery() as nursery:
            await dyno.start(nursery)
            address = await start_router(nursery, backend_for([dead, dyno.address], lines))
            assert [(await get(address)).body for _ in range(4)] == [b"web.2"] * 4
            assert all(" dyno=web.2 " in t and t.startswith("at=info") for t in lines.texts())
            nursery.cancel_scope.cancel()
        closed.close()

    run(scenario)


def test_h21_when_every_dyno_refuses() -> None:
    async def scenario() -> None:
        lines = Lines()
        closed = trio.socket.socket()
        await closed.bind(("127.0.0.1", 0))
        async with trio.open_nursery() as nursery:
            address = await start_router(nursery, backend_for([closed.getsockname()], lines))
            assert (await get(address)).status == 503
            assert one_line(lines).startswith('at=error code=H21 desc="Backend connection refused"')
            nursery.cancel_scope.cancel()
        closed.close()

    run(scenario)


def test_h15_dyno_goes_quiet_mid_body() -> None:
    async def stall(req: DynoRequest) -> None:
        await req.send(
            h11.Response(status_code=200, headers=[(b"Content-Length", b"100")]),
            h11.Data(data=b"x" * 10),
        )
        await trio.sleep_forever()

    async def scenario() -> None:
        lines = Lines()
        dyno = FakeDyno(handler=stall)
        async with trio.open_nursery() as nursery:
            await dyno.start(nursery)
            address = await start_router(
                nursery, backend_for([dyno.address], lines), idle_timeout=0.3
            )
            client = await Client.open(address)
            with pytest.raises(h11.RemoteProtocolError):  # cut short: 10 of 100 bytes
                await client.request()
            line = one_line(lines)
            assert (
                line.startswith('at=error code=H15 desc="Idle connection"')
                and " status=200 " in line
            )
            nursery.cancel_scope.cancel()

    run(scenario)


def test_h18_dyno_closes_mid_body() -> None:
    async def cut(req: DynoRequest) -> None:
        await req.send(
            h11.Response(status_code=200, headers=[(b"Content-Length", b"100")]),
            h11.Data(data=b"x" * 10),
        )
        await req.stream.aclose()

    async def scenario() -> None:
        lines = Lines()
        dyno = FakeDyno(handler=cut)
        async with trio.open_nursery() as nursery:
            await dyno.start(nursery)
            address = await start_router(nursery, backend_for([dyno.address], lines))
            client = await Client.open(address)
            with pytest.raises(h11.RemoteProtocolError):
                await client.request()
            assert one_line(lines).startswith(
                'sock=backend at=error code=H18 desc="Server Request Interrupted"'
            )
            nursery.cancel_scope.cancel()

    run(scenario)


async def _read_body(req: DynoRequest) -> None:
    body = await req.body()
    await req.respond(200, b"%d" % len(body))


@pytest.mark.parametrize("close, code", [(True, "H27"), (False, "H28")])
def test_client_stops_mid_upload(close: bool, code: str) -> None:
    async def scenario() -> None:
        lines = Lines()
        dyno = FakeDyno(handler=_read_body)
        async with trio.open_nursery() as nursery:
            await dyno.start(nursery)
            address = await start_router(
                nursery, backend_for([dyno.address], lines), idle_timeout=0.3
            )
            stream = await trio.open_tcp_stream(*address)
            await stream.send_all(
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n" + b"x" * 10
            )
            while not dyno.requests:
                await trio.sleep(0.01)
            if close:
                await stream.aclose()
            else:
                assert await stream.receive_some(100) == b""  # cut off after the idle timeout
            while not lines.lines:
                await trio.sleep(0.01)
            line = one_line(lines)
            assert line.startswith(f"sock=client at=error code={code} ") and " status=499 " in line
            nursery.cancel_scope.cancel()

    run(scenario)


def test_dyno_may_answer_before_reading_the_body() -> None:
    async def refuse(req: DynoRequest) -> None:
        await req.respond(413, b"too big", [(b"Connection", b"close")])

    async def scenario() -> None:
        dyno = FakeDyno(handler=refuse)
        async with trio.open_nursery() as nursery:
            await dyno.start(nursery)
            address = await start_router(nursery, backend_for([dyno.address]))
            stream = await trio.open_tcp_stream(*address)
            await stream.send_all(
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 1000
            )
            got = b""
            while b"too big" not in got:
                got += await stream.receive_some(4096)
            assert got.startswith(b"HTTP/1.1 413 ")
            nursery.cancel_scope.cancel()

    run(scenario)


def test_expect_100_continue_passes_through() -> None:
    async def go_on(req: DynoRequest) -> None:
        if req.conn.they_are_waiting_for_100_continue:
            await req.send(h11.InformationalResponse(status_code=100, headers=[]))
        await _read_body(req)

    async def scenario() -> None:
        dyno = FakeDyno(handler=go_on)
        async with trio.open_nursery() as nursery:
            await dyno.start(nursery)
            address = await start_router(nursery, backend_for([dyno.address]))
            stream = await trio.open_tcp_stream(*address)
            await stream.send_all(
                b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
            )
            assert (await stream.receive_some(4096)).startswith(b"HTTP/1.1 100 ")
            await stream.send_all(b"hello")
            got = b""
            while not got.endswith(b"\r\n\r\n5"):
                got += await stream.receive_some(4096)
            assert got.startswith(b"HTTP/1.1 200 ")
            nursery.cancel_scope.cancel()

    run(scenario)


def test_head_and_http10_clients() -> None:
    async def scenario() -> None:
        dyno = FakeDyno()
        async with trio.open_nursery() as nursery:
            await dyno.start(nursery)
            address = await start_router(nursery, backend_for([dyno.address]))
            client = await Client.open(address)
            reply = await client.request("HEAD")
            assert (
                reply.status == 200
                and reply.body == b""
                and reply.header(b"content-length") == [b"5"]
            )
            assert (await client.request("GET")).body == b"web.1"
            old = await raw(address, b"GET / HTTP/1.0\r\n\r\n")
            assert old.startswith(b"HTTP/1.1 200 ") and old.endswith(b"\r\n\r\nweb.1")
            nursery.cancel_scope.cancel()

    run(scenario)


def test_pipelined_and_split_requests_take_both_readers_in_turn() -> None:
    """Plain heads are read directly, others by h11 (request.py); on one connection they
    follow each other in any order, pipelined or cut anywhere, and are answered in order."""

    async def echo(req: DynoRequest) -> None:
        body = await req.body()
        await req.respond(200, b"<%s %s>" % (req.request.target, body))

    host = b"Host: app.localhost\r\n"
    pipelined = (
        b"GET /1 HTTP/1.1\r\n" + host + b"\r\n"
        b"POST /2 HTTP/1.1\r\n" + host + b"Content-Length: 3\r\n\r\nabc"
        b"GET /3 HTTP/1.1\r\n" + host + b"\r\n"
        b"GET /4 HTTP/1.1\r\n" + host + b"X-Odd:\x01\r\n\r\n"  # a control byte: h11's
        b"GET /5 HTTP/1.1\r\n" + host + b"Connection: close\r\n\r\n"
    )

    async def scenario() -> None:
        dyno = FakeDyno(handler=echo)
        async with trio.open_nursery() as nursery:
            await dyno.start(nursery)
            address = await start_router(nursery, backend_for([dyno.address]))
            answer = await raw(address, pipelined)
            assert answer.count(b"HTTP/1.1 200 ") == 5
            assert re.findall(rb"<[^>]*>", answer) == [
                b"</1 >",
                b"</2 abc>",
                b"</3 >",
                b"</4 >",
                b"</5 >",
            ]
            stream = await trio.open_tcp_stream(*address)
            for piece in (b"GET /6 HT", b"TP/1.1\r\n" + host, b"\r\nGET /7 HTTP/1.1\r\n"):
                await stream.send_all(piece)
                await trio.sleep(0.05)
            await stream.send_all(host + b"Connection: close\r\n\r\n")
            got = b""
            while chunk := await stream.receive_some(65536):
                got += chunk
            assert re.findall(rb"<[^>]*>", got) == [b"</6 >", b"</7 >"]
            await stream.aclose()
            nursery.cancel_scope.cancel()

    run(scenario)
