"""A fast reader of the gzip tarballs builds make: ustar headers (with pax records for long or
non-ASCII names and exact times) read as tarfile reads them, straight from the inflated stream.
Anything else — GNU long names, sparse files, devices, base-256 numbers, global or unusual pax
records, several gzip members, a truncated stream — raises `Unusual`, and unpacking starts over
with tarfile, which reads every tar: this reader only ever reaches tarfile's answer faster.
"""

from __future__ import annotations

import os
import queue
import re
import tarfile
import threading
import zlib
from collections.abc import Iterator
from typing import Protocol

BLOCK = 512
_ZERO = bytes(BLOCK)
_READ = 1 << 20  # compressed bytes read at a time
_OUT = 4 << 20  # inflated bytes at most per step: a small slug may not inflate into gigabytes
_TYPES = {tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE}
_PAX_RECORD = re.compile(rb"(\d+) ([^=]+)=")  # tarfile's own
_PAX_TIMES = {"mtime", "atime", "ctime"}
_PAX_IGNORED = {"uid", "gid", "uname", "gname"}  # owners: unpacking leaves them to the caller


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class Unusual(Exception):
    """Something this reader leaves to tarfile."""


class UstarReader:
    """`members()` yields each member's TarInfo as tarfile would; for a regular file, read its
    data with `copy_to` before asking for the next member (or it is skipped). The stream is
    read and inflated by a thread of its own (reading, hashing and inflating let go of the GIL)
    while this one writes files, as `tar -xzf` has gzip beside it; `close` ends that thread."""

    def __init__(self, source: Readable) -> None:
        self._inflater = _Inflater(source)
        self._buf = b""
        self._pos = 0
        self._left = 0  # data bytes of the current member not read yet
        self._padding = 0  # then the padding to its block

    def close(self) -> None:
        """Stop reading the source (at once, whatever was read); idempotent."""
        self._inflater.close()

    def members(self) -> Iterator[tarfile.TarInfo]:
        pax: dict[str, str] | None = None
        first = True
        while True:
            self._skip(self._left + self._padding)
            self._left = self._padding = 0
            block = self._take(BLOCK)
            if block == _ZERO:
                if first or pax is not None:
                    raise Unusual("an empty tar, or a pax header with no member")
                break
            first = False
            info = _header(block)
            size = info.size
            if info.type == tarfile.XHDTYPE:
                if pax is not None:
                    raise Unusual("two pax headers in a row")
                pax = _pax(self._take(size + -size % BLOCK))  # tarfile parses the padding too
                continue
            if info.type not in _TYPES:
                raise Unusual(f"member type {info.type!r}")
            if pax is not None:
                _apply(info, pax)
                pax = None
            if info.isdir():
                info.name = info.name.rstrip("/")
            if info.isreg():
                self._left, self._padding = size, -size % BLOCK
            yield info
        self._finish()

    def copy_to(self, fd: int) -> None:
        """Write the current regular member's data to `fd`."""
        while self._left:
            if self._pos == len(self._buf):
                self._fill()
            end = min(len(self._buf), self._pos + self._left)
            view = memoryview(self._buf)[self._pos : end]
            while view:
                written = os.write(fd, view)
                view = view[written:]
            self._left -= end - self._pos
            self._pos = end

    def _take(self, n: int) -> bytes:
        while len(self._buf) - self._pos < n:
            self._fill()
        data = self._buf[self._pos : self._pos + n]
        self._pos += n
        return data

    def _skip(self, n: int) -> None:
        while n:
            if self._pos == len(self._buf):
                self._fill()
            step = min(n, len(self._buf) - self._pos)
            self._pos += step
            n -= step

    def _fill(self) -> None:
        """More of the inflated stream after what is left of the buffer."""
        more = self._inflater.next()
        self._buf = self._buf[self._pos :] + more if self._pos < len(self._buf) else more
        self._pos = 0

    def _finish(self) -> None:
        """Inflate to the gzip stream's end (checking its CRC and length), as gzip would."""
        self._buf, self._pos = b"", 0
        self._inflater.finish()


_END = b""


