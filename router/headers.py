"""Request and response header rules: the limits a request must meet, what the router adds
(X-Forwarded-*, X-Request-Start, X-Request-Id, Via), what it removes (hop-by-hop headers).

Pure: bytes in, bytes out; one pass over the headers on the request path because it is hot.
Headers are (raw name, lowercased name, value) triples, the form h11 parses them into and sends
them from, so nothing is lowercased or validated twice.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from typing import NamedTuple

from attrs import frozen

from .config import RouterConfig

Header = tuple[bytes, bytes, bytes]  # (raw name, lowercased name, value)
Headers = list[Header]

# Heroku's rule: 20 to 200 ASCII letters, digits, `+`, `/`, `=` and `-`.
REQUEST_ID = re.compile(rb"[A-Za-z0-9+/=-]{20,200}")
VIA = b"1.1 dynod"
# RFC 9110 §7.2: Host = uri-host [ ":" port ], uri-host an IP literal or a reg-name (RFC 3986:
# unreserved, pct-encoded and sub-delims). No spaces, no `/`, `@`, `?` or `#`: `Host: a, b`
# (two values folded into one) and `Host: a b` are refused, not guessed at.
HOST = re.compile(rb"(\[[0-9A-Fa-f:.vV]+\]|[A-Za-z0-9._~%!$&'()*+,;=-]*)(:[0-9]*)?")
# RFC 9110 §7.6.1, plus the non-standard ones clients still send.
HOP_BY_HOP = frozenset(
    (
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    )
)
# Set by the router alone: a client's own values would let it lie to the app.
_REPLACED = frozenset((b"x-forwarded-proto", b"x-forwarded-port", b"x-request-start"))
_CONNECTION_OPTIONS = frozenset((b"close", b"keep-alive", b"upgrade"))
_SPECIAL = (
    HOP_BY_HOP
    | _REPLACED
    | {b"host", b"content-length", b"x-forwarded-for", b"x-request-id", b"via"}
)
# What `Connection` may not name away: the router frames and addresses the request with these
# (`Connection: content-length` would send a body the dyno reads as the next request).
_UNNAMEABLE = _CONNECTION_OPTIONS | _SPECIAL
_RESPONSE_SPECIAL = HOP_BY_HOP | {b"via"}


class Forwarded(NamedTuple):
    """A request the router will send on, and the facts its log line needs. A NamedTuple, as
    one is made per request: it costs a third of a frozen attrs class to build."""

    headers: Headers
    target: bytes
    host: str
    request_id: str
    forwarded_for: str
    body: bool  # chunked or a Content-Length above zero
    chunked: bool
    http11: bool  # else HTTP/1.0
    keep_alive: bool  # the client wants the connection kept open after this exchange
    upgrade: bool  # `Upgrade` requested and listed in `Connection`


@frozen
class Rejected:
    status: int  # 400, 414 or 431
    reason: str


def valid_request_id(value: bytes) -> bool:
    return REQUEST_ID.fullmatch(value) is not None


@functools.lru_cache(maxsize=1024)  # the same few Host values arrive again and again
def app_name(host: str, domain: str) -> str:
    """`app.localhost:8080` → `app` (with domain `localhost`); other hosts come back whole."""
    name = host.partition("]")[0] + "]" if host.startswith("[") else host.partition(":")[0]
    name = name.lower().rstrip(".")
    suffix = "." + domain.lower()
    return name[: -len(suffix)] if name.endswith(suffix) else name


def forward_request(
    method: bytes,
    target: bytes,
    headers: Sequence[Header],
    *,
    http_version: bytes = b"1.1",
    client_ip: str,
    port: int,
    now_ms: int,
    new_id: Callable[[], str],
    config: RouterConfig,
) -> Forwarded | Rejected:
    """Check the limits, then rewrite `headers` (as h11 parsed them)."""
    limit = config.max_line_bytes
    if len(method) + len(target) + 10 > limit:  # "GET /x HTTP/1.1": two spaces, 8-byte version
        return Rejected(414, "request line too long")
    if len(headers) > config.max_headers:
        return Rejected(431, "too many headers")
    out: Headers = []
    hosts: list[bytes] = []
    forwarded: list[bytes] = []
    via: list[bytes] = []
    options: list[bytes] = []
    request_id = b""
    upgrade = b""
    chunked = False
    length = b""
    # h11 caps only a head that arrives incomplete; one that arrives whole is measured here.
    room = config.max_head_bytes - len(method) - len(target) - 10
    for header in headers:
        raw, name, value = header
        line = len(raw) + len(value) + 4  # ": " and CRLF
        if line > limit:
            return Rejected(431, "header line too long")
        room -= line
        if name not in _SPECIAL:  # most headers: passed on as they are
            out.append(header)
        elif name == b"host":
            hosts.append(value)
            out.append(header)
        elif name == b"content-length":
            if not length:  # h11 let through only equal repeats: the dyno gets one
                out.append(header)
            length = value
        elif name == b"x-forwarded-for":
            forwarded.append(value)
        elif name == b"x-request-id":
            request_id = value
        elif name == b"via":
            via.append(value)
        elif name == b"connection":
            options.extend(t.strip().lower() for t in value.split(b","))
        elif name == b"upgrade":
            upgrade = value
        elif name == b"transfer-encoding":
            chunked = True  # h11 has refused every coding but chunked
    if room < 0:
        return Rejected(431, "headers too large")
    if len(hosts) > 1:
        return Rejected(400, "more than one Host header")
    if chunked and length:
        return Rejected(400, "both Content-Length and Transfer-Encoding")
    host = hosts[0] if hosts else b""
    if HOST.fullmatch(host) is None:
        return Rejected(400, "invalid Host header")
    if not hosts:  # HTTP/1.0 may omit it; HTTP/1.1 needs one towards the dyno, empty is allowed
        out.insert(0, (b"Host", b"host", b""))
    if target[:1] != b"/" and target != b"*":
        # absolute-form (`GET http://h/p`): only for the host the Host header names
        authority, _, path = target.partition(b"://")[2].partition(b"/")
        if hosts and authority.lower() != host.lower():
            return Rejected(400, "request target names another host")
        target = b"/" + path
    if options:
        named = {o for o in options if o and o not in _UNNAMEABLE}
        if named:
            out = [header for header in out if header[1] not in named]
    body = chunked or length.strip(b"0") != b""
    is_upgrade = bool(upgrade) and b"upgrade" in options and not body
    if request_id and valid_request_id(request_id):
        request_id_text = request_id.decode("ascii")
    else:
        request_id_text = new_id()
        request_id = request_id_text.encode()
    client = client_ip.encode()
    chain = b", ".join(forwarded + [client]) if forwarded else client
    out += [
        (b"X-Forwarded-For", b"x-forwarded-for", chain),
        (b"X-Forwarded-Proto", b"x-forwarded-proto", b"http"),
        (b"X-Forwarded-Port", b"x-forwarded-port", b"%d" % port),
        (b"X-Request-Start", b"x-request-start", b"%d" % now_ms),
        (b"X-Request-Id", b"x-request-id", request_id),
        (b"Via", b"via", b", ".join(via + [VIA]) if via else VIA),
    ]
    if chunked:
        out.append((b"Transfer-Encoding", b"transfer-encoding", b"chunked"))
    if is_upgrade:
        out += [(b"Connection", b"connection", b"upgrade"), (b"Upgrade", b"upgrade", upgrade)]
    return Forwarded(
        headers=out,
        target=target,
        host=host.decode("latin-1"),
        request_id=request_id_text,
        forwarded_for=chain.decode("latin-1"),
        body=body,
        chunked=chunked,
        http11=http_version == b"1.1",
        keep_alive=http_version == b"1.1" and b"close" not in options,
        upgrade=is_upgrade,
    )


def forward_response(headers: Sequence[Header], *, upgrade: bool = False) -> Headers:
    """A dyno's response headers as the client gets them: hop-by-hop removed (h11 frames the
    body again), our Via appended; a 101 keeps its `Upgrade`."""
    out: Headers = []
    via: list[bytes] = []
    named: set[bytes] = set()  # more hop-by-hop headers, listed in `Connection`
    upgrade_to = b""
    for header in headers:
        name = header[1]
        if name not in _RESPONSE_SPECIAL:  # most headers: passed on as they are
            out.append(header)
        elif name == b"via":
            via.append(header[2])
        elif name == b"connection":
            for option in header[2].split(b","):
                option = option.strip().lower()
                if option and option not in _CONNECTION_OPTIONS:
                    named.add(option)
        elif name == b"upgrade":
            upgrade_to = header[2]
    if named:
        out = [header for header in out if header[1] not in named]
    out.append((b"Via", b"via", b", ".join(via + [VIA]) if via else VIA))
    if upgrade:
        out += [(b"Connection", b"connection", b"upgrade"), (b"Upgrade", b"upgrade", upgrade_to)]
    return out
