"""Slugs: the gzip tarball of a built app, every member under `./app/` (docs/platform.md, Slugs).

Owns packing, the content-addressed slug store, and unpacking, which is the security boundary
between an app's build and the machine: every member is checked before anything is written, and
the per-dyno directories are copies of one checked tree (`SlugStore.materialize`).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import tarfile
import threading
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
from attrs import field, frozen
from attrs.validators import instance_of, optional

from dynod.errors import DynodError
from dynod.state.files import (
    CHUNK,
    HashingFile,
    atomic_write,
    copy_tree,
    file_checksum,
    fsync_dir,
    heroku_time,
)

_MB = 1 << 20
_MAX_SYMLINK_HOPS = 40  # Linux's own limit before ELOOP
_TYPE_NAME = re.compile(r"[A-Za-z0-9_-]{1,63}")
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


def _slug_id(text: str) -> str:
    """The canonical uuid form, which is also a safe file name; ValueError otherwise."""
    canonical = str(uuid.UUID(text))
    if canonical != text.lower():
        raise ValueError(f"not a slug id: {text!r}")
    return canonical


def _hex_of(checksum: str) -> str:
    algorithm, _, hexdigest = checksum.partition(":")
    if algorithm != "SHA256" or not re.fullmatch(r"[0-9a-f]{64}", hexdigest):
        raise ValueError(f"not a SHA256:<hex> checksum: {checksum!r}")
    return hexdigest


def _text_that(check: Callable[[str], object]) -> Callable[[object, object, str], None]:
    """An attrs validator: a string (records come from JSON) that passes `check`."""

    def validate(_: object, __: object, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"expected a string, not {value!r}")
        check(value)

    return validate


def _process_types(types: Mapping[str, object]) -> dict[str, str]:
    for name, command in types.items():
        if not _TYPE_NAME.fullmatch(name) or not isinstance(command, str):
            raise ValueError(f"bad process type {name!r}: names match [A-Za-z0-9_-]{{1,63}}")
    return {name: str(command) for name, command in types.items()}


@frozen
class SlugInfo:
    """What packing produced: the tarball, its checksum (`SHA256:<hex>`) and size in bytes."""

    path: Path
    checksum: str
    size: int


@frozen
class Slug:
    """A stored slug. `id` is a uuid as on Heroku; the content is stored by `checksum`."""

    id: str = field(validator=_text_that(_slug_id))
    checksum: str = field(validator=_text_that(_hex_of))
    size: int = field(validator=instance_of(int))
    process_types: dict[str, str] = field(hash=False, converter=_process_types)
    commit: str | None = field(default=None, validator=optional(instance_of(str)))
    created_at: str = field(factory=heroku_time, validator=instance_of(str))

    def to_json(self) -> dict[str, object]:
        return attrs.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Slug:
        """ValueError/TypeError/KeyError when the record is not a slug's."""
        values: dict[str, Any] = {spec.name: data[spec.name] for spec in attrs.fields(cls)}
        return cls(**values)


def check_slug_size(size: int, *, warn_mb: int, max_mb: int) -> str | None:
    """Heroku's slug size rule on the compressed size: refuse above `max_mb` (DynodError),
    return a warning line above `warn_mb`, else None."""
    megabytes = size / _MB
    if megabytes > max_mb:
        raise DynodError(
            f"Compiled slug size: {megabytes:.0f}M is too large (max is {max_mb}M);"
            " list large build-only files in .slugignore or move assets out of the slug"
        )
    if megabytes > warn_mb:
        return (
            f"Warning: Your slug size ({megabytes:.0f} MB) exceeds our soft limit ({warn_mb} MB)"
            " which may affect boot time."
        )
    return None


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
        """The rules that need every member: nothing lies beneath a non-directory (so unpacking
        never writes through a link), and every symlink resolves inside ./app."""
        for rel in self.kinds:
            parts = rel.split("/")
            for depth in range(1, len(parts)):
                parent = "/".join(parts[:depth])
                if self.kinds.get(parent, "dir") != "dir":
                    rule = f"lies beneath ./app/{parent}, which is not a directory"
                    raise UnsafeSlug(f"./app/{rel}", rule)
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
# Packing


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


