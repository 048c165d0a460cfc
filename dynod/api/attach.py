"""Attached one-off dynos over the API (`POST /apps/{app}/dynos` with `"attach": true`): the
dyno waits on a Terminal, and the answer's `attach_url` is where its client claims it, on the
rendezvous (proc/rendezvous.py) that `dynod serve` runs beside the API."""

from __future__ import annotations

from collections.abc import Mapping

from dynod.api.common import Call, dyno_json
from dynod.api.server import HTTPError, Response, json_response
from dynod.proc.attached import Terminal
from dynod.state.apps import App


async def run_attached(
    call: Call, app: App, body: Mapping[str, object], command: str, env: Mapping[str, str]
) -> Response:
    rendezvous = call.state.rendezvous
    if rendezvous is None:
        raise HTTPError(
            503,
            "unavailable",
            "This dynod has no rendezvous for attached one-offs: use `run:detached` "
            '("attach": false) and read the output with `logs`.',
        )
    terminal = Terminal(tty=not body.get("force_no_tty"))
    dyno = await call.platform.one_offs.run_attached(app, command, env, terminal)
    shown = dyno_json(call.platform, app, dyno)
    shown["attach_url"] = rendezvous.url(rendezvous.offer(terminal))
    return json_response(shown, 201)
