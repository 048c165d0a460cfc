"""Sockets for the proxy: a lean stream over a non-blocking socket, the timeouts of every
stream, outgoing connects, and listening sockets.

Why not trio.SocketStream: every successful send or receive there also yields to the scheduler.
The proxy does four socket operations per request, so here an operation that succeeds at once
returns at once; a task yields when it would block, and at least every `_YIELD_EVERY` operations.
Why not a cancel scope per wait: entering one costs more than the wait's own bookkeeping, and
every timeout of the router ends with that socket closed, so one task (`Timeouts.run`) wakes
the waiters whose time is up instead, through trio.lowlevel.notify_closing.
"""

from __future__ import annotations

import errno
import os
import socket

import trio

from .config import Address

RECEIVE_SIZE = 65536
_YIELD_EVERY = 16
_INF = float("inf")
_READ, _WRITE = 0, 1


class StreamTimeout(Exception):
    """A send or receive waited past its deadline. The stream must be closed."""


class Timeouts:
    """The deadlines of every waiting stream, enforced `tick` seconds late at most."""

    def __init__(self, tick: float) -> None:
        self.tick = tick
        self.waiting: dict[tuple[Stream, int], float] = {}

    async def run(self) -> None:
        while True:
            await trio.sleep(self.tick)
            now = trio.current_time()
            for (stream, _), deadline in list(self.waiting.items()):
                if deadline <= now:
                    stream.expire()


class Stream:
    """One connected TCP socket. Errors from the peer surface as OSError subclasses."""

    __slots__ = ("sock", "timeouts", "_quick", "closed", "expired")

    def __init__(self, sock: socket.socket, timeouts: Timeouts) -> None:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.timeouts = timeouts
        self._quick = 0
        self.closed = False
        self.expired = False

    async def _turn(self) -> None:
        # An operation that did not block is no checkpoint: a transfer that never blocks would
        # starve the other connections and never see a cancellation, so it yields now and then.
        self._quick = 0
        await trio.lowlevel.checkpoint()

    def expire(self) -> None:
        """Its deadline passed: wake whoever waits on it, with StreamTimeout."""
        self.expired = True
        if not self.closed:
            trio.lowlevel.notify_closing(self.sock)

    async def receive(
        self, timeout: float = _INF, deadline: float = _INF, *, settle: bool = False
    ) -> bytes:
        """Up to RECEIVE_SIZE bytes; b"" at end of stream. StreamTimeout if it has to wait past
        `deadline` or for longer than `timeout`: both count only once it waits.

        `settle`: the peer has only just been asked (a request went out, a response came
        back), so first let the other connections run; when the router is busy the answer is
        in by then, and a turn of the scheduler costs a fraction of an epoll wait."""
        if settle:
            self._quick = 0
            await trio.lowlevel.checkpoint()
        try:
            data = self.sock.recv(RECEIVE_SIZE)
        except BlockingIOError:
            pass
        else:
            self._quick += 1
            if self._quick >= _YIELD_EVERY:
                await self._turn()
            return data
        key = self._wait_from(_READ, timeout, deadline)
        try:
            while True:
                await trio.lowlevel.wait_readable(self.sock)
                try:
                    return self.sock.recv(RECEIVE_SIZE)
                except BlockingIOError:
                    continue
        except trio.ClosedResourceError:
            if self.expired:
                raise StreamTimeout from None
            raise
        finally:
            self.timeouts.waiting.pop(key, None)

    async def send_all(self, data: bytes, timeout: float = _INF) -> None:
        """Send every byte; `timeout` counts only once the socket buffer is full."""
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        if sent == len(data):
            self._quick += 1
            if self._quick >= _YIELD_EVERY:
                await self._turn()
            return
        view = memoryview(data)[sent:]
        key = self._wait_from(_WRITE, timeout, _INF)
        try:
            while view:
                await trio.lowlevel.wait_writable(self.sock)
                try:
                    view = view[self.sock.send(view) :]
                except BlockingIOError:
                    continue
        except trio.ClosedResourceError:
            if self.expired:
                raise StreamTimeout from None
            raise
        finally:
            self.timeouts.waiting.pop(key, None)

    def _wait_from(self, direction: int, timeout: float, deadline: float) -> tuple[Stream, int]:
        if self.expired:  # its time ran out before: it is as good as closed
            raise StreamTimeout
        key = (self, direction)
        if timeout != _INF:
            deadline = min(deadline, trio.current_time() + timeout)
        if deadline != _INF:
            self.timeouts.waiting[key] = deadline
        return key

    def shutdown_write(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            trio.lowlevel.notify_closing(self.sock)
            self.sock.close()


async def connect(address: Address, timeout: float, timeouts: Timeouts) -> Stream:
    """A connected stream, or ConnectionRefusedError/OSError, or StreamTimeout."""
    host, port = address
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        socket.inet_pton(family, host)
        target: tuple[str, int] = (host, port)
    except OSError:
        info = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, _, _, _, sockaddr = info[0]
        target = (str(sockaddr[0]), int(sockaddr[1]))
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        err = sock.connect_ex(target)
        if err == errno.EINPROGRESS:
            with trio.move_on_after(timeout):
                await trio.lowlevel.wait_writable(sock)
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err == errno.EINPROGRESS:
                raise StreamTimeout
        if err:
            raise OSError(err, os.strerror(err))
        return Stream(sock, timeouts)
    except BaseException:
        trio.lowlevel.notify_closing(sock)
        sock.close()
        raise


def listen(address: Address, backlog: int = 1024) -> list[socket.socket]:
    """Bound, listening, non-blocking sockets for every address the host resolves to. On
    127.0.0.1, [::1] on the same port too, so that no one else (a dyno) can take the port
    there; a machine without IPv6 gets IPv4 alone."""
    host, port = address
    for _ in range(_EPHEMERAL_TRIES if port == 0 else 1):
        sockets = _bind_all(host, port, backlog)
        if host != "127.0.0.1":
            return sockets
        try:
            sockets.append(_bind(socket.AF_INET6, ("::1", sockets[0].getsockname()[1]), backlog))
        except OSError as err:
            if err.errno != errno.EADDRINUSE:
                return sockets  # no IPv6 loopback here
            for sock in sockets:
                sock.close()
            if port != 0:
                raise  # held on [::1]: refused, as when held on 127.0.0.1
            continue  # an ephemeral port free on IPv4 only: another one
        return sockets
    raise OSError(errno.EADDRINUSE, f"no port free on both 127.0.0.1 and [::1] for {host}")


_EPHEMERAL_TRIES = 8


def _bind_all(host: str, port: int, backlog: int) -> list[socket.socket]:
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, _, _, _, sockaddr in found:
            sockets.append(_bind(family, sockaddr, backlog))
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _bind(family: int, sockaddr: tuple[object, ...], backlog: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
