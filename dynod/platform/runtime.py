"""Dynos made from slugs: each dyno's fresh directory, a random free PORT at each start, and one
dyno manager per app running the formation on the app's current release."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pwd
import random
import shutil
import socket
import tempfile
import uuid
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from dynod.errors import DynodError, NotFound
from dynod.logs.logplex import LogRing
from dynod.platform.firewall import Firewall
from dynod.proc.attached import Terminal
from dynod.proc.manager import DynoSlot, Manager
from dynod.proc.memory import memory_settings
from dynod.proc.mounts import Overlay, overlays_work
from dynod.proc.ports import session_members
from dynod.proc.reaper import Reaper
from dynod.proc.seams import DynoPlan, Home, ManagerSettings, Processes
from dynod.slugs.model import Slug
from dynod.slugs.store import SlugStore
from dynod.state.config import DynosConfig, PortRange
from dynod.state.dirs import exposed, fresh_dir, ours, problem_with
from dynod.state.ledger import Release

_log = logging.getLogger("dynod.platform")


class SlugWorkspace:
    """Every dyno gets a fresh directory of its own made from the release's slug, deleted when
    the dyno ends: an overlay of the slug's shared, read-only tree and an upper directory of its
    own where dynod can mount one (root, overlayfs), else a copy (`cp --reflink=auto`: shared
    blocks where the filesystem can). README, "How a dyno runs"."""

    def __init__(
        self,
        slugs: SlugStore,
        scratch: Path,
        owner: tuple[int, int] | None,
        *,
        overlays: bool = True,
    ) -> None:
        self.slugs = slugs
        self.scratch = scratch
        self.owner = owner
        self.overlays = overlays  # False: copies, even where overlays would work
        self._checked: bool | None = None

    @asynccontextmanager
    async def checkout(self, plan: DynoPlan) -> AsyncIterator[Home]:
        if plan.slug_id is None:
            raise NotFound(f"{plan.name} has no slug to run: deploy the app first")
        slug = self.slugs.get(plan.slug_id)
        dest = self.scratch / f"{plan.name}-{uuid.uuid4().hex[:12]}"
        layers = dest.with_name(f"{dest.name}.overlay")  # upper and work: dynod's, 0700
        try:
            if await self._overlays_work():
                async with self._lent(slug) as tree:
                    overlay = await trio.to_thread.run_sync(self._make_overlay, tree, dest, layers)
                    yield Home(dest, overlay)
            else:
                await trio.to_thread.run_sync(
                    lambda: self.slugs.materialize(slug, dest, owner=self.owner)
                )
                os.chmod(dest, 0o700)  # the dyno's alone: not another app's dynos'
                yield Home(dest)
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(_remove, dest, layers)

    async def _overlays_work(self) -> bool:
        if self._checked is None:
            self._checked = self.overlays and await trio.to_thread.run_sync(
                overlays_work, self.slugs.trees, self.scratch
            )
        return self._checked

    @asynccontextmanager
    async def _lent(self, slug: Slug) -> AsyncIterator[Path]:
        lending = self.slugs.lend(slug, self.owner)
        tree = await trio.to_thread.run_sync(lending.__enter__)  # may unpack: a thread's work
        try:
            yield tree
        finally:
            lending.__exit__(None, None, None)

    def _make_overlay(self, tree: Path, dest: Path, layers: Path) -> Overlay:
        dest.mkdir(mode=0o700)  # the mount point: fails when taken, as a copy's would
        layers.mkdir(mode=0o700)
        upper, work = layers / "upper", layers / "work"
        upper.mkdir(mode=0o700)  # the merged directory's own owner and mode come from upper
        work.mkdir(mode=0o700)
        if self.owner is not None:
            os.chown(dest, *self.owner)
            os.chown(upper, *self.owner)
        return Overlay(os.fsencode(tree), os.fsencode(upper), os.fsencode(work), os.fsencode(dest))


def _remove(*paths: Path) -> None:
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)


class Ports:
    """Random free TCP ports from the configured range, one per dyno process: never two dynos
    on one, never one another process holds, and never one given back a moment ago (a process
    squatting a dyno's port while it restarts finds the dyno on a fresh one: docs/platform.md,
    "Ports")."""

    def __init__(self, span: PortRange, rng: random.Random | None = None) -> None:
        self.span = span
        self.rng = rng or random.Random()
        self.taken: set[int] = set()
        self.resting: deque[int] = deque(maxlen=min(RESTING, len(span) // 2))

    def take(self) -> int:
        for _ in range(200):
            port = self.rng.randint(self.span.first, self.span.last)
            if port not in self.taken and port not in self.resting and _bindable(port):
                self.taken.add(port)
                return port
        raise DynodError(f"No free port in {self.span} after 200 tries: widen [dynos] port_range")

    def give_back(self, port: int) -> None:
        if port in self.taken:
            self.taken.remove(port)
            self.resting.append(port)


RESTING = 64  # how many given-back ports are not handed out again yet


class AppPorts:
    """One app's dynos' ports: from the shared pool, and while a dyno holds one, closed by the
    firewall (when there is one) to everyone but dynod and the app's uid."""

    def __init__(self, pool: Ports, firewall: Firewall | None, uid: int | None) -> None:
        self.pool = pool
        self.firewall = firewall
        self.uid = uid  # None: dynos run as dynod itself (not root), nothing to close

    async def take(self) -> int:
        port = self.pool.take()
        if self.firewall is not None and self.uid is not None:
            try:
                await self.firewall.guard(port, self.uid)
            except DynodError:
                self.pool.give_back(port)
                raise
        return port

    async def give_back(self, port: int) -> None:
        if self.firewall is not None and self.uid is not None:
            try:
                await self.firewall.release(port, self.uid)
            except DynodError as err:  # the app's uid may still reach it: never hand it out
                _log.warning("dynod: port %d is retired: %s", port, err)
                return
        self.pool.give_back(port)


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class DynoUsers:
    """Who each app's dynos run as. When dynod is root: a uid of the app's own from `[dynos]
    uid_range` (none of them needs an account), in the group of `[dynos] user`, so that no
    app's dyno can read another app's config through /proc/PID/environ, nor its files; or
    `user` itself for every app when `uid_range` is "". When dynod is not root: dynod's own
    user (None: nothing to switch to).

    An app's uid comes from its id, so it stays the same from one start to the next unless two
    apps' ids land on the same uid (the later one then takes the next free uid)."""

    def __init__(self, config: DynosConfig, *, root: bool | None = None) -> None:
        root = os.geteuid() == 0 if root is None else root
        self.shared: tuple[int, int] | None = None
        self.span = config.uid_range if root else None
        if root:
            entry = pwd.getpwnam(config.user)
            self.shared = entry.pw_uid, entry.pw_gid
        self._owners: dict[str, tuple[int, int]] = {}

    @property
    def switching(self) -> bool:
        """Dynos run as another user than dynod."""
        return self.shared is not None

    def owner(self, app_id: str) -> tuple[int, int] | None:
        if self.shared is None or self.span is None:
            return self.shared
        found = self._owners.get(app_id)
        if found is not None:
            return found
        first, last = self.span
        size = last - first + 1
        taken = {uid for uid, _ in self._owners.values()}
        if len(taken) >= size:
            raise RuntimeError(f"every uid of [dynos] uid_range {first}-{last} is taken: widen it")
        start = int.from_bytes(hashlib.sha256(app_id.encode()).digest()[:8], "big") % size
        uid = next(
            first + (start + i) % size
            for i in range(size)
            if first + (start + i) % size not in taken
        )
        self._owners[app_id] = found = (uid, self.shared[1])
        return found


