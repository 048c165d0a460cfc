"""One client connection: read each request (client.py), route it to a web dyno, stream the
exchange both ways, log one line. Everything that goes wrong becomes an H code (records.py)
and a plain page.

The request body is pumped by a second task only when there is one, so a dyno may answer
before it has read the whole body; body-less requests (the common case) stay on one task.
Clock reads and cancel scopes are kept off the common path: it is what the bench measures.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable

import attrs
import h11
import trio
from attrs import define

from .backend import AppTable, Backend
from .balancer import Balancer, Refuse, Wait
from .client import GONE, Client, read_request, send_page
from .codec import END, NEED_DATA, DynoProtocolError, Head
from .config import RouterConfig
from .framing import CHUNKED, LAST_CHUNK, chunk, frame_response, render_head
from .headers import (
    Forwarded,
    Rejected,
    app_name,
    forward_request,
    forward_response,
    valid_request_id,
)
from .net import StreamTimeout
from .pool import Pool, Upstream
from .records import FAILURES, Failure, log_line, restriction
from .request import RequestHead
from .tunnel import tunnel

_INF = float("inf")
_ids = random.Random(os.urandom(16))
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}  # 0b10xx


def new_request_id() -> str:
    """A version-4 UUID. Request ids need to be unique, not secret, so no syscall per id."""
    h = f"{_ids.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


class Fail(Exception):
    """Ends an exchange with an H code."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class Retry(Exception):
    """A reused dyno connection was dead before it answered, and nothing is lost by trying a
    fresh one."""


@define(eq=False)
class Router:
    """What every connection shares. Made inside trio.run: `now` is trio's clock, read without
    the three calls trio.current_time() makes on the way to it."""

    config: RouterConfig
    backend: Backend
    balancer: Balancer
    pool: Pool
    connections: int = 0
    now: Callable[[], float] = attrs.field(
        factory=lambda: trio.lowlevel.current_clock().current_time
    )


async def serve_client(router: Router, client: Client) -> None:
    """Requests one after another until either side closes or an exchange cannot keep alive."""
    first = True
    try:
        while True:
            request = await read_request(router.config, client, first)
            if request is None:
                return
            first = False
            if not await Exchange(router, client, request, router.now()).run():
                return
            client.next_request()
    finally:
        client.stream.close()


