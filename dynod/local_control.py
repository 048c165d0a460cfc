"""Steering a running `dynod start` (README, "Steering a running `dynod start`"): its formation,
restarts, stops and one-off dynos as the run's API asks (the `LocalRun` of dynod/api/local.py),
on the same dyno manager, and `steer`, which serves that API on the run's private socket. The
API's modules load at the first connection: a run nobody steers starts as fast as before.
"""

from __future__ import annotations

import os
import random
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import attrs
import trio

from dynod.api.local_run import LocalDyno, LocalType
from dynod.core.formation import quantity
from dynod.core.logline import HEROKU
from dynod.core.procfile import Procfile
from dynod.core.supervisor import Restart
from dynod.errors import Conflict, Invalid, NotFound
from dynod.logs.logplex import LogRing
from dynod.proc.attached import Terminal
from dynod.proc.manager import DynoSlot, Manager
from dynod.proc.seams import DynoPlan, local_plans


@attrs.define(eq=False)
class LocalControl:
    """The run's app as its API sees it. `counts` is how many of each Procfile type run now."""

    name: str
    root: Path
    ring: LogRing
    manager: Manager
    procfile: Procfile
    counts: dict[str, int]
    env: Mapping[str, str]  # the app's .env: config vars, one-offs' too
    inherit: Mapping[str, str]
    home: Path
    port_of: Callable[[str, int], int]  # foreman's PORT for (type, instance)
    port_free: Callable[[int], bool]
    stopping: trio.Event
    nursery: trio.Nursery | None = None  # where one-offs run (steer sets it)
    one_offs: set[str] = attrs.Factory(set)

    # ----- what the API reads

    def config_vars(self) -> Mapping[str, str]:
        return self.env

    def formation(self) -> list[LocalType]:
        return [
            LocalType(kind, self.counts.get(kind, 0), self.procfile.command(kind))
            for kind in self.procfile.formation_names
        ]

    def dynos(self) -> list[LocalDyno]:
        slots = [*self.manager.slots.values()]
        slots += [slot for slot in self.manager.one_offs.values() if slot.plan.type == "run"]
        return sorted((_shown(slot) for slot in slots), key=lambda dyno: _order(dyno.name))

    # ----- what it changes

    def scale(self, counts: Mapping[str, object]) -> list[LocalType]:
        self._check_steerable()
        types = self.procfile.formation_names
        new = dict(self.counts)
        for kind, value in counts.items():
            if kind not in types:
                raise NotFound(
                    f"Couldn't find that process type ({kind}): the Procfile's types are "
                    f"{', '.join(types)}."
                )
            new[kind] = quantity(value, self.counts.get(kind, 0), kind)
        plans = self._plans(new)
        for plan in plans:
            if plan.name in self.manager.slots or plan.port is None:
                continue
            if plan.port > 65535:
                raise Invalid(f"{plan.name} would listen on port {plan.port}, above 65535.")
            if plan.web and not self.port_free(plan.port):
                raise Conflict(
                    f"port {plan.port} for {plan.name} is in use by another program: stop it, "
                    "then scale again"
                )
        self.counts = {kind: count for kind, count in new.items() if count}
        self.manager.reconcile(plans)
        scaled = " ".join(f"{kind}@{new[kind]}:Standard-1X" for kind in counts)
        user = os.environ.get("USER") or "you"
        self.ring.publish(HEROKU, "api", [f"Scaled to {scaled} by user {user}"], time.time())
        return [entry for entry in self.formation() if entry.type in counts]

    def restart(self, target: str | None) -> None:
        self._check_steerable()
        slots = self.manager.slots
        names = list(slots) if target is None else _named(slots, target)
        if target is not None and not names:
            raise NotFound(f"Couldn't find dyno or process type {target}: see `dyno ps`.")
        for name in names:
            self.manager.restart_dyno(name)

    def stop(self, target: str) -> None:
        self._check_steerable()
        names = _named(self.manager.slots, target)
        one_offs = [self.manager.one_offs[name] for name in _named(self.one_offs, target)]
        if not names and not one_offs:
            raise NotFound(f"Couldn't find dyno or process type {target}: see `dyno ps`.")
        for name in names:
            self.manager.restart_dyno(name, Restart.STOP)
        for slot in one_offs:
            slot.scope.cancel()  # its process gets the stop sequence

    def run_detached(self, command: str, env: Mapping[str, str]) -> LocalDyno:
        return self._start_one_off(command, env, None)

    def run_attached(self, command: str, env: Mapping[str, str], terminal: Terminal) -> LocalDyno:
        rows, cols = env.get("LINES", ""), env.get("COLUMNS", "")
        if rows.isdigit() and cols.isdigit():
            terminal.resize(int(rows), int(cols))
        return self._start_one_off(terminal.take_exit_code_suffix(command), env, terminal)

    def _start_one_off(
        self, command: str, env: Mapping[str, str], terminal: Terminal | None
    ) -> LocalDyno:
        self._check_steerable()
        assert self.nursery is not None, "steer is not running"
        if command in self.procfile:
            command = self.procfile.command(command)
        name = f"run.{random.randint(1000, 9999)}"
        while name in self.manager.one_offs:
            name = f"run.{random.randint(1000, 9999)}"
        plan = attrs.evolve(self.one_off_plan(name, command, env), terminal=terminal)
        slot = self.manager.add_one_off(plan)  # listed by `ps` from now on
        self.one_offs.add(name)
        self.nursery.start_soon(self._run_one_off, plan, name=f"one-off {name}")
        return _shown(slot)

    def one_off_plan(self, name: str, command: str, env: Mapping[str, str]) -> DynoPlan:
        """A one-off in the app directory with the app's .env, `env` over it (an attached one-off
        runs it on its Terminal)."""
        return DynoPlan(name, command, {**self.env, **env}, inherit=self.inherit, home=self.home)

    async def _run_one_off(self, plan: DynoPlan) -> None:
        try:
            await self.manager.run_one_off(plan)
        finally:
            self.one_offs.discard(plan.name)

    # ----- helpers

    def _plans(self, counts: Mapping[str, int]) -> list[DynoPlan]:
        plans = local_plans(
            {kind: count for kind, count in counts.items() if count},
            {kind: self.procfile.command(kind) for kind in counts},
            port_of=self.port_of,
            config_vars=self.env,
            inherit=self.inherit,
        )
        return [attrs.evolve(plan, home=self.home) for plan in plans]

    def _check_steerable(self) -> None:
        if self.stopping.is_set() or self.manager.crash is not None:
            raise Conflict("This local run is stopping: start it again with `dynod start`.")
        if any(slot.plan.type == "release" for slot in self.manager.one_offs.values()):
            raise Conflict(
                "The release command is still running: steer the formation once it has started."
            )


