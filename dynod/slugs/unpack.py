"""Unpacking, the security boundary between an app's build and the machine: the member rules
(UnsafeSlug names the member and the rule it breaks), checked member by member as one pass over
the stream writes them, carefully, into a directory that is kept only when every rule held."""

from __future__ import annotations

import gzip
import os
import shutil
import tarfile
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

from dynod.errors import DynodError
from dynod.slugs.model import checksum_error
from dynod.slugs.ustar import Unusual, UstarReader
from dynod.state.files import CHUNK, HashingFile

_MAX_SYMLINK_HOPS = 40  # Linux's own limit before ELOOP
_SPECIAL = {
    tarfile.CHRTYPE: "a character device",
    tarfile.BLKTYPE: "a block device",
    tarfile.FIFOTYPE: "a fifo",
}


class UnsafeSlug(DynodError):
    """A slug refused at the boundary; names the member and the rule it breaks."""

    def __init__(self, member: str, rule: str) -> None:
        self.member = member
        self.rule = rule
        message = f"unsafe slug: member {member!r} {rule}; nothing was unpacked or run"
        # Names come from the slug: escape anything that would break the one-line message.
        super().__init__("".join(c if c.isprintable() else repr(c)[1:-1] for c in message))


# ---------------------------------------------------------------------------------------------
# The member rules, shared by packing (so a build cannot make a slug that unpacking refuses) and
# unpacking. Names are checked as the tar says them; paths inside the app are "rel" strings
# relative to ./app ("" is ./app itself).


def _parts(name: str) -> list[str]:
    return [part for part in name.split("/") if part not in ("", ".")]


class _Checker:
    """Accumulates members and refuses the first that breaks a rule."""

    def __init__(self) -> None:
        self.kinds: dict[str, str] = {}  # rel -> "dir" | "file" | "symlink"
        self.symlinks: dict[str, str] = {}  # rel -> target as written
        self.beneath: dict[str, str] = {}  # rel of a directory some member implies -> that member

    def add(self, info: tarfile.TarInfo) -> str | None:
        """The member's rel path when it is to be unpacked, None when it lies outside ./app."""
        name = info.name
        if name.startswith("/"):
            raise UnsafeSlug(name, "is an absolute path")
        parts = _parts(name)
        if ".." in parts:
            raise UnsafeSlug(name, "contains '..'")
        if not (info.isreg() or info.isdir() or info.issym() or info.islnk()):
            raise UnsafeSlug(name, f"is {_SPECIAL.get(info.type, 'a special file')}")
        if not parts or parts[0] != "app":
            return None  # docs/platform.md, Slugs: members outside ./app are ignored, not refused
        rel = "/".join(parts[1:])
        kind = "dir" if info.isdir() else "symlink" if info.issym() else "file"
        if rel == "" and kind != "dir":
            raise UnsafeSlug(name, "makes ./app something other than a directory")
        seen = self.kinds.get(rel)
        if seen is not None and not (seen == kind == "dir"):
            raise UnsafeSlug(name, "appears twice in the slug")
        self._check_parents(rel, kind)
        if info.islnk():
            self._check_hard_link(info)
        elif info.issym():
            if not info.linkname:
                raise UnsafeSlug(name, "is a symlink to nothing")
            if info.linkname.startswith("/"):
                raise UnsafeSlug(name, f"is a symlink to an absolute path ({info.linkname!r})")
            self.symlinks[rel] = info.linkname
        self.kinds[rel] = kind
        return rel

    def _check_parents(self, rel: str, kind: str) -> None:
        """Nothing lies beneath a non-directory, whichever of the two comes first: so a member
        can be written as soon as it is read, never through a link or over a file."""
        if kind != "dir" and rel in self.beneath:
            child = self.beneath[rel]
            raise UnsafeSlug(
                f"./app/{child}", f"lies beneath ./app/{rel}, which is not a directory"
            )
        parts = rel.split("/") if rel else []
        for depth in range(len(parts) - 1, 0, -1):
            parent = "/".join(parts[:depth])
            if parent in self.beneath:
                break  # it and its own parents were checked with an earlier member
            if self.kinds.get(parent, "dir") != "dir":
                rule = f"lies beneath ./app/{parent}, which is not a directory"
                raise UnsafeSlug(f"./app/{rel}", rule)
            self.beneath[parent] = rel

    def _check_hard_link(self, info: tarfile.TarInfo) -> None:
        # A hard link's target is named from the archive's root, not from the link's directory.
        target = info.linkname
        if target.startswith("/") or ".." in _parts(target):
            raise UnsafeSlug(info.name, f"is a hard link pointing outside ./app ({target!r})")
        parts = _parts(target)
        if not parts or parts[0] != "app":
            raise UnsafeSlug(info.name, f"is a hard link pointing outside ./app ({target!r})")
        if self.kinds.get("/".join(parts[1:])) != "file":
            rule = f"is a hard link to {target!r}, which is not a file earlier in the slug"
            raise UnsafeSlug(info.name, rule)

    def finish(self) -> None:
        """The rule that needs every member: each symlink resolves inside ./app."""
        for rel, target in self.symlinks.items():
            problem = self._resolve(rel, target)
            if problem is not None:
                raise UnsafeSlug(f"./app/{rel}", f"is a symlink {problem} ({target!r})")

    def _resolve(self, rel: str, target: str) -> str | None:
        """Follow `target` from the link's own directory as the kernel would, through the slug's
        other symlinks, and say what is wrong with it, if anything. Resolving lexically is not
        enough: with `a -> .`, the link `b -> a/..` climbs out of ./app."""
        resolved = rel.split("/")[:-1]
        todo = list(reversed(target.split("/")))
        hops = 0
        while todo:
            part = todo.pop()
            if part in ("", "."):
                continue
            if part == "..":
                if not resolved:
                    return "pointing outside ./app"
                resolved.pop()
                continue
            resolved.append(part)
            link = self.symlinks.get("/".join(resolved))
            if link is not None:
                hops += 1
                if hops > _MAX_SYMLINK_HOPS:
                    return "in a loop"
                resolved.pop()
                todo.extend(reversed(link.split("/")))  # never absolute: add() refused those
        return None


