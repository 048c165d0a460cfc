"""The local runner: `dynod start`, `dynod run` and `dynod check`, foreman's commands on top of
the same dyno manager the platform uses (dynos in place, the user's environment, a short ladder).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

import attrs
import trio

from dynod.api.unix import Unsteerable, claim_socket
from dynod.core.dotenv import load_env_files
from dynod.core.formation import local_port, parse_formation, render_formation
from dynod.core.logline import HEROKU
from dynod.core.policy import LOCAL_CLEAN_AFTER, LOCAL_LADDER
from dynod.core.procfile import Procfile, load_procfile
from dynod.errors import DynodError, ParseError, UsageError
from dynod.local_control import LocalControl, steer
from dynod.logs.logplex import LogRing
from dynod.logs.printer import TerminalPrinter
from dynod.proc.dyno import DYNO_PATH, bash_argv, watch_orphans
from dynod.proc.manager import Manager
from dynod.proc.reaper import Reaper
from dynod.proc.seams import DynoPlan, InPlace, ManagerSettings, local_plans

DEFAULT_BASE_PORT = 5000
LOCAL_APP = "local"


@attrs.frozen
class StartOptions:
    procfile: Path = Path("Procfile")
    env_files: tuple[Path, ...] | None = None  # None: the app's .env when there is one
    formation: str | None = None  # positional TYPE or FORMATION
    concurrency: str | None = None  # -m
    port: int | None = None
    stop_timeout: float = 5.0
    exit_on_crash: bool = False
    colour: bool = True
    clean_env: bool = False
    tty: bool = False
    router_port: int | None = None  # --router: the round-robin router in front of web dynos


# The local commands' inputs (the Procfile, .env files, flags) are the user's to fix: any error in
# them is a usage error, exit status 2, like a missing Procfile.


def read_procfile(path: Path) -> Procfile:
    if not path.is_file():
        raise UsageError(f"no Procfile at {path}: create one or pass -f PATH/TO/Procfile")
    try:
        return load_procfile(path)
    except DynodError as err:
        raise UsageError(str(err)) from None


def app_env(root: Path, env_files: Sequence[Path] | None) -> dict[str, str]:
    """The .env layer: the files given, or the app's own .env when there is one."""
    if env_files is None:
        default = root / ".env"
        env_files = (default,) if default.is_file() else ()
    try:
        return load_env_files(list(env_files))
    except DynodError as err:
        raise UsageError(str(err)) from None


def choose_formation(
    procfile: Procfile, positional: str | None, concurrency: str | None
) -> dict[str, int]:
    """foreman's rules: everything once by default; `-m` says exactly how many of each (types it
    does not name do not run); a positional TYPE runs just that type."""
    types = procfile.formation_names
    if not types:
        raise UsageError(
            "the Procfile has only a release command: add a process type to run, "
            "e.g. `web: python app.py`"
        )
    if positional and "=" not in positional and positional not in types:
        known = ", ".join(types)
        raise UsageError(f"unknown process type {positional!r}: the Procfile's types are {known}")
    try:
        if positional and positional in types:
            counts = parse_formation(concurrency, types) if concurrency else {}
            return {positional: counts.get(positional, 1)}
        spec = positional or concurrency or "all=1"
        formation = parse_formation(spec, types)
    except ParseError as err:  # a flag's value, so a usage error
        raise UsageError(str(err)) from None
    if not any(formation.values()):
        raise UsageError(f"the formation {spec!r} runs nothing: ask for at least one process")
    return {name: count for name, count in formation.items() if count}


def base_port(inherited: str | None) -> int:
    """The base port when -p is not given: $PORT, else 5000."""
    if inherited is None or inherited == "":
        return DEFAULT_BASE_PORT
    if not (
        len(inherited) <= 5
        and inherited.isascii()
        and inherited.isdigit()
        and 0 < int(inherited) < 65536
    ):
        raise UsageError(f"$PORT is {inherited!r}, not a port: unset it or pass -p PORT")
    return int(inherited)


def base_environment(clean: bool, root: Path) -> dict[str, str]:
    if not clean:
        return dict(os.environ)
    return {"PATH": DYNO_PATH, "HOME": str(root)}


