"""`dynod serve`: the platform, the API and the router in one trio program under one root nursery.

Owns the start-up (config from dynod.toml and flags, the data directory, the API token and the
`api-url` file) and the shutdown: the first SIGINT or SIGTERM stops every dyno gracefully, a
second one hurries them (SIGKILL at once).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import attrs
import trio

from dynod.api.routes import Api
from dynod.api.server import serve_http
from dynod.errors import DynodError, UsageError
from dynod.platform.root import Platform
from dynod.platform.routing import router_config
from dynod.platform.runtime import sweep_scratch
from dynod.proc.dyno import watch_orphans
from dynod.proc.mounts import available as mounts_available
from dynod.proc.reaper import Reaper
from dynod.proc.rendezvous import Rendezvous
from dynod.state.ca import server_context
from dynod.state.config import Address, Config, resolve_data_dir
from dynod.state.dirs import exposed, problem_with
from dynod.state.files import atomic_write


@attrs.frozen
class ServeOptions:
    config: Path | None = None
    data: Path | None = None
    api: Address | None = None
    router: Address | None = None


def options(
    config: Path | None, data: Path | None, api: str | None, router: str | None
) -> ServeOptions:
    """The command line's flags, checked: a malformed HOST:PORT is a usage error."""
    return ServeOptions(config, data, _address("--api", api), _address("--router", router))


def _address(flag: str, value: str | None) -> Address | None:
    if value is None:
        return None
    try:
        return Address.parse(value)
    except ValueError as err:
        raise UsageError(f"{flag} {value}: {err}; give HOST:PORT such as 127.0.0.1:5050") from None


def load_config(options: ServeOptions, data_dir: Path) -> Config:
    """dynod.toml from `--config`, else from the data directory when there is one; flags win."""
    path = options.config or data_dir / "dynod.toml"
    config = Config.from_toml(path) if options.config or path.is_file() else Config()
    if options.api is not None:
        config = config.replace(api={"listen": options.api})
    if options.router is not None:
        config = config.replace(router={"listen": options.router})
    return config


