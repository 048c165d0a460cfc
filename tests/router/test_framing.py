"""Responses written to clients: the same bytes and keep-alive decisions h11 would make."""

from __future__ import annotations

from typing import Any

import h11
from hypothesis import given, settings
from hypothesis import strategies as st

from router.framing import (
    CHUNKED,
    IDENTITY,
    LAST_CHUNK,
    NO_BODY,
    chunk,
    frame_response,
    render_head,
)


def test_render_head() -> None:
    assert render_head(100, b"Continue", []) == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert render_head(200, b"", [(b"X-A", b"x-a", b"1")]) == b"HTTP/1.1 200 \r\nX-A: 1\r\n\r\n"


def test_unknown_length_is_chunked_for_http11_and_closes_http10() -> None:
    head, framing, keep = frame_response(
        200, b"OK", [], method=b"GET", http11=True, keep_alive=True
    )
    assert (
        head == b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        and framing == CHUNKED
        and keep
    )
    head, framing, keep = frame_response(
        200, b"OK", [], method=b"GET", http11=False, keep_alive=False
    )
    assert (
        head == b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" and framing == IDENTITY and not keep
    )


def test_head_and_304_send_no_body() -> None:
    sized = [(b"Content-Length", b"content-length", b"10")]
    assert frame_response(200, b"OK", sized, method=b"HEAD", http11=True, keep_alive=True)[1:] == (
        NO_BODY,
        True,
    )
    assert frame_response(304, b"", [], method=b"GET", http11=True, keep_alive=True)[1:] == (
        NO_BODY,
        True,
    )


def test_chunks() -> None:
    assert chunk(b"hello") == b"5\r\nhello\r\n" and chunk(b"") == b"" and LAST_CHUNK == b"0\r\n\r\n"


_names = st.sampled_from([b"X-A", b"Set-Cookie", b"Content-Type", b"ETag"])
_values = st.binary(max_size=12).map(lambda b: bytes(c for c in b if 0x21 <= c < 0x7F))


@settings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from([b"GET", b"HEAD", b"POST"]),
    version=st.sampled_from([b"1.0", b"1.1"]),
    close=st.booleans(),
    status=st.sampled_from([200, 204, 206, 304, 404, 503]),
    headers=st.lists(st.tuples(_names, _values), max_size=4),
    sized=st.booleans(),
    payload=st.binary(max_size=40),
)
def test_agrees_with_h11(
    method: bytes,
    version: bytes,
    close: bool,
    status: int,
    headers: list[tuple[bytes, bytes]],
    sized: bool,
    payload: bytes,
) -> None:
    has_body = method != b"HEAD" and status not in (204, 304)
    if sized:
        headers = headers + [(b"Content-Length", b"%d" % (len(payload) if has_body else 7))]
    payload = payload if has_body else b""
    server = h11.Connection(h11.SERVER)
    connection = b"Connection: close\r\n" if close else b""
    server.receive_data(b"%s / HTTP/%s\r\nHost: a\r\n%s\r\n" % (method, version, connection))
    assert type(server.next_event()) is h11.Request
    expected = server.send(h11.Response(status_code=status, reason=b"Why", headers=headers))
    expected_body = b"".join(
        server.send(e) or b"" for e in ([h11.Data(data=payload)] if payload else [])
    )
    expected_end = server.send(h11.EndOfMessage())
    h11_keeps = server.our_state is h11.DONE

    http11 = version == b"1.1"
    head, framing, keep = frame_response(
        status,
        b"Why",
        [(n, n.lower(), v) for n, v in headers],
        method=method,
        http11=http11,
        keep_alive=http11 and not close,
    )
    assert head.lower() == expected.lower()  # h11 title-cases the headers it adds
    if framing == CHUNKED:
        body: Any = chunk(payload) + LAST_CHUNK
    else:
        body = payload if framing == IDENTITY else b""
    assert body == expected_body + (expected_end or b"")
    assert keep == h11_keeps
