"""The formation and its dynos: each app's process types and quantities, the AppRuntime that runs
them on the current release, restarts and stops, the `ps` listing, and the router's view of
every app's web dynos."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping

import attrs
import trio

from dynod.core.formation import quantity as _quantity
from dynod.core.sizes import DEFAULT_SIZE, shown, size_of
from dynod.core.supervisor import Restart
from dynod.errors import DynodError, NotFound
from dynod.platform.events import ApiEvents
from dynod.platform.routing import feed_router
from dynod.platform.runtime import AppRuntime
from dynod.proc.memory import MemorySample
from dynod.slugs.model import Slug
from dynod.slugs.store import SlugStore
from dynod.state.apps import App, AppStore
from dynod.state.files import heroku_time
from dynod.state.ledger import Release
from router.backend import TableBackend

Log = Callable[[App, str], None]
Spawn = Callable[[Callable[[], Awaitable[object]], str], None]
RuntimeFactory = Callable[[App], AppRuntime]


@attrs.frozen
class FormationEntry:
    type: str
    quantity: int
    command: str
    size: str = DEFAULT_SIZE


@attrs.frozen
class DynoInfo:
    name: str
    type: str
    command: str
    state: str
    updated_at: str
    release_version: int | None
    size: str = DEFAULT_SIZE
    memory: MemorySample | None = None  # its last sample (proc/memory.py)
    exit_status: int | None = None  # its last exit
    next_start_at: str | None = None  # crashed: when the ladder starts it again


class Formation:
    """Every app's dynos: one AppRuntime per app (made by `make_runtime`), running the saved
    formation on the app's current release. `changed` is set (and replaced) whenever any app's
    dynos change."""

    def __init__(
        self,
        apps: AppStore,
        slugs: SlugStore,
        router: TableBackend,
        *,
        user: str,
        log: Log,
        make_runtime: RuntimeFactory,
        spawn: Spawn,
    ) -> None:
        self.apps = apps
        self.slugs = slugs
        self.router = router
        self.user = user
        self.log = log
        self.events = ApiEvents(log, user)
        self.make_runtime = make_runtime
        self.spawn = spawn
        self.runtimes: dict[str, AppRuntime] = {}
        self.changed = trio.Event()
        self.woke_at: dict[str, float] = {}  # app id -> trio time it last woke from sleep
        self._scaling: defaultdict[str, trio.Lock] = defaultdict(trio.Lock)  # by app id

    # ----- each app's runtime

    async def start(self, app: App, nursery: trio.Nursery) -> AppRuntime:
        """The app's dyno manager, and its feed of the router, in `nursery` (with no dynos
        until `apply`)."""
        runtime = self.make_runtime(app)
        runtime.manager.sleeping = self.apps.formation_record(app).idle  # asleep when dynod stopped
        self.runtimes[app.id] = runtime
        await nursery.start(runtime.manager.run, [])
        nursery.start_soon(self._route, runtime, app.name)
        return runtime

    async def _route(self, runtime: AppRuntime, name: str) -> None:
        with runtime.route_scope:
            await feed_router(runtime.manager, self.router, name)

    def stop_app(self, app: App) -> None:
        """Stop every dyno of an app being destroyed, and its route."""
        runtime = self.runtimes.pop(app.id, None)
        if runtime is not None:
            runtime.apply(None, {}, {})
            runtime.manager.stop_all()
            runtime.route_scope.cancel()

    def runtime(self, app: App) -> AppRuntime:
        return self.runtimes[app.id]

    # ----- process types and quantities

    def current(self, app: App) -> Release | None:
        return self.apps.ledger(app).current()

    def process_types(self, app: App) -> dict[str, str]:
        current = self.current(app)
        slug_id = current.slug_id if current else None
        return dict(self.slugs.get(slug_id).process_types) if slug_id else {}

    def entries(self, app: App) -> list[FormationEntry]:
        record = self.apps.formation_record(app)
        return [
            FormationEntry(
                kind,
                record.quantities.get(kind, 0),
                command,
                record.sizes.get(kind, DEFAULT_SIZE),
            )
            for kind, command in self.process_types(app).items()
            if kind != "release"
        ]

    async def scale(
        self, app: App, updates: Mapping[str, object], sizes: Mapping[str, object] | None = None
    ) -> list[FormationEntry]:
        """Set quantities (a number, or a string: "2", "+1", "-1") and sizes (`ps:type`); all
        checked before any applies."""
        sizes = sizes or {}
        async with self._scaling[app.id]:
            types = self.process_types(app)
            counts = self.apps.formation(app)
            new = dict(counts)
            for kind in [*updates, *sizes]:
                if kind not in types or kind == "release":
                    raise NotFound(
                        f"Couldn't find that process type ({kind}): the app's types are "
                        f"{', '.join(t for t in types if t != 'release') or 'none yet'}."
                    )
            for kind, quantity in updates.items():
                new[kind] = _quantity(quantity, counts.get(kind, 0), kind)
            resized = {kind: size_of(size) for kind, size in sizes.items()}
            await self.apps.save_formation(app, new, resized)
        named = [*updates, *(kind for kind in sizes if kind not in updates)]
        entries = {entry.type: entry for entry in self.entries(app)}
        scaled = " ".join(
            f"{kind}@{entries[kind].quantity}:{shown(entries[kind].size)}" for kind in named
        )
        self.events(app, f"Scaled to {scaled}")
        self.apply(app)
        return [entry for entry in entries.values() if entry.type in named]

    async def released(self, app: App, slug: Slug | None) -> None:
        """A release became current: run the formation on it (the first deploy's formation is
        one web dyno)."""
        if slug is not None:
            async with self._scaling[app.id]:
                if not (self.apps.dir(app) / "formation.json").exists():
                    first = {k: int(k == "web") for k in slug.process_types if k != "release"}
                    await self.apps.save_formation(app, first)
        self.apply(app)

    def apply(self, app: App, *, prune: bool = True, wake: bool = True) -> None:
        """Run the formation on the current release; a scale or release wakes a sleeping app
        (`wake`; not when dynod starts: an app asleep then stays asleep)."""
        runtime = self.runtimes.get(app.id)
        if runtime is None:
            return
        runtime.apply(self.current(app), self.process_types(app), self.apps.formation(app))
        if wake:
            self.wake(app)  # after: idle dynos take their new plans, then start once, on them
        self.notify()
        if prune:
            self.prune_soon()

    def prune_soon(self) -> None:
        """Drop the unpacked trees of slugs no app runs now: each deploy would leave one."""
        keep = set()
        for app in self.apps.all():
            release = self.current(app)
            if release is not None and release.slug_id is not None:
                try:
                    keep.add(self.slugs.get(release.slug_id).checksum)
                except DynodError:
                    continue  # a lost slug record: its dynos say so when they start
        self.spawn(
            lambda: trio.to_thread.run_sync(self.slugs.prune_trees, keep), "pruning slug trees"
        )

    def notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    def wake(self, app: App) -> bool:
        """Wake a sleeping app at once (its durable record follows); False if it was awake."""
        runtime = self.runtimes.get(app.id)
        if runtime is None or not runtime.manager.wake():
            return False
        self.woke_at[app.id] = trio.current_time()
        self.spawn(lambda: self.apps.save_idle(app, False), "recording that an app woke")
        self.notify()
        return True

    # ----- dynos

    def dynos(self, app: App) -> list[DynoInfo]:
        runtime = self.runtimes[app.id]
        version = runtime.release.version if runtime.release else None
        sizes = self.apps.formation_record(app).sizes
        listed = [
            DynoInfo(
                slot.name,
                slot.plan.type,
                slot.plan.command,
                slot.state.value,
                heroku_time(slot.updated_at),
                version,
                sizes.get(slot.plan.type, DEFAULT_SIZE),
                memory=slot.memory,
                exit_status=slot.last_status,
                next_start_at=heroku_time(slot.next_start) if slot.next_start else None,
            )
            for slot in runtime.manager.slots.values()
        ]
        listed += [
            DynoInfo(
                slot.name,
                "run",
                slot.plan.command,
                slot.state.value,
                heroku_time(slot.updated_at),
                slot.plan.release_version,
                memory=slot.memory,
                exit_status=slot.last_status,
            )
            for slot in runtime.manager.one_offs.values()
            if slot.plan.type == "run"  # the release phase's dyno is not listed, as on Heroku
        ]
        return sorted(listed, key=lambda d: _dyno_order(d.name))

    def restart(self, app: App, target: str | None = None) -> None:
        """All dynos, one process type (`web`) or one dyno (`web.1`)."""
        manager = self.runtimes[app.id].manager
        names = self._targets(app, target)
        if self.wake(app):
            return  # woken: every dyno starts afresh
        for name in names:
            manager.restart_dyno(name)

    def stop(self, app: App, target: str) -> None:
        """Stop a dyno or a type's dynos; the formation starts fresh ones (as on Heroku). A
        one-off (`run.4821`, or `run` for all) ends for good: cancelled from outside, its
        process gets the stop sequence (SIGTERM, then SIGKILL after the grace)."""
        manager = self.runtimes[app.id].manager
        one_offs = [manager.one_offs[name] for name in _named(manager.one_offs, target)]
        names = _named(manager.slots, target)
        if not names and not one_offs:
            raise NotFound(f"Couldn't find dyno or process type {target}: see `dyno ps`.")
        for name in names:
            manager.restart_dyno(name, Restart.STOP)
        for slot in one_offs:
            slot.scope.cancel()

    def _targets(self, app: App, target: str | None) -> list[str]:
        slots = self.runtimes[app.id].manager.slots
        if target is None:
            return list(slots)
        names = _named(slots, target)
        if not names:
            raise NotFound(f"Couldn't find dyno or process type {target}: see `dyno ps`.")
        return names

    async def run_command(self, app: App, release: Release, command: str, name: str) -> int:
        """Run `command` as the one-off dyno `name` on `release` (a release phase) to its end;
        its exit status."""
        runtime = self.runtimes[app.id]
        return await runtime.manager.run_one_off(runtime.one_off_plan(release, command, name))

    # ----- the router's view

    def web_targets(self, app: App) -> list[tuple[str, int, str]]:
        """(dyno name, port, state) for the app's web dynos."""
        runtime = self.runtimes.get(app.id)
        if runtime is None:
            return []
        return [(slot.name, slot.port or 0, slot.state.value) for slot in runtime.web_dynos()]


def _named(dynos: Iterable[str], target: str) -> list[str]:
    """The dyno `target` (web.1), or every dyno of the process type `target` (web)."""
    return [n for n in dynos if n == target or n.rsplit(".", 1)[0] == target]


def _dyno_order(name: str) -> tuple[str, int]:
    kind, _, number = name.rpartition(".")
    return (kind, int(number) if number.isdigit() else 0)