async def start(
    options: StartOptions,
    out: TextIO = sys.stdout,
    reaper: Reaper | None = None,
    early_signals: Sequence[int] = (),
) -> int:
    """Run the app until a requested stop (or, with --exit-on-crash, a crash); the exit status.
    `reaper`: one already started (the CLI starts it first), else one of our own.
    `early_signals`: stop signals the CLI noted before this ran (read once the watcher listens)."""
    root = options.procfile.resolve().parent
    procfile = read_procfile(options.procfile)
    formation = choose_formation(procfile, options.formation, options.concurrency)
    config_vars = app_env(root, options.env_files)
    inherit = base_environment(options.clean_env, root)
    base = options.port or base_port(os.environ.get("PORT"))
    types = procfile.formation_names
    highest = max(local_port(base, types, name, count) for name, count in formation.items())
    if highest > 65535:
        raise UsageError(
            f"base port {base} gives ports up to {highest}, above 65535: pick a lower one with -p"
        )

    plans = local_plans(
        formation,
        {name: procfile.command(name) for name in formation},
        port_of=lambda name, i: local_port(base, types, name, i),
        config_vars=config_vars,
        inherit=inherit,
    )
    home = Path(inherit.get("HOME", root))
    plans = [attrs.evolve(plan, home=home) for plan in plans]
    release = None
    if procfile.release is not None:
        release = DynoPlan("release.1", procfile.release, config_vars, inherit=inherit, home=home)

    settings = ManagerSettings(
        ladder=LOCAL_LADDER,
        clean_after=LOCAL_CLEAN_AFTER,
        stop_timeout=options.stop_timeout,
        cycle_after=None,
        tty=options.tty,
        exit_on_crash=options.exit_on_crash,
        **local_memory(root),
    )
    names = [plan.name for plan in plans] + ([release.name] if release else [])
    if options.router_port is not None:
        names.append("router")
    stopping = trio.Event()
    printer = TerminalPrinter(
        out.buffer,
        colour=options.colour,
        types=types,
        names=names,
        on_broken_pipe=stopping.set,
    )
    # One log path, as on the platform: dynos write into the app's logplex ring and the
    # terminal printer reads every line of it, losslessly.
    ring = LogRing()
    ring.subscribe(printer.publish)
    with (
        contextlib.nullcontext(reaper) if reaper is not None else Reaper(cgroups=False) as reaper,
        _api_socket(root) as listener,  # first: another run here is refused before its ports
    ):
        for plan in plans:
            # A web process is up once its port accepts connections: another program listening
            # there would make it look up while it crashes on EADDRINUSE.
            if plan.web and plan.port is not None and not _port_free(plan.port):
                raise UsageError(
                    f"port {plan.port} for {plan.name} is already in use by another "
                    "program: stop it, or pick another base port with -p"
                )
        manager = Manager(ring, InPlace(root), settings, reaper=reaper)
        status = 0
        async with trio.open_nursery() as nursery:
            await nursery.start(printer.run)
            nursery.start_soon(watch_orphans, reaper)  # processes that leave their dyno's group
            with trio.CancelScope() as flow:
                nursery.start_soon(_watch_signals, manager, stopping, early_signals)
                nursery.start_soon(_stop_when_asked, manager, stopping, flow)
                if options.router_port is not None:
                    await _start_router(nursery, manager, ring, options.router_port)
                if listener is not None:
                    control = LocalControl(
                        name=root.name or LOCAL_APP,
                        root=root,
                        ring=ring,
                        manager=manager,
                        procfile=procfile,
                        counts=formation,
                        env=config_vars,
                        inherit=inherit,
                        home=home,
                        port_of=lambda name, i: local_port(base, types, name, i),
                        port_free=_port_free,
                        stopping=stopping,
                    )
                    nursery.start_soon(steer, listener, control)
                status = await _run_app(manager, release, plans)
            nursery.cancel_scope.cancel()
    return status


def local_memory(root: Path) -> dict[str, Any]:
    """The memory rules of `dynod start`: `[dynos]` memory keys from the app's dynod.toml (beside
    the Procfile), else the data directory's. Without a quota set there, 512 MB each and only
    warnings (R14), never a kill (R15)."""
    from dynod.state.config import Config, resolve_data_dir

    for path in (root / "dynod.toml", resolve_data_dir() / "dynod.toml"):
        if path.is_file():
            from dynod.proc.memory import memory_settings

            try:
                return memory_settings(Config.from_toml(path).dynos, kill=False)
            except DynodError as err:
                raise UsageError(str(err)) from None
    return {"memory_kill": False}


