"""The straightforward trio + h11 proxy the router is measured against (bench/router.py).

What one writes first: trio.serve_tcp, trio.SocketStream, h11 on both sides, round-robin per
request, one kept-alive connection per backend per client connection. No limits, no headers
beyond X-Forwarded-For and Via, no error pages: a yardstick, not a router.

    python bench/router/straightforward.py PORT BACKEND_PORT [BACKEND_PORT …]
"""

from __future__ import annotations

import itertools
import sys
from typing import Any

import h11
import trio

HOP_BY_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"upgrade", b"te", b"trailer"}


async def next_event(stream: trio.SocketStream, conn: h11.Connection) -> Any:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(await stream.receive_some(65536))


def main() -> None:
    port, backends = int(sys.argv[1]), [("127.0.0.1", int(p)) for p in sys.argv[2:]]
    turn = itertools.cycle(backends)

    async def proxy(client: trio.SocketStream) -> None:
        server = h11.Connection(h11.SERVER)
        upstreams: dict[tuple[str, int], tuple[trio.SocketStream, h11.Connection]] = {}
        while True:
            request = await next_event(client, server)
            if type(request) is not h11.Request:
                return
            body = []
            while type(event := await next_event(client, server)) is h11.Data:
                body.append(event.data)
            backend = next(turn)
            if backend not in upstreams:
                upstreams[backend] = (
                    await trio.open_tcp_stream(*backend),
                    h11.Connection(h11.CLIENT),
                )
            stream, conn = upstreams[backend]
            headers = [(k, v) for k, v in request.headers if k not in HOP_BY_HOP]
            headers += [(b"x-forwarded-for", b"127.0.0.1"), (b"via", b"1.1 straightforward")]
            out = conn.send(
                h11.Request(method=request.method, target=request.target, headers=headers)
            )
            out += b"".join(conn.send(h11.Data(data=part)) for part in body)
            await stream.send_all(out + conn.send(h11.EndOfMessage()))
            response = await next_event(stream, conn)
            headers = [(k, v) for k, v in response.headers if k not in HOP_BY_HOP]
            reply = [server.send(h11.Response(status_code=response.status_code, headers=headers))]
            while type(event := await next_event(stream, conn)) is h11.Data:
                reply.append(server.send(event))
            reply.append(server.send(h11.EndOfMessage()))
            await client.send_all(b"".join(reply))
            conn.start_next_cycle()
            server.start_next_cycle()

    async def guarded(client: trio.SocketStream) -> None:
        try:
            await proxy(client)
        except (h11.ProtocolError, trio.BrokenResourceError, OSError):
            pass  # a yardstick: a failed connection is just closed

    trio.run(lambda: trio.serve_tcp(guarded, port, host="127.0.0.1"))


if __name__ == "__main__":
    main()
