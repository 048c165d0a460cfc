"""The private h11 hook router/events.py relies on behaves as it assumes."""

from __future__ import annotations

import h11

from router import events


def test_items_are_raw_lowered_value_triples() -> None:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\nX-Thing: V\r\n\r\n")
    request = conn.next_event()
    assert type(request) is h11.Request
    assert events.items(request) == [(b"Host", b"host", b"a"), (b"X-Thing", b"x-thing", b"V")]
