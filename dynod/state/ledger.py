"""The per-app release ledger (docs/platform.md, Releases): an append-only file of releases
and their status changes.

One record per line, `<crc32 as 8 hex> <payload length> <json payload>`; every append is fsync'd
(in a worker thread, one writer at a time) before it returns, so an acknowledged release survives
any crash. A crash mid-append can only tear the last record, which loading drops; damage anywhere
earlier is an error, never silent loss.
"""

from __future__ import annotations

import json
import os
import uuid
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, cast

import attrs
import trio
from attrs import field, frozen

from dynod.errors import Damaged, DynodError
from dynod.state.files import fsync_dir, heroku_time

Status = Literal["pending", "succeeded", "failed"]
STATUSES: tuple[Status, ...] = ("pending", "succeeded", "failed")


def _positive(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{attribute.name} must be a whole number >= 1, not {value!r}")


@frozen(kw_only=True)
class Release:
    """One numbered release: slug + config vars + add-ons, shown `vN`.

    Times are Heroku's API form, `2026-11-26T15:19:10Z` (UTC, whole seconds), so the API shows
    them as they are. `updated_at` moves when the status does. Whether a release is *current*
    is not stored: it is `Ledger.current()`, the latest succeeded release. `addons` are the
    names of the add-ons attached at this release (`redis-1`).
    """

    version: int = field(validator=_positive)
    description: str
    user: str
    status: Status = field(validator=attrs.validators.in_(STATUSES))
    slug_id: str | None = None
    config_vars: dict[str, str] = field(factory=dict, hash=False)
    addons: tuple[str, ...] = field(default=(), converter=tuple)
    id: str = field(factory=lambda: str(uuid.uuid4()))
    created_at: str = field(factory=heroku_time)
    updated_at: str = field()

    @updated_at.default
    def _updated_when_created(self) -> str:
        return self.created_at

    def to_record(self) -> dict[str, object]:
        return {
            "id": self.id,
            "version": self.version,
            "description": self.description,
            "user": self.user,
            "status": self.status,
            "slug_id": self.slug_id,
            "config_vars": dict(self.config_vars),
            "addons": list(self.addons),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_record(cls, data: Mapping[str, object]) -> Release:
        """ValueError/TypeError/KeyError when `data` is not a release's record."""
        config_vars = data["config_vars"]
        addons = data["addons"]
        slug_id = data["slug_id"]
        if not isinstance(config_vars, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in config_vars.items()
        ):
            raise TypeError("config_vars must map strings to strings")
        if not isinstance(addons, list) or not all(isinstance(a, str) for a in addons):
            raise TypeError("addons must be a list of names")
        if slug_id is not None and not isinstance(slug_id, str):
            raise TypeError("slug_id must be a string or null")
        return cls(
            id=_text(data, "id"),
            version=cast(int, data["version"]),  # the validator checks it
            description=_text(data, "description"),
            user=_text(data, "user"),
            status=cast(Status, data["status"]),  # the validator checks it
            slug_id=slug_id,
            config_vars=config_vars,
            addons=tuple(addons),
            created_at=_text(data, "created_at"),
            updated_at=_text(data, "updated_at"),
        )


def _text(data: Mapping[str, object], key: str) -> str:
    value = data[key]
    if not isinstance(value, str):
        raise TypeError(f"{key} must be a string")
    return value


def _encode(record: Mapping[str, object]) -> bytes:
    payload = json.dumps(record, separators=(",", ":"), sort_keys=True).encode("ascii")
    return b"%08x %d %s\n" % (zlib.crc32(payload), len(payload), payload)


def _decode(line: bytes) -> dict[str, object]:
    """The record in one line (without its newline); ValueError when damaged."""
    crc, _, rest = line.partition(b" ")
    length, _, payload = rest.partition(b" ")
    if len(crc) != 8 or not length.isdigit() or int(length) != len(payload):
        raise ValueError("bad record frame")
    if int(crc, 16) != zlib.crc32(payload):
        raise ValueError("checksum mismatch")
    record = json.loads(payload)
    if not isinstance(record, dict):
        raise ValueError("record is not an object")
    return record


class Ledger:
    """The releases of one app, kept in the file at `path` (created on the first append).

    Not safe for two processes at once: one dynod owns a data directory. Writes are async: one
    at a time (a lock keeps them in order), each fsync'd in a worker thread, and the releases
    read here change only once the write is durable.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._releases: list[Release] = []
        self._ids: set[str] = set()
        self._end = 0  # bytes of good records; anything after them is a torn record
        self._torn = False
        self._writing = trio.Lock()  # one writer: records land in the order they were made
        self._load()

    def _load(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        start = 0
        while (newline := data.find(b"\n", start)) != -1:
            try:
                record = _decode(data[start:newline])
            except ValueError as err:
                if newline + 1 == len(data):
                    break  # the last record, garbled by a crash mid-append: never acknowledged
                raise self._damaged(start, err) from None
            try:
                self._apply(record)
            except (ValueError, TypeError, KeyError) as err:
                raise self._damaged(start, err) from None  # whole records that make no sense
            start = self._end = newline + 1
        # A record without its newline was being written when dynod stopped: drop it.
        self._torn = self._end < len(data)

    def _damaged(self, offset: int, err: Exception) -> Damaged:
        return Damaged(
            f"release ledger {self.path} is damaged at byte {offset} ({err}); restore it from"
            " a backup, or move it aside to start the app's history anew"
        )

    def _apply(self, record: Mapping[str, object]) -> None:
        op = record.get("op")
        if op == "release":
            self._add(Release.from_record(record))
        elif op == "status":
            version, status, when = record["version"], record["status"], record["at"]
            if not (isinstance(version, int) and isinstance(status, str) and isinstance(when, str)):
                raise TypeError("a status record needs version, status and at")
            self._set(version, status, when)
        else:
            raise ValueError(f"unknown record {op!r}")

    def _add(self, release: Release) -> None:
        self._check_add(release)
        self._releases.append(release)
        self._ids.add(release.id)

    def _check_add(self, release: Release) -> None:
        if release.version != self.next_version():
            raise _Conflict(f"release v{release.version} must be v{self.next_version()}")
        if release.id in self._ids:
            raise _Conflict(f"release id {release.id} is already in the ledger")

    def _set(self, version: int, status: str, when: str) -> Release:
        updated = self._changed(version, status, when)
        self._releases[version - 1] = updated
        return updated

    def _changed(self, version: int, status: str, when: str) -> Release:
        release = self.get(version)
        if release is None:
            raise _Conflict(f"no release v{version}")
        if status not in STATUSES or release.status != "pending" or status == "pending":
            raise _Conflict(f"release v{version} cannot go from {release.status} to {status}")
        return attrs.evolve(release, status=cast(Status, status), updated_at=when)

    # -- reading ---------------------------------------------------------------------------

    def releases(self) -> list[Release]:
        """Every release, v1 first."""
        return list(self._releases)

    def __len__(self) -> int:
        return len(self._releases)

    def get(self, version: int) -> Release | None:
        if 1 <= version <= len(self._releases):
            return self._releases[version - 1]
        return None

    def latest(self) -> Release | None:
        return self._releases[-1] if self._releases else None

    def current(self) -> Release | None:
        """The release the app runs: the latest that succeeded (a pending or failed one after
        it does not replace it)."""
        return next((r for r in reversed(self._releases) if r.status == "succeeded"), None)

    def next_version(self) -> int:
        return len(self._releases) + 1

    # -- writing ---------------------------------------------------------------------------

    async def append(self, release: Release) -> None:
        """Add the next release (its version must be `next_version()` once the writes before it
        are done); durable on return."""
        async with self._writing:
            try:
                self._check_add(release)
            except _Conflict as err:
                raise DynodError(f"cannot append to {self.path}: {err}") from None
            await self._write({"op": "release", **release.to_record()})
            self._add(release)

    async def set_status(self, version: int, status: Status, *, when: str | None = None) -> Release:
        """Move a pending release to succeeded or failed (an appended record); returns it."""
        at = heroku_time() if when is None else when
        async with self._writing:
            try:
                updated = self._changed(version, status, at)
            except _Conflict as err:
                raise DynodError(f"cannot change release status: {err}") from None
            await self._write({"op": "status", "version": version, "status": status, "at": at})
            self._releases[version - 1] = updated
        return updated

    async def _write(self, record: Mapping[str, object]) -> None:
        line = _encode(record)  # framing is quick; the write and its fsync are not
        await trio.to_thread.run_sync(self._write_line, line)

    def _write_line(self, line: bytes) -> None:
        created = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            if self._torn:  # cut the torn record off, or the new one would be glued to it
                os.ftruncate(fd, self._end)
            self._torn = True  # until the whole line is durable, what follows _end is suspect
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
            self._torn = False
            self._end += len(line)
        finally:
            os.close(fd)
        if created:
            fsync_dir(self.path.parent)


class _Conflict(ValueError):
    """A well-formed record that contradicts the ones before it (never a torn write)."""
