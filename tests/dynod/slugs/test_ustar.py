"""The fast tar reader reaches tarfile's answer or leaves the tar to tarfile (`Unusual`): for
tars of every format tarfile writes, and for those tars with bytes changed anywhere."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import threading
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from dynod.slugs.ustar import Unusual, UstarReader

NAMES = st.text(
    alphabet=st.sampled_from(list("abc/._-é ") + ["\u00ff", "\u4e2d"]), min_size=1, max_size=40
)
MEMBERS = st.lists(
    st.tuples(
        st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE]),
        NAMES,
        st.integers(0, 3),  # repeats the name to make it long: > 100 bytes needs pax or prefix
        st.binary(max_size=1200),
        st.one_of(st.integers(0, 2**33), st.floats(0, 2**33, allow_nan=False)),
    ),
    max_size=8,
)
FORMATS = st.sampled_from([tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT])


def make_tar(members: list[tuple[bytes, str, int, bytes, float]], fmt: int) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for kind, name, repeat, data, mtime in members:
            info = tarfile.TarInfo(("app/" + name * (1 + repeat * 30))[:300])
            info.type = kind
            info.mtime = mtime
            info.mode = 0o755
            if kind == tarfile.REGTYPE:
                info.size = len(data)
            elif kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                info.linkname = name
            try:
                tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
            except ValueError:  # a name this format cannot hold
                continue
    return out.getvalue()


def with_tarfile(tar_bytes: bytes) -> list[tuple[Any, ...]] | str:
    """tarfile's reading in stream mode, as unpacking uses it; or its error's class."""
    found: list[tuple[Any, ...]] = []
    try:
        gz = gzip.GzipFile(fileobj=io.BytesIO(gzip.compress(tar_bytes)), mode="rb")
        with tarfile.open(fileobj=gz, mode="r|") as tar:
            for info in tar:
                source = tar.extractfile(info) if info.isreg() else None
                found.append(summary(info, source.read() if source else b""))
        while gz.read(1 << 16):
            pass
    except Exception as err:
        return type(err).__name__
    return found


def with_ustar(tar_bytes: bytes) -> list[tuple[Any, ...]] | None:
    """The fast reader's reading; None when it leaves the tar to tarfile."""
    reader = UstarReader(io.BytesIO(gzip.compress(tar_bytes)))
    found = []
    r, w = os.pipe()
    try:
        for info in reader.members():
            data = b""
            if info.isreg():
                reader.copy_to(w)
                data = os.read(r, 1 << 20) if info.size else b""
            found.append(summary(info, data))
    except Unusual:
        return None
    finally:
        reader.close()
        os.close(r)
        os.close(w)
    return found


def summary(info: tarfile.TarInfo, data: bytes) -> tuple[Any, ...]:
    return (info.name, info.type, info.mode, info.mtime, info.linkname, info.size, data)


@settings(max_examples=150, deadline=None)
@given(MEMBERS, FORMATS)
def test_reads_what_tarfile_reads(members: Any, fmt: int) -> None:
    tar_bytes = make_tar(members, fmt)
    fast = with_ustar(tar_bytes)
    if fmt != tarfile.GNU_FORMAT and tar_bytes.count(b"\0") != len(tar_bytes):
        assert fast is not None or not members  # what builds make takes the fast way
    if fast is not None:
        assert fast == with_tarfile(tar_bytes)


@settings(max_examples=300, deadline=None)
@given(MEMBERS, FORMATS, st.lists(st.tuples(st.integers(0), st.integers(0, 255)), max_size=4))
def test_a_changed_tar_is_read_as_tarfile_reads_it_or_left_to_it(
    members: Any, fmt: int, changes: list[tuple[int, int]]
) -> None:
    tar_bytes = bytearray(make_tar(members, fmt))
    for where, value in changes:
        tar_bytes[where % len(tar_bytes)] = value
    fast = with_ustar(bytes(tar_bytes))
    if fast is not None:
        assert fast == with_tarfile(bytes(tar_bytes))


def test_truncated_and_trailing_streams_are_left_to_tarfile() -> None:
    tar_bytes = make_tar([(tarfile.REGTYPE, "a", 0, b"x" * 5000, 0)], tarfile.PAX_FORMAT)
    packed = gzip.compress(tar_bytes)
    for broken in (packed[:-9], packed + b"junk", packed + packed, packed[:-4] + b"\0\0\0\0"):
        reader = UstarReader(io.BytesIO(broken))
        try:
            for info in reader.members():
                if info.isreg():
                    with open(os.devnull, "wb") as sink:
                        reader.copy_to(sink.fileno())
        except Unusual:
            continue
        finally:
            reader.close()
        raise AssertionError(f"read {broken[-12:]!r} as whole")


def test_closing_early_ends_the_reading_thread() -> None:
    big = make_tar([(tarfile.REGTYPE, f"f{i}", 0, os.urandom(4000), 0) for i in range(5000)], 0)
    before = threading.active_count()
    reader = UstarReader(io.BytesIO(gzip.compress(big)))
    next(reader.members())  # a consumer refusing the first member stops there
    reader.close()
    assert threading.active_count() == before