# ---------------------------------------------------------------------------------------------
# Unpacking


def unpack_slug(
    slug_path: str | os.PathLike[str],
    dest_dir: str | os.PathLike[str],
    *,
    expected_checksum: str | None = None,
) -> None:
    """Unpack the contents of `./app` into `dest_dir` (created, or an existing empty directory).

    One pass over the stream (dynod.slugs.ustar's fast reader; tarfile's when that one meets
    anything it leaves to tarfile, starting over) checks each member as it is read and refuses
    the slug (UnsafeSlug)
    on an absolute path, a `..`, a device, fifo or other special file, a hard link to anything
    but an earlier file, a duplicate, or a member beneath a non-directory, before writing it; a
    symlink leading outside ./app (known only once every symlink is read) and a mismatching
    `expected_checksum` (Heroku's R17, preferred over any other problem as its likelier cause)
    are refused at the end. Files are written with no file opened through a link (symlinks are
    made last, only once everything passed), setuid/setgid/sticky and group/other write bits
    dropped, and owners left to the caller. On any failure `dest_dir` is left as it was found
    (removed, or emptied): nothing of a refused slug is kept, so nothing of it is ever run.
    """
    src, dest = Path(slug_path), Path(dest_dir)
    try:
        raw = open(src, "rb")
    except OSError as err:
        raise DynodError(f"cannot read slug {src}: {err.strerror}") from None
    with raw:
        created = _prepare_dest(dest)
        reader = HashingFile(raw)
        problem: BaseException | None = None
        try:
            fast = UstarReader(reader)
            try:
                _extract(fast.members(), lambda info, fd: fast.copy_to(fd), dest)
            except Unusual:
                fast.close()
                _clear(dest, remove=False)
                raw.seek(0)
                reader = HashingFile(raw)
                _extract_with_tarfile(reader, dest)
            finally:
                fast.close()
        except UnsafeSlug as err:
            problem = err
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as err:
            problem = DynodError(f"{src} is not a gzip tarball of ./app ({err})")
        except OSError as err:
            problem = DynodError(f"cannot unpack slug {src} into {dest}: {err}")
        except BaseException:
            _clear(dest, remove=created)
            raise
        if problem is not None:
            _clear(dest, remove=created)
        reader.drain()  # the checksum covers the whole file, whatever the tar reader left
        actual = reader.checksum()
    if expected_checksum is not None and actual != expected_checksum:
        _clear(dest, remove=created)
        raise checksum_error(expected_checksum, actual)
    if problem is not None:
        raise problem


