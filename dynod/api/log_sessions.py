"""Log sessions: `POST /apps/{app}/log-sessions` hands out a `logplex_url` carrying its own
secret (no token, as Heroku's), and reading it gives the app's recent lines, or follows them,
as server-sent events or plain lines (README, "Dynos, router, logs")."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import AsyncGenerator

import trio

from dynod.api.common import PLAIN, Call, LogSession, Route, expire, invalid, url_secret
from dynod.api.server import Response, json_response, stream_response
from dynod.core.logline import APP, HEROKU, LogLine
from dynod.errors import NotFound
from dynod.logs.logplex import LogFilter
from dynod.state.files import heroku_time

SESSION_LIFETIME = 300.0  # seconds to open a logplex_url, or to reconnect a tail with Last-Event-ID
DEFAULT_LINES = 100


async def create_log_session(call: Call) -> Response:
    app = call.app()
    body = await call.json()
    lines, tail = body.get("lines", DEFAULT_LINES), body.get("tail", False)
    dyno, source = body.get("dyno") or None, body.get("source") or None
    if isinstance(lines, str) and lines.isdigit():
        lines = int(lines)
    if isinstance(lines, bool) or not isinstance(lines, int) or lines < 0:
        raise invalid("lines must be a whole number of lines, such as 100.")
    if dyno is not None and not isinstance(dyno, str):
        raise invalid("dyno must be a dyno name (web.1) or a process type (web).")
    if source not in (None, APP, HEROKU):
        raise invalid(f"source must be {APP} or {HEROKU}.")
    # A dyno name has a dot (web.1, run.4821); anything else is a process type.
    filters = (
        LogFilter(dyno=dyno, source=source)
        if dyno and "." in dyno
        else LogFilter(ps=dyno, source=source)
    )
    state = call.state
    expire(state.log_sessions)
    secret = url_secret()
    state.log_sessions[secret] = LogSession(
        app.id, filters, lines, bool(tail), trio.current_time() + SESSION_LIFETIME
    )
    now = heroku_time()
    return json_response(
        {
            "id": str(uuid.uuid4()),
            "logplex_url": f"{state.base_url}/log-sessions/{secret}",
            "created_at": now,
            "updated_at": now,
        },
        201,
    )


async def read_log_session(call: Call) -> Response:
    """The log session's lines: `text/event-stream` when asked (EventSource: a `retry:` line,
    then `id:`/`data:` events), else plain lines. A used URL opens again only to resume a tail
    (`Last-Event-ID`, as EventSource reconnects), and then sends only lines after the last one
    it sent, whatever id the client names: it never replays."""
    secret = call.params["secret"]
    session = call.state.log_sessions.get(secret)
    last_id = _event_id(call.request.header("last-event-id"))
    if session is None or session.expires < trio.current_time():
        raise NotFound("This log session is unknown or expired: start a new one with `dyno logs`.")
    if session.used and (last_id is None or session.streaming):
        raise NotFound("This log session was used already: start a new one with `dyno logs`.")
    if not session.tail:
        del call.state.log_sessions[secret]
    if session.used and session.sent is not None:
        last_id = max(last_id, session.sent) if last_id is not None else session.sent
    session.used = True
    sse = "text/event-stream" in call.request.header("accept")
    ring = call.platform.ring(call.platform.apps.find(session.app_id))
    n = min(session.lines, ring.history)

    async def chunks() -> AsyncGenerator[bytes, None]:
        if sse:
            yield b"retry: 50\n\n"
        if not session.tail:
            yield _render(_with_ids(ring.recent(n, session.filters), {}), sse, last_id)
            return
        session.streaming, session.expires = True, math.inf
        if session.sent is None:  # opened now: a reconnect resumes no earlier than this
            session.sent = (round(time.time() * 1_000_000), -1)
        try:
            with ring.tail(session.filters, last=ring.history if last_id else n) as tail:
                counter: dict[float, int] = {}
                while batch := await tail.receive_batch():
                    events = _with_ids(batch, counter)
                    yield _render(events, sse, last_id)
                    session.sent = max(session.sent, *(event_id for event_id, _ in events))
        finally:
            session.streaming, session.expires = False, trio.current_time() + SESSION_LIFETIME

    return stream_response(chunks(), "text/event-stream" if sse else PLAIN)


def _event_id(header: str) -> tuple[int, int] | None:
    stamp, _, ordinal = header.strip().partition("-")
    return (int(stamp), int(ordinal)) if stamp.isdigit() and ordinal.isdigit() else None


def _with_ids(
    lines: list[LogLine], counter: dict[float, int]
) -> list[tuple[tuple[int, int], LogLine]]:
    """Each line with an event id: its time in microseconds and its place among the lines of
    the same instant (`counter` carries that across batches), so a reconnect can resume right
    after the last line it saw."""
    out = []
    for line in lines:
        ordinal = counter.get(line.time, 0)
        counter[line.time] = ordinal + 1
        out.append(((round(line.time * 1_000_000), ordinal), line))
    if lines:  # only the last instant can go on into the next batch
        last = lines[-1].time
        kept = counter[last]
        counter.clear()
        counter[last] = kept
    return out


def _render(
    events: list[tuple[tuple[int, int], LogLine]], sse: bool, after: tuple[int, int] | None
) -> bytes:
    parts = []
    for event_id, line in events:
        if after is not None and event_id <= after:
            continue
        text = line.render()
        if sse:
            parts.append(f"id: {event_id[0]}-{event_id[1]}\ndata: {text.replace(chr(13), '')}\n\n")
        else:
            parts.append(f"{text}\n")
    return "".join(parts).encode()


ROUTES = [
    Route("POST", "/apps/{app}/log-sessions", create_log_session),
    Route("GET", "/log-sessions/{secret}", read_log_session, public=True),
]
