"""The platform behind `dynod serve`: the composition root that builds its services (releases
and config vars, builds, the formation and its dynos, one-offs), wires them together, runs them
under one root nursery, and creates and destroys apps. The API is a thin HTTP layer over them.

Durable state lives in the app registry (apps.py), the release ledgers and the slug store;
everything else (dynos, log rings) is rebuilt from them when dynod starts.
"""

from __future__ import annotations

import getpass
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

from dynod.builds.git import ensure_repo, remove_repo, repo_path
from dynod.core.logline import APP, HEROKU
from dynod.logs.logplex import Logplex, LogRing
from dynod.platform.builds import Builds
from dynod.platform.firewall import Firewall
from dynod.platform.formation import Formation
from dynod.platform.oneoffs import OneOffs
from dynod.platform.releases import Releases
from dynod.platform.runtime import (
    AppRuntime,
    DynoUsers,
    Ports,
    SlugWorkspace,
    manager_settings,
    scratch_dir,
)
from dynod.proc.reaper import Reaper
from dynod.slugs.store import SlugStore
from dynod.state.apps import App, AppStore
from dynod.state.config import Config
from router.backend import TableBackend

_log = logging.getLogger("dynod.platform")


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
        self.firewall = Firewall.here()  # dyno ports closed to other users: root and nftables
        self.users = DynoUsers(config.dynos)
        self.scratch = scratch_dir(data_dir, passable=self.users.switching)
        # The router's view of every app's web dynos (router.server.serve takes it).
        self.router = TableBackend(sink=self._router_log)
        self.formation = Formation(
            self.apps,
            self.slugs,
            self.router,
            user=self.user,
            log=self.log,
            make_runtime=self._make_runtime,
            spawn=self.spawn,
        )
        self.releases = Releases(
            self.apps,
            self.slugs,
            self.logplex,
            user=self.user,
            log=self.log,
            run_command=self.formation.run_command,
            released=self.formation.released,
            spawn=self.spawn,
        )
        self.builds = Builds(
            self.apps,
            self.slugs,
            self.releases,
            self.users,
            config.build,
            scratch=self.scratch,
            reaper=reaper,
            spawn=self.spawn,
        )
        self.one_offs = OneOffs(self.formation, spawn=self.spawn)
        self._nursery: trio.Nursery | None = None

    # ----- lifetime

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Bring every app back on its current release and formation, then serve until
        cancelled; cancelling stops every dyno (gracefully)."""
        if self.firewall is not None and not await self.firewall.open():
            self.firewall = None
        try:
            await self._run(task_status)
        finally:
            if self.firewall is not None:
                await self.firewall.close()  # shielded: runs while cancelled

    async def _run(self, task_status: trio.TaskStatus[None]) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for app in self.apps.all():
                await self.builds.interrupted(app)
                await self.releases.interrupted(app)
                await trio.to_thread.run_sync(ensure_repo, self.data_dir, app.name)
                await self.formation.start(app, nursery)
                self.formation.apply(app, prune=False)
            self.formation.prune_soon()  # once for all apps, not once per app
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

    def _make_runtime(self, app: App) -> AppRuntime:
        owner = self.users.owner(app.id)
        settings = manager_settings(self.config.dynos, self.config.logplex.max_line_bytes, owner)
        return AppRuntime(
            app.id,
            self.ring(app),
            SlugWorkspace(self.slugs, self.scratch, owner, overlays=self.config.dynos.private_tmp),
            self.ports,
            settings,
            self.reaper,
            self.firewall,
        )

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
        assert self._nursery is not None
        app = await self.apps.create(name)
        await self.releases.initial(app)
        await trio.to_thread.run_sync(ensure_repo, self.data_dir, app.name)
        await self.formation.start(app, self._nursery)
        self.log(app, f"Release v1 created by user {self.user}")
        return app

    async def destroy_app(self, app: App) -> None:
        self.formation.stop_app(app)
        self.builds.forget(app)
        await self.apps.destroy(app)
        self.logplex.remove(app.id)
        await trio.to_thread.run_sync(remove_repo, self.data_dir, app.name)
        self.formation.prune_soon()

    def git_url(self, app: App) -> str:
        """Where `git push` deploys: the app's bare repository (a local path)."""
        return str(repo_path(self.data_dir, app.name))


def _user_email() -> str:
    """Heroku identifies people by email; locally, the user name at this machine."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = "dynod"
    return f"{name}@localhost"
