"""The dyno-side codec: requests out, responses in; strict, and in agreement with h11."""

from __future__ import annotations

from typing import Any

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.codec import END, NEED_DATA, DynoCodec, DynoProtocolError, Head

HOST = [(b"Host", b"host", b"app")]


def sent(method: bytes = b"GET", *, body: bool = False, chunked: bool = False) -> DynoCodec:
    codec = DynoCodec(max_head=4096)
    codec.request(method, b"/", HOST, body=body, chunked=chunked)
    if body:
        codec.end()
    return codec


def events(codec: DynoCodec, *pieces: bytes) -> list[Any]:
    """Feed `pieces` one at a time, draining events after each; b"" is the dyno closing."""
    out: list[Any] = []
    for piece in pieces:
        codec.receive_data(piece)
        while True:
            event = codec.next_event()
            if event is NEED_DATA:
                break
            out.append(event)
            if event is END:
                return out
    return out


def body(found: list[Any]) -> bytes:
    return b"".join(e for e in found if type(e) is bytes)


def test_request_head_and_bodies() -> None:
    codec = DynoCodec()
    head = codec.request(
        b"POST",
        b"/p?q=1",
        HOST + [(b"Content-Length", b"content-length", b"3")],
        body=True,
        chunked=False,
    )
    assert head == b"POST /p?q=1 HTTP/1.1\r\nHost: app\r\nContent-Length: 3\r\n\r\n"
    assert codec.data(b"abc") == b"abc" and codec.end() == b"" and codec.request_done
    chunked = DynoCodec()
    chunked.request(b"POST", b"/", HOST, body=True, chunked=True)
    assert not chunked.request_done
    assert chunked.data(b"hello") == b"5\r\nhello\r\n" and chunked.data(b"") == b""
    assert chunked.end() == b"0\r\n\r\n" and chunked.request_done


def test_sized_response_in_pieces_then_reuse() -> None:
    codec = sent()
    found = events(
        codec, b"HTTP/1.1 200 OK\r\nContent-Le", b"ngth: 5\r\nX-A:  b c \r\n\r\nhe", b"llo"
    )
    assert found[0] == Head(
        200, b"OK", [(b"Content-Length", b"content-length", b"5"), (b"X-A", b"x-a", b"b c")]
    )
    assert body(found) == b"hello" and found[-1] is END
    assert codec.reusable
    codec.start_next_cycle()
    codec.request(b"GET", b"/", HOST, body=False, chunked=False)
    assert events(codec, b"HTTP/1.1 204 No Content\r\n\r\n") == [Head(204, b"No Content", []), END]


def test_chunked_response_with_extensions_and_trailers() -> None:
    codec = sent()
    found = events(
        codec,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;name=v\r\nhel",
        b"lo\r\n6\r\n world\r\n0\r\nX-Sum: 1\r\n\r\n",
    )
    assert body(found) == b"hello world" and found[-1] is END and codec.reusable


def test_body_until_close_is_not_reusable() -> None:
    codec = sent()
    found = events(codec, b"HTTP/1.1 200 OK\r\n\r\npart one ", b"part two", b"")
    assert body(found) == b"part one part two" and found[-1] is END
    assert not codec.reusable


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
    ],
)
def test_close_and_http10_end_keep_alive(head: bytes) -> None:
    codec = sent()
    assert events(codec, head)[-1] is END and not codec.reusable


def test_head_and_304_have_no_body() -> None:
    codec = sent(b"HEAD")
    assert (
        events(codec, b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n")[-1] is END
        and codec.reusable
    )
    codec = sent()
    assert events(codec, b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n")[-1] is END


def test_informational_then_final() -> None:
    codec = sent(body=True)
    found = events(
        codec, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    )
    assert [type(e) for e in found] == [Head, Head, bytes, type(END)]
    assert found[0].status == 100 and found[1].status == 200


def test_switching_protocols_keeps_what_follows() -> None:
    codec = sent()
    codec.receive_data(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: "
        b"upgrade\r\n\r\nfirst frame"
    )
    head = codec.next_event()
    assert type(head) is Head and head.status == 101
    assert codec.switched and codec.trailing_data == b"first frame"


def test_reason_may_be_empty_or_absent() -> None:
    assert events(sent(), b"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n")[0].reason == b""
    assert events(sent(), b"HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n")[0] == Head(
        404, b"", [(b"Content-Length", b"content-length", b"0")]
    )


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/2 200 OK\r\n\r\n",
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"ICY 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nNo colon\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Name: v\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n folded: v\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\x00b\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1e3\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X-Big: " + b"v" * 5000 + b"\r\n\r\n",
    ],
)
def test_malformed_responses_are_refused(data: bytes) -> None:
    codec = sent()
    with pytest.raises(DynoProtocolError):
        events(codec, data, b"")


