"""The API's HTTP server: past its connection cap a client gets a 503 at once, not a hang."""

from __future__ import annotations

import trio

from dynod.config import Address
from dynod.http import Request, Response, json_response, serve_http


async def hello(request: Request) -> Response:
    return json_response({"path": request.path})


async def get(port: int) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"GET /x HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := await stream.receive_some():
            answer += chunk
    return answer


def test_connections_past_the_cap_get_a_503_and_the_cap_frees_up() -> None:
    async def main() -> None:
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                _, port = await nursery.start(
                    lambda task_status: serve_http(Address("127.0.0.1", 0), hello,
                                                   max_connections=2, task_status=task_status))
                idle = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(2)]
                await trio.sleep(0.2)  # both accepted: the cap is reached
                busy = await get(port)
                assert busy.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 1" in busy, busy
                assert b'"id": "unavailable"' in busy
                await idle.pop().aclose()
                await trio.sleep(0.2)
                assert (await get(port)).startswith(b"HTTP/1.1 200 ")
                for stream in idle:
                    await stream.aclose()
                nursery.cancel_scope.cancel()

    trio.run(main)
