"""Sockets for the proxy: a lean stream over a non-blocking socket, outgoing connects, and
listening sockets.

Why not trio.SocketStream: every successful send or receive there also yields to the scheduler.
The proxy does four socket operations per request, so here an operation that succeeds at once
returns at once; a task yields when it would block, and at least every `_YIELD_EVERY` operations.
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


class StreamTimeout(Exception):
    """A send or receive waited past its deadline."""


def _limit(timeout: float, deadline: float) -> trio.CancelScope:
    if timeout != _INF:
        deadline = min(deadline, trio.current_time() + timeout)
    return trio.CancelScope(deadline=deadline)


class Stream:
    """One connected TCP socket. Errors from the peer surface as OSError subclasses."""

    __slots__ = ("sock", "_quick", "closed")

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self._quick = 0
        self.closed = False

    async def _fair(self) -> None:
        # An operation that did not block is not a checkpoint by itself: stay cancellable, and
        # yield now and then, as a transfer that never blocks would starve other connections.
        self._quick += 1
        if self._quick >= _YIELD_EVERY:
            self._quick = 0
            await trio.lowlevel.checkpoint()
        else:
            await trio.lowlevel.checkpoint_if_cancelled()

    async def receive(self, timeout: float = _INF, deadline: float = _INF) -> bytes:
        """Up to RECEIVE_SIZE bytes; b"" at end of stream. StreamTimeout if it has to wait past
        `deadline` or for longer than `timeout`: both count only once it waits."""
        try:
            data = self.sock.recv(RECEIVE_SIZE)
        except BlockingIOError:
            with _limit(timeout, deadline):
                while True:
                    await trio.lowlevel.wait_readable(self.sock)
                    try:
                        return self.sock.recv(RECEIVE_SIZE)
                    except BlockingIOError:
                        continue
            raise StreamTimeout from None
        await self._fair()
        return data

    async def send_all(self, data: bytes, timeout: float = _INF) -> None:
        """Send every byte; `timeout` counts only once the socket buffer is full."""
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        if sent == len(data):
            await self._fair()
            return
        view = memoryview(data)[sent:]
        with _limit(timeout, _INF):
            while view:
                await trio.lowlevel.wait_writable(self.sock)
                try:
                    view = view[self.sock.send(view) :]
                except BlockingIOError:
                    continue
            return
        raise StreamTimeout

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


async def connect(address: Address, timeout: float) -> Stream:
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
        return Stream(sock)
    except BaseException:
        trio.lowlevel.notify_closing(sock)
        sock.close()
        raise


def listen(address: Address, backlog: int = 1024) -> list[socket.socket]:
    """Bound, listening, non-blocking sockets for every address the host resolves to."""
    host, port = address
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, sockaddr in found:
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(sockaddr)
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets
