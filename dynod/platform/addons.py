"""Add-ons as a platform service (docs/platform.md, "Add-ons"): provisioning and removal, each a
release with the add-on's config var (the app's dynos restart on it, the release phase runs),
the servers started before the app's dynos and stopped with dynod, what a crash interrupted
finished or rolled back at the next start, and rollbacks that keep the add-ons' config vars."""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs
import trio

from dynod.addons.postgres import PostgresProvider
from dynod.addons.provider import Instance, Provider, Setup, identifier, secret
from dynod.addons.records import AddonRecord, AddonStore
from dynod.addons.redis import RedisProvider
from dynod.addons.servers import Servers
from dynod.core.logline import HEROKU
from dynod.errors import Conflict, DynodError, Invalid, NotFound
from dynod.logs.logplex import LogRing
from dynod.platform.firewall import Firewall
from dynod.platform.releases import Releases
from dynod.platform.runtime import DynoUsers, Ports
from dynod.proc.reaper import Reaper
from dynod.proc.seams import ManagerSettings
from dynod.state.apps import App, AppStore
from dynod.state.files import atomic_write

ADDON_NAME = re.compile(r"[a-z][a-z0-9-]{1,29}")
ATTACHMENT_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,29}")
HEALTH_TIMEOUT = 60.0  # seconds for a started server to answer
HEALTH_POLL = 0.01
START_WAIT = 10.0  # seconds, at dynod's start, for an app's servers to answer before its dynos
OWNED = "addon-vars.json"  # in the app's directory: every config var its add-ons ever set

Log = Callable[[App, str], None]
SettingsFor = Callable[[tuple[int, int] | None], ManagerSettings]


def providers() -> tuple[Provider, ...]:
    return (RedisProvider(), PostgresProvider())


