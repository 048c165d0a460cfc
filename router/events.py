"""h11 events from headers that h11 already parsed (or the router wrote from constants), sent
without h11 validating them a second time: the proxy parses each head once and sends it once.

This leans on two private h11 hooks, its `Headers` container and `_parsed=True`; the tests in
tests/router/test_events.py pin them, so an h11 release that changes them fails there first.
"""

from __future__ import annotations

import h11
from h11._headers import Headers as _Headers

from .headers import Headers


def items(event: h11.Request | h11.Response | h11.InformationalResponse) -> Headers:
    """The (raw name, lowercased name, value) triples h11 holds; read-only."""
    return event.headers._full_items


def request(method: bytes, target: bytes, headers: Headers) -> h11.Request:
    return h11.Request(method=method, target=target, headers=_Headers(headers), _parsed=True)


def response(status: int, reason: bytes, headers: Headers) -> h11.Response:
    return h11.Response(status_code=status, reason=reason, headers=_Headers(headers), _parsed=True)


def switching(reason: bytes, headers: Headers) -> h11.InformationalResponse:
    return h11.InformationalResponse(
        status_code=101, reason=reason, headers=_Headers(headers), _parsed=True
    )
