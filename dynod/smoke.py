"""`dynod smoke`: the CI check that an app builds, releases, boots and serves as it would on the
platform. `dynod serve`'s Platform on a throwaway data directory (no API, so no token), the
router on a free port; one build of DIR, its formation, requests through the router, a summary
and a JUnit report; nothing left behind, however it ends (README, "`dynod smoke`")."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import TextIO

import h11
import trio

from dynod.builds.pipeline import Build
from dynod.builds.source import source_id
from dynod.core.formation import parse_formation
from dynod.core.lifecycle import DynoState
from dynod.core.logline import HEROKU, iso_timestamp
from dynod.errors import DynodError, ParseError
from dynod.platform.root import Platform
from dynod.platform.routing import router_config
from dynod.platform.runtime import sweep_scratch
from dynod.proc.dyno import watch_orphans
from dynod.proc.manager import DynoSlot
from dynod.proc.mounts import available as mounts_available
from dynod.proc.reaper import Reaper
from dynod.smoke_options import PathCheck, SmokeOptions, app_name
from dynod.smoke_report import Check, Outcome, junit, passed, summary
from dynod.state.apps import App
from dynod.state.config import Address, Config
from dynod.state.dirs import fresh_dir
from dynod.state.files import atomic_write

SETTLE = 2.0  # seconds the non-web dynos must stay up
STOP_GRACE = 5.0  # SIGTERM to SIGKILL when the run ends (`dynod start`'s default)
BOOT_MARGIN = 30.0  # past the boot timeout (R10's own clock): unpacking the slug, a stuck start
REQUEST_TIMEOUT = 35.0  # past the router's own 30 s (H12)
LOG_TAIL = 30  # log lines shown with a failure
ORPHAN_WAIT = 0.05  # between killing the dynos' leftover daemons and reaping them


class Failed(Exception):
    def __init__(self, detail: str, log: Sequence[str] = ()) -> None:
        super().__init__(detail)
        self.detail = detail
        self.log = tuple(log)


class Run:
    """One smoke run's checks over a running platform: build (with the release phase), the
    formation, requests through the router, the settle time."""

    def __init__(self, platform: Platform, options: SmokeOptions, out: TextIO) -> None:
        self.platform = platform
        self.options = options
        self.out = out
        self.name = app_name(options.directory)
        self.checks: list[Check] = []
        self.planned = ["build", "release", "boot"]
        self.paths = list(options.paths)
        self.planned += [p.name for p in self.paths] or [PathCheck("/").name]
        self._settle_name = "the other dynos stay up"
        self.planned.append(self._settle_name)
        self.scope = trio.CancelScope()
        self.interrupted: str | None = None
        self.current: tuple[str, float] | None = None  # the check under way, since when
        self.trouble: list[str] = []  # why formation dynos crashed, in order
        self._errors: dict[str, str] = {}  # dyno -> its first `Error R..` line
        self._exits: dict[str, str] = {}  # dyno -> its last `Process exited` line
        self._dynos: set[str] = set()

    def interrupt(self, name: str) -> None:
        self.interrupted = name
        self.scope.cancel()

    async def run(self, router_port: int) -> None:
        with self.scope:
            try:
                await self._checks(router_port)
            except Failed as failure:
                self._finish(Outcome.FAILED, failure.detail, failure.log)
        if self.interrupted and self.current is not None:
            self._finish(Outcome.FAILED, f"interrupted by {self.interrupted}")
        reason = "interrupted" if self.interrupted else "an earlier check failed"
        self.checks += [Check(name, Outcome.SKIPPED, detail=reason) for name in self.planned]

    # ----- the checks

    async def _checks(self, router_port: int) -> None:
        app = await self.platform.create_app(self.name)
        self.platform.ring(app).subscribe(self._hear)
        await self.platform.apps.save_formation(app, {})  # no dynos until the formation below
        if self.options.env:
            await self.platform.releases.set_config(app, dict(self.options.env))
        await self._release(app, await self._build(app))
        await self._boot(app)
        if not self.paths and "web" in self._types(app):
            self.paths = [PathCheck("/")]
        elif not self.paths:
            self.planned.remove(PathCheck("/").name)
        for check in self.paths:
            await self._step(check.name, functools.partial(self._request, app, router_port, check))
        others = self._others()
        if others:
            await self._step(self._settle_name, lambda: self._settle(app, others))

    async def _step(self, name: str, body: Callable[[], Awaitable[str]]) -> None:
        """Run one check; a failure (Failed) goes on up and ends the run."""
        self._begin(name)
        self._finish(Outcome.PASSED, await body())

    def _begin(self, name: str) -> None:
        self.current = (name, time.monotonic())

    def _retitle(self, name: str) -> None:
        """The check under way has a better name now (`release` is `release v3`)."""
        assert self.current is not None
        self.planned[self.planned.index(self.current[0])] = name
        self.current = (name, self.current[1])

    def _finish(self, outcome: Outcome, detail: str = "", log: Sequence[str] = ()) -> None:
        assert self.current is not None
        name, started = self.current
        self.checks.append(Check(name, outcome, time.monotonic() - started, detail, log))
        self.planned.remove(name)
        self.current = None

    async def _build(self, app: App) -> Build:
        """The build as a deploy runs it, its output shown as it comes; the release phase runs
        at its end (timed as the `release` check)."""
        self._begin("build")
        launched = False
        lines: list[str] = []
        async with self._source() as (source, version), self._lent_cache(app):
            build = await self.platform.builds.create(
                app, source_url=source, version=version, buildpacks=list(self.options.buildpacks)
            )
            async for line in self.platform.builds.output(app, build.id):
                lines.append(line)
                self.out.write(f"{line}\n")
                self.out.flush()
                if line.startswith("-----> Launching"):
                    launched = True
                    self._finish(Outcome.PASSED)
                    self._begin("release")
        if not launched:
            said = [line.strip(" !") for line in lines if line.startswith(" !")]
            raise Failed(said[-1] if said else "the build failed", lines[-LOG_TAIL:])
        return self.platform.builds.get(app, build.id)

    async def _release(self, app: App, build: Build) -> None:
        version = build.release_version
        release = self.platform.releases.get(app, version) if version else None
        self._retitle(f"release v{version}")
        if release is not None and release.status == "succeeded":
            self._finish(Outcome.PASSED)
            return
        said = [
            line.text
            for line in self.platform.ring(app).recent(LOG_TAIL * 4)
            if line.text.startswith(f"Release v{version} failed")
        ]
        detail = said[-1] if said else f"release v{version} failed"
        output = self.platform.releases.output(app, version) if version else None
        log = (output or "").splitlines()[-LOG_TAIL:] or self._tail(app)
        raise Failed(detail, log)

    async def _boot(self, app: App) -> None:
        async def boot() -> str:
            types = [t for t in self._types(app) if t != "release"]
            if self.options.formation is None:
                counts = dict.fromkeys(types, 1)
            else:
                try:
                    wanted = parse_formation(self.options.formation, types)
                except ParseError as err:
                    raise Failed(f"-m {self.options.formation}: {err}") from None
                counts = {t: wanted.get(t, 0) for t in types}
            if not any(counts.values()):
                raise Failed("the formation runs no dynos: the app needs a process type")
            self._dynos = {f"{t}.{i}" for t, n in counts.items() for i in range(1, n + 1)}
            others = self._others()
            settle = self.planned.index(self._settle_name)
            if others:
                self._settle_name = f"{', '.join(others)} stay{'s' * (len(others) == 1)} up"
                self.planned[settle] = self._settle_name
            else:
                del self.planned[settle]
            await self.platform.formation.scale(app, counts)
            return await self._until_up(app)

        await self._step("boot", boot)

    async def _until_up(self, app: App) -> str:
        """Every formation dyno `up` (web ones once they listen on their PORT), or why not."""
        manager = self.platform.formation.runtime(app).manager
        limit = self.options.timeout + BOOT_MARGIN
        with trio.move_on_after(limit):
            while True:
                changed = manager.changed
                self._no_trouble(app)
                slots = [manager.slots.get(name) for name in sorted(self._dynos)]
                if all(s is not None and s.state is DynoState.UP for s in slots):
                    return ", ".join(_shown(s) for s in slots if s is not None)
                await changed.wait()
        raise Failed(f"the dynos were not up after {limit:g}s", self._tail(app))

    async def _request(self, app: App, port: int, check: PathCheck) -> str:
        if "web" not in self._types(app):
            raise Failed("the app has no web process type to answer requests")
        host = f"{app.name}.{self.platform.config.router.domain}"
        try:
            status = await _get(port, host, check.path)
        except (OSError, h11.ProtocolError, trio.TooSlowError) as err:
            self._no_trouble(app)
            raise Failed(f"no answer through the router ({err})", self._tail(app)) from None
        self._no_trouble(app)
        if status != check.expect:
            raise Failed(f"answered {status}, expected {check.expect}", self._tail(app))
        return ""

    async def _settle(self, app: App, others: list[str]) -> str:
        manager = self.platform.formation.runtime(app).manager
        slots = [manager.slots[name] for name in others]
        since = max(slot.machine.lifecycle.since for slot in slots)  # trio's clock
        with trio.move_on_at(since + SETTLE):
            while True:
                changed = manager.changed
                self._no_trouble(app)
                await changed.wait()
        self._no_trouble(app)
        return f"({SETTLE:g}s)"

    # ----- what the dynos said

    def _hear(self, source: str, dyno: str, texts: Sequence[str], when: float) -> None:
        if source != HEROKU or dyno not in self._dynos:
            return
        for text in texts:
            if text.startswith("Error R"):
                self._errors.setdefault(dyno, text)
            elif text.startswith("Process exited with status"):
                self._exits[dyno] = text
            elif text.endswith(" to crashed"):
                if dyno in self._errors:
                    self.trouble.append(f"{dyno}: {self._errors[dyno]}")
                else:
                    exited = self._exits.get(dyno, "its process exited")
                    self.trouble.append(f"{dyno} crashed: {exited}")

    def _no_trouble(self, app: App) -> None:
        if self.trouble:
            raise Failed(self.trouble[0], self._tail(app))

    def _tail(self, app: App) -> list[str]:
        return [line.render() for line in self.platform.ring(app).recent(LOG_TAIL)]

    def _others(self) -> list[str]:
        return sorted(d for d in self._dynos if not d.startswith("web."))

    def _types(self, app: App) -> dict[str, str]:
        return self.platform.formation.process_types(app)

    @contextlib.asynccontextmanager
    async def _source(self) -> AsyncIterator[tuple[str, str | None]]:
        """What the build reads, and its source id: DIR itself; or, when dynos run as uids of
        their own (dynod is root) and the platform would read DIR as the app's user, DIR
        packed by this process (as `dyno deploy` packs it: a root's checkout need not be
        readable by every user) into a corner of the scratch directory that only the app's
        user, knowing the names, can pass into."""
        directory = self.options.directory
        if not self.platform.users.switching:
            yield str(directory), None
            return
        version = await trio.to_thread.run_sync(source_id, directory)
        corner = fresh_dir(self.platform.scratch, "source-", 0o711)
        try:
            tarball = corner / f"{uuid.uuid4().hex}.tar.gz"
            try:
                await trio.to_thread.run_sync(_pack, directory, tarball)
            except OSError as err:
                raise Failed(f"cannot read the app: {err}") from None
            yield str(tarball), version
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(shutil.rmtree, corner, True)

    @contextlib.asynccontextmanager
    async def _lent_cache(self, app: App) -> AsyncIterator[None]:
        """--cache: the build cache moves into the app for the build, and back after it."""
        cache = self.options.cache
        if cache is None:
            yield
            return
        inside = self.platform.apps.cache_dir(app)
        await trio.to_thread.run_sync(_move_into, cache, inside)
        try:
            yield
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(_move_into, inside, cache)


def _shown(slot: DynoSlot) -> str:
    return slot.name if slot.port is None or not slot.plan.web else f"{slot.name} :{slot.port}"


def _pack(directory: Path, tarball: Path) -> None:
    """A gzip tarball of the directory's contents at its root, `.git` left out anywhere."""

    def keep(member: tarfile.TarInfo) -> tarfile.TarInfo | None:
        return None if ".git" in Path(member.name).parts else member

    fd = os.open(tarball, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as out, tarfile.open(fileobj=out, mode="w:gz", compresslevel=1) as tar:
        for entry in sorted(directory.iterdir()):
            tar.add(entry, arcname=entry.name, filter=keep)
    os.chmod(tarball, 0o644)  # the umask aside: the app's user reads it


def _move_into(source: Path, dest: Path) -> None:
    """`dest` replaced by `source` (moved: renamed, or copied across filesystems); nothing
    happens without `source` (a cache an interrupted build still holds is lost, not half-kept)."""
    if not source.is_dir():
        return
    shutil.rmtree(dest, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(source, dest)
    except OSError:
        shutil.copytree(source, dest, symlinks=True)
        shutil.rmtree(source, ignore_errors=True)


async def _get(port: int, host: str, path: str) -> int:
    """GET `path` through the router; the status it answers."""
    with trio.fail_after(REQUEST_TIMEOUT):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            client = h11.Connection(h11.CLIENT)
            headers = [("Host", host), ("User-Agent", "dynod-smoke"), ("Connection", "close")]
            request = client.send(h11.Request(method="GET", target=path, headers=headers))
            await stream.send_all((request or b"") + (client.send(h11.EndOfMessage()) or b""))
            while True:
                event = client.next_event()
                if event is h11.NEED_DATA:
                    client.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.Response):
                    return event.status_code
                elif isinstance(event, h11.ConnectionClosed):
                    raise OSError("the router closed the connection without an answer")


# ----- the program


async def smoke(options: SmokeOptions, out: TextIO) -> int:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        started = time.monotonic()
        stamp = iso_timestamp(time.time())
        work = Path(await trio.to_thread.run_sync(lambda: tempfile.mkdtemp(prefix="dynod-smoke-")))
        try:
            run = await _run(options, out, work, signals)
        finally:  # every dyno and build is over: their scratch, then the data directory
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(_remove, work)
    took = time.monotonic() - started
    for line in summary(run.checks, took, run.name):
        out.write(f"{line}\n")
    out.flush()
    if options.junit is not None:
        report = junit(run.checks, took, run.name, stamp)
        await trio.to_thread.run_sync(atomic_write, options.junit, report)
    return 0 if passed(run.checks) and not run.interrupted else 1


def _remove(work: Path) -> None:
    sweep_scratch(work)
    shutil.rmtree(work, ignore_errors=True)


async def _run(options: SmokeOptions, out: TextIO, data: Path, signals: AsyncIterator[int]) -> Run:
    config = Config().replace(
        dynos={"boot_timeout": options.timeout, "stop_timeout": STOP_GRACE},
        router={"listen": Address("127.0.0.1", 0)},
    )
    with Reaper(record=data / "dynos.running", pids_max=config.dynos.pids_max) as reaper:
        if config.dynos.private_tmp:  # tried once, in a child: off the loop, before any dyno
            await trio.to_thread.run_sync(mounts_available)
        platform = Platform(config, data, reaper=reaper)
        run = Run(platform, options, out)
        async with trio.open_nursery() as root:
            root.start_soon(_watch_signals, signals, run, platform)
            root.start_soon(watch_orphans, reaper)
            async with trio.open_nursery() as work:
                await work.start(platform.run)
                port = await _start_router(work, config, platform)
                await run.run(port)
                work.cancel_scope.cancel()  # every dyno gets SIGTERM and its grace
            # Daemons the dynos forked came to this process as their dynos ended: dynod serve's
            # sweep would end them within half a second, but this program ends now.
            reaper.sweep()  # those that kept DYNO are killed, the others end with the reaper
            await trio.sleep(ORPHAN_WAIT)
            reaper.sweep()  # and reaped
            root.cancel_scope.cancel()
    return run


async def _start_router(nursery: trio.Nursery, config: Config, platform: Platform) -> int:
    from router.server import serve as serve_router

    bound = await nursery.start(serve_router, router_config(config.router), platform.router)
    return int(bound[0][1])


async def _watch_signals(signals: AsyncIterator[int], run: Run, platform: Platform) -> None:
    """The first Ctrl-C or SIGTERM ends the run (dynos stop gracefully); a second hurries them."""
    async for signum in signals:
        if run.interrupted is not None:
            for runtime in platform.formation.runtimes.values():
                runtime.manager.hurry.set()
        else:
            run.interrupt(signal.Signals(signum).name)


def main(options: SmokeOptions) -> int:
    try:
        return trio.run(smoke, options, sys.stdout)
    except BaseExceptionGroup as group:
        inner: BaseException = group
        while isinstance(inner, BaseExceptionGroup) and len(inner.exceptions) == 1:
            inner = inner.exceptions[0]
        if isinstance(inner, DynodError):  # shown as one line by the command line's edge
            raise inner from None
        raise
