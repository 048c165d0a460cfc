"""Sleeping, the Heroku way (README, "Sleeping"): an app whose dynos are `eco` (or `free`) sleeps
after `[dynos] idle_after` seconds without a request through the router, and the router wakes
it (its `wake` hook) for the next one, which it holds until a web dyno is up.

Owns when each app last had a request (every request logs one router line: `request`) and the
watch that puts apps to sleep on trio's clock. Sleeping and waking themselves are the dyno
manager's (`Manager.sleep`, `Manager.wake`), recorded in the app's formation record so that an
app asleep when dynod stops is asleep when it starts again.
"""

from __future__ import annotations

import math

import trio

from dynod.core.sizes import sleeps
from dynod.platform.formation import Formation, Spawn
from dynod.state.apps import App, AppStore


class Sleeping:
    def __init__(
        self, apps: AppStore, formation: Formation, *, idle_after: float, spawn: Spawn
    ) -> None:
        self.apps = apps
        self.formation = formation
        self.spawn = spawn
        self.idle_after = idle_after
        self.last: dict[str, float] = {}  # app id -> trio time of its last request (or start)

    def request(self, app: App) -> None:
        """A request reached (or was refused for) the app: its idle time starts again."""
        self.last[app.id] = trio.current_time()

    def wake(self, app: App) -> None:
        """The router's hook: a request for a sleeping app. Never blocks."""
        self.request(app)
        self.formation.wake(app)

    def sleepy(self, app: App) -> bool:
        record = self.apps.formation_record(app)
        return sleeps(record.quantities, record.sizes)

    async def watch(self) -> None:
        """Until cancelled: put each eco app to sleep once it has gone `idle_after` without a
        request, looking again at the next app's deadline, or when a formation changed (a size
        changed: an app may sleep sooner). It never waits on a write."""
        while True:
            changed = self.formation.changed
            now = trio.current_time()
            soonest = now + self.idle_after
            for app in self.apps.all():
                runtime = self.formation.runtimes.get(app.id)
                if runtime is None or runtime.manager.sleeping:
                    continue
                woke = self.formation.woke_at.get(app.id, -math.inf)
                due = max(self.last.setdefault(app.id, now), woke) + self.idle_after
                if due > now:
                    soonest = min(soonest, due)
                elif self.sleepy(app):
                    self.sleep(app)
            with trio.move_on_at(soonest):
                await changed.wait()

    def sleep(self, app: App) -> None:
        """Stop the app's dynos at once; its record says so once written."""
        runtime = self.formation.runtimes.get(app.id)
        if runtime is None:
            return
        runtime.manager.sleep()
        self.formation.notify()
        self.spawn(lambda: self.apps.save_idle(app, True), "recording that an app sleeps")
