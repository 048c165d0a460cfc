"""Handlers for dynos and their output: `ps`, `ps:scale`, `ps:restart`, `ps:stop`,
`run:detached` and `logs`."""

from __future__ import annotations

import os
import re
import shlex
import signal
import sys
import threading
from typing import Any
from urllib.parse import quote

from shell.apps import app_path
from shell.context import Context
from shell.errors import UsageError
from shell.grammar import Parsed
from shell.output import columns, header, ps_lines, size_name

SCALE = re.compile(r"([A-Za-z0-9_-]+?)([=+-])(\d+)(?::([A-Za-z0-9_-]+))?")
LOG_SOURCES = ("app", "heroku")


def parse_scale(words: list[str]) -> list[dict[str, str]]:
    """`web=2 worker+1 clock-1 web=2:standard-2X` (commas work too) as formation updates, the
    quantity a string as the Heroku CLI sends it: `"2"`, `"+1"`, `"-1"`."""
    updates: list[dict[str, str]] = []
    for word in (part for w in words for part in w.split(",") if part):
        match = SCALE.fullmatch(word)
        if match is None:
            raise UsageError(
                f"cannot read `{word}`: scale with TYPE=N, TYPE+N or TYPE-N "
                "(e.g. `dyno ps:scale web=2 worker+1`)"
            )
        kind, op, count, size = match.groups()
        update = {"type": kind, "quantity": count if op == "=" else op + count}
        if size:
            update["size"] = size
        updates.append(update)
    return updates


def _formation_text(entries: list[Any]) -> str:
    return ", ".join(
        f"{e.get('type')} at {e.get('quantity')}:{size_name(e.get('size'))}"
        for e in sorted(entries, key=lambda e: str(e.get("type")))
    )


def ps(ctx: Context, parsed: Parsed) -> None:
    app = ctx.app(parsed)
    dynos = ctx.api.list(app_path(app, "/dynos"))
    if parsed.on("json"):
        ctx.json(dynos)
    elif not dynos:
        ctx.say(f"No dynos on {app}")
    else:
        ctx.lines(ps_lines(dynos, ctx.clock()))


def scale(ctx: Context, parsed: Parsed) -> None:
    app = ctx.app(parsed)
    updates = parse_scale(parsed.args("TYPE=N"))
    if not updates:
        formation = ctx.api.list(app_path(app, "/formation"))
        if parsed.on("json"):
            ctx.json(formation)
        elif not formation:
            ctx.say(f"{app} has no process types yet: deploy it first (`dyno deploy`)")
        else:
            ctx.say(
                " ".join(
                    f"{e.get('type')}={e.get('quantity')}:{size_name(e.get('size'))}"
                    for e in sorted(formation, key=lambda e: str(e.get("type")))
                )
            )
        return
    changed = ctx.api.patch(app_path(app, "/formation"), {"updates": updates})
    if parsed.on("json"):
        ctx.json(changed)
    else:
        ctx.say(f"Scaling dynos on {app}... done, now running {_formation_text(changed)}")


def parse_sizes(words: list[str], types: list[str]) -> list[dict[str, str]]:
    """`eco` (every process type) or `web=eco worker=basic` as formation size updates."""
    updates: dict[str, str] = {}
    for word in (part for w in words for part in w.split(",") if part):
        kind, _, size = word.rpartition("=")
        if not size or (kind and not SCALE.fullmatch(f"{kind}=1")):
            raise UsageError(
                f"cannot read `{word}`: give a size for every type (`dyno ps:type eco`) or "
                "TYPE=SIZE (`dyno ps:type web=standard-1X`)"
            )
        for name in [kind] if kind else types:
            updates[name] = size
    return [{"type": kind, "size": size} for kind, size in updates.items()]


