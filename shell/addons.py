"""Handlers for add-ons: `addons`, `addons:create`, `addons:info` and `addons:destroy`."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from shell.apps import app_path
from shell.context import Context
from shell.errors import Failure
from shell.grammar import Parsed
from shell.output import columns, header, styled


def _path(app: str, name: str) -> str:
    return app_path(app, f"/addons/{quote(name, safe='')}")


def _plan(addon: Any) -> str:
    plan = addon.get("plan")
    return str(plan.get("name", "")) if isinstance(plan, dict) else ""


def addons(ctx: Context, parsed: Parsed) -> None:
    app = ctx.app(parsed)
    listed = ctx.api.list(app_path(app, "/addons"))
    if parsed.on("json"):
        ctx.json(listed)
        return
    if not listed:
        ctx.say(f"{app} has no add-ons: add one with `dyno addons:create heroku-redis`.")
        return
    ctx.say(header(f"{app} Add-ons"))
    rows = [("Add-on", "Plan", "Config var", "State")]
    rows += [
        (
            str(a.get("name")),
            _plan(a),
            ", ".join(str(v) for v in a.get("config_vars") or []),
            str(a.get("state")),
        )
        for a in listed
    ]
    ctx.lines(columns(rows))


def create(ctx: Context, parsed: Parsed) -> None:
    app = ctx.app(parsed)
    service = parsed.arg("SERVICE[:PLAN]") or ""
    body: dict[str, Any] = {"plan": {"name": service}}
    name = parsed.value("as")
    if name:
        body["name"] = name
    ctx.note(f"Creating {service} on {app}...")
    addon = ctx.api.post(app_path(app, "/addons"), body)
    if parsed.on("json"):
        ctx.json(addon)
        return
    variables = " and ".join(str(v) for v in addon.get("config_vars") or [])
    ctx.say(f"Created {addon.get('name')} as {variables} ({_plan(addon)}): {app}'s dynos restart")


def info(ctx: Context, parsed: Parsed) -> None:
    app = ctx.app(parsed)
    addon = ctx.api.get(_path(app, parsed.arg("NAME") or ""))
    if parsed.on("json"):
        ctx.json(addon)
        return
    ctx.say(header(str(addon.get("name"))))
    ctx.lines(
        styled(
            [
                ("Service", str((addon.get("addon_service") or {}).get("name", ""))),
                ("Plan", _plan(addon)),
                ("Config vars", ", ".join(str(v) for v in addon.get("config_vars") or [])),
                ("Owning app", app),
                ("State", str(addon.get("state"))),
                ("Created", str(addon.get("created_at"))),
            ]
        )
    )


def destroy(ctx: Context, parsed: Parsed) -> None:
    app = ctx.app(parsed)
    name = parsed.arg("NAME") or ""
    confirm = parsed.value("confirm")
    if confirm != app:
        said = f" (--confirm said {confirm})" if confirm else ""
        raise Failure(
            f"this destroys {name} and deletes its data permanently{said}: "
            f"run `dyno addons:destroy {name} -a {app} --confirm {app}`"
        )
    gone = ctx.api.delete(_path(app, name))
    if parsed.on("json"):
        ctx.json(gone)
        return
    ctx.say(f"Destroying {name} on {app}... done")
