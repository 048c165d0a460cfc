"""A client's request head, and the short way to read the plain ones. Pure.

h11 guards the router against hostile clients, but running it costs a quarter of the router's
time per request (profiled under wrk). Most requests are plain: the whole head arrives at once,
in the strictest shape, with one Host and no body or protocol switch. `plain_request` reads
those in one regular-expression match and hands back exactly what h11 would parse from them
(tests/router/test_request.py holds it to h11); anything else, it leaves to h11.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import h11

from . import events
from .headers import Headers


class RequestHead(NamedTuple):
    method: bytes
    target: bytes
    http_version: bytes  # b"1.1" or b"1.0"
    headers: Headers  # (raw name, lowercased name, value), as h11 parses them


def from_h11(event: h11.Request) -> RequestHead:
    return RequestHead(event.method, event.target, event.http_version, events.items(event))


# h11's grammar, narrowed: versions 1.0 and 1.1 only, no obsolete line folding, bare LF or
# control characters (h11 takes some of those; here they go to h11). A header value may hold
# spaces and tabs anywhere: h11 strips them at both ends, as does `plain_request`.
# Possessive quantifiers: no part can give characters back to the next.
_TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]++"
_PLAIN_HEAD = re.compile(
    _TOKEN
    + rb" [\x21-\x7e]++ HTTP/1\.[01]"
    + rb"(?:\r\n"
    + _TOKEN
    + rb":[\t\x20-\x7e\x80-\xff]*+)*+"
)
# Headers that make h11 do more than parse: a body to frame, a protocol switch to track.
_FOR_H11 = frozenset((b"content-length", b"transfer-encoding", b"upgrade"))


def plain_request(buffer: bytes) -> tuple[RequestHead, int] | None:
    """(the request, where its head ends in `buffer`) when `buffer` starts with a whole plain
    body-less request head; None when h11 should read it (incomplete, unusual, or invalid)."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = buffer[:end]
    if _PLAIN_HEAD.fullmatch(head) is None:
        return None
    lines = head.split(b"\r\n")
    method, target, version = lines[0].split(b" ")
    if method == b"CONNECT":
        return None
    headers: Headers = []
    hosts = 0
    for line in lines[1:]:
        raw, _, value = line.partition(b":")
        name = raw.lower()
        if name in _FOR_H11:
            return None
        if name == b"host":
            hosts += 1
        headers.append((raw, name, value.strip(b" \t")))
    if hosts != 1:  # h11 answers 400 to none (in HTTP/1.1) and to several
        return None
    return RequestHead(method, target, version[5:], headers), end + 4
