"""The dyno side of HTTP/1.1: request heads and bodies out, responses in. Sans-I/O.

Clients are parsed by h11 (or, for plain heads, by request.py to h11's rules), which guards the
router against hostile input. Towards dynos the router only writes what was accepted there and
reads what a dyno answers; doing that with h11 as well cost a third of the router's time per
request (profiled under wrk), so this small codec does it. It keeps h11's framing rules
(tests/router/test_codec.py holds it to h11) and is strict: any doubt is an error.
"""

from __future__ import annotations

import enum
import re
from typing import NamedTuple

from .headers import Headers


class Signal(enum.Enum):
    NEED_DATA = "need data"  # read more from the dyno, then ask again
    END = "end of message"  # the response is complete


NEED_DATA, END = Signal.NEED_DATA, Signal.END


class Head(NamedTuple):
    """A response head: a final one, or a 1xx (several may precede the final one)."""

    status: int
    reason: bytes
    headers: Headers


Event = Head | bytes | Signal  # bytes: a piece of the body

# A whole response head in one match (its shape, not its meaning): a status line, then
# `token: value` lines whose values hold no control character but tab, so no line can hide
# another. The parts are then cut out with split and partition. (Possessive quantifiers: no
# part can give characters back to the next, so the matcher need not keep track.)
_VALUE = rb"[\t\x20-\x7e\x80-\xff]*+"
_HEADER_LINE = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]++:" + _VALUE
_HEAD_SHAPE = re.compile(
    rb"HTTP/1\.[01] [0-9]{3}(?: " + _VALUE + rb")?(?:\r\n" + _HEADER_LINE + rb")*+"
)
_TRAILER = re.compile(_HEADER_LINE)
_FRAMING = frozenset((b"content-length", b"transfer-encoding", b"connection"))
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?")
_MAX_CHUNK_LINE = 1024

# Where the response stands.
_HEAD, _LENGTH, _CHUNK_SIZE_LINE, _CHUNK, _CHUNK_END, _TRAILERS, _UNTIL_CLOSE, _DONE, _SWITCHED = (
    range(9)
)


class DynoProtocolError(Exception):
    """The dyno's answer is not HTTP/1.1 as the router reads it (H17, or H18 mid-body)."""


