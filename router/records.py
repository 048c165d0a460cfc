"""What the router says: Heroku's H error codes, the one log line per request, and the plain
pages it answers with when the app cannot.

Pure: strings in, strings out. Pages name no app, dyno or address.
"""

from __future__ import annotations

import functools
import html
from http import HTTPStatus

from attrs import frozen


@frozen
class Failure:
    code: str
    desc: str
    status: int  # what the log line and (when nothing was sent yet) the client get
    sock: str = ""  # Heroku prefixes `sock=client` / `sock=backend` to some lines


FAILURES: dict[str, Failure] = {
    f.code: f
    for f in (
        Failure("H10", "App crashed", 503),
        Failure("H12", "Request timeout", 503),
        Failure("H13", "Connection closed without response", 503),
        Failure("H14", "No web processes running", 503),
        Failure("H15", "Idle connection", 503),
        Failure("H17", "Poorly formatted HTTP response", 503),
        Failure("H18", "Server Request Interrupted", 503, sock="backend"),
        Failure("H19", "Backend connection timeout", 503),
        Failure("H20", "App boot timeout", 503),
        Failure("H21", "Backend connection refused", 503),
        Failure("H27", "Client Request Interrupted", 499, sock="client"),
        Failure("H28", "Client Connection Idle", 499, sock="client"),
    )
}


def restriction(status: int, reason: str) -> Failure:
    """H25: a request refused for breaking a limit or the syntax (too long, conflicting Host)."""
    return Failure("H25", f"HTTP restriction: {reason}", status)


def _escape_controls(text: str) -> str:
    """Control characters (a terminal's escape sequences, a NEL that splits the line) as %XX:
    h11 lets them through in header values, and the Host and X-Forwarded-For reach the log."""
    return "".join(c if c.isprintable() else f"%{ord(c):02X}" for c in text)  # latin-1 bytes


def log_line(
    *,
    method: str,
    path: str,
    host: str,
    request_id: str,
    fwd: str,
    dyno: str,
    connect: float | None,
    service: float | None,
    status: int,
    bytes_sent: int | None,
    failure: Failure | None = None,
) -> str:
    """Heroku's router line; `connect` and `service` are seconds (None: never got that far).
    Quoted values have their `"` escaped as %22; bare ones their spaces as %20 as well; control
    characters are escaped as %XX."""
    head = "at=info"
    if failure is not None:
        head = f'at=error code={failure.code} desc="{failure.desc}"'
        if failure.sock:
            head = f"sock={failure.sock} {head}"
    # Written out rather than in helpers: it runs once per request.
    connect_ms = "" if connect is None else f"{round(connect * 1000)}ms"
    service_ms = "" if service is None else f"{round(service * 1000)}ms"
    sent = "" if bytes_sent is None else bytes_sent
    method = method.replace('"', "%22").replace(" ", "%20")
    if not host.isprintable():
        host = _escape_controls(host)
    if not fwd.isprintable():
        fwd = _escape_controls(fwd)
    host = host.replace('"', "%22").replace(" ", "%20")
    path, fwd = path.replace('"', "%22"), fwd.replace('"', "%22")
    return (
        f'{head} method={method} path="{path}" host={host} '
        f'request_id={request_id} fwd="{fwd}" dyno={dyno} '
        f"connect={connect_ms} service={service_ms} status={status} bytes={sent} "
        "protocol=http"
    )


_TEXT = {
    404: ("No such app", "There is no app at this address."),
    503: (
        "Application error",
        "An error occurred in the application and your page could not be served. "
        "Please try again in a few moments.",
    ),
}


@functools.cache
def error_page(status: int, *, body: bool = True) -> bytes:
    """The whole HTTP/1.1 response of the router's own answer, sent as raw bytes because the
    connection closes after it (and h11 may already be in its error state)."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    title, text = _TEXT.get(status, (phrase, f"This request could not be served ({phrase})."))
    page = (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>'
        f"{html.escape(title)}</title></head>\n<body><h1>{html.escape(title)}</h1>\n"
        f"<p>{html.escape(text)}</p></body></html>\n"
    ).encode()
    head = (
        f"HTTP/1.1 {status} {phrase}\r\n"
        "Content-Type: text/html; charset=utf-8\r\n"
        f"Content-Length: {len(page)}\r\n"
        "Cache-Control: no-cache, no-store\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    return head + page if body else head