@pytest.mark.parametrize(
    "data", [b"", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", b"HTTP/1.1 200 OK\r\nContent"]
)
def test_closing_early_is_an_error(data: bytes) -> None:
    with pytest.raises(DynoProtocolError):
        events(sent(), data, b"")


def test_endless_head_is_refused_before_it_ends() -> None:
    codec = sent()
    codec.receive_data(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 1000)
    with pytest.raises(DynoProtocolError):
        codec.next_event()


# --- against h11 -------------------------------------------------------------------------

_names = st.sampled_from([b"X-A", b"Set-Cookie", b"Content-Type", b"Cache-Control", b"ETag"])
_values = st.binary(min_size=0, max_size=20).map(lambda b: bytes(c for c in b if 0x21 <= c < 0x7F))


@st.composite
def responses(draw: Any) -> tuple[bytes, bytes, bytes, bool]:
    """(request method, response bytes, body, whether the body ends with the connection)"""
    method = draw(st.sampled_from([b"GET", b"HEAD"]))
    status = draw(st.sampled_from([200, 201, 204, 301, 304, 404, 500, 503]))
    headers = draw(st.lists(st.tuples(_names, _values), max_size=5))
    payload = draw(st.binary(max_size=300))
    framing = draw(st.sampled_from(["length", "chunked", "close"]))
    version = draw(st.sampled_from([b"1.1", b"1.1", b"1.0"]))
    if framing == "chunked" and version == b"1.0":
        framing = "length"
    no_body = method == b"HEAD" or status in (204, 304)
    lines = [b"HTTP/%s %d Reason Here" % (version, status)] + [b"%s: %s" % h for h in headers]
    if framing == "length":
        lines.append(b"Content-Length: %d" % len(payload))
    elif framing == "chunked":
        lines.append(b"Transfer-Encoding: chunked")
    raw = b"\r\n".join(lines) + b"\r\n\r\n"
    if not no_body:
        if framing == "chunked":
            cut = draw(st.integers(0, len(payload)))
            pieces = [p for p in (payload[:cut], payload[cut:]) if p]
            raw += b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
        else:
            raw += payload
    return method, raw, b"" if no_body else payload, framing == "close" and not no_body


@settings(max_examples=300, deadline=None)
@given(responses(), st.lists(st.integers(1, 50), max_size=6))
def test_agrees_with_h11(case: tuple[bytes, bytes, bytes, bool], cuts: list[int]) -> None:
    method, raw, payload, until_close = case
    pieces, rest = [], raw
    for cut in cuts:
        pieces.append(rest[:cut])
        rest = rest[cut:]
    pieces += [rest, b""]  # the dyno closes at the end: close-delimited bodies need it

    codec = sent(method)
    ours = events(codec, *pieces)

    h11_conn = h11.Connection(h11.CLIENT)
    h11_conn.send(h11.Request(method=method, target="/", headers=[("Host", "app")]))
    h11_conn.send(h11.EndOfMessage())
    theirs: list[Any] = []
    for piece in pieces:
        h11_conn.receive_data(piece)
        while (event := h11_conn.next_event()) is not h11.NEED_DATA:
            theirs.append(event)
            if type(event) is h11.EndOfMessage:
                break
        if theirs and type(theirs[-1]) is h11.EndOfMessage:
            break

    head, theirs_head = ours[0], theirs[0]
    assert (head.status, head.reason) == (theirs_head.status_code, theirs_head.reason)
    assert [(name, value) for _, name, value in head.headers] == list(theirs_head.headers)
    assert body(ours) == b"".join(e.data for e in theirs if type(e) is h11.Data) == payload
    assert ours[-1] is END and type(theirs[-1]) is h11.EndOfMessage
    # h11 learns of the close only on its next read; a body that ends with it never keeps alive
    assert codec.keep_alive == (h11_conn.their_state is h11.DONE and not until_close)
