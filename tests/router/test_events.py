"""The private h11 hooks router/events.py relies on behave as it assumes."""

from __future__ import annotations

import h11

from router import events


def parsed(data: bytes, role: type[h11.CLIENT] | type[h11.SERVER]) -> h11.Request | h11.Response:
    conn = h11.Connection(role)
    conn.receive_data(data)
    return conn.next_event()  # type: ignore[no-any-return]


def test_items_are_raw_lowered_value_triples() -> None:
    request = parsed(b"GET / HTTP/1.1\r\nHost: a\r\nX-Thing: V\r\n\r\n", h11.SERVER)
    assert events.items(request) == [(b"Host", b"host", b"a"), (b"X-Thing", b"x-thing", b"V")]


def test_events_serialise_the_headers_as_given() -> None:
    client = h11.Connection(h11.CLIENT)
    head = client.send(events.request(b"POST", b"/p?q", [(b"Host", b"host", b"a"), (b"Content-Length", b"content-length", b"2")]))
    assert head == b"POST /p?q HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n"
    assert client.send(h11.Data(data=b"hi")) == b"hi"

    server = h11.Connection(h11.SERVER)
    server.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    server.next_event()
    out = server.send(events.response(200, b"OK", [(b"Content-Length", b"content-length", b"0")]))
    assert out == b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


def test_framing_is_still_chosen_by_h11() -> None:
    server = h11.Connection(h11.SERVER)
    server.receive_data(b"GET / HTTP/1.0\r\n\r\n")
    server.next_event()
    out = server.send(events.response(200, b"OK", [(b"X-A", b"x-a", b"1")]))
    assert out.startswith(b"HTTP/1.1 200 OK\r\n") and b"connection: close" in out.lower()
