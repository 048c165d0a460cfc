"""The platform behind `dynod serve`: apps, config vars, releases (with the release phase),
formation and dynos, under one root nursery. The API is a thin HTTP layer over this class.

Durable state lives in the app registry (apps.py), the release ledgers and the slug store;
everything else (dynos, log rings) is rebuilt from them when dynod starts.
"""

from __future__ import annotations

import getpass
import json
import logging
import random
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path

import attrs
import trio

from dynod.builds.git import ensure_repo, remove_repo, repo_path
from dynod.builds.pipeline import Build, BuildOutput, BuildStore, fetch_source, lent_cache, scratch
from dynod.builds.runner import prepare_source, run_build, source_id
from dynod.core.config_vars import (
    INITIAL_DESCRIPTION,
    apply_config_changes,
    deploy_description,
    rollback_description,
)
from dynod.core.lifecycle import DynoState
from dynod.core.logline import APP, HEROKU
from dynod.errors import DynodError, Invalid, NotFound
from dynod.logs.logplex import Logplex, LogRing
from dynod.platform.routing import feed_router
from dynod.platform.runtime import (
    AppRuntime,
    DynoUsers,
    Ports,
    SlugWorkspace,
    manager_settings,
    scratch_dir,
)
from dynod.proc.dyno import DYNO_PATH
from dynod.proc.manager import DynoPlan
from dynod.proc.reaper import Reaper
from dynod.slugs.slug import Slug, SlugStore, check_slug_size, pack_slug
from dynod.state.apps import App, AppStore
from dynod.state.config import Config
from dynod.state.files import heroku_time
from dynod.state.ledger import Release
from router.backend import TableBackend

RELEASE_PHASE_TIMEOUT = 3600.0
_log = logging.getLogger("dynod.platform")


@attrs.frozen
class FormationEntry:
    type: str
    quantity: int
    command: str
    size: str = "standard-1X"


@attrs.frozen
class DynoInfo:
    name: str
    type: str
    command: str
    state: str
    updated_at: str
    release_version: int | None
    size: str = "standard-1X"


@attrs.define
class OneOff:
    """A one-off dyno (`run.N`) while it runs: never restarted, listed by `ps`."""

    plan: DynoPlan
    state: DynoState = DynoState.STARTING
    since: float = attrs.field(factory=time.time)
    release_version: int | None = None


