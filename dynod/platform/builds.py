"""The build pipeline as the platform runs it: a build record per `git push` or API build,
then in the background fetch the source, run the buildpacks, pack and store the slug, and
release it; its output is kept and streamed to whoever follows it."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import trio

from dynod.builds.pipeline import Build, BuildOutput, BuildStore, fetch_source, lent_cache, scratch
from dynod.builds.runner import run_build
from dynod.builds.source import prepare_source, source_id
from dynod.core.config_vars import deploy_description
from dynod.errors import DynodError
from dynod.platform.releases import Releases, Spawn
from dynod.platform.runtime import DynoUsers
from dynod.proc.dyno import DYNO_PATH
from dynod.proc.reaper import Reaper
from dynod.slugs.model import check_slug_size
from dynod.slugs.pack import pack_slug
from dynod.slugs.store import SlugStore
from dynod.state.apps import App, AppStore
from dynod.state.config import BuildConfig


class Builds:
    """Every app's builds; a finished build releases its slug through `releases`."""

    def __init__(
        self,
        apps: AppStore,
        slugs: SlugStore,
        releases: Releases,
        users: DynoUsers,
        settings: BuildConfig,
        *,
        scratch: Path,
        reaper: Reaper | None,
        spawn: Spawn,
    ) -> None:
        self.apps = apps
        self.slugs = slugs
        self.releases = releases
        self.users = users
        self.settings = settings
        self.scratch = scratch  # dynod's scratch directory: each build's work directory is in it
        self.reaper = reaper
        self.spawn = spawn
        self._stores: dict[str, BuildStore] = {}

    def _store(self, app: App) -> BuildStore:
        store = self._stores.get(app.id)
        if store is None:
            store = self._stores[app.id] = BuildStore(self.apps.dir(app))
        return store

    async def create(
        self, app: App, *, source_url: str, version: str | None, buildpacks: list[str]
    ) -> Build:
        """Start a build in the background; its output streams from `output`."""
        build, output = await self._store(app).start(app.id, source_url, version, buildpacks)
        self.spawn(lambda: self.run(app, build, output), f"build {app.name} {build.id}")
        return build

    def all(self, app: App) -> list[Build]:
        return self._store(app).all()

    def get(self, app: App, build_id: str) -> Build:
        return self._store(app).get(build_id)

    def output(self, app: App, build_id: str) -> AsyncIterator[str]:
        return self._store(app).output(build_id)

    async def interrupted(self, app: App) -> None:
        """Builds that dynod's stop or death cut short: failed."""
        await self._store(app).interrupted()

    def forget(self, app: App) -> None:
        """An app was destroyed: its builds went with its directory."""
        self._stores.pop(app.id, None)

    async def run(self, app: App, build: Build, output: BuildOutput) -> Build:
        """The whole pipeline, to the build's finished record (never raises for a failed
        build: its output says why)."""
        say = output.write
        store = self._store(app)
        work = scratch(self.scratch, "build-")
        try:
            reader = self.users.owner(app.id)  # a local path is read as the app's user
            source = await trio.to_thread.run_sync(
                lambda: fetch_source(
                    build.source_url,
                    work,
                    max_bytes=self.settings.slug_max_mb << 20,  # the upload cap
                    owner=reader,
                    local=self.settings.local_sources,
                )
            )
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
                    config_vars=self.releases.config_vars(app),
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
                info.size, warn_mb=self.settings.slug_warn_mb, max_mb=self.settings.slug_max_mb
            )
            if warning:
                say(f" !     {warning}")
            slug = await trio.to_thread.run_sync(  # a copy and an fsync: off the event loop
                lambda: self.slugs.put(info.path, result.process_types, commit=version)
            )
            say(f"       Done: {info.size / 1048576:.1f}M")
            say("-----> Launching...")
            release = await self.releases.create(
                app,
                slug_id=slug.id,
                config_vars=self.releases.config_vars(app),
                description=deploy_description(version),
                wait=True,
            )
            if release.status == "failed":
                for line in (self.releases.output(app, release.version) or "").splitlines():
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
