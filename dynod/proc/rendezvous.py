"""The rendezvous: a TLS listener on loopback where the client of an attached one-off claims its
session with the secret of its `attach_url` (`rendezvous://127.0.0.1:PORT/SECRET`), once, within
SECRET_TTL seconds of the offer. It answers `rendezvous\\r\\n` on its own, then hands the
connection to the session's Terminal (proc/attached.py). Usable without the platform: give it an
SSL context (dynod/state/ca.py) and run `serve`; or, where a private socket is the credential (a
local run's, dynod/api/local_attach.py), run `keep` and hand it connections with `serve_stream`."""

from __future__ import annotations

import secrets
import ssl

import trio

from dynod.proc.attached import Terminal

SECRET_TTL = 60.0  # an offer no client claimed by then expires (its dyno never starts)
CLAIM_TIMEOUT = 10.0  # for a connection to say its secret
SECRET_LENGTH = 32  # secrets.token_urlsafe(24)
FRAMED = b"framed"  # after the secret and a space: `dyno run`'s framed messages
GREETING = b"rendezvous\r\n"


class Rendezvous:
    def __init__(
        self,
        context: ssl.SSLContext | None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ttl: float = SECRET_TTL,
    ) -> None:
        self.context = context
        self.host = host
        self.port = port  # the bound port once `serve` has started
        self.ttl = ttl
        self._offers: dict[str, Terminal] = {}
        self._nursery: trio.Nursery | None = None

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        assert self.context is not None, "a TLS rendezvous needs its SSL context"
        listeners = await trio.open_tcp_listeners(self.port, host=self.host)
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started(self.port)
            await trio.serve_listeners(self._handle, listeners, handler_nursery=nursery)

    async def keep(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold offers (and expire them) with no listener of its own: connections come through
        `serve_stream`."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def offer(self, terminal: Terminal) -> str:
        """A fresh secret for this session, good once for `ttl` seconds."""
        assert self._nursery is not None, "Rendezvous.serve is not running"
        secret = secrets.token_urlsafe(24)
        self._offers[secret] = terminal
        self._nursery.start_soon(self._expire, secret)
        return secret

    def url(self, secret: str) -> str:
        return f"rendezvous://{self.host}:{self.port}/{secret}"

    async def _expire(self, secret: str) -> None:
        await trio.sleep(self.ttl)
        terminal = self._offers.pop(secret, None)
        if terminal is not None:
            terminal.abandon()

    async def _handle(self, tcp: trio.SocketStream) -> None:
        assert self.context is not None
        await self.serve_stream(trio.SSLStream(tcp, self.context, server_side=True))

    async def serve_stream(self, stream: trio.abc.Stream) -> None:
        """A client's connection: its claim, then its session; closed at the end."""
        try:
            with trio.move_on_after(CLAIM_TIMEOUT):
                claim = await _read_claim(stream)
            if claim is None:
                return
            secret, framed, rest = claim
            terminal = self._offers.pop(secret, None)
            if terminal is None:  # unknown, used or expired: closed with nothing said
                return
            try:
                await stream.send_all(GREETING)
            except BaseException:
                terminal.abandon()
                raise
            await terminal.serve_client(stream, rest, framed)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                await stream.aclose()


async def _read_claim(stream: trio.abc.Stream) -> tuple[str, bool, bytes] | None:
    """The secret (with or without a line ending), whether the client wants framed messages,
    and what it sent after its claim; None for anything else."""
    buffer = b""
    while True:
        end = buffer.find(b"\n")
        if end >= 0:
            line, rest = buffer[:end].rstrip(b"\r"), buffer[end + 1 :]
            break
        if len(buffer) >= SECRET_LENGTH and buffer[SECRET_LENGTH:] not in (b"\r", b" "):
            if buffer[SECRET_LENGTH : SECRET_LENGTH + 1] != b" ":  # no line ending (heroku3)
                line, rest = buffer[:SECRET_LENGTH], buffer[SECRET_LENGTH:]
                break
        if len(buffer) > 256:
            return None
        data = await stream.receive_some(4096)
        if not data:
            return None
        buffer += data
    secret, _, options = line.partition(b" ")
    try:
        return secret.decode("ascii"), options.strip() == FRAMED, rest
    except UnicodeDecodeError:
        return None