class Platform:
    def __init__(self, config: Config, data_dir: Path, *, reaper: Reaper | None = None) -> None:
        self.config = config
        self.data_dir = data_dir
        self.user = _user_email()
        self.apps = AppStore(data_dir)
        self.slugs = SlugStore(data_dir / "slugs")
        self.logplex = Logplex(
            history=config.logplex.history, tail_buffer=config.logplex.tail_buffer
        )
        self.reaper = reaper
        self.ports = Ports(config.dynos.port_range)
        self.scratch = scratch_dir()
        self.users = DynoUsers(config.dynos)
        self.runtimes: dict[str, AppRuntime] = {}
        self.one_offs: dict[str, dict[str, OneOff]] = {}
        self.changed = trio.Event()  # replaced whenever any app's dynos change
        self._build_stores: dict[str, BuildStore] = {}
        # The router's view of every app's web dynos (router.server.serve takes it).
        self.router = TableBackend(sink=self._router_log)
        self._nursery: trio.Nursery | None = None

    # ----- lifetime

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Bring every app back on its current release and formation, then serve until
        cancelled; cancelling stops every dyno (gracefully)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for app in self.apps.all():
                await self._builds(app).interrupted()
                await self._interrupted_releases(app)
                await trio.to_thread.run_sync(ensure_repo, self.data_dir, app.name)
                await self._start_runtime(app)
                self._apply(app, prune=False)
            self._prune_trees_soon()  # once for all apps, not once per app
            task_status.started()
            await trio.sleep_forever()

    def spawn(self, fn: Callable[[], Awaitable[object]], name: str) -> None:
        """Run background work (a build, a release phase) under the platform's nursery."""
        assert self._nursery is not None

        async def guarded() -> None:
            try:
                await fn()
            except Exception as err:  # a bug must cost this work, not every app's dynos
                _log.exception(
                    "dynod: %s failed inside dynod (%s: %s); please report it",
                    name,
                    type(err).__name__,
                    err,
                )

        self._nursery.start_soon(guarded, name=name)

    async def _start_runtime(self, app: App) -> AppRuntime:
        assert self._nursery is not None
        owner = self.users.owner(app.id)
        settings = manager_settings(self.config.dynos, self.config.logplex.max_line_bytes, owner)
        runtime = AppRuntime(
            app.id,
            self.ring(app),
            SlugWorkspace(self.slugs, self.scratch, owner),
            self.ports,
            settings,
            self.reaper,
        )
        self.runtimes[app.id] = runtime
        self.one_offs[app.id] = {}
        await self._nursery.start(runtime.manager.run, [])
        self._nursery.start_soon(self._route, runtime, app.name)
        return runtime

    async def _route(self, runtime: AppRuntime, name: str) -> None:
        with runtime.route_scope:
            await feed_router(runtime.manager, self.router, name)

    def _router_log(self, app_name: str, text: str) -> None:
        app = self.apps.by_name(app_name)
        if app is not None:
            self.log(app, text, dyno="router", source=HEROKU)

    # ----- apps

    def ring(self, app: App) -> LogRing:
        return self.logplex.ring(app.id)

    def log(self, app: App, text: str, *, dyno: str = "api", source: str = APP) -> None:
        self.ring(app).publish(source, dyno, [text], time.time())

    async def create_app(self, name: str | None = None) -> App:
        app = await self.apps.create(name)
        release = Release(
            version=1,
            description=INITIAL_DESCRIPTION,
            user=self.user,
            status="succeeded",
        )
        await self.apps.ledger(app).append(release)
        await trio.to_thread.run_sync(ensure_repo, self.data_dir, app.name)
        await self._start_runtime(app)
        self.log(app, f"Release v1 created by user {self.user}")
        return app

    async def destroy_app(self, app: App) -> None:
        runtime = self.runtimes.pop(app.id, None)
        if runtime is not None:
            runtime.apply(None, {}, {})
            runtime.manager.stop_all()
            runtime.route_scope.cancel()
        self.one_offs.pop(app.id, None)
        await self.apps.destroy(app)
        self.logplex.remove(app.id)
        await trio.to_thread.run_sync(remove_repo, self.data_dir, app.name)
        self._prune_trees_soon()

    def git_url(self, app: App) -> str:
        """Where `git push` deploys: the app's bare repository (a local path)."""
        return str(repo_path(self.data_dir, app.name))

    # ----- releases and config vars

    def current_release(self, app: App) -> Release | None:
        return self.apps.ledger(app).current()

    def releases(self, app: App) -> list[Release]:
        return self.apps.ledger(app).releases()

    def release(self, app: App, version_or_id: str | int) -> Release:
        ledger = self.apps.ledger(app)
        text = str(version_or_id).lstrip("v")
        found = (
            ledger.get(int(text))
            if text.isdigit()
            else next((r for r in ledger.releases() if r.id == version_or_id), None)
        )
        if found is None:
            raise NotFound(
                f"Couldn't find release {version_or_id}: list them with `dyno releases`."
            )
        return found

    def config_vars(self, app: App) -> dict[str, str]:
        latest = self.apps.ledger(app).latest()
        return dict(latest.config_vars) if latest else {}

    async def set_config(self, app: App, changes: Mapping[str, object]) -> Release:
        current = self.apps.ledger(app).latest()
        new_vars, description = apply_config_changes(
            current.config_vars if current else {}, changes
        )
        slug_id = self._current_slug_id(app)
        return await self.create_release(
            app, slug_id=slug_id, config_vars=new_vars, description=description
        )

    async def rollback(self, app: App, version_or_id: str | int) -> Release:
        target = self.release(app, version_or_id)
        if target.slug_id is None:
            raise Invalid(
                f"v{target.version} has no slug to roll back to: pick a release made by a deploy."
            )
        return await self.create_release(
            app,
            slug_id=target.slug_id,
            config_vars=dict(target.config_vars),
            description=rollback_description(target.version),
        )

    async def create_release(
        self,
        app: App,
        *,
        slug_id: str | None,
        config_vars: Mapping[str, str],
        description: str,
        wait: bool = False,
    ) -> Release:
        """Append a release; with a `release` process type it is `pending` until its release
        phase succeeds (in the background unless `wait`), then it becomes current and the
        formation restarts on it. A failed release phase leaves the old release running."""
        slug = self.slugs.get(slug_id) if slug_id else None
        ledger = self.apps.ledger(app)
        latest = ledger.latest()
        phase = slug is not None and "release" in slug.process_types
        release = Release(
            version=ledger.next_version(),
            description=description,
            user=self.user,
            status="pending" if phase else "succeeded",
            slug_id=slug_id,
            config_vars=dict(config_vars),
            addons=latest.addons if latest else (),  # type: ignore[arg-type]  # attrs converter=tuple
        )
        await ledger.append(release)
        self.log(app, f"Release v{release.version} created by user {self.user}")
        if not phase:
            await self._first_deploy_formation(app, slug)
            self._apply(app)
            return release
        assert slug is not None
        if wait:
            return await self._release_phase(app, release, slug)
        self.spawn(
            lambda: self._release_phase(app, release, slug),
            f"release {app.name} v{release.version}",
        )
        return release

    async def _release_phase(self, app: App, release: Release, slug: Slug) -> Release:
        runtime = self.runtimes[app.id]
        name = f"release.{release.version}"
        output: list[str] = []

        def keep(source: str, dyno: str, texts: Sequence[str], when: float) -> None:
            if dyno != name:
                return
            # The command's own output, and the dyno manager's errors (R17: a refused slug).
            output.extend(t for t in texts if source == APP or t.startswith("Error R"))

        unsubscribe = self.ring(app).subscribe(keep)
        status = 1
        try:
            plan = runtime.one_off_plan(release, slug.process_types["release"], name)
            with trio.move_on_after(RELEASE_PHASE_TIMEOUT) as limit:
                status = await runtime.manager.run_one_off(plan)
            if limit.cancelled_caught:
                output.append(
                    f"The release command ran over {RELEASE_PHASE_TIMEOUT / 60:g} "
                    "minutes and was stopped"
                )
            runtime.ports.give_back(plan.port)
        finally:
            unsubscribe()
        path = self._release_output_path(app, release.version)
        await trio.to_thread.run_sync(path.write_text, "".join(f"{t}\n" for t in output))
        ok = status == 0
        ledger = self.apps.ledger(app)
        release = await ledger.set_status(release.version, "succeeded" if ok else "failed")
        if ok:
            await self._first_deploy_formation(app, slug)
            self._apply(app)
        else:
            self.log(
                app,
                f"Release v{release.version} failed: the release command exited with status "
                f"{status}",
            )
        return release

    async def _interrupted_releases(self, app: App) -> None:
        """A release phase that dynod's stop or death cut short can never finish: it failed, and
        the release before it runs on (as when its command fails)."""
        ledger = self.apps.ledger(app)
        for release in ledger.releases():
            if release.status == "pending":
                path = self._release_output_path(app, release.version)
                await trio.to_thread.run_sync(_note_interrupted, path)
                await ledger.set_status(release.version, "failed")

    def release_output(self, app: App, version: int) -> str | None:
        path = self._release_output_path(app, version)
        return path.read_text() if path.exists() else None

    def _release_output_path(self, app: App, version: int) -> Path:
        directory = self.apps.dir(app) / "release-output"
        directory.mkdir(exist_ok=True)
        return directory / f"v{version}.log"

    def _current_slug_id(self, app: App) -> str | None:
        current = self.current_release(app)
        return current.slug_id if current else None

    # ----- formation

    def process_types(self, app: App) -> dict[str, str]:
        slug_id = self._current_slug_id(app)
        return dict(self.slugs.get(slug_id).process_types) if slug_id else {}

    def formation(self, app: App) -> list[FormationEntry]:
        counts = self.apps.formation(app)
        return [
            FormationEntry(kind, counts.get(kind, 0), command)
            for kind, command in self.process_types(app).items()
            if kind != "release"
        ]

    async def scale(self, app: App, updates: Mapping[str, object]) -> list[FormationEntry]:
        """Set quantities (a number, or a string: "2", "+1", "-1"); all checked before any
        applies."""
        types = self.process_types(app)
        counts = self.apps.formation(app)
        new = dict(counts)
        for kind, quantity in updates.items():
            if kind not in types or kind == "release":
                raise NotFound(
                    f"Couldn't find that process type ({kind}): the app's types are "
                    f"{', '.join(t for t in types if t != 'release') or 'none yet'}."
                )
            new[kind] = _quantity(quantity, counts.get(kind, 0), kind)
        await self.apps.save_formation(app, new)
        scaled = " ".join(f"{kind}@{new[kind]}:Standard-1X" for kind in updates)
        self.log(app, f"Scaled to {scaled} by user {self.user}")
        self._apply(app)
        return [entry for entry in self.formation(app) if entry.type in updates]

    async def _first_deploy_formation(self, app: App, slug: Slug | None) -> None:
        if slug is None or (self.apps.dir(app) / "formation.json").exists():
            return
        await self.apps.save_formation(
            app, {kind: int(kind == "web") for kind in slug.process_types if kind != "release"}
        )

    def _apply(self, app: App, *, prune: bool = True) -> None:
        runtime = self.runtimes.get(app.id)
        if runtime is None:
            return
        release = self.current_release(app)
        runtime.apply(release, self.process_types(app), self.apps.formation(app))
        self._notify()
        if prune:
            self._prune_trees_soon()

    def _prune_trees_soon(self) -> None:
        """Drop the unpacked trees of slugs no app runs now: each deploy would leave one."""
        if self._nursery is None:
            return
        keep = set()
        for app in self.apps.all():
            release = self.current_release(app)
            if release is not None and release.slug_id is not None:
                try:
                    keep.add(self.slugs.get(release.slug_id).checksum)
                except DynodError:
                    continue  # a lost slug record: its dynos say so when they start
        self.spawn(
            lambda: trio.to_thread.run_sync(self.slugs.prune_trees, keep), "pruning slug trees"
        )

    def _notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    # ----- dynos

    def dynos(self, app: App) -> list[DynoInfo]:
        runtime = self.runtimes[app.id]
        version = runtime.release.version if runtime.release else None
        listed = [
            DynoInfo(
                slot.name,
                slot.plan.type,
                slot.plan.command,
                slot.state.value,
                heroku_time(slot.lifecycle.since),
                version,
            )
            for slot in runtime.manager.slots.values()
        ]
        listed += [
            DynoInfo(
                name,
                "run",
                one.plan.command,
                one.state.value,
                heroku_time(one.since),
                one.release_version,
            )
            for name, one in self.one_offs[app.id].items()
        ]
        return sorted(listed, key=lambda d: _dyno_order(d.name))

    def restart(self, app: App, target: str | None = None) -> None:
        """All dynos, one process type (`web`) or one dyno (`web.1`)."""
        manager = self.runtimes[app.id].manager
        names = self._targets(app, target)
        for name in names:
            manager.restart_dyno(name)

    def stop(self, app: App, target: str) -> None:
        """Stop a dyno or a type's dynos; the formation starts fresh ones (as on Heroku)."""
        manager = self.runtimes[app.id].manager
        for name in self._targets(app, target):
            manager.restart_dyno(name, "Stopping")

    def _targets(self, app: App, target: str | None) -> list[str]:
        slots = self.runtimes[app.id].manager.slots
        if target is None:
            return list(slots)
        names = [n for n in slots if n == target or n.rsplit(".", 1)[0] == target]
        if not names:
            raise NotFound(f"Couldn't find dyno or process type {target}: see `dyno ps`.")
        return names

    async def run_detached(
        self, app: App, command: str, env: Mapping[str, str] | None = None
    ) -> DynoInfo:
        """A one-off dyno whose output goes to logplex; `env` adds to the config vars."""
        release = self.current_release(app)
        if release is None or release.slug_id is None:
            raise Invalid("The app has no release with a slug yet: deploy it first.")
        runtime = self.runtimes[app.id]
        types = self.process_types(app)
        if command in types:
            command = types[command]
        name = f"run.{random.randint(1000, 9999)}"
        while name in self.one_offs[app.id]:
            name = f"run.{random.randint(1000, 9999)}"
        plan = runtime.one_off_plan(release, command, name, env or {})
        one = OneOff(plan, release_version=release.version)
        self.one_offs[app.id][name] = one

        async def run() -> None:
            try:
                one.state = DynoState.UP
                await runtime.manager.run_one_off(plan)
            finally:
                runtime.ports.give_back(plan.port)
                self.one_offs.get(app.id, {}).pop(name, None)
                self._notify()

        self.spawn(run, f"one-off {app.name} {name}")
        return DynoInfo(name, "run", command, "starting", heroku_time(one.since), release.version)

    # ----- builds

    def _builds(self, app: App) -> BuildStore:
        store = self._build_stores.get(app.id)
        if store is None:
            store = self._build_stores[app.id] = BuildStore(self.apps.dir(app))
        return store

    async def create_build(
        self, app: App, *, source_url: str, version: str | None, buildpacks: list[str]
    ) -> Build:
        """Start a build in the background; its output streams from `build_output`."""
        build, output = await self._builds(app).start(app.id, source_url, version, buildpacks)
        self.spawn(lambda: self._run_build(app, build, output), f"build {app.name} {build.id}")
        return build

    def builds(self, app: App) -> list[Build]:
        return self._builds(app).all()

    def build(self, app: App, build_id: str) -> Build:
        return self._builds(app).get(build_id)

    def build_output(self, app: App, build_id: str) -> AsyncIterator[str]:
        return self._builds(app).output(build_id)

    async def _run_build(self, app: App, build: Build, output: BuildOutput) -> Build:
        say = output.write
        store = self._builds(app)
        work = scratch("dynod-build-")
        try:
            source = await trio.to_thread.run_sync(fetch_source, build.source_url, work)
            build_dir = work / "build"
            await trio.to_thread.run_sync(prepare_source, source, build_dir)
            version = build.version
            if not version:
                version = await trio.to_thread.run_sync(source_id, source)
            owner = self.users.owner(app.id)
            async with lent_cache(self.apps.cache_dir(app), work, owner) as cache:
                result = await run_build(
                    build_dir,
                    cache_dir=cache,
                    config_vars=self.config_vars(app),
                    buildpacks=list(build.buildpacks) or list(app.buildpacks),
                    source_version=version,
                    output=say,
                    reaper=self.reaper,
                    # Dynos of another user cannot read dynod's interpreters (pyenv under
                    # /root): the build uses the tools on the dynos' PATH.
                    path=DYNO_PATH if self.users.switching else None,
                    owner=owner,  # buildpacks run as the app's user, as its dynos do
                )
            say("-----> Compressing...")
            info = await trio.to_thread.run_sync(pack_slug, build_dir, work / "slug.tgz")
            warning = check_slug_size(
                info.size,
                warn_mb=self.config.build.slug_warn_mb,
                max_mb=self.config.build.slug_max_mb,
            )
            if warning:
                say(f" !     {warning}")
            slug = await trio.to_thread.run_sync(  # a copy and an fsync: off the event loop
                lambda: self.slugs.put(info.path, result.process_types, commit=version)
            )
            say(f"       Done: {info.size / 1048576:.1f}M")
            say("-----> Launching...")
            release = await self.create_release(
                app,
                slug_id=slug.id,
                config_vars=self.config_vars(app),
                description=deploy_description(version),
                wait=True,
            )
            if release.status == "failed":
                for line in (self.release_output(app, release.version) or "").splitlines():
                    say(f"       {line}")
                say(
                    f" !     Release command failed: v{release.version} was not released; "
                    "the previous release keeps running. See `dyno releases:output`."
                )
                return await store.finish(
                    build, status="failed", slug_id=slug.id, release_version=release.version
                )
            say(f"       Released v{release.version}")
            return await store.finish(
                build, status="succeeded", slug_id=slug.id, release_version=release.version
            )
        except DynodError as err:
            say(f" !     {err}")
            return await store.finish(build, status="failed")
        except Exception as err:  # a bug must fail the build, not take the platform down
            say(
                f" !     Build failed inside dynod ({type(err).__name__}: {err}); please report it."
            )
            return await store.finish(build, status="failed")
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(shutil.rmtree, work, True)

    # ----- the router's view

    def web_targets(self, app: App) -> list[tuple[str, int, str]]:
        """(dyno name, port, state) for the app's web dynos."""
        runtime = self.runtimes.get(app.id)
        if runtime is None:
            return []
        return [(slot.name, slot.plan.port or 0, slot.state.value) for slot in runtime.web_dynos()]


