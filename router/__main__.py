"""`python -m router --listen HOST:PORT --dyno HOST:PORT [--dyno …]`: the router alone, in front
of a fixed list of dynos, for any Host. Every RouterConfig field is a flag (`--request-timeout 5`).
"""

from __future__ import annotations

import argparse
import functools
import resource
import sys
from collections.abc import Sequence

import attrs
import trio

from .backend import static_backend
from .config import ConfigError, RouterConfig, parse_address
from .server import serve


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m router", description=__doc__)
    parser.add_argument(
        "--dyno",
        action="append",
        required=True,
        metavar="HOST:PORT",
        help="a web dyno's address (repeat for web.2, web.3 …)",
    )
    parser.add_argument("--log", action="store_true", help="print each router line to stdout")
    for field in attrs.fields(RouterConfig):
        kind = {"int": int, "float": float}.get(str(field.type), str)
        parser.add_argument(
            "--" + field.name.replace("_", "-"),
            type=kind,
            metavar=field.name.upper(),
            help=f"default {field.default}",
        )
    return parser


def _print_line(app: str, text: str) -> None:
    print(f"heroku[router]: {text}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = {
        field.name: getattr(args, field.name)
        for field in attrs.fields(RouterConfig)
        if getattr(args, field.name) is not None
    }
    try:
        config = RouterConfig.from_mapping(settings)
        dynos = [parse_address(text) for text in args.dyno]
    except ConfigError as exc:
        print(f"router: {exc}", file=sys.stderr)
        return 2
    # Each proxied request holds two descriptors; the usual soft limit of 1024 is low for that.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    backend = static_backend(dynos, sink=_print_line if args.log else None)

    failed: list[OSError] = []

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            try:
                bound = await nursery.start(functools.partial(serve, config, backend))
            except OSError as exc:  # caught here: past the nursery it would come in a group
                failed.append(exc)
                return
            for host, port in bound:
                shown = f"[{host}]" if ":" in host else host  # [::1] beside 127.0.0.1
                print(f"router listening on {shown}:{port}", flush=True)

    try:
        trio.run(run)
    except KeyboardInterrupt:
        pass
    if failed:
        print(f"router: cannot listen on {config.listen}: {failed[0].strerror}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
