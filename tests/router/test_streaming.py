"""Bodies stream both ways without being held whole; upgrades become tunnels; a dyno killed
under load costs only the requests it had in flight."""

from __future__ import annotations

import hashlib

import h11
import trio

from tests.router.support import (
    ChildDyno,
    Client,
    DynoRequest,
    FakeDyno,
    Lines,
    backend_for,
    next_event,
    run,
    start_router,
)

MB = 1 << 20
BLOCK = hashlib.sha256(b"seed").digest() * (MB // 32)  # 1 MiB, not all one byte


async def _digest_upload(req: DynoRequest) -> None:
    digest = hashlib.sha256()
    size = 0
    while True:
        event = await next_event(req.stream, req.conn)
        if type(event) is h11.EndOfMessage:
            break
        digest.update(event.data)
        size += len(event.data)
    await req.respond(200, b"%d %s" % (size, digest.hexdigest().encode()))


async def _download(req: DynoRequest) -> None:
    await req.body()
    chunked = req.request.target == b"/chunked"
    framing = [] if chunked else [(b"Content-Length", b"%d" % (50 * MB))]
    await req.send(h11.Response(status_code=200, headers=framing))
    for _ in range(50):
        await req.send(h11.Data(data=BLOCK))
    await req.send(h11.EndOfMessage())


def test_50_mb_upload_and_download_arrive_intact() -> None:
    async def scenario() -> None:
        upload, download = FakeDyno("web.1", _digest_upload), FakeDyno("web.2", _download)
        async with trio.open_nursery() as nursery:
            await upload.start(nursery)
            await download.start(nursery)
            up_router = await start_router(nursery, backend_for([upload.address]))
            down_router = await start_router(nursery, backend_for([download.address]))
            expected = hashlib.sha256(BLOCK * 50).hexdigest().encode()

            for chunked in (False, True):
                stream = await trio.open_tcp_stream(*up_router)
                conn = h11.Connection(h11.CLIENT)
                framing = (
                    (b"Transfer-Encoding", b"chunked")
                    if chunked
                    else (b"Content-Length", b"%d" % (50 * MB))
                )
                await stream.send_all(
                    conn.send(
                        h11.Request(method="POST", target="/", headers=[(b"Host", b"a"), framing])
                    )
                )
                for _ in range(50):
                    await stream.send_all(conn.send(h11.Data(data=BLOCK)))
                await stream.send_all(conn.send(h11.EndOfMessage()))
                reply = await Client(stream, conn).reply()
                assert reply.body == b"%d %s" % (50 * MB, expected)
                await stream.aclose()

            for target in ("/sized", "/chunked"):
                client = await Client.open(down_router)
                await client.stream.send_all(
                    client.conn.send(
                        h11.Request(method="GET", target=target, headers=[(b"Host", b"a")])
                    )
                    + client.conn.send(h11.EndOfMessage())
                )
                digest, size = hashlib.sha256(), 0
                response = await next_event(client.stream, client.conn)
                assert response.status_code == 200
                while type(event := await next_event(client.stream, client.conn)) is h11.Data:
                    digest.update(event.data)
                    size += len(event.data)
                assert (size, digest.hexdigest().encode()) == (50 * MB, expected)
                await client.aclose()
            nursery.cancel_scope.cancel()

    run(scenario, timeout=60)


def test_chunks_reach_the_client_before_the_dyno_finishes() -> None:
    first_seen = trio.Event()

    async def trickle(req: DynoRequest) -> None:
        await req.body()
        await req.send(h11.Response(status_code=200, headers=[]), h11.Data(data=b"first "))
        await first_seen.wait()  # the dyno cannot finish until the client has the first chunk
        await req.send(h11.Data(data=b"last"), h11.EndOfMessage())

    async def scenario() -> None:
        dyno = FakeDyno(handler=trickle)
        async with trio.open_nursery() as nursery:
            await dyno.start(nursery)
            address = await start_router(nursery, backend_for([dyno.address]))
            client = await Client.open(address)
            await client.stream.send_all(
                client.conn.send(h11.Request(method="GET", target="/", headers=[(b"Host", b"a")]))
                + client.conn.send(h11.EndOfMessage())
            )
            response = await next_event(client.stream, client.conn)
            assert dict(response.headers)[b"transfer-encoding"] == b"chunked"
            assert (await next_event(client.stream, client.conn)).data == b"first "
            first_seen.set()
            assert (await next_event(client.stream, client.conn)).data == b"last"
            assert type(await next_event(client.stream, client.conn)) is h11.EndOfMessage
            nursery.cancel_scope.cancel()

    run(scenario)


async def _echo_upgrade(req: DynoRequest) -> None:
    assert req.header(b"upgrade") == [b"echo"]
    await req.send(
        h11.InformationalResponse(
            status_code=101, headers=[(b"Connection", b"Upgrade"), (b"Upgrade", b"echo")]
        )
    )
    data, _ = req.conn.trailing_data
    if data:
        await req.stream.send_all(data)
    async for chunk in req.stream:
        await req.stream.send_all(chunk.upper())


def test_upgrade_becomes_a_byte_tunnel() -> None:
    async def scenario() -> None:
        lines = Lines()
        dyno = FakeDyno(handler=_echo_upgrade)
        async with trio.open_nursery() as nursery:
            await dyno.start(nursery)
            address = await start_router(nursery, backend_for([dyno.address], lines))
            stream = await trio.open_tcp_stream(*address)
            # the first frame rides in the same packet as the handshake
            await stream.send_all(
                b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nhello"
            )
            got = b""
            while not got.endswith(b"HELLO"):
                got += await stream.receive_some(4096)
            assert got.startswith(b"HTTP/1.1 101 ") and b"\r\nupgrade: echo\r\n" in got.lower()
            for word in (b"more", b"bytes" * 10000):
                await stream.send_all(word)
                echoed = b""
                while len(echoed) < len(word):
                    echoed += await stream.receive_some(65536)
                assert echoed == word.upper()
            assert " status=101 " in lines.texts()[0]
            await stream.send_eof()
            assert await stream.receive_some(10) == b""  # the dyno's close comes through
            nursery.cancel_scope.cancel()

    run(scenario)


def test_killing_one_of_three_dynos_loses_only_its_requests_in_flight() -> None:
    dynos = [ChildDyno.start(f"web.{i}") for i in (1, 2, 3)]
    workers, per_worker = 4, 60
    try:

        async def scenario() -> None:
            lines = Lines()
            statuses: list[int] = []
            async with trio.open_nursery() as nursery:
                address = await start_router(
                    nursery, backend_for([d.address for d in dynos], lines)
                )

                async def loop() -> None:
                    client = await Client.open(address)
                    for _ in range(per_worker):
                        try:
                            reply = await client.request()
                        except (h11.RemoteProtocolError, trio.BrokenResourceError):
                            statuses.append(-1)
                            client = await Client.open(address)
                            continue
                        statuses.append(reply.status)
                        if reply.header(b"connection") == [b"close"]:
                            client = await Client.open(address)
                        if len(statuses) == workers * per_worker // 3:
                            dynos[1].kill()

                async with trio.open_nursery() as clients:
                    for _ in range(workers):
                        clients.start_soon(loop)
                nursery.cancel_scope.cancel()
            lost = [s for s in statuses if s != 200]
            assert len(statuses) == workers * per_worker
            assert len(lost) <= workers, lost  # one in flight per client at most
            served = [t for t in lines.texts() if t.startswith("at=info")]
            assert not any(" dyno=web.2 " in t for t in served[len(served) // 2 :])

        run(scenario, timeout=30)
    finally:
        for dyno in dynos:
            dyno.kill()