class _Inflater:
    """Reads the source and inflates it in a thread; `next()` hands out the inflated chunks in
    order (never empty), raising what the thread raised."""

    def __init__(self, source: Readable) -> None:
        self._source = source
        self._chunks: queue.Queue[bytes | Exception] = queue.Queue(maxsize=8)
        self._stop = threading.Event()
        self._ended = False
        self._thread = threading.Thread(target=self._run, name="slug inflater", daemon=True)
        self._thread.start()

    def next(self) -> bytes:
        if self._ended:
            raise Unusual("the tar ends before its end-of-archive block")
        item = self._chunks.get()
        if isinstance(item, Exception):
            self._ended = True
            raise item
        if item is _END:
            self._ended = True
            raise Unusual("the tar ends before its end-of-archive block")
        return item

    def finish(self) -> None:
        """Take the rest of the stream (the thread checks its end); raises what it found."""
        while not self._ended:
            item = self._chunks.get()
            if isinstance(item, Exception):
                self._ended = True
                raise item
            self._ended = item is _END
        self.close()

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._chunks.get(timeout=0.1)  # unblock a waiting put
            except queue.Empty:
                pass
        self._thread.join()

    def _run(self) -> None:
        try:
            inflate = zlib.decompressobj(wbits=31)  # gzip: header, CRC and length checked
            while True:
                raw = inflate.unconsumed_tail
                if not raw:
                    if inflate.eof:
                        if self._source.read(1):
                            raise Unusual("data after the gzip stream")
                        self._put(_END)
                        return
                    raw = self._source.read(_READ)
                    if not raw:
                        raise Unusual("a truncated gzip stream")
                try:
                    more = inflate.decompress(raw, _OUT)
                except zlib.error as err:
                    raise Unusual(str(err)) from None
                if inflate.eof and inflate.unused_data:
                    raise Unusual("data after the gzip stream")
                if more and not self._put(more):
                    return
        except Exception as err:  # handed to the reader, raised there
            self._put(err)

    def _put(self, item: bytes | Exception) -> bool:
        while not self._stop.is_set():
            try:
                self._chunks.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False


def _nts(field: bytes) -> str:
    end = field.find(b"\0")
    return os.fsdecode(field if end < 0 else field[:end])  # tarfile's encoding and errors


def _nti(field: bytes) -> int:
    if field[0] in (0o200, 0o377):
        raise Unusual("a base-256 number")
    end = field.find(b"\0")
    try:
        return int((field if end < 0 else field[:end]).decode("ascii").strip() or "0", 8)
    except (UnicodeDecodeError, ValueError):
        raise Unusual("a number tarfile refuses") from None


def _header(block: bytes) -> tarfile.TarInfo:
    """tarfile's TarInfo.frombuf for the headers this reader takes."""
    chksum = _nti(block[148:156])
    if chksum != 256 + sum(block) - sum(block[148:156]):
        raise Unusual("a checksum only tarfile may judge")
    info = tarfile.TarInfo(_nts(block[0:100]))
    info.mode = _nti(block[100:108])
    info.size = _nti(block[124:136])
    info.mtime = _nti(block[136:148])
    info.type = block[156:157]
    info.linkname = _nts(block[157:257])
    if info.isdir():
        info.name = info.name.rstrip("/")
    prefix = _nts(block[345:500])
    if prefix and info.type not in tarfile.GNU_TYPES:
        info.name = prefix + "/" + info.name
    return info


def _pax(data: bytes) -> dict[str, str]:
    """tarfile's reading of a pax header's records, for the keywords this reader takes."""
    if re.search(rb"\d+ hdrcharset=", data):
        raise Unusual("a pax header charset")
    records: dict[str, str] = {}
    pos = 0
    while match := _PAX_RECORD.match(data, pos):
        length = int(match.group(1))
        if length == 0:
            raise Unusual("a pax record of length 0")
        keyword = match.group(2).decode("utf-8", "surrogateescape")
        if keyword not in {"path", "linkpath"} | _PAX_TIMES | _PAX_IGNORED:
            raise Unusual(f"pax keyword {keyword!r}")
        value = data[match.end(2) + 1 : match.start(1) + length - 1]
        records[keyword] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


def _apply(info: tarfile.TarInfo, pax: dict[str, str]) -> None:
    """tarfile's TarInfo._apply_pax_info for the keywords `_pax` takes."""
    for keyword, value in pax.items():
        if keyword == "path":
            info.name = value.rstrip("/")
        elif keyword == "linkpath":
            info.linkname = value
        elif keyword == "mtime":
            try:
                info.mtime = float(value)
            except ValueError:
                info.mtime = 0
