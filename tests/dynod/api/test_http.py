"""The API's HTTP server at its connection cap: sockets held open without a request make room
for new clients; only when every connection is busy with a request does a client get a 503."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio

from dynod.api.server import Request, Response, error_response, json_response, serve_http
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


def test_a_body_sent_byte_by_byte_is_not_waited_for_after_the_answer() -> None:
    async def scenario(port: int) -> None:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"POST /x HTTP/1.1\r\nHost: api\r\nContent-Length: 100\r\n\r\na")
            answer = b""
            with trio.fail_after(5):  # answered (the handler never reads the body), then closed
                while chunk := await stream.receive_some():
                    answer += chunk
            assert answer.startswith(b"HTTP/1.1 200 "), answer
            assert b"Connection: close" in answer

    serving(hello, scenario)


async def guarded(request: Request) -> Response:
    """Refuses a request without the token before reading its body, as the API does."""
    if request.header("authorization") != "Bearer t0ken":
        return error_response(401, "unauthorized", "no token")
    return json_response({"path": request.path})


def test_300_slow_unauthenticated_bodies_keep_no_real_client_out() -> None:
    """The lock-out of issue 11: each refused request's body dribbles a byte now and then; the
    refusal closes its connection at once, so a real client gets every answer."""
    head = b"POST /apps HTTP/1.1\r\nHost: api\r\nContent-Length: 1000000\r\n\r\n"
    answers: list[bytes] = []
    port = 0
    dribbling = 0  # attackers whose head is sent and whose body is on its way
    all_in = trio.Event()

    async def attacker() -> None:
        nonlocal dribbling
        while True:  # as soon as one connection ends, another takes its place
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(0.05)
                continue
            async with stream:
                try:
                    await stream.send_all(head)
                    dribbling += 1
                    if dribbling == 300:
                        all_in.set()
                    while True:
                        await stream.send_all(b"x")
                        with trio.move_on_after(0.3):
                            if not await stream.receive_some():
                                break
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass

    async def real_request() -> bytes:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(
                b"GET /apps HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer t0ken\r\n"
                b"Connection: close\r\n\r\n"
            )
            answer = b""
            try:
                while chunk := await stream.receive_some():
                    answer += chunk
            except trio.BrokenResourceError:
                pass  # reset: counted as no answer below
        return answer

    async def main() -> None:
        nonlocal port
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                _, port = await nursery.start(serve_http, Address("127.0.0.1", 0), guarded)
                async with trio.open_nursery() as attackers:
                    for _ in range(300):
                        attackers.start_soon(attacker)
                    await all_in.wait()  # every attacker in, its body dribbling
                    for _ in range(20):
                        with trio.move_on_after(5):
                            answers.append(await real_request())
                    attackers.cancel_scope.cancel()
                nursery.cancel_scope.cancel()

    trio.run(main)
    ok = [a for a in answers if a.startswith(b"HTTP/1.1 200 ")]
    assert len(ok) == 20, [a[:40] for a in answers if a not in ok]


def test_a_refused_request_is_answered_and_closed_without_its_body() -> None:
    async def scenario(port: int) -> None:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(
                b"POST /apps HTTP/1.1\r\nHost: api\r\nContent-Length: 1000000\r\n\r\nx"
            )
            answer = b""
            with trio.fail_after(1.5):  # well before any 10 s drain: the body is not awaited
                while chunk := await stream.receive_some():
                    answer += chunk
        assert answer.startswith(b"HTTP/1.1 401 ") and b"Connection: close" in answer, answer

    serving(guarded, scenario)


def test_the_header_cap_holds_when_the_head_arrives_in_one_piece() -> None:
    async def scenario(port: int) -> None:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            big = b"X-Big: " + b"v" * 20_000 + b"\r\n"
            await stream.send_all(b"GET /x HTTP/1.1\r\nHost: api\r\n" + big + b"\r\n")
            answer = b""
            with trio.fail_after(5):
                while chunk := await stream.receive_some():
                    answer += chunk
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:80]
        assert (await get(port)).startswith(b"HTTP/1.1 200 ")  # under the cap: answered

    serving(hello, scenario)


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_the_api_on_127_0_0_1_answers_on_ipv6_loopback_too() -> None:
    """No dyno can take [::1] on the API's port (tests/router/test_hostile.py)."""

    async def scenario(port: int) -> None:
        stream = await trio.open_tcp_stream("::1", port)
        async with stream:
            await stream.send_all(b"GET /six HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := await stream.receive_some():
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 ") and b"/six" in answer

    serving(hello, scenario)