def _extract_with_tarfile(reader: HashingFile, dest: Path) -> None:
    with gzip.GzipFile(fileobj=reader, mode="rb") as gz:
        with tarfile.open(fileobj=gz, mode="r|") as tar:

            def data(info: tarfile.TarInfo, fd: int) -> None:
                source = tar.extractfile(info)
                assert source is not None  # regular members always have data
                while chunk := source.read(CHUNK):
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view) :]

            _extract(tar, data, dest)
        _read_to_end(gz)


def _read_to_end(gz: gzip.GzipFile) -> None:
    """Read past the tar's end to the gzip trailer, so that gzip checks its CRC and length: the
    tar reader stops at the end-of-archive blocks and would accept a truncated file."""
    while gz.read(CHUNK):
        pass


def _prepare_dest(dest: Path) -> bool:
    """Make `dest` ready to unpack into; True when this call created it."""
    try:
        dest.mkdir(mode=0o700, parents=True)
        return True
    except FileExistsError:
        if dest.is_symlink() or not dest.is_dir() or any(dest.iterdir()):
            raise DynodError(
                f"cannot unpack into {dest}: it exists and is not an empty directory"
            ) from None
        return False


def _clear(dest: Path, *, remove: bool) -> None:
    if remove:
        shutil.rmtree(dest, ignore_errors=True)
        return
    for child in dest.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _mtime(info: tarfile.TarInfo) -> tuple[int, int]:
    when = min(max(int(info.mtime), 0), 1 << 34)  # a hostile header must not make utime fail
    return when, when


def _extract(
    members: Iterable[tarfile.TarInfo],
    data: Callable[[tarfile.TarInfo, int], None],
    dest: Path,
) -> None:
    """Check and write every member as it comes (a regular file's data through `data(member,
    fd)`); symlinks and directory modes once all passed."""
    checker = _Checker()
    symlinks: list[tuple[Path, str]] = []
    dirs: list[tuple[Path, tarfile.TarInfo]] = []
    made = {dest}
    for info in members:
        rel = checker.add(info)
        if rel is None:
            continue
        path = dest / rel if rel else dest
        if info.isdir():
            _make_dir(path, made)
            dirs.append((path, info))
            continue
        _make_dir(path.parent, made)
        if info.issym():
            symlinks.append((path, info.linkname))  # last, so that no write goes through one
        elif info.islnk():
            os.link(dest.joinpath(*_parts(info.linkname)[1:]), path)
        else:
            _write_file(data, info, path)
    checker.finish()
    for path, target in symlinks:
        os.symlink(target, path)
    for path, info in dirs:  # after their contents, which change a directory's mtime
        os.chmod(path, (info.mode & 0o755) | 0o700)
        os.utime(path, _mtime(info))


def _make_dir(path: Path, made: set[Path]) -> None:
    """mkdir -p, remembering what exists: one syscall per directory, not one per member."""
    if path not in made:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        made.add(path)


def _write_file(
    data: Callable[[tarfile.TarInfo, int], None], info: tarfile.TarInfo, path: Path
) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)
    try:
        data(info, fd)
        os.fchmod(fd, info.mode & 0o755)
        os.utime(fd, _mtime(info))
    finally:
        os.close(fd)