@contextlib.contextmanager
def _api_socket(root: Path) -> Iterator[socket.socket | None]:
    """The run's private API socket (`dyno` steers the run through it), or None after saying
    why the app directory cannot hold one."""
    with contextlib.ExitStack() as stack:
        try:
            listener: socket.socket | None = stack.enter_context(claim_socket(root))
        except Unsteerable as why:
            print(f"dynod: {why}: `dyno` cannot steer this run", file=sys.stderr, flush=True)
            listener = None
        yield listener


def _port_free(port: int) -> bool:
    """Nothing listens on `port` (a server binding every address there would succeed)."""
    with socket.socket() as probe:
        probe.setsockopt(
            socket.SOL_SOCKET, socket.SO_REUSEADDR, 1
        )  # as servers do: TIME_WAIT is no owner
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


async def _start_router(nursery: trio.Nursery, manager: Manager, ring: LogRing, port: int) -> None:
    """`--router PORT`: every request to PORT, whatever its Host, reaches web.1 … web.N in turn."""

    def log(app: str, text: str) -> None:
        ring.publish(HEROKU, "router", [text], time.time())

    # Loaded only when routing: `dynod start` without --router launches faster without them.
    from dynod.platform.routing import feed_router
    from router.backend import TableBackend
    from router.config import RouterConfig
    from router.server import serve as serve_router

    backend = TableBackend(any_host=LOCAL_APP, sink=log)
    nursery.start_soon(feed_router, manager, backend, LOCAL_APP)
    try:
        await nursery.start(serve_router, RouterConfig(listen=f"127.0.0.1:{port}"), backend)
    except OSError as err:
        raise UsageError(
            f"--router {port}: cannot listen there ({err.strerror}): pick another port"
        ) from None


async def _run_app(manager: Manager, release: DynoPlan | None, plans: list[DynoPlan]) -> int:
    """The release phase once (its failure ends the start with its status), then the formation
    until a requested stop (0) or, with --exit-on-crash, the first crash (its status)."""
    if release is not None:
        status = await manager.run_one_off(release)
        if status != 0:
            return status
    await manager.run(plans)
    return manager.crash[1] if manager.crash else 0


async def _stop_when_asked(manager: Manager, stopping: trio.Event, flow: trio.CancelScope) -> None:
    await stopping.wait()
    manager.stop_all()  # each dyno says it goes down, then stops
    flow.cancel()  # and a release phase still running stops too


async def _watch_signals(manager: Manager, stopping: trio.Event, early: Sequence[int]) -> None:
    """First Ctrl-C, SIGTERM or SIGHUP: graceful stop. Any later one: SIGKILL at once.
    `early` is a list the CLI's own handlers append to until this listens."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        if early:
            stopping.set()
        async for _ in signals:
            if stopping.is_set():
                manager.hurry.set()
            stopping.set()


def run(args: Sequence[str], procfile_path: Path, env_files: Sequence[Path] | None) -> NoReturn:
    """`dynod run`: replace this process with the command, so status and signals are its own."""
    root = procfile_path.resolve().parent if procfile_path.is_file() else Path.cwd()
    command = " ".join(args)
    if len(args) == 1 and procfile_path.is_file():
        procfile = read_procfile(procfile_path)
        if args[0] in procfile:
            command = procfile.command(args[0])
    env = dict(os.environ)
    env.update(app_env(root, env_files))
    os.chdir(root)
    env["PWD"] = str(root)
    sys.stdout.flush()
    os.execvpe("bash", bash_argv(command), env)


def check(procfile_path: Path, env_files: Sequence[Path] | None, out: TextIO) -> int:
    """`dynod check`: validate the Procfile and .env, print the process types and formation."""
    procfile = read_procfile(procfile_path)
    env = app_env(procfile_path.resolve().parent, env_files)
    width = max(len(name) for name in procfile.names)
    out.write(f"valid Procfile: {procfile_path} ({len(procfile.names)} process types)\n")
    for entry in procfile.types:
        out.write(f"  {entry.name.ljust(width)}  {entry.command}\n")
    if procfile.release is not None:
        out.write("release phase: runs once before the formation starts\n")
    formation = {name: 1 for name in procfile.formation_names}
    out.write(f"formation: {render_formation(formation) or '(none)'}\n")
    keys = ", ".join(env) if env else "none"
    out.write(f"environment: {len(env)} variables from .env ({keys})\n")
    return 0