def _shown(slot: DynoSlot) -> LocalDyno:
    plan = slot.plan
    return LocalDyno(
        plan.name,
        plan.type,
        plan.command,
        slot.state.value,
        slot.updated_at,
        memory=slot.memory,
        exit_status=slot.last_status,
        next_start_at=slot.next_start,
    )


def _named(dynos: Iterable[str], target: str) -> list[str]:
    """The dyno `target` (web.1), or every dyno of the process type `target` (web)."""
    return [n for n in dynos if n == target or n.rsplit(".", 1)[0] == target]


def _order(name: str) -> tuple[str, int]:
    kind, _, number = name.rpartition(".")
    return (kind, int(number) if number.isdigit() else 0)


async def steer(listener: socket.socket, control: LocalControl) -> None:
    """Serve the run's API on its claimed socket, from the first connection until cancelled;
    one-offs stop with the run."""
    await trio.lowlevel.wait_readable(listener)
    from dynod.api.local import serve_local_api  # h11 and the API: only once someone steers

    async with trio.open_nursery() as nursery:
        control.nursery = nursery
        nursery.start_soon(_stop_one_offs, control)
        await serve_local_api(listener, control)


async def _stop_one_offs(control: LocalControl) -> None:
    """A requested stop ends the one-offs with the formation (each gets its stop sequence)."""
    await control.stopping.wait()
    for name in list(control.one_offs):
        slot = control.manager.one_offs.get(name)
        if slot is not None:
            slot.scope.cancel()