# ---------------------------------------------------------------------------------------------
# Unpacking


def unpack_slug(
    slug_path: str | os.PathLike[str],
    dest_dir: str | os.PathLike[str],
    *,
    expected_checksum: str | None = None,
) -> None:
    """Unpack the contents of `./app` into `dest_dir` (created, or an existing empty directory).

    A first pass reads every member and refuses the slug (UnsafeSlug) on an absolute path, a
    `..`, a device, fifo or other special file, a link leading outside ./app, a duplicate, or
    a member beneath a non-directory; a mismatching `expected_checksum` is Heroku's R17. Only
    then does a second pass write, with no file opened through a link, symlinks made last,
    setuid/setgid/sticky and group/other write bits dropped, and owners left to the caller.
    On any failure `dest_dir` is left as it was found (removed, or emptied).
    """
    src, dest = Path(slug_path), Path(dest_dir)
    plan = _check_slug(src, expected_checksum)
    created = _prepare_dest(dest)
    try:
        with open(src, "rb") as raw, gzip.GzipFile(fileobj=raw, mode="rb") as gz:
            with tarfile.open(fileobj=gz, mode="r|") as tar:
                _extract(tar, plan, dest)
            _read_to_end(gz)
    except BaseException as err:
        _clear(dest, remove=created)
        if isinstance(err, (tarfile.TarError, EOFError, OSError, zlib.error)):
            raise DynodError(f"cannot unpack slug {src} into {dest}: {err}") from None
        raise


_Key = tuple[str, bytes, str, int, int]


def _key(info: tarfile.TarInfo) -> _Key:
    return (info.name, info.type, info.linkname, info.size, info.mode)


def _check_slug(src: Path, expected_checksum: str | None) -> list[tuple[_Key, str | None]]:
    """The first pass: every member checked, with the rel path to unpack it at (or None)."""
    checker = _Checker()
    plan: list[tuple[_Key, str | None]] = []
    problem: DynodError | None = None
    try:
        raw = open(src, "rb")
    except OSError as err:
        raise DynodError(f"cannot read slug {src}: {err.strerror}") from None
    with raw:
        reader = HashingFile(raw)
        try:
            with gzip.GzipFile(fileobj=reader, mode="rb") as gz:
                with tarfile.open(fileobj=gz, mode="r|") as tar:
                    for info in tar:
                        plan.append((_key(info), checker.add(info)))
                _read_to_end(gz)
            checker.finish()
        except UnsafeSlug as err:
            problem = err
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as err:
            problem = DynodError(f"{src} is not a gzip tarball of ./app ({err})")
        reader.drain()
    actual = reader.checksum()
    if expected_checksum is not None and actual != expected_checksum:
        raise checksum_error(expected_checksum, actual)  # the likelier cause of any problem
    if problem is not None:
        raise problem
    return plan


def _read_to_end(gz: gzip.GzipFile) -> None:
    """Read past the tar's end to the gzip trailer, so that gzip checks its CRC and length: the
    tar reader stops at the end-of-archive blocks and would accept a truncated file."""
    while gz.read(CHUNK):
        pass


def checksum_error(expected: str, actual: str) -> DynodError:
    return DynodError(
        f"Error R17 (Checksum error) -> Checksum does not match expected value."
        f" Expected: {expected} Actual: {actual}; deploy again to build a new slug"
    )


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


