"""Handlers for apps: `apps`, `apps:create`, `apps:info`, `apps:destroy` and `git:remote`."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from shell import git
from shell.context import Context
from shell.errors import Failure
from shell.grammar import Parsed
from shell.output import byte_size, header, styled


def app_path(app: str, rest: str = "") -> str:
    return f"/apps/{quote(app, safe='')}{rest}"


def apps(ctx: Context, parsed: Parsed) -> None:
    listed = ctx.api.list("/apps")
    if parsed.on("json"):
        ctx.json(listed)
        return
    if not listed:
        ctx.say("You have no apps: create one with `dyno apps:create NAME`.")
        return
    ctx.say(header("Apps"))
    ctx.lines(sorted(str(app.get("name")) for app in listed))


def create(ctx: Context, parsed: Parsed) -> None:
    name = parsed.arg("NAME") or parsed.value("app")
    app = ctx.api.post("/apps", {"name": name} if name else {})
    if parsed.on("json"):
        ctx.json(app)
        return
    ctx.say(f"Creating {app.get('name')}... done")
    ctx.say(" | ".join(str(url) for url in (app.get("web_url"), app.get("git_url")) if url))


def info(ctx: Context, parsed: Parsed) -> None:
    name = ctx.app(parsed)
    app = ctx.api.get(app_path(name))
    if parsed.on("json"):
        ctx.json(app)
        return
    counts: dict[str, int] = {}
    for dyno in ctx.api.list(app_path(name, "/dynos")):
        counts[str(dyno.get("type"))] = counts.get(str(dyno.get("type")), 0) + 1
    ctx.say(header(str(app.get("name"))))
    ctx.lines(
        styled(
            row
            for row in [
                ("Dynos", ", ".join(f"{kind}: {n}" for kind, n in sorted(counts.items()))),
                ("Git URL", str(app.get("git_url") or "")),
                ("Owner", _field(app, "owner", "email")),
                ("Region", _field(app, "region", "name")),
                ("Repo Size", byte_size(app.get("repo_size"))),
                ("Slug Size", byte_size(app.get("slug_size"))),
                ("Stack", _field(app, "stack", "name")),
                ("Web URL", str(app.get("web_url") or "")),
            ]
            if row[1]
        )
    )


def _field(data: Any, outer: str, inner: str) -> str:
    value = data.get(outer)
    return str(value.get(inner) or "") if isinstance(value, dict) else str(value or "")


def destroy(ctx: Context, parsed: Parsed) -> None:
    name = parsed.arg("APP") or ctx.app(parsed)
    confirm = parsed.value("confirm")
    if confirm != name:
        said = f" (--confirm said {confirm})" if confirm else ""
        raise Failure(
            f"this destroys {name} and its add-ons permanently{said}: "
            f"run `dyno apps:destroy {name} --confirm {name}`"
        )
    ctx.api.delete(app_path(name))
    ctx.say(f"Destroying {name} (including all add-ons)... done")


def git_remote(ctx: Context, parsed: Parsed) -> None:
    name = ctx.app(parsed)
    url = ctx.api.get(app_path(name)).get("git_url")
    if not url:
        raise Failure(f"git pushes are not available yet for {name}: deploy with `dyno deploy`")
    action = git.set_remote(ctx.cwd, str(url))
    ctx.say(f"{action} git remote {git.REMOTE} {url}")
