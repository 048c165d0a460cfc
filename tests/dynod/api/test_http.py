"""The API's HTTP server at its connection cap: sockets held open without a request make room
for new clients; only when every connection is busy with a request does a client get a 503."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio

from dynod.api.server import Request, Response, json_response, serve_http
from dynod.state.config import Address

Handler = Callable[[Request], Awaitable[Response]]


async def hello(request: Request) -> Response:
    return json_response({"path": request.path})


async def get(port: int, path: str = "/x") -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(
            b"GET %s HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n" % path.encode()
        )
        answer = b""
        while chunk := await stream.receive_some():
            answer += chunk
    return answer


def serving(handler: Handler, scenario: Callable[[int], Awaitable[None]]) -> None:
    async def main() -> None:
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:

                async def serve(task_status: Any) -> None:
                    await serve_http(
                        Address("127.0.0.1", 0), handler, max_connections=2, task_status=task_status
                    )

                _, port = await nursery.start(serve)
                await scenario(port)
                nursery.cancel_scope.cancel()

    trio.run(main)


async def kept_alive(port: int) -> trio.SocketStream:
    """A connection that has had one answer: the server now waits for its next request."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(b"GET /first HTTP/1.1\r\nHost: api\r\n\r\n")
    answer = b""
    while b"/first" not in answer:  # the body names the path
        answer += await stream.receive_some()
    return stream


def test_idle_sockets_at_the_cap_make_room_for_a_new_client_oldest_first() -> None:
    async def scenario(port: int) -> None:
        oldest = await kept_alive(port)
        dribbling = await kept_alive(port)
        await dribbling.send_all(b"GET /slow HTTP/1.1\r\n")  # a head that never ends
        assert (await get(port)).startswith(b"HTTP/1.1 200 ")
        assert await oldest.receive_some() == b""  # closed to make room
        newer = await kept_alive(port)  # at the cap again
        assert (await get(port)).startswith(b"HTTP/1.1 200 ")
        assert await dribbling.receive_some() == b""  # now the longest waiting goes
        await newer.aclose()

    serving(hello, scenario)


def test_a_503_only_when_every_connection_is_busy_with_a_request() -> None:
    release, both_in = trio.Event(), trio.Event()
    inside = [0]

    async def slow(request: Request) -> Response:
        if request.path == "/slow":
            inside[0] += 1
            if inside[0] == 2:
                both_in.set()
            await release.wait()
        return json_response({})

    async def scenario(port: int) -> None:
        async with trio.open_nursery() as clients:
            for _ in range(2):
                clients.start_soon(get, port, "/slow")
            await both_in.wait()  # both connections are in a request
            busy = await get(port)
            assert busy.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 1" in busy, busy
            assert b'"id": "unavailable"' in busy
            release.set()
        assert (await get(port)).startswith(b"HTTP/1.1 200 ")

    serving(slow, scenario)


def test_a_body_sent_byte_by_byte_is_not_waited_for_after_the_answer(monkeypatch: Any) -> None:
    monkeypatch.setattr("dynod.api.server.DRAIN_TIMEOUT", 0.5)

    async def scenario(port: int) -> None:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"POST /x HTTP/1.1\r\nHost: api\r\nContent-Length: 100\r\n\r\na")
            answer = b""
            with trio.fail_after(5):  # answered (the handler never reads the body), then closed
                while chunk := await stream.receive_some():
                    answer += chunk
            assert answer.startswith(b"HTTP/1.1 200 "), answer

    serving(hello, scenario)