def _extract(tar: tarfile.TarFile, plan: list[tuple[_Key, str | None]], dest: Path) -> None:
    steps = iter(plan)
    symlinks: list[tuple[Path, str]] = []
    dirs: list[tuple[Path, tarfile.TarInfo]] = []
    made = {dest}
    for info in tar:
        key, rel = next(steps, (None, None))
        if key != _key(info):  # the file changed since it was checked: trust nothing
            raise UnsafeSlug(info.name, "changed while the slug was being unpacked")
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
            _write_file(tar, info, path)
    if next(steps, None) is not None:
        raise UnsafeSlug("(end of slug)", "changed while the slug was being unpacked")
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


def _write_file(tar: tarfile.TarFile, info: tarfile.TarInfo, path: Path) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    source = tar.extractfile(info)
    assert source is not None  # regular members always have data
    with open(os.open(path, flags, 0o600), "wb") as out:
        shutil.copyfileobj(source, out, CHUNK)
        out.flush()
        os.fchmod(out.fileno(), info.mode & 0o755)
        os.utime(out.fileno(), _mtime(info))


# ---------------------------------------------------------------------------------------------
# The store


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "this-boot"  # elsewhere the tree cache is not reset by a reboot


class SlugStore:
    """Slugs under `root`: `slugs/<id>.json` records, `blobs/<hex>.tar.gz` contents stored once
    per checksum, and `trees/<boot id>/<hex>/` checked, unpacked trees that dynos are copied
    from. Trees are unpacked without fsync, so they are trusted only within one boot."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._records = self.root / "slugs"
        self._blobs = self.root / "blobs"
        self._trees = self.root / "trees" / _boot_id()
        self._unpacking: dict[str, threading.Lock] = {}  # tree name -> held while unpacking it
        self._unpacking_guard = threading.Lock()  # also guards `_copying`
        self._copying: dict[str, int] = {}  # tree name -> copies being made from it now
        for directory in (self._records, self._blobs, self._trees):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        for boot in self._trees.parent.iterdir():
            if boot != self._trees:  # trees of an earlier boot
                shutil.rmtree(boot, ignore_errors=True)
        for tree in self._trees.iterdir():
            if tree.name.startswith("."):  # left by a dynod killed mid-unpack
                shutil.rmtree(tree, ignore_errors=True)

    def put(
        self,
        path: str | os.PathLike[str],
        process_types: Mapping[str, str],
        *,
        slug_id: str | None = None,
        commit: str | None = None,
        expected_checksum: str | None = None,
    ) -> Slug:
        """Store the tarball at `path` (copied, hashed as it is copied) and record a new slug.
        `slug_id` keeps an id handed out earlier (POST /slugs before the blob's PUT)."""
        try:
            types = _process_types(process_types)
            new_id = _slug_id(slug_id) if slug_id is not None else str(uuid.uuid4())
        except ValueError as err:
            raise DynodError(f"cannot store slug: {err}") from None
        record = self._records / f"{new_id}.json"
        if record.exists():
            raise DynodError(f"slug {new_id} already exists; create a new slug to upload to")
        incoming = self._blobs / f".incoming-{uuid.uuid4()}"
        try:
            with open(path, "rb") as src, open(incoming, "xb") as out:
                sink = HashingFile(out)
                shutil.copyfileobj(src, sink, CHUNK)
                out.flush()
                os.fsync(out.fileno())
            checksum = sink.checksum()
            if expected_checksum is not None and checksum != expected_checksum:
                raise checksum_error(expected_checksum, checksum)
            # Same content, same name: replacing an existing blob changes nothing.
            os.replace(incoming, self._blob(checksum))
            fsync_dir(self._blobs)
        finally:
            incoming.unlink(missing_ok=True)
        slug = Slug(new_id, checksum, sink.count, types, commit)
        atomic_write(record, json.dumps(slug.to_json(), sort_keys=True).encode(), mode=0o600)
        return slug

    def get(self, slug_id: str) -> Slug:
        try:
            record = self._records / f"{_slug_id(slug_id)}.json"
        except ValueError:
            raise DynodError(f"no slug {slug_id!r}: slug ids look like {uuid.uuid4()}") from None
        try:
            data = json.loads(record.read_bytes())
        except FileNotFoundError:
            raise DynodError(f"no slug {slug_id}; deploy again to make one") from None
        try:
            return Slug.from_json(data)
        except (ValueError, TypeError, KeyError) as err:
            raise DynodError(f"slug record {record} is damaged ({err}); deploy again") from None

    def blob_path(self, slug: Slug) -> Path:
        return self._blob(slug.checksum)

    def _blob(self, checksum: str) -> Path:
        return self._blobs / f"{_hex_of(checksum)}.tar.gz"

    def verify(self, slug: Slug) -> None:
        """Heroku's R17: the stored content must still hash to the slug's checksum."""
        try:
            actual = file_checksum(self.blob_path(slug))
        except FileNotFoundError:
            actual = "(content missing)"
        if actual != slug.checksum:
            raise checksum_error(slug.checksum, actual)

    def materialize(
        self, slug: Slug, dest: str | os.PathLike[str], *, owner: tuple[int, int] | None = None
    ) -> Path:
        """A fresh private copy of the slug's app at `dest` (which must not exist) for one dyno,
        owned by `owner` (uid, gid) when given: the unprivileged user a root dynod runs it as.

        The slug is checked and unpacked once per boot (verifying its checksum, R17) into the
        tree cache; each dyno then gets a copy of that tree. Copies, never hard links: a dyno
        may change its files and nothing may reach another dyno (docs/platform.md, Slugs)."""
        dest = Path(dest)
        name = _hex_of(slug.checksum)
        with self._unpacking_guard:  # from now until the copy is made, pruning spares the tree
            self._copying[name] = self._copying.get(name, 0) + 1
        try:
            copy_tree(self._tree(slug), dest, owner=owner)
        finally:
            with self._unpacking_guard:
                self._copying[name] -= 1
                if not self._copying[name]:
                    del self._copying[name]
        return dest

    def prune_trees(self, keep: Iterable[str]) -> int:
        """Delete the unpacked trees of every slug but those whose checksums are in `keep` (the
        apps' current slugs), except trees a dyno is being copied from; the number deleted.
        A pruned slug that is needed again (a rollback) is unpacked and checked again."""
        kept = {_hex_of(checksum) for checksum in keep}
        pruned = 0
        for tree in list(self._trees.iterdir()):
            if tree.name.startswith(".") or tree.name in kept:
                continue  # staging directories are their unpacker's
            with self._unpacking_guard:
                if self._copying.get(tree.name):
                    continue
                doomed = self._trees / f".{tree.name}-pruned-{uuid.uuid4()}"
                try:
                    os.rename(tree, doomed)  # gone at once for `_tree`; deleted at leisure
                except OSError:
                    continue
            shutil.rmtree(doomed, ignore_errors=True)
            pruned += 1
        return pruned

    def _tree(self, slug: Slug) -> Path:
        """The slug's checked, unpacked tree, unpacked by one thread while the others wait: a
        formation's dynos start together, and 20 of them each unpacking the same new 50 MB slug
        made a release at web=20 take 82 s on 2 cores, against 32-51 s (bench/platform.py)."""
        tree = self._trees / _hex_of(slug.checksum)
        if tree.is_dir():
            return tree
        with self._unpacking_guard:
            lock = self._unpacking.setdefault(tree.name, threading.Lock())
        with lock:
            if not tree.is_dir():  # a failed unpack leaves nothing: the next waiter tries again
                staging = self._trees / f".{tree.name}-{uuid.uuid4()}"
                unpack_slug(self.blob_path(slug), staging, expected_checksum=slug.checksum)
                try:
                    os.rename(staging, tree)
                except OSError:  # unpacked meanwhile by someone outside this store: use theirs
                    shutil.rmtree(staging, ignore_errors=True)
        return tree
