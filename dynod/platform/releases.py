"""Releases and config vars: each app's release ledger read and written, config:set, rollback,
the release phase (a `release` command that must succeed before its release becomes current),
its output kept beside the ledger, and the releases a stop of dynod cut short."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

import trio

from dynod.core.config_vars import INITIAL_DESCRIPTION, apply_config_changes, rollback_description
from dynod.core.logline import APP
from dynod.errors import Invalid, NotFound
from dynod.logs.logplex import Logplex
from dynod.platform.events import ApiEvents
from dynod.slugs.model import Slug
from dynod.slugs.store import SlugStore
from dynod.state.apps import App, AppStore
from dynod.state.ledger import Release

RELEASE_PHASE_TIMEOUT = 3600.0

# Runs `command` as the one-off dyno `name` on the release; its exit status.
RunCommand = Callable[[App, Release, str, str], Awaitable[int]]
# A release became current (with its slug, None for a release without one): run it.
Released = Callable[[App, Slug | None], Awaitable[None]]
Log = Callable[[App, str], None]
Spawn = Callable[[Callable[[], Awaitable[object]], str], None]
# What a new release is made of, from the latest release: (slug id, config vars, description).
Compose = Callable[[Release | None], tuple[str | None, dict[str, str], str]]
# The add-ons of a new release, from the latest release's.
Attached = Callable[[tuple[str, ...]], tuple[str, ...]]
# The config vars a rollback makes, from the target release's: the add-ons' stay as they are.
KeepAddons = Callable[[App, dict[str, str]], dict[str, str]]


class Releases:
    """The release history of every app. A new release is made under the app's own lock, from
    the latest release, so two config:sets at once both land (one after the other)."""

    def __init__(
        self,
        apps: AppStore,
        slugs: SlugStore,
        logplex: Logplex,
        *,
        user: str,
        log: Log,
        run_command: RunCommand,
        released: Released,
        spawn: Spawn,
        keep_addons: KeepAddons | None = None,
    ) -> None:
        self.apps = apps
        self.keep_addons = keep_addons
        self.slugs = slugs
        self.logplex = logplex
        self.user = user
        self.log = log
        self.events = ApiEvents(log, user)
        self.run_command = run_command
        self.released = released
        self.spawn = spawn
        self._making: defaultdict[str, trio.Lock] = defaultdict(trio.Lock)  # by app id

    # ----- reading

    def current(self, app: App) -> Release | None:
        return self.apps.ledger(app).current()

    def all(self, app: App) -> list[Release]:
        return self.apps.ledger(app).releases()

    def get(self, app: App, version_or_id: str | int) -> Release:
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

    def _slug_to_build_on(self, app: App) -> str | None:
        """The slug a config change or an add-on's release runs: the newest release's that did
        not fail. While a deploy's release phase is pending that is the deploy's slug, not the
        current one (a config:set then would otherwise release the slug before it, or none)."""
        found = (r for r in reversed(self.all(app)) if r.status != "failed")
        return next((r.slug_id for r in found), None)

    def output(self, app: App, version: int) -> str | None:
        """What the release phase of `version` printed (None when it had none)."""
        path = self._output_path(app, version)
        return path.read_text() if path.exists() else None

    # ----- writing

    async def initial(self, app: App) -> Release:
        """v1 of a new app: no slug, no config vars."""
        release = Release(
            version=1, description=INITIAL_DESCRIPTION, user=self.user, status="succeeded"
        )
        await self.apps.ledger(app).append(release)
        return release

    async def set_config(self, app: App, changes: Mapping[str, object]) -> Release:
        def compose(latest: Release | None) -> tuple[str | None, dict[str, str], str]:
            new_vars, description = apply_config_changes(
                latest.config_vars if latest else {}, changes
            )
            return self._slug_to_build_on(app), new_vars, description

        return await self._create(app, compose)

    async def rollback(self, app: App, version_or_id: str | int) -> Release:
        target = self.get(app, version_or_id)
        if target.slug_id is None:
            raise Invalid(
                f"v{target.version} has no slug to roll back to: pick a release made by a deploy."
            )
        return await self.create(
            app,
            slug_id=target.slug_id,
            config_vars=self._keep_addons(app, dict(target.config_vars)),
            description=rollback_description(target.version),
        )

    def _keep_addons(self, app: App, config_vars: dict[str, str]) -> dict[str, str]:
        return self.keep_addons(app, config_vars) if self.keep_addons else config_vars

    async def attachments(
        self,
        app: App,
        addons: Attached,
        changes: Mapping[str, str | None],
        description: str,
    ) -> Release:
        """An add-on attached or detached: its config var set (or removed, None) and the
        release's add-ons changed, in one release on the current slug."""

        def compose(latest: Release | None) -> tuple[str | None, dict[str, str], str]:
            new_vars = dict(latest.config_vars) if latest else {}
            for key, value in changes.items():
                if value is None:
                    new_vars.pop(key, None)
                else:
                    new_vars[key] = value
            return self._slug_to_build_on(app), new_vars, description

        return await self._create(app, compose, addons=addons)

    async def create(
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
        return await self._create(
            app, lambda _: (slug_id, dict(config_vars), description), wait=wait
        )

    async def _create(
        self, app: App, compose: Compose, *, wait: bool = False, addons: Attached | None = None
    ) -> Release:
        async with self._making[app.id]:
            ledger = self.apps.ledger(app)
            latest = ledger.latest()
            slug_id, config_vars, description = compose(latest)
            slug = self.slugs.get(slug_id) if slug_id else None
            phase = slug is not None and "release" in slug.process_types
            release = Release(
                version=ledger.next_version(),
                description=description,
                user=self.user,
                status="pending" if phase else "succeeded",
                slug_id=slug_id,
                config_vars=config_vars,
                addons=(addons or _same)(latest.addons if latest else ()),  # type: ignore[arg-type]
            )
            await ledger.append(release)
        # Heroku's order: what was done, then the release it made.
        self.events(app, description)
        self.events(app, f"Release v{release.version} created")
        if not phase:
            await self.released(app, slug)
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
        name = f"release.{release.version}"
        output: list[str] = []

        def keep(source: str, dyno: str, texts: Sequence[str], when: float) -> None:
            if dyno != name:
                return
            # The command's own output, and the dyno manager's errors (R17: a refused slug).
            output.extend(t for t in texts if source == APP or t.startswith("Error R"))

        unsubscribe = self.logplex.ring(app.id).subscribe(keep)
        status = 1
        try:
            with trio.move_on_after(RELEASE_PHASE_TIMEOUT) as limit:
                status = await self.run_command(app, release, slug.process_types["release"], name)
            if limit.cancelled_caught:
                output.append(
                    f"The release command ran over {RELEASE_PHASE_TIMEOUT / 60:g} "
                    "minutes and was stopped"
                )
        finally:
            unsubscribe()
        path = self._output_path(app, release.version)
        await trio.to_thread.run_sync(path.write_text, "".join(f"{t}\n" for t in output))
        ok = status == 0
        ledger = self.apps.ledger(app)
        release = await ledger.set_status(release.version, "succeeded" if ok else "failed")
        if ok:
            await self.released(app, slug)
        else:
            self.log(
                app,
                f"Release v{release.version} failed: the release command exited with status "
                f"{status}",
            )
        return release

    async def interrupted(self, app: App) -> None:
        """A release phase that dynod's stop or death cut short can never finish: it failed, and
        the release before it runs on (as when its command fails)."""
        ledger = self.apps.ledger(app)
        for release in ledger.releases():
            if release.status == "pending":
                path = self._output_path(app, release.version)
                await trio.to_thread.run_sync(_note_interrupted, path)
                await ledger.set_status(release.version, "failed")

    def _output_path(self, app: App, version: int) -> Path:
        directory = self.apps.dir(app) / "release-output"
        directory.mkdir(exist_ok=True)
        return directory / f"v{version}.log"


def _same(addons: tuple[str, ...]) -> tuple[str, ...]:
    return addons


def _note_interrupted(path: Path) -> None:
    with path.open("a") as output:
        output.write(
            "dynod stopped while the release command ran, so this release failed: "
            "release again (deploy, config:set or releases:rollback)\n"
        )