def manager_settings(
    config: DynosConfig, max_line_bytes: int, owner: tuple[int, int] | None
) -> ManagerSettings:
    return ManagerSettings(
        ladder=config.restart_ladder,
        stop_timeout=config.stop_timeout,
        boot_timeout=config.boot_timeout,
        cycle_after=config.cycle_after,
        cycle_jitter=config.cycle_jitter,
        max_line_bytes=max_line_bytes,
        owner=owner,
        private_tmp=config.private_tmp,
        **memory_settings(config, kill=True),
    )


class AppRuntime:
    """One app's dynos: the formation on the current release, plus one-offs."""

    def __init__(
        self,
        app_id: str,
        ring: LogRing,
        workspace: SlugWorkspace,
        ports: Ports,
        settings: ManagerSettings,
        reaper: Reaper | None,
        firewall: Firewall | None = None,
    ) -> None:
        self.app_id = app_id
        self.ring = ring
        launcher = Processes(reaper, members=session_members)  # PORT must be the dyno's own
        own = AppPorts(ports, firewall, settings.owner[0] if settings.owner else None)
        self.manager = Manager(ring, workspace, settings, launcher=launcher, ports=own)
        self.release: Release | None = None
        self.process_types: Mapping[str, str] = {}
        self.route_scope = trio.CancelScope()  # the router's feed of this app's web dynos

    def plans(
        self, release: Release, process_types: Mapping[str, str], formation: Mapping[str, int]
    ) -> list[DynoPlan]:
        plans = []
        for kind, count in formation.items():
            if kind not in process_types or kind == "release":
                continue
            for i in range(1, count + 1):
                plans.append(
                    DynoPlan(
                        f"{kind}.{i}",
                        process_types[kind],
                        release.config_vars,
                        slug_id=release.slug_id,
                    )
                )
        return plans

    def apply(
        self,
        release: Release | None,
        process_types: Mapping[str, str],
        formation: Mapping[str, int],
    ) -> None:
        """Run exactly `formation` on `release` (dynos whose release changed restart on it)."""
        self.release = release
        self.process_types = process_types
        plans = (
            []
            if release is None or release.slug_id is None
            else self.plans(release, process_types, formation)
        )
        self.manager.reconcile(plans)

    def one_off_plan(
        self,
        release: Release,
        command: str,
        name: str,
        env: Mapping[str, str] | None = None,
        terminal: Terminal | None = None,
    ) -> DynoPlan:
        config_vars = {**release.config_vars, **env} if env else release.config_vars
        return DynoPlan(
            name,
            command,
            config_vars,
            slug_id=release.slug_id,
            release_version=release.version,
            terminal=terminal,
        )

    def web_dynos(self) -> list[DynoSlot]:
        return self.manager.web_dynos()


