"""The slug store: records, contents stored once per checksum, and the per-boot cache of
checked, unpacked trees that dynos' directories are made from: the shared, read-only lower
layer of each dyno's overlay (`SlugStore.lend`), or where there are no overlays, the source of
each dyno's private copy (`SlugStore.materialize`); and their pruning."""

from __future__ import annotations

import json
import os
import shutil
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from dynod.errors import DynodError
from dynod.slugs.model import Slug, _hex_of, _process_types, _slug_id, checksum_error
from dynod.slugs.unpack import unpack_slug
from dynod.state.files import (
    CHUNK,
    HashingFile,
    atomic_write,
    copy_tree,
    file_checksum,
    fsync_dir,
)


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
        self.trees = self.root / "trees"
        self._trees = self.trees / _boot_id()
        self._unpacking: dict[str, threading.Lock] = {}  # tree name -> held while unpacking it
        self._unpacking_guard = threading.Lock()  # also guards `_in_use`
        self._in_use: dict[str, int] = {}  # tree name -> dynos using it or copies being made
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
        Where dynos cannot have overlays (`lend`): the slug is checked and unpacked once per boot
        (verifying its checksum, R17) into the tree cache, and each dyno gets a copy of that
        tree. Copies, never hard links: a dyno may change its files and nothing may reach
        another dyno (docs/platform.md, Slugs)."""
        dest = Path(dest)
        with self.lend(slug) as tree:  # pruning spares the tree until the copy is made
            copy_tree(tree, dest, owner=owner)
        return dest

    @contextmanager
    def lend(self, slug: Slug, owner: tuple[int, int] | None = None) -> Iterator[Path]:
        """The slug's checked, unpacked tree, owned by `owner` (uid, gid) when given (a dyno
        user must own the files it may change through its overlay), spared by pruning until
        the `with` ends: the lower layer of every overlay of the app's dynos, never changed."""
        tree = self._tree(slug, owner)
        with self._unpacking_guard:
            self._in_use[tree.name] = self._in_use.get(tree.name, 0) + 1
        try:
            if not tree.is_dir():  # pruned between unpacking and counting: unpack it again
                tree = self._tree(slug, owner)
            yield tree
        finally:
            with self._unpacking_guard:
                self._in_use[tree.name] -= 1
                if not self._in_use[tree.name]:
                    del self._in_use[tree.name]

    def prune_trees(self, keep: Iterable[str]) -> int:
        """Delete the unpacked trees of every slug but those whose checksums are in `keep` (the
        apps' current slugs), except trees that dynos use (`lend`); the number deleted.
        A pruned slug that is needed again (a rollback) is unpacked and checked again."""
        kept = {_hex_of(checksum) for checksum in keep}
        pruned = 0
        for tree in list(self._trees.iterdir()):
            if tree.name.startswith(".") or tree.name.partition("-")[0] in kept:
                continue  # staging directories are their unpacker's
            with self._unpacking_guard:
                if self._in_use.get(tree.name):
                    continue
                doomed = self._trees / f".{tree.name}-pruned-{uuid.uuid4()}"
                try:
                    os.rename(tree, doomed)  # gone at once for `_tree`; deleted at leisure
                except OSError:
                    continue
            shutil.rmtree(doomed, ignore_errors=True)
            pruned += 1
        return pruned

    def _tree(self, slug: Slug, owner: tuple[int, int] | None = None) -> Path:
        """The slug's checked, unpacked tree (one per owner), unpacked by one thread while the
        others wait: a formation's dynos start together, and 20 of them each unpacking the same
        new 50 MB slug made a release at web=20 take 82 s on 2 cores, against 32-51 s."""
        name = _hex_of(slug.checksum)
        if owner is not None:
            name = f"{name}-{owner[0]}-{owner[1]}"
        tree = self._trees / name
        if tree.is_dir():
            return tree
        with self._unpacking_guard:
            lock = self._unpacking.setdefault(tree.name, threading.Lock())
        with lock:
            if not tree.is_dir():  # a failed unpack leaves nothing: the next waiter tries again
                staging = self._trees / f".{tree.name}-{uuid.uuid4()}"
                try:
                    unpack_slug(self.blob_path(slug), staging, expected_checksum=slug.checksum)
                    if owner is not None:
                        _chown_tree(staging, owner)
                    os.rename(staging, tree)
                except OSError:  # unpacked meanwhile by someone outside this store: use theirs
                    if not tree.is_dir():
                        raise
                finally:
                    shutil.rmtree(staging, ignore_errors=True)
        return tree


def _chown_tree(root: Path, owner: tuple[int, int]) -> None:
    os.chown(root, *owner)
    for directory, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.chown(os.path.join(directory, name), *owner, follow_symlinks=False)
