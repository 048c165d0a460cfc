"""Log drains as pure rules (docs/platform.md, Log drains): which URLs a drain may have and where
they lead, the octet-counted RFC 5424 frames logplex sends (PRI from the line's source), and the
retry delays, doubling with jitter."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from itertools import chain, repeat

import attrs

from dynod.core.logline import APP, iso_timestamp
from dynod.errors import Invalid

DEFAULT_PORTS = {"syslog": 514, "syslog+tls": 6514, "http": 80, "https": 443}
MAX_DRAINS = 10  # per app
MAX_URL = 2048
DRAIN_BUFFER = 1024  # lines a drain may fall behind before its oldest are dropped (L10)
MAX_BATCH = 500  # lines in one HTTP POST, or one syslog write
L10 = "Error L10 (output buffer overflow): {n} messages dropped since {since}."
BACKOFF_FIRST = 0.5  # seconds before the first retry, at most
BACKOFF_CAP = 60.0  # the longest wait between two tries
# Facilities as Heroku's: local7 for the app's lines, local3 for the router, local0 for the
# rest of the platform; severity info. PRI = facility * 8 + severity.
PRI_APP, PRI_ROUTER, PRI_PLATFORM = 23 * 8 + 6, 19 * 8 + 6, 16 * 8 + 6

_URL = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://"
    r"(?:(?P<userinfo>[^@/?#\s]*)@)?"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~-]+)"
    r"(?::(?P<port>[0-9]{1,5}))?"
    r"(?P<rest>[/?][^#\s]*)?"
)


@attrs.frozen
class DrainTarget:
    """Where a drain's URL leads: `syslog` (TCP), `syslog+tls`, `http` or `https`."""

    scheme: str
    host: str  # an IPv6 address without its brackets
    port: int
    target: str = "/"  # HTTP's request target: the path and query
    userinfo: str | None = None  # HTTP Basic credentials, `user:password`

    @property
    def tls(self) -> bool:
        return self.scheme in ("syslog+tls", "https")

    @property
    def syslog(self) -> bool:
        return self.scheme.startswith("syslog")

    @property
    def authority(self) -> str:
        """`host:port` as an HTTP Host header names it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"


def parse_drain_url(url: object) -> DrainTarget:
    """The drain URL's target, or Invalid saying which URLs are accepted."""
    usage = (
        "give syslog://HOST:PORT, syslog+tls://HOST:PORT or an http(s):// URL, "
        "such as syslog://logs.example.com:514"
    )
    if not isinstance(url, str) or not url:
        raise Invalid(f"A drain needs a URL: {usage}.")
    if len(url) > MAX_URL:
        raise Invalid(f"Drain URL is over {MAX_URL} characters: {usage}.")
    found = _URL.fullmatch(url)
    if found is None:
        raise Invalid(f"Drain URL {url!r} is not a URL dynod can drain to: {usage}.")
    scheme = found["scheme"].lower()
    if scheme not in DEFAULT_PORTS:
        raise Invalid(f"Drain URL scheme {scheme}:// is not supported: {usage}.")
    port = int(found["port"]) if found["port"] else DEFAULT_PORTS[scheme]
    if not 0 < port < 65536:
        raise Invalid(f"Drain URL {url!r} has port {port}, outside 1-65535.")
    rest = found["rest"] or ""
    if scheme.startswith("syslog") and (rest.strip("/") or found["userinfo"] is not None):
        raise Invalid(f"A syslog drain is HOST:PORT only, not {url!r}: {usage}.")
    target = rest if rest.startswith("/") else "/" + rest
    return DrainTarget(scheme, found["host"].strip("[]"), port, target, found["userinfo"])


def shown_url(url: str) -> str:
    """The URL with any password hidden, for log lines anyone reading the app's log sees."""
    found = _URL.fullmatch(url)
    if found is None or not found["userinfo"] or ":" not in found["userinfo"]:
        return url
    user = found["userinfo"].partition(":")[0]
    start, end = found.span("userinfo")
    return f"{url[:start]}{user}:...{url[end:]}"


def pri(source: str, dyno: str) -> int:
    if source == APP:
        return PRI_APP
    return PRI_ROUTER if dyno == "router" else PRI_PLATFORM


# `LENGTH ` for the usual lengths: formatting each number costs more than the rest of a frame.
_COUNTS = [f"{n} " for n in range(4096)]
# One publish as logplex hands it to a drain: (when, source, dyno, texts).
Run = tuple[float, str, str, Sequence[str]]


def frames(runs: Iterable[Run]) -> bytes:
    """The lines as octet-counted RFC 5424 messages (RFC 6587), back to back:
    `LENGTH <PRI>1 TIMESTAMP host SOURCE DYNO - TEXT`, LENGTH counting the message's bytes.

    The header is made once per run, and the per-line work is C-level (map, join): for an
    ASCII run, a text's length is its byte count and the run is encoded once.
    """
    parts: list[bytes] = []
    for when, source, dyno, texts in runs:
        head = f"<{pri(source, dyno)}>1 {iso_timestamp(when)} host {source} {dyno} - "
        size = len(head.encode())
        if head.isascii() and all(map(str.isascii, texts)):
            lengths = list(map(size.__add__, map(len, texts)))
            known = max(lengths) < len(_COUNTS)
            counts = map(_COUNTS.__getitem__ if known else "%d ".__mod__, lengths)
            parts.append("".join(chain.from_iterable(zip(counts, repeat(head), texts))).encode())
        else:
            encoded = list(map(str.encode, texts))
            byte_counts = map(b"%d ".__mod__, map(size.__add__, map(len, encoded)))
            parts.extend(chain.from_iterable(zip(byte_counts, repeat(head.encode()), encoded)))
    return b"".join(parts)


def backoff(failures: int, draw: float) -> float:
    """Seconds to wait after `failures` failed tries in a row (1, 2, …): a ceiling doubling
    from BACKOFF_FIRST up to BACKOFF_CAP, and a point between half of it and all of it picked
    by `draw` (in [0, 1)), so that many drains failing together do not retry together."""
    ceiling = min(BACKOFF_CAP, BACKOFF_FIRST * 2.0 ** min(failures - 1, 32))
    return ceiling * (0.5 + draw / 2)
