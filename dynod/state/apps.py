"""The app registry on disk: one directory per app under `<data>/apps/<id>/`, holding its
record, its release ledger, its formation and its build cache.

Every file here is replaced atomically or appended durably, so `kill -9` at any instant leaves
the registry loadable and each app either fully created or not there at all. Those writes are
async: their blocking part (the fsyncs) runs in a worker thread, never on the event loop.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import trio
from attrs import frozen

from dynod.core.names import STACK
from dynod.errors import Conflict, Damaged, Invalid, NotFound
from dynod.state.files import atomic_write, fsync_dir, heroku_time
from dynod.state.ledger import Ledger

# Heroku's rule: lowercase letters, digits and dashes, starting with a letter, 3 to 30 long.
APP_NAME = re.compile(r"[a-z][a-z0-9-]{2,29}")
_WORDS = (
    "amber",
    "brisk",
    "calm",
    "dusty",
    "eager",
    "fancy",
    "gentle",
    "hidden",
    "icy",
    "jolly",
    "lively",
    "mellow",
    "noble",
    "polar",
    "quiet",
    "rapid",
    "shiny",
    "tidy",
    "vast",
    "young",
)
_NOUNS = (
    "badger",
    "canyon",
    "delta",
    "falls",
    "garden",
    "harbor",
    "island",
    "lake",
    "meadow",
    "ocean",
    "peak",
    "river",
    "shore",
    "tundra",
    "valley",
    "wave",
)


@frozen
class App:
    id: str
    name: str
    created_at: str
    updated_at: str
    stack: str = STACK
    buildpacks: tuple[str, ...] = attrs.field(default=(), converter=tuple)

    def to_json(self) -> dict[str, object]:
        return {**attrs.asdict(self), "buildpacks": list(self.buildpacks)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> App:
        return cls(**{f.name: data[f.name] for f in attrs.fields(cls) if f.name in data})


@frozen
class FormationRecord:
    """An app's formation.json: `{"web": 1}` (quantities alone, as dynod always wrote it), or
    `{"quantities": {...}, "sizes": {...}, "idle": true}` once a size or sleep is recorded."""

    quantities: Mapping[str, int] = attrs.field(factory=dict)
    sizes: Mapping[str, str] = attrs.field(factory=dict)
    idle: bool = False

    def to_json(self) -> dict[str, object]:
        if not self.sizes and not self.idle:
            return dict(self.quantities)
        return {"quantities": dict(self.quantities), "sizes": dict(self.sizes), "idle": self.idle}


def _load_formation(path: Path) -> FormationRecord:
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise TypeError("not an object")
        if isinstance(data.get("quantities"), dict):
            return FormationRecord(
                {str(k): int(v) for k, v in data["quantities"].items()},
                {str(k): str(v) for k, v in data.get("sizes", {}).items()},
                bool(data.get("idle", False)),
            )
        return FormationRecord({str(name): int(count) for name, count in data.items()})
    except (OSError, ValueError, TypeError, AttributeError) as err:
        raise Damaged(
            f"{path} is damaged ({err}): expected an object of process type counts"
        ) from None


def _load_app(path: Path) -> App:
    try:
        return App.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise Damaged(
            f"app record {path} is damaged ({err}); restore it from a backup, or move its"
            " directory aside to forget the app"
        ) from None


class AppStore:
    """Apps by name and by id, their ledgers and formations. Reads come from memory or small
    files; writes are async and fsync in a worker thread."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / "apps"
        self.root.mkdir(parents=True, exist_ok=True)
        self._apps: dict[str, App] = {}
        self._names: dict[str, str] = {}  # name -> id
        self._ledgers: dict[str, Ledger] = {}
        self._creating: set[str] = set()  # names of apps being written, taken already
        self._formation_locks: dict[str, trio.Lock] = {}  # one formation writer per app
        for entry in self.root.iterdir():
            if entry.name.startswith("."):  # a create or destroy that a crash interrupted
                shutil.rmtree(entry, ignore_errors=True)
                continue
            self._keep(_load_app(entry / "app.json"))

    def all(self) -> list[App]:
        return sorted(self._apps.values(), key=lambda app: app.created_at)

    def by_name(self, name: str) -> App | None:
        app_id = self._names.get(name)
        return self._apps[app_id] if app_id is not None else None

    def find(self, name_or_id: str) -> App:
        app = self._apps.get(name_or_id) or self.by_name(name_or_id)
        if app is None:
            raise NotFound(
                f"Couldn't find that app: {name_or_id}. Check the name with `dyno apps`."
            )
        return app

    async def create(self, name: str | None = None) -> App:
        if name is None:
            name = self._invent_name()
        elif not APP_NAME.fullmatch(name):
            raise Invalid(
                f"Name {name!r} is not valid: use 3 to 30 lowercase letters, digits and dashes, "
                "starting with a letter."
            )
        if name in self._names or name in self._creating:
            raise Conflict(f"Name {name} is already taken: choose another.")
        now = heroku_time()
        app = App(str(uuid.uuid4()), name, now, now)
        self._creating.add(name)
        try:
            await trio.to_thread.run_sync(self._write_new, app)
        finally:
            self._creating.discard(name)
        self._keep(app)
        return app

    def _write_new(self, app: App) -> None:
        # Written under a temporary name and renamed, so a crash never leaves half an app.
        staging = self.root / f".new-{app.id}"
        staging.mkdir()
        atomic_write(staging / "app.json", json.dumps(app.to_json()).encode())
        staging.rename(self.dir(app))
        fsync_dir(self.root)

    def _keep(self, app: App) -> None:
        self._apps[app.id] = app
        self._names[app.name] = app.id

    async def destroy(self, app: App) -> None:
        self._apps.pop(app.id, None)
        self._names.pop(app.name, None)
        self._ledgers.pop(app.id, None)
        await trio.to_thread.run_sync(self._remove, app)

    def _remove(self, app: App) -> None:
        doomed = self.root / f".gone-{app.id}"
        self.dir(app).rename(doomed)  # gone from the registry at once, deleted at leisure
        fsync_dir(self.root)
        shutil.rmtree(doomed, ignore_errors=True)

    def dir(self, app: App) -> Path:
        return self.root / app.id

    def cache_dir(self, app: App) -> Path:
        path = self.dir(app) / "cache"
        path.mkdir(exist_ok=True)
        return path

    def ledger(self, app: App) -> Ledger:
        ledger = self._ledgers.get(app.id)
        if ledger is None:
            ledger = self._ledgers[app.id] = Ledger(self.dir(app) / "releases.ledger")
        return ledger

    def formation(self, app: App) -> dict[str, int]:
        return read_formation(self.dir(app))

    def formation_record(self, app: App) -> FormationRecord:
        """Quantities by process type, sizes set by `ps:type`, and whether the app sleeps."""
        path = self.dir(app) / "formation.json"
        if not path.exists():
            return FormationRecord()
        return _load_formation(path)

    async def save_formation(
        self, app: App, formation: Mapping[str, int], sizes: Mapping[str, str] | None = None
    ) -> None:
        """Set the quantities, and the size of the process types in `sizes` (the others keep
        theirs), in one write."""
        await self._change_formation(
            app,
            lambda record: attrs.evolve(
                record, quantities=formation, sizes={**record.sizes, **(sizes or {})}
            ),
        )

    async def save_idle(self, app: App, idle: bool) -> None:
        """Record that the app sleeps (or not): it stays asleep across a restart of dynod."""
        await self._change_formation(app, lambda record: attrs.evolve(record, idle=idle))

    async def _change_formation(
        self, app: App, change: Callable[[FormationRecord], FormationRecord]
    ) -> None:
        async with self._formation_locks.setdefault(app.id, trio.Lock()):
            record = change(self.formation_record(app))
            data = json.dumps(record.to_json()).encode()
            await trio.to_thread.run_sync(atomic_write, self.dir(app) / "formation.json", data)

    def _invent_name(self) -> str:
        while True:
            name = f"{random.choice(_WORDS)}-{random.choice(_NOUNS)}-{random.randint(10000, 99999)}"
            if name not in self._names:
                return name


def read_formation(app_dir: Path) -> dict[str, int]:
    """An app's formation as its directory holds it ({} before the first deploy)."""
    path = app_dir / "formation.json"
    if not path.exists():
        return {}
    return dict(_load_formation(path).quantities)


def peek_app(data_dir: Path, name: str) -> tuple[App, Path]:
    """The app called `name` and its directory, read without changing anything under
    `data_dir` (a running `dynod serve` may own it: `dynod export` reads it so)."""
    root = data_dir / "apps"
    entries = sorted(root.iterdir()) if root.is_dir() else []
    for entry in entries:
        if entry.name.startswith(".") or not (entry / "app.json").is_file():
            continue  # an app being created or destroyed
        app = _load_app(entry / "app.json")
        if app.name == name:
            return app, entry
    raise NotFound(
        f"Couldn't find that app: {name} in {data_dir}. Check the name with `dyno apps`, "
        "or name the data directory with --data."
    )