class Addons:
    """Every app's add-ons: their records, servers and attachments."""

    def __init__(
        self,
        data_dir: Path,
        apps: AppStore,
        releases: Releases,
        users: DynoUsers,
        ports: Ports,
        *,
        user: str,
        log: Log,
        ring: Callable[[App], LogRing],
        settings: SettingsFor,
        reaper: Reaper | None,
        firewall: Callable[[], Firewall | None] = lambda: None,
        kinds: Sequence[Provider] | None = None,
    ) -> None:
        self.store = AddonStore(data_dir)
        self.apps = apps
        self.releases = releases
        self.users = users
        self.ports = ports
        self.user = user
        self.log = log
        self.ring = ring
        self.settings = settings
        self.reaper = reaper
        self.firewall = firewall  # the platform's, once open: closes a server's port to others
        self.kinds = tuple(kinds) if kinds is not None else providers()
        self.servers: dict[str, Servers] = {}  # by app id
        self._guarded: set[int] = set()  # ports the firewall closes to other uids
        self._changing: defaultdict[str, trio.Lock] = defaultdict(trio.Lock)  # by app id
        for record in self.store.all():
            self.ports.taken.add(record.port)  # never a dyno's PORT

    # ----- reading

    def of(self, app: App) -> list[AddonRecord]:
        return self.store.of(app.id)

    def all(self) -> list[AddonRecord]:
        return self.store.all()

    def find(self, app: App | None, name_or_id: str) -> AddonRecord:
        for record in self.store.of(app.id) if app is not None else self.store.all():
            if name_or_id in (record.name, record.id):
                return record
        where = f" of {app.name}" if app is not None else ""
        raise NotFound(f"Couldn't find add-on {name_or_id}{where}: list them with `dyno addons`.")

    def provider(self, service: str) -> Provider:
        for kind in self.kinds:
            if service in (kind.service, *kind.aliases):
                return kind
        known = ", ".join(kind.service for kind in self.kinds)
        raise NotFound(f"Couldn't find add-on service {service}: dynod has {known}.")

    # ----- lifetime

    async def start(self, app: App, nursery: trio.Nursery) -> None:
        """The app's add-on servers, started and answering (before its dynos start)."""
        owner = self.users.owner(app.id)
        servers = Servers(
            self.ring(app), self.settings(owner), self.reaper, bound=self.users.switching
        )
        await nursery.start(servers.run)
        self.servers[app.id] = servers
        started = [r for r in self.store.of(app.id) if r.state == "provisioned"]
        for record in started:
            await self._start(app, servers, record)
        deadline = trio.current_time() + START_WAIT  # a broken server delays dynod only so long
        for record in started:
            answered = False
            with trio.move_on_at(deadline):
                answered = await self._answers(record)
            if not answered:
                self._say(app, record, "The server is not answering yet: dynos start anyway")

    async def interrupted(self, app: App) -> None:
        """Finish or roll back what a crash of dynod cut short: an add-on being provisioned is
        kept if its Attach release was made (else removed with its data); one being destroyed
        is detached (if it still was) and removed."""
        latest = self.apps.ledger(app).latest()
        attached = latest.addons if latest is not None else ()
        for record in self.store.of(app.id):
            if record.state == "provisioning" and record.name in attached:
                await self.store.save(attrs.evolve(record, state="provisioned"))
            elif record.state == "provisioning":
                await self.store.remove(record)
                self.ports.give_back(record.port)
                self.log(app, f"Provisioning {record.name} was interrupted: it was removed")
            elif record.state == "deprovisioning":
                await self._remove(app, record, detach=record.name in attached)

    def close(self, app: App) -> None:
        servers = self.servers.pop(app.id, None)
        if servers is not None:
            servers.close()

    # ----- provisioning and removal

    async def create(
        self, app: App, service: str, *, name: str | None = None, attachment: str | None = None
    ) -> AddonRecord:
        """Provision `service[:plan]` for `app`: its server made, started and answering, then
        attached in a release. Refused at once, nothing made, when its programs are missing."""
        kind_name, _, plan = service.partition(":")
        kind = self.provider(kind_name)
        plan = plan or kind.plans[0]
        if plan not in kind.plans:
            raise Invalid(
                f"{kind.service} has no plan {plan}: use {', '.join(kind.plans)} (or none)."
            )
        problem = kind.missing()
        if problem is not None:
            raise Invalid(problem)
        async with self._changing[app.id]:
            record = await self.store.save(self._new(app, kind, plan, name, attachment))
            attached = False
            try:
                await self._provision(app, kind, record)
                await self._start(app, self._servers(app), record)
                if not await self._answers(record):
                    raise DynodError(
                        f"{record.name} did not answer within {HEALTH_TIMEOUT:g} seconds of its "
                        "start: see `dyno logs`; nothing was attached"
                    )
                await self._own(app, record.var)
                url = kind.config_vars(self._instance(record))[kind.var]
                await self.releases.attachments(
                    app,
                    lambda addons: (*addons, record.name),
                    {record.var: url},
                    f"Attach {record.attachment} ({record.name})",
                )
                attached = True
                record = await self.store.save(attrs.evolve(record, state="provisioned"))
            except BaseException:
                if not attached:
                    with trio.CancelScope(shield=True):
                        await self._forget(app, record)
                raise
        self.log(app, f"Attach {record.attachment} ({record.name}) by user {self.user}")
        return record

    async def destroy(self, app: App, name_or_id: str) -> AddonRecord:
        """Stop the add-on's server, detach it in a release and delete its data."""
        async with self._changing[app.id]:
            record = self.find(app, name_or_id)
            record = await self.store.save(attrs.evolve(record, state="deprovisioning"))
            await self._remove(app, record, detach=True)
        return record

    async def destroy_all(self, app: App) -> None:
        """Every add-on of an app being destroyed: no releases, the app is going."""
        async with self._changing[app.id]:
            for record in self.store.of(app.id):
                record = await self.store.save(attrs.evolve(record, state="deprovisioning"))
                await self._forget(app, record)
        self.close(app)

    def rollback_vars(self, app: App, target: dict[str, str]) -> dict[str, str]:
        """A rollback's config vars: the target release's, but every var an add-on set is as
        it is now (add-ons are not rolled back: an attached one keeps its URL, a destroyed
        one's never comes back)."""
        owned = self._owned(app)
        latest = self.releases.config_vars(app)
        kept = {key: value for key, value in target.items() if key not in owned}
        kept.update({key: value for key, value in latest.items() if key in owned})
        return kept

    def restart(self, app: App, record: AddonRecord) -> None:
        self._servers(app).restart(record.name)

    # ----- steps

    def _new(
        self, app: App, kind: Provider, plan: str, name: str | None, attachment: str | None
    ) -> AddonRecord:
        taken = {record.name for record in self.store.of(app.id)}
        if name is None:
            name = next(
                f"{kind.prefix}-{n}" for n in range(1, 1000) if f"{kind.prefix}-{n}" not in taken
            )
        elif not ADDON_NAME.fullmatch(name):
            raise Invalid(
                f"Add-on name {name!r} is not valid: use 2 to 30 lowercase letters, digits and "
                "dashes, starting with a letter."
            )
        if name in taken:
            raise Conflict(f"{app.name} already has an add-on named {name}: choose another.")
        used = {record.var for record in self.store.of(app.id)} | set(
            self.releases.config_vars(app)
        )
        if attachment is not None:
            attachment = attachment.upper().replace("-", "_")
            if not ATTACHMENT_NAME.fullmatch(attachment):
                raise Invalid(
                    f"Attachment name {attachment!r} is not valid: use letters, digits and "
                    "underscores, starting with a letter (REDIS, CACHE)."
                )
            var = f"{attachment}_URL"
            if var in used:
                raise Conflict(f"{app.name} already has a config var {var}: choose another --as.")
        else:
            var = kind.var
            if var in used:
                var = f"{name.upper().replace('-', '_')}_URL"
        return AddonRecord(
            id=str(uuid.uuid4()),
            name=name,
            app_id=app.id,
            service=kind.service,
            plan=plan,
            state="provisioning",
            port=self.ports.take(),
            password=secret(),
            var=var,
            role=identifier("u"),
            database=identifier("d"),
        )

    async def _provision(self, app: App, kind: Provider, record: AddonRecord) -> None:
        """The server's data made as `[dynos] user` (PostgreSQL's initdb needs a user with an
        account), then handed to the uid the server runs as: the app's."""
        directory = self.store.data(record)
        setup = Setup(self.users.shared, bound=self.users.switching)
        owner = self.users.owner(app.id)

        def make() -> None:
            if setup.owner is not None:
                os.chown(directory, *setup.owner)
            kind.provision(self._instance(record), setup)
            if owner is not None:
                _chown_tree(directory, owner)

        try:
            await trio.to_thread.run_sync(make)
        except DynodError as err:
            raise DynodError(f"Provisioning {record.name} failed: {err}") from None

    async def _start(self, app: App, servers: Servers, record: AddonRecord) -> None:
        """Start the server, its port closed to every uid but dynod's and the app's (when dynod
        is root with nftables, as a dyno's PORT is)."""
        await self._guard(app, record, True)
        kind = self.provider(record.service)
        directory = self.store.data(record)
        command = kind.command(self._instance(record), servers.home(directory))
        servers.start(record.name, directory, command, record.port)

    async def _answers(self, record: AddonRecord) -> bool:
        kind = self.provider(record.service)
        instance = self._instance(record)
        with trio.move_on_after(HEALTH_TIMEOUT):
            while not await kind.healthy(instance):
                await trio.sleep(HEALTH_POLL)
            return True
        return False

    async def _remove(self, app: App, record: AddonRecord, *, detach: bool) -> None:
        servers = self.servers.get(app.id)
        if servers is not None:
            await servers.stop(record.name)
        if detach:
            await self.releases.attachments(
                app,
                lambda addons: tuple(a for a in addons if a != record.name),
                {record.var: None},
                f"Detach {record.attachment} ({record.name})",
            )
        await self.store.remove(record)
        await self._guard(app, record, False)
        self.ports.give_back(record.port)
        self.log(app, f"Detach {record.attachment} ({record.name}) by user {self.user}")

    async def _forget(self, app: App, record: AddonRecord) -> None:
        """Stop the server (if it runs) and delete the add-on: nothing of it is left."""
        servers = self.servers.get(app.id)
        if servers is not None and servers.running(record.name):
            await servers.stop(record.name)
        await self.store.remove(record)
        await self._guard(app, record, False)
        self.ports.give_back(record.port)

    async def _guard(self, app: App, record: AddonRecord, closed: bool) -> None:
        firewall, owner = self.firewall(), self.users.owner(app.id)
        if firewall is None or owner is None or closed == (record.port in self._guarded):
            return
        try:
            if closed:
                await firewall.guard(record.port, owner[0])
                self._guarded.add(record.port)
            else:
                self._guarded.discard(record.port)
                await firewall.release(record.port, owner[0])
        except DynodError as err:  # its password still protects it
            self._say(app, record, f"The firewall refused a change for port {record.port}: {err}")

    def _servers(self, app: App) -> Servers:
        servers = self.servers.get(app.id)
        if servers is None:
            raise DynodError(f"{app.name}'s add-on servers are not running: is dynod stopping?")
        return servers

    def _instance(self, record: AddonRecord) -> Instance:
        return Instance(
            record.name,
            self.store.data(record),
            record.port,
            record.password,
            record.role,
            record.database,
        )

    def _say(self, app: App, record: AddonRecord, text: str) -> None:
        self.ring(app).publish(HEROKU, record.name, [text], time.time())

    # ----- the config vars add-ons set (kept by rollbacks)

    def _owned(self, app: App) -> set[str]:
        path = self.apps.dir(app) / OWNED
        try:
            return set(json.loads(path.read_text()))
        except FileNotFoundError:
            return set()

    async def _own(self, app: App, var: str) -> None:
        owned = self._owned(app)
        if var not in owned:
            data = json.dumps(sorted(owned | {var})).encode()
            await trio.to_thread.run_sync(atomic_write, self.apps.dir(app) / OWNED, data)


def _chown_tree(root: Path, owner: tuple[int, int]) -> None:
    os.chown(root, *owner)
    for parent, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            os.chown(os.path.join(parent, name), *owner, follow_symlinks=False)
