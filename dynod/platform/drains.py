"""Log drains, the platform service: each app's drains (durable app state, dynod.state.drains),
adding and removing them as `app[api]` events, and one sender per drain (dynod.logs.drains)
reading the app's logplex ring from the moment it is added or dynod starts."""

from __future__ import annotations

import random
import ssl
from collections import defaultdict
from collections.abc import Awaitable, Callable

import attrs
import trio

from dynod.core.drains import DRAIN_BUFFER, L10, MAX_DRAINS, parse_drain_url, shown_url
from dynod.errors import Invalid, NotFound
from dynod.logs.drains import DrainSender, DrainStatistics, transport_for
from dynod.logs.logplex import Logplex
from dynod.state.apps import App, AppStore
from dynod.state.drains import Drain, load_drains, save_drains

Events = Callable[[App, str], None]  # dynod.platform.events.ApiEvents
Spawn = Callable[[Callable[[], Awaitable[object]], str], None]


@attrs.frozen
class _Running:
    scope: trio.CancelScope
    sender: DrainSender


class Drains:
    """Every app's drains. `start(app)` brings an app's saved drains back (at dynod's start);
    `tls` is the context syslog+tls and https drains verify with (None: the system's CAs)."""

    def __init__(
        self,
        apps: AppStore,
        logplex: Logplex,
        *,
        events: Events,
        spawn: Spawn,
        tls: ssl.SSLContext | None = None,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self.apps = apps
        self.logplex = logplex
        self.events = events
        self.spawn = spawn
        self.tls = tls
        self.draw = draw
        self._drains: dict[str, list[Drain]] = {}  # by app id, as saved
        self._running: dict[str, _Running] = {}  # by drain id
        self._changing: defaultdict[str, trio.Lock] = defaultdict(trio.Lock)  # by app id

    async def start(self, app: App) -> None:
        drains = await trio.to_thread.run_sync(load_drains, self.apps.dir(app))
        self._drains[app.id] = drains
        for drain in drains:
            self._start(app, drain)

    def all(self, app: App) -> list[Drain]:
        return list(self._drains.get(app.id, ()))

    def get(self, app: App, identity: str) -> Drain:
        """A drain by its id, URL or token (Heroku's identities)."""
        for drain in self.all(app):
            if identity in (drain.id, drain.url, drain.token):
                return drain
        raise NotFound(f"Couldn't find drain {identity} on {app.name}: see `dyno drains`.")

    async def add(self, app: App, url: object) -> Drain:
        parse_drain_url(url)
        assert isinstance(url, str)
        async with self._changing[app.id]:
            drains = self.all(app)
            if any(drain.url == url for drain in drains):
                raise Invalid(f"{shown_url(url)} is already a drain of {app.name}.")
            if len(drains) >= MAX_DRAINS:
                raise Invalid(
                    f"{app.name} has {MAX_DRAINS} drains, the most an app may have: remove one "
                    "with `dyno drains:remove URL`."
                )
            drain = Drain.new(url)
            await trio.to_thread.run_sync(save_drains, self.apps.dir(app), [*drains, drain])
            self._drains[app.id] = [*drains, drain]
        self._start(app, drain)  # before the event, so the drain receives its own addition
        self.events(app, f"Add drain {shown_url(url)}")
        return drain

    async def remove(self, app: App, identity: str) -> Drain:
        async with self._changing[app.id]:
            drain = self.get(app, identity)
            rest = [other for other in self.all(app) if other.id != drain.id]
            await trio.to_thread.run_sync(save_drains, self.apps.dir(app), rest)
            self._drains[app.id] = rest
        self.events(app, f"Remove drain {shown_url(drain.url)}")
        self._stop(drain)
        return drain

    def forget(self, app: App) -> None:
        """The app is being destroyed: stop its senders (its directory goes with the app)."""
        for drain in self._drains.pop(app.id, []):
            self._stop(drain)

    def statistics(self, drain: Drain) -> DrainStatistics | None:
        running = self._running.get(drain.id)
        return running.sender.statistics if running else None

    def _start(self, app: App, drain: Drain) -> None:
        target = parse_drain_url(drain.url)
        tail = self.logplex.ring(app.id).tail(buffer=DRAIN_BUFFER, overflow=L10)
        sender = DrainSender(
            tail,
            transport_for(target, drain.token, self.tls),
            name=f"{drain.token} of {app.name}",
            draw=self.draw,
        )
        scope = trio.CancelScope()
        self._running[drain.id] = _Running(scope, sender)

        async def run() -> None:
            with scope, tail:
                await sender.run()

        self.spawn(run, f"drain {drain.token} of {app.name}")

    def _stop(self, drain: Drain) -> None:
        running = self._running.pop(drain.id, None)
        if running is not None:
            running.scope.cancel()
