"""Packing: an app directory into a slug, the gzip tarball of `./app/`, deterministically and
under the same member rules as unpacking (dynod.slugs.unpack), so that a build cannot make a
slug that unpacking refuses."""

from __future__ import annotations

import gzip
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

from attrs import frozen

from dynod.errors import DynodError
from dynod.slugs.unpack import UnsafeSlug, _Checker
from dynod.state.files import HashingFile


@frozen
class SlugInfo:
    """What packing produced: the tarball, its checksum (`SHA256:<hex>`) and size in bytes."""

    path: Path
    checksum: str
    size: int


def pack_slug(app_dir: str | os.PathLike[str], out_path: str | os.PathLike[str]) -> SlugInfo:
    """Pack `app_dir` into a gzip tarball at `out_path`, members under `./app/` in sorted
    order with owners cleared, so the same tree packs to the same bytes (mtimes are kept:
    Python's .pyc files are validated against them)."""
    root, out = Path(app_dir), Path(out_path)
    if not root.is_dir():
        raise DynodError(f"cannot pack {root}: not a directory")
    if out.absolute().resolve().is_relative_to(root.resolve()):
        raise DynodError(f"cannot pack {root} into {out}: write the slug outside the app")
    checker = _Checker()
    try:
        with open(out, "wb") as raw:
            sink = HashingFile(raw)
            # mtime=0 and no file name in the gzip header: the same tree gives the same bytes.
            gz = gzip.GzipFile(filename="", mode="wb", fileobj=sink, compresslevel=6, mtime=0)
            with gz, tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                _pack_into(tar, root, checker)
            raw.flush()
            os.fsync(raw.fileno())
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    return SlugInfo(out, sink.checksum(), sink.count)


def _pack_into(tar: tarfile.TarFile, root: Path, checker: _Checker) -> None:
    for path, arcname in [(root, "./app"), *_walk(root, "./app")]:
        info = tar.gettarinfo(str(path), arcname=arcname)
        if info is None:  # sockets and the like: tarfile cannot even describe them
            raise UnsafeSlug(arcname, "is a socket or other special file")
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        # Whole seconds (all a .pyc records) spare every member a PAX header: 2x faster reading.
        info.mtime = int(info.mtime)
        checker.add(info)
        if info.isreg():
            with open(path, "rb") as f:
                tar.addfile(info, f)
        else:
            tar.addfile(info)
    checker.finish()


def _walk(root: Path, prefix: str) -> Iterator[tuple[Path, str]]:
    with os.scandir(root) as scan:
        entries = sorted(scan, key=lambda entry: entry.name)
    for entry in entries:
        arcname = f"{prefix}/{entry.name}"
        yield Path(entry.path), arcname
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(Path(entry.path), arcname)
