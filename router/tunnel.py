"""After a 101 Switching Protocols (WebSocket): bytes both ways, untouched, until both sides
have closed, one resets, or neither has sent anything for `idle` seconds (H15/H28's 55 s).
"""

from __future__ import annotations

import trio

from .net import Stream

_GONE = (OSError, trio.ClosedResourceError)


async def tunnel(
    client: Stream, dyno: Stream, from_client: bytes, from_dyno: bytes, idle: float
) -> None:
    """`from_client`/`from_dyno`: bytes h11 read past the handshake. Closes `dyno`."""
    scope = trio.CancelScope(deadline=trio.current_time() + idle)

    async def copy(source: Stream, sink: Stream, first: bytes) -> None:
        try:
            if first:
                await sink.send_all(first)
            while True:
                data = await source.receive()
                if not data:
                    sink.shutdown_write()
                    return
                scope.deadline = trio.current_time() + idle
                await sink.send_all(data)
        except _GONE:
            scope.cancel()  # a reset on either side ends both directions

    try:
        with scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(copy, client, dyno, from_client)
                nursery.start_soon(copy, dyno, client, from_dyno)
    finally:
        dyno.close()