@define(slots=True, eq=False)
class Exchange:
    """One request and its response; the fields are what the log line reports."""

    router: Router
    client: Client
    request: RequestHead
    started: float
    forwarded: Forwarded | None = None
    dyno: str = ""
    connect: float | None = None
    service_start: float | None = None
    status: int = 0
    sent: int = 0
    head_sent: bool = False
    body_failure: str = ""
    head_scope: trio.CancelScope | None = None  # H12's clock while a body is pumped

    async def run(self) -> bool:
        """Proxy the request; True when the client connection may carry another one."""
        router, request = self.router, self.request
        config = router.config
        forwarded = forward_request(
            request.method,
            request.target,
            request.headers,
            http_version=request.http_version,
            client_ip=self.client.ip,
            port=self.client.port,
            now_ms=int(time.time() * 1000),
            new_id=new_request_id,
            config=config,
        )
        if request.method == b"CONNECT":
            forwarded = Rejected(405, "CONNECT is not proxied")
        if isinstance(forwarded, Rejected):
            await self._reject(forwarded)
            return False
        self.forwarded = forwarded
        name = app_name(forwarded.host, config.domain)
        table = router.backend.lookup(name)
        if table is None:
            await send_page(self.client, 404, body=request.method != b"HEAD")
            return False
        failure: Failure | None = None
        outcome: bool | Upstream = False
        try:
            outcome = await self._proxy(name, table, forwarded)
        except Fail as exc:
            failure = FAILURES[exc.code]
            if not self.head_sent or failure.status == 499:
                self.status = failure.status  # else the client got (and the log says) the dyno's
            if not self.head_sent and failure.status != 499:
                page = await send_page(self.client, failure.status, body=request.method != b"HEAD")
                self.sent += page
        router.backend.log(table.app, self._line(failure))
        if isinstance(outcome, Upstream):
            await tunnel(
                self.client.stream,
                outcome.stream,
                self.client.trailing_data,
                outcome.codec.trailing_data,
                config.idle_timeout,
            )
            return False
        return outcome and failure is None

    async def _reject(self, rejected: Rejected) -> None:
        """A request the dyno never sees: answer it, and log it when it names an app."""
        self.status = rejected.status
        self.sent = await send_page(self.client, rejected.status)
        hosts = [value for _, name, value in self.request.headers if name == b"host"]
        host = hosts[0].decode("latin-1") if len(hosts) == 1 else ""
        table = self.router.backend.lookup(app_name(host, self.router.config.domain))
        if host and table is not None:
            self.forwarded = None
            given = [value for _, name, value in self.request.headers if name == b"x-request-id"]
            request_id = (
                given[-1].decode("ascii")
                if given and valid_request_id(given[-1])
                else new_request_id()
            )  # as a forwarded request would have had
            failure = restriction(rejected.status, rejected.reason)
            self.router.backend.log(table.app, self._line(failure, host, request_id))

    def _line(self, failure: Failure | None, host: str = "", request_id: str = "") -> str:
        fwd = self.forwarded
        service = None
        if self.service_start is not None:
            service = self.router.now() - self.service_start
        return log_line(
            method=self.request.method.decode("ascii", "replace"),
            path=self.request.target.decode("latin-1"),
            host=fwd.host if fwd else host,
            request_id=fwd.request_id if fwd else request_id,
            fwd=fwd.forwarded_for if fwd else self.client.ip,
            dyno=self.dyno,
            connect=self.connect,
            service=service,
            status=self.status,
            bytes_sent=self.sent if self.status else None,
            failure=failure,
        )

    async def _proxy(self, name: str, table: AppTable, forwarded: Forwarded) -> bool | Upstream:
        """Route and relay; returns keep-alive, or the dyno connection to tunnel after a 101."""
        if not forwarded.body and self.client.conn is not None:
            event = self.client.conn.next_event()  # a request without a body ends at once
            assert type(event) is h11.EndOfMessage, event
        fresh = False
        while True:
            upstream = await self._open(name, table, fresh)
            try:
                return await self._relay(upstream, forwarded)
            except Retry:
                self.router.pool.discard(upstream.address)
                fresh = True
            finally:
                if not upstream.codec.switched:  # else the tunnel's
                    self.router.pool.release(upstream, self.started)

    async def _open(self, name: str, table: AppTable, fresh: bool) -> Upstream:
        """A connection to the next dyno in turn; waits for dynos to boot (H20), moves past
        refusing ones (quarantined), or raises H14/H10/H19/H21."""
        router = self.router
        config = router.config
        while True:
            decision = router.balancer.choose(table.app, table.dynos, self.started)
            if isinstance(decision, Refuse):
                raise Fail(decision.code)
            if isinstance(decision, Wait):
                if decision.wake:
                    router.backend.wake(table.app)
                with trio.move_on_at(self.started + config.boot_wait):
                    await table.changed.wait()
                newer = router.backend.lookup(name)
                if not table.changed.is_set():
                    raise Fail("H20")
                if newer is None:
                    raise Fail("H14")
                table = newer
                continue
            code = "H21"
            for dyno in decision.dynos:
                upstream = None if fresh else router.pool.take(dyno.address)
                if upstream is not None:
                    self.dyno, self.connect = dyno.name, 0.0
                    return upstream
                began = trio.current_time()
                try:
                    upstream = await router.pool.connect(dyno.address, config.connect_timeout)
                except StreamTimeout:
                    code = "H19"
                except OSError:
                    pass
                else:
                    self.dyno, self.connect = dyno.name, trio.current_time() - began
                    return upstream
                router.balancer.quarantine(dyno, trio.current_time())
                router.pool.discard(dyno.address)
            raise Fail(code)

    async def _relay(self, upstream: Upstream, forwarded: Forwarded) -> bool | Upstream:
        config = self.router.config
        data = upstream.codec.request(
            self.request.method,
            forwarded.target,
            forwarded.headers,
            body=forwarded.body,
            chunked=forwarded.chunked,
        )
        self.service_start = now = self.router.now()
        try:
            await upstream.stream.send_all(data, config.idle_timeout)
        except StreamTimeout:
            raise Fail("H15") from None
        except GONE:
            if upstream.reused:
                raise Retry from None
            raise Fail("H13") from None
        if not forwarded.body:
            return await self._respond(upstream, now + config.request_timeout, upstream.reused)
        # The H12 clock starts once the body is through: the pump sets the deadline.
        self.head_scope = trio.CancelScope()
        outcome: bool | Upstream | Fail = False
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._pump, upstream, nursery.cancel_scope)
            try:
                with self.head_scope:
                    outcome = await self._respond(upstream, _INF, False)
                if self.head_scope.cancelled_caught:
                    outcome = Fail("H12")
            except Fail as exc:  # kept out of the nursery, which would wrap it in a group
                outcome = exc
            nursery.cancel_scope.cancel()  # a dyno that answered early stops the upload
        if self.body_failure:
            raise Fail(self.body_failure)
        if isinstance(outcome, Fail):
            raise outcome
        return outcome

    async def _pump(self, upstream: Upstream, everything: trio.CancelScope) -> None:
        """Client body → dyno. A client that stops (H27) or stalls (H28) ends the exchange; a
        dyno that stops reading only ends the upload, and its answer still goes back."""
        idle = self.router.config.idle_timeout
        client = self.client.conn
        assert client is not None  # a request with a body is never plain
        failure = ""
        try:
            while True:
                event = client.next_event()
                if event is h11.NEED_DATA:
                    data = await self.client.stream.receive(idle)
                    if not data:
                        failure = "H27"
                        break
                    client.receive_data(data)
                    continue
                if type(event) is not h11.Data and type(event) is not h11.EndOfMessage:
                    failure = "H27"
                    break
                if type(event) is h11.Data:
                    data = upstream.codec.data(event.data)
                else:
                    data = upstream.codec.end()
                try:
                    await upstream.stream.send_all(data, idle)
                except StreamTimeout:
                    failure = "H15"
                    break
                except GONE:
                    break
                if type(event) is h11.EndOfMessage:
                    break
        except StreamTimeout:
            failure = "H28"
        except (h11.RemoteProtocolError, *GONE):
            failure = "H27"
        if failure:
            self.body_failure = failure
            everything.cancel()
        elif self.head_scope is not None and not self.status:
            self.head_scope.deadline = trio.current_time() + self.router.config.request_timeout

    async def _respond(self, upstream: Upstream, deadline: float, retry: bool) -> bool | Upstream:
        """Dyno response → client, streamed. H12 at `deadline` without a head; `retry` allows
        Retry if the dyno closed without sending a byte."""
        codec = upstream.codec
        received = False
        need_data = True  # the dyno has said nothing yet (a pooled codec has nothing buffered)
        while True:
            if need_data:
                try:
                    data = await upstream.stream.receive(deadline=deadline, settle=not received)
                except StreamTimeout:
                    raise Fail("H12") from None
                except GONE:
                    data = b""
                if data:
                    received = True
                elif not received and retry:
                    raise Retry
                codec.receive_data(data)
            try:
                event = codec.next_event()
            except DynoProtocolError:
                if received:
                    raise Fail("H17") from None
                raise Retry if retry else Fail("H13") from None
            need_data = event is NEED_DATA
            if need_data:
                continue
            assert type(event) is Head
            if event.status >= 200:
                break
            if event.status == 101:
                if not self.forwarded or not self.forwarded.upgrade:
                    raise Fail("H17")  # switching protocols nobody asked for
                break
            # 100 Continue and friends go straight through
            await self._to_client(
                render_head(event.status, event.reason, forward_response(event.headers))
            )
        self.status = event.status
        if self.head_scope is not None:
            self.head_scope.deadline = _INF  # the head is in: H12 no longer applies
        if event.status == 101:
            headers = forward_response(event.headers, upgrade=True)
            await self._to_client(render_head(101, event.reason, headers))
            return upstream
        forwarded = self.forwarded
        assert forwarded is not None
        head, framing, keep_alive = frame_response(
            event.status,
            event.reason,
            forward_response(event.headers),
            method=self.request.method,
            http11=forwarded.http11,
            keep_alive=forwarded.keep_alive,
        )
        await self._stream_body(upstream, head, framing == CHUNKED)
        # Another request only once this one was read to its end (a dyno may answer early).
        return keep_alive and self.client.request_done

    async def _stream_body(self, upstream: Upstream, head: bytes, chunked: bool) -> None:
        idle = self.router.config.idle_timeout
        codec = upstream.codec
        out = [head]
        while True:
            try:
                event = codec.next_event()
            except DynoProtocolError:
                raise Fail("H18") from None
            if type(event) is bytes:
                out.append(chunk(event) if chunked else event)
            elif event is NEED_DATA:
                if out:
                    await self._to_client(b"".join(out))
                    out.clear()
                try:
                    data = await upstream.stream.receive(idle)
                except StreamTimeout:
                    raise Fail("H15") from None
                except GONE:
                    data = b""
                codec.receive_data(data)
            elif event is END:
                if chunked:
                    out.append(LAST_CHUNK)
                await self._to_client(b"".join(out))
                return
            else:
                raise Fail("H18")

    async def _to_client(self, data: bytes) -> None:
        try:
            await self.client.stream.send_all(data, self.router.config.idle_timeout)
        except StreamTimeout:
            raise Fail("H28") from None
        except GONE:
            raise Fail("H27") from None
        self.head_sent = True
        self.sent += len(data)