def _quantity(value: object, current: int, kind: str) -> int:
    """A JSON number is the new quantity; a string may also be relative ("+1", "-1")."""
    text = value.strip() if isinstance(value, str) else ""
    try:
        if isinstance(value, int) and not isinstance(value, bool):
            quantity = value
        elif text[:1] in "+-" and text[1:].isdigit():
            quantity = current + int(text)
        else:
            quantity = int(text)
    except ValueError:
        shown = json.dumps(value, default=repr)
        raise Invalid(
            f'Quantity for {kind} must be a number such as 2, "+1" or "-1", not {shown}.'
        ) from None
    if not 0 <= quantity <= 100:
        raise Invalid(f"Quantity for {kind} must be between 0 and 100, not {quantity}.")
    return quantity


def _dyno_order(name: str) -> tuple[str, int]:
    kind, _, number = name.rpartition(".")
    return (kind, int(number) if number.isdigit() else 0)


def _note_interrupted(path: Path) -> None:
    with path.open("a") as output:
        output.write(
            "dynod stopped while the release command ran, so this release failed: "
            "release again (deploy, config:set or releases:rollback)\n"
        )


def _user_email() -> str:
    """Heroku identifies people by email; locally, the user name at this machine."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = "dynod"
    return f"{name}@localhost"
