"""Add-on records in dynod's data directory: one directory per add-on, `<data>/addons/<id>/`,
holding its record (`addon.json`, 0600: it holds the password) and its server's data (`data/`).

A record is replaced atomically, so a crash leaves the old state or the new one. Its state says
what a crash interrupted: `provisioning` (finished or rolled back at the next start),
`provisioned`, `deprovisioning` (finished at the next start)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import attrs
import trio
from attrs import frozen

from dynod.errors import Damaged
from dynod.state.files import atomic_write, fsync_dir, heroku_time

State = Literal["provisioning", "provisioned", "deprovisioning"]
STATES: tuple[State, ...] = ("provisioning", "provisioned", "deprovisioning")


@frozen(kw_only=True)
class AddonRecord:
    id: str
    name: str  # "redis-1"; unique within its app
    app_id: str
    service: str  # "heroku-redis"
    plan: str  # "mini"
    state: State = attrs.field(validator=attrs.validators.in_(STATES))
    port: int
    password: str
    var: str  # the config var of its attachment: "REDIS_URL"
    role: str = ""
    database: str = ""
    created_at: str = attrs.field(factory=heroku_time)
    updated_at: str = attrs.field(factory=heroku_time)

    @property
    def attachment(self) -> str:
        """The attachment's name, as Heroku shows it: the config var without `_URL`."""
        return self.var.removesuffix("_URL")

    def to_json(self) -> dict[str, object]:
        return attrs.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AddonRecord:
        return cls(**{f.name: data[f.name] for f in attrs.fields(cls) if f.name in data})


class AddonStore:
    """Every add-on record, by id, loaded at start; writes fsync in a worker thread."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / "addons"
        self.root.mkdir(mode=0o700, exist_ok=True)
        self._records: dict[str, AddonRecord] = {}
        for entry in sorted(self.root.iterdir()):
            path = entry / "addon.json"
            if entry.name.startswith(".") or not path.exists():
                # A removal a crash interrupted, or an add-on whose record was never written.
                shutil.rmtree(entry, ignore_errors=True)
                continue
            try:
                record = AddonRecord.from_json(json.loads(path.read_text()))
            except (OSError, ValueError, TypeError, KeyError) as err:
                raise Damaged(
                    f"add-on record {path} is damaged ({err}); restore it from a backup, or "
                    "move its directory aside to forget the add-on"
                ) from None
            self._records[record.id] = record

    def of(self, app_id: str) -> list[AddonRecord]:
        found = [r for r in self._records.values() if r.app_id == app_id]
        return sorted(found, key=lambda r: (r.created_at, r.name))

    def all(self) -> list[AddonRecord]:
        return sorted(self._records.values(), key=lambda r: (r.created_at, r.name))

    def data(self, record: AddonRecord) -> Path:
        return self.root / record.id / "data"

    async def save(self, record: AddonRecord) -> AddonRecord:
        """Write the record (its directory and an empty data directory the first time)."""
        record = attrs.evolve(record, updated_at=heroku_time())
        await trio.to_thread.run_sync(self._write, record)
        self._records[record.id] = record
        return record

    def _write(self, record: AddonRecord) -> None:
        directory = self.root / record.id
        if not directory.exists():
            directory.mkdir(mode=0o700)
            (directory / "data").mkdir(mode=0o700)
            fsync_dir(self.root)
        data = json.dumps(record.to_json(), indent=1).encode()
        atomic_write(directory / "addon.json", data, mode=0o600)

    async def remove(self, record: AddonRecord) -> None:
        """Forget the add-on and delete its data: gone at once, deleted at leisure."""
        self._records.pop(record.id, None)
        await trio.to_thread.run_sync(self._remove, record)

    def _remove(self, record: AddonRecord) -> None:
        directory = self.root / record.id
        if directory.exists():
            doomed = self.root / f".gone-{record.id}"
            os.rename(directory, doomed)
            fsync_dir(self.root)
            shutil.rmtree(doomed, ignore_errors=True)