def ps_type(ctx: Context, parsed: Parsed) -> None:
    """`ps:type`: show each process type's size, or set them (`eco` sleeps: README)."""
    app = ctx.app(parsed)
    words = parsed.args("SIZE")
    if words:
        types = [str(e.get("type")) for e in ctx.api.list(app_path(app, "/formation"))]
        if not types:
            raise UsageError(f"{app} has no process types yet: deploy it first (`dyno deploy`)")
        ctx.api.patch(app_path(app, "/formation"), {"updates": parse_sizes(words, types)})
    formation = sorted(ctx.api.list(app_path(app, "/formation")), key=lambda e: str(e.get("type")))
    if parsed.on("json"):
        ctx.json(formation)
        return
    rows = [
        [str(e.get("type")), size_name(e.get("size")), str(e.get("quantity"))] for e in formation
    ]
    ctx.lines([header("Process Types"), *columns([["Type", "Size", "Qty"], *rows])])


def _target_path(app: str, target: str) -> str:
    """A dyno (`web.1`, `run.4821`) or a process type (`web`)."""
    kind = "dynos" if "." in target else "formations"
    return app_path(app, f"/{kind}/{quote(target, safe='')}")


def restart(ctx: Context, parsed: Parsed) -> None:
    app = ctx.app(parsed)
    target = parsed.arg("TARGET")
    if target is None:
        ctx.api.delete(app_path(app, "/dynos"))
        ctx.say(f"Restarting dynos on {app}... done")
        return
    ctx.api.delete(_target_path(app, target))
    what = f"{target} dyno" if "." in target else f"{target} dynos"
    ctx.say(f"Restarting {what} on {app}... done")


def stop(ctx: Context, parsed: Parsed) -> None:
    app = ctx.app(parsed)
    target = parsed.arg("TARGET") or ""
    ctx.api.post(_target_path(app, target) + "/actions/stop")
    what = f"{target} dyno" if "." in target else f"{target} dynos"
    ctx.say(f"Stopping {what} on {app}... done")


def command_line(words: list[str]) -> str:
    """One word is the command as typed (`"rake db:migrate && rake seed"`); several are quoted
    so that the dyno's `bash -c` sees exactly these words."""
    return words[0] if len(words) == 1 else shlex.join(words)


def run_detached(ctx: Context, parsed: Parsed) -> None:
    app = ctx.app(parsed)
    command = command_line(parsed.args("COMMAND"))
    dyno = ctx.api.post(app_path(app, "/dynos"), {"command": command, "attach": False})
    if parsed.on("json"):
        ctx.json(dyno)
        return
    name = dyno.get("name")
    ctx.say(f"Running `{command}` on {app}... up, {name}")
    where = "" if ctx.local is not None else f" -a {app}"  # a local run's logs need no -a
    ctx.say(f"Run `dyno logs{where} -d {name}` to view the output.")


def logs(ctx: Context, parsed: Parsed) -> None:
    app = ctx.app(parsed)
    body: dict[str, object] = {"tail": parsed.on("tail")}
    lines = parsed.value("num")
    if lines is not None and not lines.isdigit():
        raise UsageError(f"-n takes a number of lines, not `{lines}`")
    body["lines"] = int(lines) if lines is not None else 100
    dyno, kind = parsed.value("dyno"), parsed.value("process-type")
    if dyno and kind:
        raise UsageError("give -d DYNO or -p TYPE, not both")
    if dyno or kind:
        body["dyno"] = dyno or kind  # the API matches `web` to web.N, as the Heroku CLI sends it
    source = parsed.value("source")
    if source is not None:
        if source not in LOG_SOURCES:
            raise UsageError(f"-s takes app or heroku, not `{source}`")
        body["source"] = source
    session = ctx.api.post(app_path(app, "/log-sessions"), body)
    if parsed.on("tail") and ctx.follow is not None:
        ctx.follow(str(session.get("logplex_url")))
        return
    ending = parsed.on("tail") and threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, _end_tail) if ending else None
    try:
        ctx.copy_stream(ctx.api.stream(str(session.get("logplex_url"))))
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _end_tail(_signum: int, _frame: object) -> None:
    """Ctrl-C is how a tail ends: a normal, quiet exit, at once. Not as a KeyboardInterrupt:
    CPython drops an exception raised while a finalizer runs, and the tail would go on."""
    try:
        sys.stdout.flush()
    except (OSError, RuntimeError):  # a write cut short by the signal: nothing more to show
        pass
    os._exit(0)
