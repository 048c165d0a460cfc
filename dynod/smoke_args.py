"""`dynod smoke`'s command line: its flags, `--expect` bound to the `--path` before it, and the
run they ask for (argparse only: building `dynod`'s parser must stay cheap)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any


class _Path(argparse.Action):
    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        namespace.paths = [*(namespace.paths or []), (values, None)]


class _Expect(argparse.Action):
    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        paths = namespace.paths or []
        if not paths or paths[-1][1] is not None:
            parser.error(f"--expect {values} must follow the --path it applies to")
        paths[-1] = (paths[-1][0], values)


def add_smoke(commands: Any) -> None:
    """The `smoke` subcommand on `dynod`'s subparsers."""
    smoke = commands.add_parser(
        "smoke", help="CI check: build, release, boot and request the app, leave nothing behind"
    )
    smoke.add_argument("directory", nargs="?", default=".", metavar="DIR", help="default .")
    smoke.add_argument(
        "--path",
        dest="paths",
        action=_Path,
        metavar="PATH",
        help="request PATH through the router (repeatable; default / when there is web)",
    )
    smoke.add_argument(
        "--expect",
        type=int,
        action=_Expect,
        metavar="STATUS",
        help="the status the --path before it must answer (default 200)",
    )
    smoke.add_argument(
        "-m",
        "--formation",
        metavar="FORMATION",
        help="how many of each type: web=2,worker=1 (default one of each)",
    )
    smoke.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="boot timeout: web dynos must listen on $PORT within it (R10; default 60)",
    )
    smoke.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="K=V",
        help="a config var for the build and the dynos (repeatable)",
    )
    smoke.add_argument("--junit", type=Path, metavar="FILE", help="write a JUnit XML report")
    smoke.add_argument(
        "--buildpack",
        dest="buildpacks",
        action="append",
        default=[],
        metavar="B",
        help="a buildpack (built-in name or directory; repeatable; default: detected)",
    )
    smoke.add_argument(
        "--cache",
        type=Path,
        metavar="DIR",
        help="keep the build cache in DIR between runs (default: a cold build)",
    )


def run_smoke(args: argparse.Namespace) -> int:
    from dynod import smoke  # the platform's imports are paid by this command only
    from dynod.smoke_options import options

    return smoke.main(
        options(
            args.directory,
            args.paths or [],
            args.formation,
            args.timeout,
            args.env,
            args.junit,
            args.buildpacks,
            args.cache,
        )
    )