class DynoCodec:
    """One connection to a dyno, one exchange at a time (no pipelining). next_event() gives a
    Head, then body bytes, then END, with NEED_DATA whenever it wants more input."""

    __slots__ = (
        "_buffer",
        "_closed",
        "_state",
        "_remaining",
        "_head_request",
        "_chunked_request",
        "keep_alive",
        "request_done",
        "max_head",
    )

    def __init__(self, max_head: int = 65536) -> None:
        self.max_head = max_head
        self._buffer = b""
        self._closed = False
        self._state = _HEAD
        self._remaining = 0
        self._head_request = False
        self._chunked_request = False
        self.keep_alive = True
        self.request_done = False

    # --- what the router sends -------------------------------------------------------------

    def request(
        self, method: bytes, target: bytes, headers: Headers, *, body: bool, chunked: bool
    ) -> bytes:
        """The request head; `headers` are checked already and carry the body's framing."""
        self._head_request = method == b"HEAD"
        self._chunked_request = chunked
        self.request_done = not body
        out = [method, b" ", target, b" HTTP/1.1\r\n"]
        for raw, _, value in headers:
            out += (raw, b": ", value, b"\r\n")  # cheaper than formatting each line
        out.append(b"\r\n")
        return b"".join(out)

    def data(self, data: bytes) -> bytes:
        if not self._chunked_request or not data:
            return data
        return b"%x\r\n%s\r\n" % (len(data), data)

    def end(self) -> bytes:
        self.request_done = True
        return b"0\r\n\r\n" if self._chunked_request else b""

    # --- what the dyno answers -------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Bytes read from the dyno; b"" when it closed the connection."""
        if data:
            self._buffer += data
        else:
            self._closed = True

    @property
    def switched(self) -> bool:
        """A 101 went through: the rest of the connection is a byte tunnel."""
        return self._state == _SWITCHED

    @property
    def trailing_data(self) -> bytes:
        """Bytes read past a 101's head, which belong to the tunnel."""
        return self._buffer

    @property
    def reusable(self) -> bool:
        return (
            self._state == _DONE
            and self.request_done
            and self.keep_alive
            and not self._buffer
            and not self._closed
        )

    def start_next_cycle(self) -> None:
        """Ready for the next request; only once `reusable` (the pool checks)."""
        self._state = _HEAD

    def next_event(self) -> Event:
        """The next response event. Raises DynoProtocolError."""
        state = self._state
        if state == _HEAD:
            return self._head()
        if state == _LENGTH:
            return self._sized_body()
        if state == _UNTIL_CLOSE:
            if self._buffer:
                data, self._buffer = self._buffer, b""
                return data
            if self._closed:
                self._state = _DONE
                return END
            return NEED_DATA
        if state in (_CHUNK_SIZE_LINE, _CHUNK, _CHUNK_END, _TRAILERS):
            return self._chunked_body()
        raise DynoProtocolError("no response expected")

    def _head(self) -> Event:
        buffer = self._buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > self.max_head:
                raise DynoProtocolError("response head too long")
            if self._closed:
                raise DynoProtocolError("closed before a complete response head")
            return NEED_DATA
        if end > self.max_head:
            raise DynoProtocolError("response head too long")
        head, self._buffer = buffer[:end], buffer[end + 4 :]
        if _HEAD_SHAPE.fullmatch(head) is None:
            raise DynoProtocolError("malformed response head")
        lines = head.split(b"\r\n")
        status_line = lines[0]  # "HTTP/1.1 200 OK": fixed offsets, checked by _HEAD
        code = int(status_line[9:12])
        headers: Headers = []
        framing: list[tuple[bytes, bytes]] = []
        for line in lines[1:]:
            raw, _, value = line.partition(b":")
            name = raw.lower()
            value = value.strip(b" \t")
            headers.append((raw, name, value))
            if name in _FRAMING:
                framing.append((name, value))
        self._frame(code, status_line[7:8] == b"1", framing)
        return Head(code, status_line[13:], headers)

    def _frame(self, code: int, http11: bool, framing: list[tuple[bytes, bytes]]) -> None:
        """Body framing and keep-alive, as RFC 9112 §6.3 and h11 decide them, from the
        response's Content-Length, Transfer-Encoding and Connection headers."""
        length: bytes | None = None
        chunked = False
        close = not http11
        for name, value in framing:
            if name == b"content-length":
                if length is None and value.isdigit() and len(value) <= 20:
                    length = value  # the usual: one plain number
                    continue
                for part in value.split(b","):
                    part = part.strip()
                    if (
                        not part.isdigit()
                        or len(part) > 20
                        or (length is not None and part != length)
                    ):
                        raise DynoProtocolError("bad Content-Length")
                    length = part
            elif name == b"transfer-encoding":
                if chunked or value.strip().lower() != b"chunked":
                    raise DynoProtocolError("unsupported Transfer-Encoding")
                chunked = True
            elif b"close" in value.lower():  # Connection (usually keep-alive: no split then)
                if b"close" in [t.strip() for t in value.lower().split(b",")]:
                    close = True
        if chunked and length is not None:
            raise DynoProtocolError("both Content-Length and Transfer-Encoding")
        if code < 200:
            if code == 101:
                self._state = _SWITCHED
            return  # 1xx: the real response follows
        self.keep_alive = not close
        if self._head_request or code in (204, 304):
            self._state, self._remaining = _LENGTH, 0
        elif chunked:
            self._state = _CHUNK_SIZE_LINE
        elif length is not None:
            self._state, self._remaining = _LENGTH, int(length)
        else:
            self._state = _UNTIL_CLOSE
            self.keep_alive = False

    def _sized_body(self) -> Event:
        if not self._remaining:
            self._state = _DONE
            return END
        buffer = self._buffer
        if not buffer:
            if self._closed:
                raise DynoProtocolError("closed before the end of the body")
            return NEED_DATA
        if len(buffer) <= self._remaining:
            self._buffer = b""
            self._remaining -= len(buffer)
            return buffer
        data, self._buffer = buffer[: self._remaining], buffer[self._remaining :]
        self._remaining = 0
        return data

    def _chunked_body(self) -> Event:
        while True:
            state, buffer = self._state, self._buffer
            if state == _CHUNK and buffer:
                size = min(len(buffer), self._remaining)
                data, self._buffer = buffer[:size], buffer[size:]
                self._remaining -= size
                if not self._remaining:
                    self._state = _CHUNK_END
                return data
            line_end = buffer.find(b"\r\n") if state != _CHUNK else -1
            if line_end < 0:
                if len(buffer) > _MAX_CHUNK_LINE and state != _CHUNK:
                    raise DynoProtocolError("chunk line too long")
                if self._closed:
                    raise DynoProtocolError("closed before the end of the body")
                return NEED_DATA
            line, self._buffer = buffer[:line_end], buffer[line_end + 2 :]
            if state == _CHUNK_SIZE_LINE:
                size_match = _CHUNK_SIZE.fullmatch(line)
                if size_match is None:
                    raise DynoProtocolError("bad chunk size")
                self._remaining = int(size_match.group(1), 16)
                self._state = _CHUNK if self._remaining else _TRAILERS
            elif state == _CHUNK_END:
                if line:
                    raise DynoProtocolError("chunk longer than its size")
                self._state = _CHUNK_SIZE_LINE
            elif not line:  # _TRAILERS: dropped, as the client's framing may not carry them
                self._state = _DONE
                return END
            elif _TRAILER.fullmatch(line) is None:
                raise DynoProtocolError("bad trailer")
