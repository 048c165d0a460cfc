"""The short way to read plain request heads: what it reads, h11 reads the same; the rest it
leaves to h11."""

from __future__ import annotations

from typing import Any

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.request import RequestHead, from_h11, plain_request


def h11_reads(data: bytes) -> tuple[RequestHead, bytes] | None:
    """The request h11 parses from `data` and what it leaves after it; None if it refuses."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    try:
        event = conn.next_event()
        if type(event) is not h11.Request:
            return None
        assert type(conn.next_event()) is h11.EndOfMessage
    except h11.RemoteProtocolError:
        return None
    return from_h11(event), conn.trailing_data[0]


def test_reads_what_wrk_curl_and_browsers_send() -> None:
    for data in (
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n",
        b"GET /a?b=c HTTP/1.1\r\nHost: app.localhost\r\nUser-Agent: curl/8.5.0\r\n"
        b"Accept: */*\r\n\r\n",
        b"HEAD /x HTTP/1.0\r\nHost: a\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: a\r\nAccept-Language: en-GB,en;q=0.9\r\nCookie: a=b; c=d\r\n"
        b"X-Empty:\r\nX-Spaces: \t v  w \t\r\nX-Utf8: \xc3\xa9\r\n\r\n",
    ):
        found = plain_request(data + b"GET /next")
        assert found is not None, data
        request, end = found
        assert (request, (data + b"GET /next")[end:]) == h11_reads(data + b"GET /next")


def test_fields() -> None:
    found = plain_request(b"DELETE /p HTTP/1.0\r\nHost: a\r\nX-A:  b c \r\n\r\n")
    assert found == (
        RequestHead(b"DELETE", b"/p", b"1.0", [(b"Host", b"host", b"a"), (b"X-A", b"x-a", b"b c")]),
        43,
    )


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"GET / HTTP/1.1\r\nHost: a\r\n",  # not complete yet
        b"GET / HTTP/1.1\nHost: a\n\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n\n",
        b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
        b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: folded\r\n  on\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX : v\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
        b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 hello\r\n\r\n",
    ],
)
def test_leaves_the_rest_to_h11(data: bytes) -> None:
    assert plain_request(data) is None


# --- against h11 -------------------------------------------------------------------------

_piece = st.sampled_from(
    [
        b"GET",
        b"POST",
        b"CONNECT",
        b" ",
        b"  ",
        b"/",
        b"/a?b=c",
        b"*",
        b"http://a/b",
        b"HTTP/1.1",
        b"HTTP/1.0",
        b"HTTP/2.0",
        b"\r\n",
        b"\n",
        b"\r",
        b"\t",
        b":",
        b"Host",
        b"host",
        b"X-A",
        b"Content-Length",
        b"Upgrade",
        b"Connection",
        b"close",
        b"0",
        b"v",
        b"\x00",
        b"\x7f",
        b"\x01",
        b"\xff",
        b"\xc3\xa9",
        b",",
        b";",
    ]  # fmt: skip
)


@st.composite
def heads(draw: Any) -> bytes:
    """Mostly well-formed request heads, with a random piece swapped in here and there."""
    line = [draw(st.sampled_from([b"GET", b"GET", b"HEAD", b"PUT", b"CONNECT", b"G(T"])), b" "]
    line += [draw(st.sampled_from([b"/", b"/x?y=1", b"*", b"http://a/p", b"/", b"/\xff"])), b" "]
    line.append(draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.2"])))
    lines = [b"".join(line)]
    if draw(st.integers(0, 5)):
        lines.append(b"Host: a")
    names = st.sampled_from([b"X-A", b"Accept", b"Connection", b"Expect", b"X-A", b"Accept",
                             b"host", b"Upgrade", b"Content-Length", b"Bad Name", b""])  # fmt: skip
    values = st.lists(st.sampled_from([b"a", b"b c", b" ", b"\t", b"close", b"0", b"\xe9"]))
    for _ in range(draw(st.integers(0, 3))):
        lines.append(draw(names) + b":" + b"".join(draw(values)))
    head = b"\r\n".join(lines) + b"\r\n\r\n"
    for _ in range(draw(st.sampled_from([0, 0, 1, 2]))):
        at = draw(st.integers(0, len(head)))
        head = head[:at] + draw(_piece) + head[at:]
    return head


@settings(max_examples=500, deadline=None)
@given(heads(), st.sampled_from([b"", b"GET / HTTP/1.1\r\n", b"\r\n"]))
def test_agrees_with_h11(head: bytes, after: bytes) -> None:
    data = head + after
    found = plain_request(data)
    if found is not None:
        request, end = found
        assert (request, data[end:]) == h11_reads(data)
