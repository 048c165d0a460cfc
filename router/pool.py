"""Keep-alive connections to dynos: an idle stack per dyno address, reused newest first.

A dyno may close an idle connection at any moment; the proxy notices on first use and retries
on a fresh connection when that is safe. Connections idle too long are closed by `sweep`.
"""

from __future__ import annotations

import socket

import attrs
from attrs import define

from .codec import DynoCodec
from .config import Address
from .net import Stream, Timeouts, connect


@define(slots=True, eq=False)
class Upstream:
    """One connection to a dyno with its HTTP state."""

    stream: Stream
    codec: DynoCodec
    address: Address
    reused: bool = False
    idle_since: float = 0.0

    def stale(self) -> bool:
        """True when the dyno closed it (or wrote unasked) while it sat idle; one syscall."""
        try:
            self.stream.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        except OSError:
            pass
        return True


@define
class Pool:
    timeouts: Timeouts
    max_idle: int = 256
    idle_timeout: float = 30.0
    _idle: dict[Address, list[Upstream]] = attrs.field(factory=dict, init=False)

    def take(self, address: Address) -> Upstream | None:
        """The connection to `address` idle the shortest time, if any."""
        idle = self._idle.get(address)
        if not idle:
            return None
        upstream = idle.pop()
        upstream.reused = True
        return upstream

    async def connect(self, address: Address, timeout: float) -> Upstream:
        """A new connection (errors as `net.connect`); it joins the pool on `release`."""
        return Upstream(await connect(address, timeout, self.timeouts), DynoCodec(), address)

    def release(self, upstream: Upstream, now: float) -> None:
        """Keep `upstream` for the next request if its exchange ended cleanly, else close it."""
        if not upstream.codec.reusable:
            upstream.stream.close()
            return
        upstream.codec.start_next_cycle()
        upstream.idle_since = now
        idle = self._idle.setdefault(upstream.address, [])
        idle.append(upstream)
        if len(idle) > self.max_idle:
            idle.pop(0).stream.close()

    def discard(self, address: Address) -> None:
        """Close every idle connection to a dyno that stopped answering."""
        for upstream in self._idle.pop(address, []):
            upstream.stream.close()

    def sweep(self, now: float) -> None:
        """Close connections idle since before `now - idle_timeout`, or closed by their dyno."""
        for address, idle in list(self._idle.items()):
            keep = []
            for upstream in idle:
                if upstream.idle_since < now - self.idle_timeout or upstream.stale():
                    upstream.stream.close()
                else:
                    keep.append(upstream)
            if keep:
                self._idle[address] = keep
            else:
                del self._idle[address]

    def close(self) -> None:
        for address in list(self._idle):
            self.discard(address)