def prepare_data_dir(path: Path) -> Path:
    """The data directory, made if missing, as a path without symlinks (none can be swapped
    later), once checked: dynod's own, mode 0700, and no directory above it that another user
    could change (README, "`dynod serve`")."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = path.resolve()
    problem = problem_with(path, 0o700)
    if problem is not None:
        fix = f"chmod 700 {path}" if "mode" in problem else "give --data a directory of your own"
        raise DynodError(f"data directory {path} {problem}: {fix}")
    problem = exposed(path.parent)
    if problem is not None:
        raise DynodError(
            f"data directory {path} is unsafe: {problem}; give --data a directory under "
            "directories only root or you can change"
        )
    return path


@contextlib.contextmanager
def data_dir_lock(data_dir: Path) -> Iterator[None]:
    """Held while this dynod serves from data_dir: a second one there would end the first's dynos
    (its record of them looks like leftovers) and write the same ledgers."""
    path = data_dir / "serve.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            raise DynodError(
                f"another dynod serve{f' (pid {holder})' if holder else ''} is using {data_dir}: "
                "stop it first, or give this one another --data DIR"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)  # closing releases the lock; so does dying, even by SIGKILL


def api_token(data_dir: Path) -> str:
    """The token every API request carries, made once and kept private (mode 0600)."""
    path = data_dir / "api-token"
    if path.is_file():
        token = path.read_text().strip()
        if token:
            if path.stat().st_mode & 0o077:
                path.chmod(0o600)  # someone loosened it: the token is a password
            return token
    token = secrets.token_urlsafe(32)
    atomic_write(path, f"{token}\n".encode(), mode=0o600)
    return token


def url_of(host: str, port: int) -> str:
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"  # listening everywhere: this machine's clients use loopback
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def serve(options: ServeOptions) -> int:
    data_dir = prepare_data_dir(resolve_data_dir(options.data))
    config = load_config(options, data_dir)
    with data_dir_lock(data_dir):
        try:
            return await _serve(data_dir, config)
        finally:  # every dyno and build is over: this run's scratch, a failed start's too
            await trio.to_thread.run_sync(sweep_scratch, data_dir)


async def _serve(data_dir: Path, config: Config) -> int:
    token = api_token(data_dir)
    stopping = trio.Event()
    with (
        Reaper(record=data_dir / "dynos.running", pids_max=config.dynos.pids_max) as reaper,
        trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals,
    ):
        if reaper.leftovers:
            print(
                f"dynod serve: ended {len(reaper.leftovers)} dyno process group(s) an earlier "
                "dynod left running",
                flush=True,
            )
        if reaper.emptied:
            print(
                f"dynod serve: ended {reaper.emptied} process(es) left in the cgroups of an "
                "earlier dynod",
                flush=True,
            )
        await trio.to_thread.run_sync(sweep_scratch, data_dir)  # after their dynos ended
        if config.dynos.private_tmp:  # tried once, in a child: off the loop, before any dyno
            await trio.to_thread.run_sync(mounts_available)
        platform = Platform(config, data_dir, reaper=reaper)
        async with trio.open_nursery() as root:
            root.start_soon(_watch_signals, signals, stopping, platform)
            root.start_soon(watch_orphans, reaper)  # processes that leave their dyno's group
            async with trio.open_nursery() as work:
                await work.start(platform.run)
                api = Api(platform, token, url_of(config.api.listen.host, config.api.listen.port))
                api.state.rendezvous = await _start_rendezvous(work, data_dir)
                try:
                    host, port = await work.start(serve_http, config.api.listen, api.handle)
                except OSError as err:
                    raise DynodError(
                        f"cannot listen on {config.api.listen} for the API ({err.strerror}): "
                        "stop what uses it, or choose another with --api HOST:PORT"
                    ) from None
                api.state.base_url = url_of(host, port)
                url_file = data_dir / "api-url"
                await trio.to_thread.run_sync(
                    atomic_write, url_file, f"{api.state.base_url}\n".encode()
                )
                api.state.router = await _start_router(work, config, platform)
                router_url = url_of(api.state.router.host, api.state.router.port)
                print(
                    f"dynod serve: API on {api.state.base_url}, router on {router_url}, "
                    f"data in {data_dir}",
                    flush=True,
                )
                await stopping.wait()
                work.cancel_scope.cancel()  # every dyno gets SIGTERM and its grace
            root.cancel_scope.cancel()
    return 0


async def _start_rendezvous(nursery: trio.Nursery, data_dir: Path) -> Rendezvous:
    """The TLS listener of attached one-offs, its certificate signed by the data directory's
    CA (made once; README, "Attached one-offs")."""
    context = await trio.to_thread.run_sync(server_context, data_dir, time.time())
    rendezvous = Rendezvous(context)
    await nursery.start(rendezvous.serve)
    return rendezvous


async def _start_router(nursery: trio.Nursery, config: Config, platform: Platform) -> Address:
    """The router on config.router.listen in front of every app's web dynos; its bound address."""
    from router.server import serve as serve_router  # the router's imports cost only `serve`

    listen = config.router.listen
    try:
        bound = await nursery.start(serve_router, router_config(config.router), platform.router)
    except OSError as err:
        raise DynodError(
            f"cannot listen on {listen} for the router ({err.strerror}): "
            "stop what uses it, or choose another with --router HOST:PORT"
        ) from None
    host, port = bound[0]
    return Address(listen.host, port)


async def _watch_signals(
    signals: AsyncIterator[int], stopping: trio.Event, platform: Platform
) -> None:
    async for _ in signals:
        if stopping.is_set():
            for runtime in platform.formation.runtimes.values():
                runtime.manager.hurry.set()
            for servers in platform.addons.servers.values():  # add-on servers too
                servers.manager.hurry.set()
        stopping.set()


def main(options: ServeOptions) -> int:
    try:
        return trio.run(serve, options)
    except BaseExceptionGroup as group:
        inner: BaseException = group
        while isinstance(inner, BaseExceptionGroup) and len(inner.exceptions) == 1:
            inner = inner.exceptions[0]
        if isinstance(inner, DynodError):  # shown as one line by the command line's edge
            raise inner from None
        raise
