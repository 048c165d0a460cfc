"""`dynod`'s command line: argument parsing, the one place logging is configured, and the edge
where errors become one line and an exit status (0 done, 1 refused or failed, 2 usage)."""

from __future__ import annotations

import argparse
import gc
import logging
import math
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from dynod import __version__
from dynod.errors import DynodError, ParseError, UsageError
from dynod.smoke_args import add_smoke, run_smoke

# Each command imports what it needs when it runs: `dynod start` is timed from launch to its
# processes' first lines, and `dynod check` needs no event loop at all.


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


def _env_files(value: str) -> tuple[Path, ...]:
    return tuple(Path(part) for part in value.split(",") if part)


def _add_app_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-f",
        "--procfile",
        type=Path,
        default=Path("Procfile"),
        help="the Procfile (default ./Procfile); its directory is the app root",
    )
    parser.add_argument(
        "-e",
        "--env",
        type=_env_files,
        default=None,
        metavar="ENV[,ENV]",
        help="environment files, later ones win (default: .env in the app root, if any)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dynod", description="Heroku's runtime on one machine.")
    parser.add_argument("--version", action="version", version=f"dynod {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    start = commands.add_parser("start", help="run the app's processes in place, like foreman")
    start.add_argument(
        "formation",
        nargs="?",
        metavar="TYPE|FORMATION",
        help="one process type (web) or a formation (web=2,worker=1); default: one of each",
    )
    _add_app_flags(start)
    start.add_argument("-p", "--port", type=int, help="base port (default $PORT or 5000)")
    start.add_argument(
        "-m",
        "--formation",
        dest="concurrency",
        metavar="FORMATION",
        help="how many of each type: web=2,worker=1 or all=2",
    )
    start.add_argument(
        "-t",
        "--timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="grace between SIGTERM and SIGKILL when stopping (default 5)",
    )
    start.add_argument(
        "--exit-on-crash",
        action="store_true",
        help="stop everything when one process exits, with its status",
    )
    start.add_argument("--no-color", action="store_true", help="no colours, even on a terminal")
    start.add_argument(
        "--clean-env",
        action="store_true",
        help="start from an empty environment, as on the platform",
    )
    start.add_argument(
        "--tty",
        action="store_true",
        help="give each process a pseudo-terminal (colours, line buffering)",
    )
    start.add_argument(
        "--router",
        type=int,
        metavar="PORT",
        help="route http://127.0.0.1:PORT/ round-robin across the web processes",
    )

    run = commands.add_parser("run", help="run one command with the app's .env")
    _add_app_flags(run)
    run.add_argument(
        "args", nargs=argparse.REMAINDER, metavar="CMD", help="a command, or a Procfile type name"
    )

    check = commands.add_parser("check", help="validate the Procfile and .env")
    _add_app_flags(check)

    serve = commands.add_parser(
        "serve", help="run the platform: API, router, builds, dynos, logplex"
    )
    serve.add_argument(
        "--config", type=Path, help="dynod.toml (default: the data directory's, if any)"
    )
    serve.add_argument("--data", type=Path, help="data directory (default $DYNOD_DATA, else XDG)")
    serve.add_argument(
        "--api", metavar="HOST:PORT", help="where the API listens (default 127.0.0.1:5050)"
    )
    serve.add_argument(
        "--router", metavar="HOST:PORT", help="where the router listens (default 127.0.0.1:8080)"
    )
    _add_export(commands)
    add_smoke(commands)
    return parser


def _add_export(commands: argparse._SubParsersAction[_Parser]) -> None:
    export = commands.add_parser(
        "export",
        help="write what systemd, Kubernetes or foreman needs to run an app's release",
        description="Export a deployed app's current release (--app) or a directory built on "
        "the spot to systemd units, Kubernetes manifests, or a Procfile and .env (README, "
        "'dynod export').",
    )
    export.add_argument("format", choices=("systemd", "kubernetes", "procfile"))
    export.add_argument("out", type=Path, metavar="OUT", help="a new or empty directory")
    export.add_argument("dir", nargs="?", type=Path, metavar="DIR", help="an app to build")
    export.add_argument("--app", help="a deployed app of `dynod serve`'s data directory")
    export.add_argument("--data", type=Path, help="data directory (default $DYNOD_DATA, else XDG)")
    export.add_argument("-m", "--formation", metavar="FORMATION", help="web=2,worker=1 instead")
    export.add_argument("--name", help="the app's name for DIR (default: its directory's)")
    export.add_argument(
        "-b", "--buildpack", action="append", default=[], help="build DIR with this buildpack"
    )
    export.add_argument("--user", help="systemd: run as this user (default DynamicUser=yes)")
    export.add_argument("--slug-url", help="kubernetes: where the cluster fetches slug.tgz")
    export.add_argument("--image", help="kubernetes: the dynos' image (default heroku/heroku:24)")
    export.add_argument("--host", help="kubernetes: an Ingress for web on this host")


# Libraries that may log chatter at INFO; dynod's own loggers are all under `dynod`.
QUIET_LOGGERS = ("asyncio", "h11", "trio", "urllib3")


def configure_logging() -> None:
    """dynod's log is its stderr: records as bare lines (each message carries its own `dynod…:`
    prefix, as the lines dynod prints there do), tracebacks after them; INFO and up."""
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging()
    try:
        return _dispatch(args)
    except BaseExceptionGroup as group:
        # An error raised inside a trio nursery (a --router port in use) arrives wrapped.
        err = _only_user_error(group)
        if err is None:
            raise
        print(f"dynod: {err}", file=sys.stderr)
        return 2 if isinstance(err, UsageError) else 1
    except UsageError as err:
        print(f"dynod: {err}", file=sys.stderr)
        return 2
    except (DynodError, ParseError) as err:
        print(f"dynod: {err}", file=sys.stderr)
        return 1


def _only_user_error(group: BaseExceptionGroup[BaseException]) -> DynodError | None:
    """The first user error of a group made of nothing else; None when anything else is in it."""
    matched, rest = group.split(DynodError)
    if matched is None or rest is not None:
        return None
    first: BaseException = matched
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first if isinstance(first, DynodError) else None


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _start(args: argparse.Namespace) -> int:
    # A stop asked for while starting up (Ctrl-C, SIGTERM, SIGHUP before the signal watcher
    # listens) is only noted here and honoured as soon as the watcher runs, never raised as a
    # KeyboardInterrupt: one raised mid-import can be swallowed by the interpreter (an import
    # lock's callback) and the stop lost, one raised in a trio task escapes as a traceback.
    # trio leaves SIGINT alone when a handler other than Python's is set.
    early: list[int] = []
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda signum, _frame: early.append(signum))
    colour = sys.stdout.isatty() and not args.no_color and "NO_COLOR" not in os.environ
    from dynod.proc.reaper import Reaper

    # The reaper sidecar first: its own start-up (a Python interpreter) then runs on another
    # core while this one imports trio and the dyno manager.
    # No cgroups for the local runner (README, "How a dyno runs"): they are the platform's.
    with Reaper(cgroups=False) as reaper:
        # Importing makes many objects and no garbage: no collections meanwhile, and what
        # the imports made is then frozen out of every later collection's way.
        gc.disable()
        try:
            import trio

            from dynod import local
        finally:
            gc.freeze()
            gc.enable()
        options = local.StartOptions(
            procfile=args.procfile,
            env_files=args.env,
            formation=args.formation,
            concurrency=args.concurrency,
            port=args.port,
            stop_timeout=args.timeout,
            exit_on_crash=args.exit_on_crash,
            colour=colour,
            clean_env=args.clean_env,
            tty=args.tty,
            router_port=args.router,
        )
        return trio.run(local.start, options, sys.stdout, reaper, early)


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "start":
        if args.port is not None and not 0 < args.port < 65536:
            raise UsageError(f"-p {args.port} is not a port: give a number from 1 to 65535")
        if args.router is not None and not 0 < args.router < 65536:
            raise UsageError(f"--router {args.router} is not a port: give a number from 1 to 65535")
        if not (math.isfinite(args.timeout) and args.timeout >= 0):
            raise UsageError(
                f"-t {args.timeout:g} is not a grace period: give zero or more seconds, e.g. -t 10"
            )
        return _start(args)
    if args.command == "run":
        from dynod import local

        command = args.args[1:] if args.args[:1] == ["--"] else args.args
        if not command:
            raise UsageError(
                "nothing to run: give a command, e.g. `dynod run python manage.py shell`"
            )
        local.run(command, args.procfile, args.env)
    if args.command == "check":
        from dynod import local

        return local.check(args.procfile, args.env, sys.stdout)
    if args.command == "serve":
        from dynod import serve  # the platform's imports are not for the local runner to pay

        return serve.main(serve.options(args.config, args.data, args.api, args.router))
    if args.command == "export":
        from dynod import exporter

        return exporter.export(exporter.options(args))
    if args.command == "smoke":
        return run_smoke(args)
    raise UsageError(f"unknown command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
