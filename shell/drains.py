"""Handlers for log drains: `drains`, `drains:add URL` and `drains:remove URL`."""

from __future__ import annotations

from urllib.parse import quote

from shell.apps import app_path
from shell.context import Context
from shell.grammar import Parsed
from shell.output import header


def drains(ctx: Context, parsed: Parsed) -> None:
    app = ctx.app(parsed)
    listed = ctx.api.list(app_path(app, "/log-drains"))
    if parsed.on("json"):
        ctx.json(listed)
        return
    if not listed:
        ctx.say(f"{app} has no drains: add one with `dyno drains:add URL`.")
        return
    ctx.say(header("Drains"))
    ctx.lines(f"{drain.get('url')} ({drain.get('token')})" for drain in listed)


def add(ctx: Context, parsed: Parsed) -> None:
    app = ctx.app(parsed)
    drain = ctx.api.post(app_path(app, "/log-drains"), {"url": parsed.arg("URL")})
    if parsed.on("json"):
        ctx.json(drain)
        return
    ctx.say(f"Successfully added drain {drain.get('url')}")


def remove(ctx: Context, parsed: Parsed) -> None:
    app = ctx.app(parsed)
    drain = ctx.api.delete(app_path(app, f"/log-drains/{quote(parsed.arg('URL') or '', safe='')}"))
    if parsed.on("json"):
        ctx.json(drain)
        return
    ctx.say(f"Successfully removed drain {drain.get('url')}")
