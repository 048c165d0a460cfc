"""How a response goes back to a client: its head, how its body is framed, and whether the
connection stays open after it. Pure.

These are h11's rules (RFC 9112 §6), written out because the router writes responses itself:
sending the answer through h11's state machine cost a fifth of the router's time per request.
tests/router/test_framing.py holds this module to h11's output byte for byte.
"""

from __future__ import annotations

from .headers import Headers

# What the body needs on the way out.
NO_BODY, IDENTITY, CHUNKED = range(3)
LAST_CHUNK = b"0\r\n\r\n"


def render_head(status: int, reason: bytes, headers: Headers) -> bytes:
    """An HTTP/1.1 status line and headers; 1xx answers go out through this alone."""
    out = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
    for raw, _, value in headers:
        out += (raw, b": ", value, b"\r\n")  # cheaper than formatting each line
    out.append(b"\r\n")
    return b"".join(out)


def frame_response(
    status: int,
    reason: bytes,
    headers: Headers,
    *,
    method: bytes,
    http11: bool,
    keep_alive: bool,
) -> tuple[bytes, int, bool]:
    """(head, body framing, keep-alive after it) for a final response whose `headers` carry
    no hop-by-hop fields. `http11`/`keep_alive` describe the client's request."""
    out = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
    sized = status in (204, 304)
    for raw, name, value in headers:  # one pass: it runs for every response
        if name == b"content-length":
            sized = True
        out += (raw, b": ", value, b"\r\n")
    framing = IDENTITY
    if not sized:  # a body of unknown length
        if http11:
            out.append(b"Transfer-Encoding: chunked\r\n")
            framing = CHUNKED
        elif method != b"HEAD":
            keep_alive = False  # an HTTP/1.0 client reads it until the connection closes
    if not keep_alive:
        out.append(b"Connection: close\r\n")
    if method == b"HEAD" or status in (204, 304):
        framing = NO_BODY
    out.append(b"\r\n")
    return b"".join(out), framing, keep_alive


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data) if data else b""
