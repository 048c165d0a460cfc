"""One-off dynos (`dyno run:detached`, `dyno run`): a command on the app's current release, named
`run.N`, run once to its end, listed by `ps` while it runs; detached, its output goes to the app's
logs; attached, to the client of its Terminal (proc/attached.py)."""

from __future__ import annotations

import random
from collections.abc import Mapping

from dynod.errors import Invalid
from dynod.platform.formation import DynoInfo, Formation, Spawn
from dynod.proc.attached import Terminal
from dynod.state.apps import App
from dynod.state.files import heroku_time


class OneOffs:
    """Starts one-offs on the apps' runtimes, which `formation` owns (and lists them from)."""

    def __init__(self, formation: Formation, *, spawn: Spawn) -> None:
        self.formation = formation
        self.spawn = spawn

    async def run_detached(
        self, app: App, command: str, env: Mapping[str, str] | None = None
    ) -> DynoInfo:
        """A one-off dyno whose output goes to logplex; `env` adds to the config vars."""
        return await self._start(app, command, env)

    async def run_attached(
        self, app: App, command: str, env: Mapping[str, str], terminal: Terminal
    ) -> DynoInfo:
        """A one-off dyno on `terminal`: it starts once its client has come (README, "Attached
        one-offs"). COLUMNS and LINES in `env` (the Heroku CLI's) size its terminal."""
        rows, cols = env.get("LINES", ""), env.get("COLUMNS", "")
        if rows.isdigit() and cols.isdigit():
            terminal.resize(int(rows), int(cols))
        return await self._start(app, terminal.take_exit_code_suffix(command), env, terminal)

    async def _start(
        self,
        app: App,
        command: str,
        env: Mapping[str, str] | None,
        terminal: Terminal | None = None,
    ) -> DynoInfo:
        release = self.formation.current(app)
        if release is None or release.slug_id is None:
            raise Invalid("The app has no release with a slug yet: deploy it first.")
        runtime = self.formation.runtime(app)
        types = self.formation.process_types(app)
        if command in types:
            command = types[command]
        name = f"run.{random.randint(1000, 9999)}"
        while name in runtime.manager.one_offs:
            name = f"run.{random.randint(1000, 9999)}"
        plan = runtime.one_off_plan(release, command, name, env or {}, terminal)
        slot = runtime.manager.add_one_off(plan)  # listed by `ps` from now on

        async def run() -> None:
            try:
                await runtime.manager.run_one_off(plan)
            finally:
                self.formation.notify()

        self.spawn(run, f"one-off {app.name} {name}")
        return DynoInfo(
            name, "run", command, "starting", heroku_time(slot.updated_at), release.version
        )