_RECORD = "scratch.path"  # in the data directory: the scratch directory of the last dynod


def scratch_dir(data_dir: Path, *, passable: bool) -> Path:
    """This dynod's scratch directory, where its dyno directories and build work directories
    live: made fresh for this run (never one that existed before: a planted one is never
    taken), checked, and recorded in `<data>/scratch.path` for the next dynod's sweep (README,
    "`dynod serve`"). Inside the 0700 data directory (`scratch/<pid>-<random>`, 0700) when
    dynos run as dynod's own user. When they run as uids of their own (`passable`), which
    cannot pass through the data directory, `dynod-<random>` in the system's temporary
    directory, 0711: each dyno passes through to its own directory, and lists or makes nothing."""
    if passable:
        parent = Path(tempfile.gettempdir()).resolve()
        problem = exposed(parent, passable=True)
        fix = "set TMPDIR to a directory every user can pass through but not change, as /tmp"
    else:
        parent = data_dir / "scratch"
        with contextlib.suppress(FileExistsError):
            parent.mkdir(mode=0o700)
        problem = problem_with(parent, 0o700)
        fix = f"remove {parent} (dynod makes it again)"
    if problem is not None:
        raise DynodError(f"cannot make dynod's scratch directory in {parent}: {problem}; {fix}")
    path = fresh_dir(
        parent, "dynod-" if passable else f"{os.getpid()}-", 0o711 if passable else 0o700
    )
    record = data_dir / f".{_RECORD}.{uuid.uuid4().hex[:12]}"
    record.write_text(f"{path}\n")  # a hint for the sweep: no fsync on the event loop
    os.replace(record, data_dir / _RECORD)
    return path


def sweep_scratch(data_dir: Path) -> list[Path]:
    """Delete the scratch directory this data directory's record names: at start, what an
    earlier dynod left (one killed by SIGKILL cannot delete its own), after its leftover
    dynos were ended; at exit, this run's, however it ended. Only a directory this dynod's
    uid made is deleted (never a symlink, never followed): one found at a recorded name but
    made by someone else is left alone."""
    named = []
    with contextlib.suppress(FileNotFoundError):
        recorded = Path((data_dir / _RECORD).read_text().strip())
        if recorded.name.startswith("dynod-"):  # a name scratch_dir gives, never `/` or a typo
            named.append(recorded)
    if ours(data_dir / "scratch"):
        named.extend(sorted((data_dir / "scratch").iterdir()))
    swept = []
    for path in named:
        if path.is_absolute() and ours(path):
            shutil.rmtree(path, ignore_errors=True)  # fd-based: follows no symlink inside
            swept.append(path)
    (data_dir / _RECORD).unlink(missing_ok=True)
    return swept
