"""The router's server: listening sockets, the accept loop, the connection cap, the task that
enforces every stream's timeout, and the pool sweeper, all under one nursery. `serve` is the
entry point dynod and the CLI call.
"""

from __future__ import annotations

import errno
import logging
import socket

import trio

from .backend import Backend
from .balancer import Balancer
from .client import Client
from .config import Address, RouterConfig
from .net import Stream, Timeouts, listen
from .pool import Pool
from .proxy import Router, serve_client
from .records import error_page

log = logging.getLogger(__name__)

# Taken per wake-up of the accept loop: trio.serve_tcp takes one per scheduler pass, so a burst
# of 200 connections (wrk's start) waits 200 passes of busy connections to be accepted.
_ACCEPT_BATCH = 256
_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}


async def serve(
    config: RouterConfig,
    backend: Backend,
    *,
    task_status: trio.TaskStatus[list[Address]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Route until cancelled. Reports the bound (host, port) addresses once listening."""
    listeners = listen(config.listen_address)
    timeouts = Timeouts(_tick(config))
    router = Router(
        config,
        backend,
        Balancer(config.quarantine),
        Pool(timeouts, config.pool_max_idle, config.pool_idle_timeout),
    )
    try:
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(_accept_loop, router, listener, nursery)
            nursery.start_soon(_sweep, router)
            nursery.start_soon(timeouts.run)
            task_status.started([_address(listener) for listener in listeners])
    finally:
        router.pool.close()
        for listener in listeners:
            trio.lowlevel.notify_closing(listener)
            listener.close()


def _tick(config: RouterConfig) -> float:
    """How late a timeout may fire: a tenth of the shortest one, within [5 ms, 0.5 s]."""
    shortest = min(config.request_timeout, config.idle_timeout, config.header_timeout)
    return min(0.5, max(0.005, shortest / 10))


def _address(sock: socket.socket) -> Address:
    host, port = sock.getsockname()[:2]
    return (str(host), int(port))


async def _accept_loop(router: Router, listener: socket.socket, nursery: trio.Nursery) -> None:
    port = _address(listener)[1]
    limit = router.config.max_connections
    while True:
        await trio.lowlevel.wait_readable(listener)
        for _ in range(_ACCEPT_BATCH):
            try:
                sock, peer = listener.accept()
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno in _OUT_OF_RESOURCES:
                    log.warning("router cannot accept connections: %s", exc)
                    await trio.sleep(0.1)  # until some connection ends and frees a descriptor
                    break
                continue  # the client gave up between SYN and accept
            if router.connections >= limit:
                _turn_away(sock)
                continue
            router.connections += 1
            nursery.start_soon(_connection, router, sock, str(peer[0]), port)


def _turn_away(sock: socket.socket) -> None:
    """Over the cap: a 503 if the socket takes it at once, then close."""
    try:
        sock.setblocking(False)
        sock.send(error_page(503))
    except OSError:
        pass
    sock.close()


async def _connection(router: Router, sock: socket.socket, ip: str, port: int) -> None:
    try:
        try:
            stream = Stream(sock, router.pool.timeouts)
        except OSError:  # reset before we got to it
            sock.close()
            return
        await serve_client(router, Client(stream, ip, port, router.config.max_head_bytes))
    except Exception:
        # A bug must cost one connection, never the router; the client sees it closed.
        log.exception("router connection from %s failed", ip)
    finally:
        router.connections -= 1


async def _sweep(router: Router) -> None:
    while True:
        await trio.sleep(router.config.pool_idle_timeout / 2)
        router.pool.sweep(trio.current_time())
