"""Attached one-offs of a local run (`dyno run` against `dynod start`): the one-off waits on a
Terminal, and its `attach_url` (`rendezvous://localhost/SECRET`) is claimed over the run's own
private socket, which the API shares with the rendezvous (no TLS: the socket's mode is the
credential, as for the rest of the local API; README, "Steering a running `dynod start`").
Loaded at the first attach: a run nobody attaches to never loads the rendezvous."""

from __future__ import annotations

import socket
from collections.abc import Mapping

import trio

from dynod.api.local import LocalApi
from dynod.api.server import Response, json_response
from dynod.proc.attached import Terminal
from dynod.proc.rendezvous import CLAIM_TIMEOUT, Rendezvous

ATTACH_BASE = "rendezvous://localhost"  # the client claims it over the socket it asked on
_PEEK = 16
_METHOD_MAX = 8  # "OPTIONS ": an HTTP request's first space comes by here, a secret's never


class LocalAttach:
    """The run's rendezvous, without a listener of its own: its offers live in the API's
    nursery, and `serve` takes the socket's connections that claim one."""

    def __init__(self, rendezvous: Rendezvous) -> None:
        self.rendezvous = rendezvous

    @classmethod
    async def start(cls, nursery: trio.Nursery) -> LocalAttach:
        rendezvous = Rendezvous(None)
        await nursery.start(rendezvous.keep)
        return cls(rendezvous)

    async def run(
        self, api: LocalApi, body: Mapping[str, object], command: str, env: Mapping[str, str]
    ) -> Response:
        terminal = Terminal(tty=not body.get("force_no_tty"))
        shown = api.dyno_json(api.run.run_attached(command, env, terminal))
        shown["attach_url"] = f"{ATTACH_BASE}/{self.rendezvous.offer(terminal)}"
        return json_response(shown, 201)

    async def serve(self, stream: trio.SocketStream) -> None:
        await self.rendezvous.serve_stream(stream)


async def is_claim(stream: trio.SocketStream) -> bool:
    """Whether the connection opens with a rendezvous claim (`SECRET framed`) rather than an
    HTTP request (`GET /…`): seen by peeking, so the HTTP server still reads it all."""
    with trio.move_on_after(CLAIM_TIMEOUT):
        while True:
            try:
                data = await stream.socket.recv(_PEEK, socket.MSG_PEEK)
            except OSError:
                return False
            space = data.find(b" ")
            if not data or 0 <= space <= _METHOD_MAX:
                return False
            if len(data) > _METHOD_MAX:
                return True
            await trio.sleep(0.01)  # the rest of its first line is on its way
    return False
