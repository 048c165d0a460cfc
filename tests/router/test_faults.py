"""Dynos that misbehave or drop kept-alive connections, and clients that pipeline or speak
HTTP/1.0: the router answers each correctly and logs what happened."""

from __future__ import annotations

import re

import h11
import trio

from tests.router.support import (
    Client,
    DynoRequest,
    FakeDyno,
    Lines,
    backend_for,
    raw,
    run,
    start_router,
)


async def _garbage(req: DynoRequest) -> None:
    await req.body()
    await req.stream.send_all(b"HTTP/1.1 OK maybe\r\n\r\n")
    await trio.sleep_forever()


async def _unasked_switch(req: DynoRequest) -> None:
    await req.body()
    await req.stream.send_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n")
    await trio.sleep_forever()


def test_h17_poorly_formatted_responses() -> None:
    async def scenario() -> None:
        for handler in (_garbage, _unasked_switch):
            lines = Lines()
            dyno = FakeDyno(handler=handler)
            async with trio.open_nursery() as nursery:
                await dyno.start(nursery)
                address = await start_router(nursery, backend_for([dyno.address], lines))
                answer = await raw(address, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
                assert answer.startswith(b"HTTP/1.1 503 ")
                assert lines.texts()[0].startswith(
                    'at=error code=H17 desc="Poorly formatted HTTP response"'
                )
                nursery.cancel_scope.cancel()

    run(scenario)


def test_a_kept_alive_connection_the_dyno_closed_is_retried_fresh() -> None:
    async def answer_then_hang_up(req: DynoRequest) -> None:
        await req.body()
        await req.respond(200, b"fresh")  # no Connection: close, yet the dyno closes
        await req.stream.aclose()

    async def scenario() -> None:
        lines = Lines()
        dyno = FakeDyno(handler=answer_then_hang_up)
        async with trio.open_nursery() as nursery:
            await dyno.start(nursery)
            address = await start_router(nursery, backend_for([dyno.address], lines))
            client = await Client.open(address)
            for _ in range(4):
                assert (await client.request()).body == b"fresh"
            assert dyno.connections == 4 and len(dyno.requests) == 4
            assert all(t.startswith("at=info") for t in lines.texts())
            nursery.cancel_scope.cancel()

    run(scenario)


def test_pipelined_requests_are_answered_in_order() -> None:
    async def echo_path(req: DynoRequest) -> None:
        await req.body()
        await req.respond(200, req.request.target)

    async def scenario() -> None:
        dyno = FakeDyno(handler=echo_path)
        async with trio.open_nursery() as nursery:
            await dyno.start(nursery)
            address = await start_router(nursery, backend_for([dyno.address]))
            requests = b"".join(b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n" % i for i in range(3))
            answer = await raw(
                address, requests + b"GET /last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
            )
            assert re.findall(rb"\r\n\r\n(/[a-z0-9]+)", answer) == [b"/0", b"/1", b"/2", b"/last"]
            assert answer.count(b"HTTP/1.1 200 ") == 4
            nursery.cancel_scope.cancel()

    run(scenario)


def test_http10_client_gets_an_unsized_body_until_close() -> None:
    async def stream(req: DynoRequest) -> None:
        await req.body()
        await req.send(
            h11.Response(status_code=200, headers=[]),
            h11.Data(data=b"part "),
            h11.Data(data=b"two"),
            h11.EndOfMessage(),
        )

    async def scenario() -> None:
        dyno = FakeDyno(handler=stream)
        async with trio.open_nursery() as nursery:
            await dyno.start(nursery)
            address = await start_router(nursery, backend_for([dyno.address]))
            old = await raw(address, b"GET / HTTP/1.0\r\n\r\n")
            head, _, body = old.partition(b"\r\n\r\n")
            assert b"transfer-encoding" not in head.lower() and b"Connection: close" in head
            assert body == b"part two"
            new = await raw(address, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            assert b"Transfer-Encoding: chunked" in new and new.endswith(
                b"5\r\npart \r\n3\r\ntwo\r\n0\r\n\r\n"
            )
            nursery.cancel_scope.cancel()

    run(scenario)


def test_h28_client_stops_reading_a_download() -> None:
    async def flood(req: DynoRequest) -> None:
        await req.body()
        await req.send(
            h11.Response(status_code=200, headers=[(b"Content-Length", b"%d" % (64 << 20))])
        )
        block = b"x" * (1 << 20)
        for _ in range(64):
            await req.send(h11.Data(data=block))

    async def scenario() -> None:
        lines = Lines()
        dyno = FakeDyno(handler=flood)
        async with trio.open_nursery() as nursery:
            await dyno.start(nursery)
            address = await start_router(
                nursery, backend_for([dyno.address], lines), idle_timeout=0.3
            )
            stream = await trio.open_tcp_stream(*address)
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            while not lines.lines:  # never reads: the router's buffers fill, then it gives up
                await trio.sleep(0.02)
            assert lines.texts()[0].startswith(
                'sock=client at=error code=H28 desc="Client Connection Idle"'
            )
            assert " status=499 " in lines.texts()[0]
            await stream.aclose()
            nursery.cancel_scope.cancel()

    run(scenario)
