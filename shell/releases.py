"""Handlers for config vars and releases: `config`, `config:get`, `config:set`, `config:unset`,
`releases`, `releases:info`, `releases:rollback` and `releases:output`."""

from __future__ import annotations

import re
from typing import Any

from shell.api import range_header
from shell.apps import app_path
from shell.context import Context
from shell.errors import Failure, UsageError
from shell.grammar import Parsed
from shell.output import format_time, header, release_rows, release_status_note, styled

CONFIG_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
DEFAULT_RELEASES = 15


def parse_version(text: str) -> int:
    """`v7` or `7`."""
    digits = text[1:] if text[:1] in ("v", "V") else text
    if not digits.isdigit():
        raise UsageError(
            f"`{text}` is not a release version: give one such as v7 (see `dyno releases`)"
        )
    return int(digits)


def parse_assignments(words: list[str]) -> dict[str, str]:
    """`KEY=value …` (the value may be empty or contain `=`); the platform checks the keys."""
    changes: dict[str, str] = {}
    for word in words:
        key, eq, value = word.partition("=")
        if not eq or not key:
            raise UsageError(f"`{word}` is not KEY=value: usage: dyno config:set KEY=value …")
        changes[key] = value
    return changes


def _version_of(release: Any) -> int:
    version = release.get("version") if isinstance(release, dict) else None
    return version if isinstance(version, int) else 0


def _releases(ctx: Context, app: str, limit: int | None = None) -> list[Any]:
    """Newest first. Sorted here too, so a server that ignores `Range` still reads right."""
    listed = ctx.api.list(
        app_path(app, "/releases"), range=range_header(limit=limit), follow=limit is None
    )
    ordered = sorted(listed, key=_version_of, reverse=True)
    return ordered[:limit] if limit is not None else ordered


def _latest(ctx: Context, app: str) -> Any:
    found = _releases(ctx, app, 1)
    if not found:
        raise Failure(f"{app} has no releases")
    return found[0]


def _release(ctx: Context, app: str, text: str | None) -> Any:
    """The release a `[vN]` argument names, or the newest one."""
    if text is None:
        return _latest(ctx, app)
    return ctx.api.get(app_path(app, f"/releases/{parse_version(text)}"))


# ----- config vars


def config(ctx: Context, parsed: Parsed) -> None:
    app = ctx.app(parsed)
    values = ctx.api.get(app_path(app, "/config-vars"))
    if parsed.on("json"):
        ctx.json(values)
        return
    if not values:
        ctx.say(f"{app} has no config vars.")
        return
    ctx.say(header(f"{app} Config Vars"))
    ctx.lines(styled((key, str(values[key])) for key in sorted(values)))


def config_get(ctx: Context, parsed: Parsed) -> None:
    app = ctx.app(parsed)
    values = ctx.api.get(app_path(app, "/config-vars"))
    value = values.get(parsed.arg("KEY"))
    # An unset key prints an empty line, as Heroku's does, so `$(dyno config:get K)` is "".
    ctx.say("" if value is None else str(value))


def config_set(ctx: Context, parsed: Parsed) -> None:
    app = ctx.app(parsed)
    changes = parse_assignments(parsed.args("KEY=VALUE"))
    values = ctx.api.patch(app_path(app, "/config-vars"), changes)
    version = _version_of(_latest(ctx, app))
    ctx.say(f"Setting {', '.join(changes)} and restarting {app}... done, v{version}")
    ctx.lines(styled((key, str(values.get(key, changes[key]))) for key in changes))


def config_unset(ctx: Context, parsed: Parsed) -> None:
    app = ctx.app(parsed)
    keys = parsed.args("KEY")
    bad = [key for key in keys if not CONFIG_KEY.fullmatch(key)]
    if bad:
        raise UsageError(f"`{bad[0]}` is not a config var key: usage: dyno config:unset KEY …")
    ctx.api.patch(app_path(app, "/config-vars"), {key: None for key in keys})
    version = _version_of(_latest(ctx, app))
    ctx.say(f"Unsetting {', '.join(keys)} and restarting {app}... done, v{version}")


# ----- releases


def releases(ctx: Context, parsed: Parsed) -> None:
    app = ctx.app(parsed)
    count = parsed.value("num")
    if count is not None and not count.isdigit():
        raise UsageError(f"-n takes a number of releases, not `{count}`")
    listed = _releases(ctx, app, int(count) if count else DEFAULT_RELEASES)
    if parsed.on("json"):
        ctx.json(listed)
        return
    if not listed:
        ctx.say(f"{app} has no releases.")
        return
    current = next((r for r in listed if r.get("current")), None)
    title = f"{app} Releases" + (f" - Current: v{current.get('version')}" if current else "")
    ctx.say(header(title))
    ctx.say()
    ctx.lines(release_rows(listed, ctx.clock()))


def release_info(ctx: Context, parsed: Parsed) -> None:
    app = ctx.app(parsed)
    release = _release(ctx, app, parsed.arg("VERSION"))
    if parsed.on("json"):
        ctx.json(release)
        return
    version = release.get("version")
    values = ctx.api.get(app_path(app, f"/releases/{version}/config-vars")) or {}
    addons = release.get("addon_plan_names") or []
    user = release.get("user") or {}
    note = release_status_note(release)
    ctx.say(header(f"Release v{version}"))
    ctx.lines(
        styled(
            row
            for row in [
                ("Add-ons", ", ".join(str(a) for a in addons)),
                ("By", str(user.get("email", "")) if isinstance(user, dict) else ""),
                ("Change", str(release.get("description") or "")),
                ("Current", "true" if release.get("current") else "false"),
                ("Status", str(release.get("status") or "") + (f" ({note})" if note else "")),
                ("When", format_time(release.get("created_at"), ctx.clock())),
            ]
            if row[1]
        )
    )
    ctx.say()
    ctx.say(header(f"v{version} Config vars"))
    ctx.lines(styled((key, str(values[key])) for key in sorted(values)))


def rollback(ctx: Context, parsed: Parsed) -> None:
    app = ctx.app(parsed)
    wanted = parsed.arg("VERSION")
    if wanted is not None:
        target = ctx.api.get(app_path(app, f"/releases/{parse_version(wanted)}"))
    else:
        listed = _releases(ctx, app)
        current = next((r for r in listed if r.get("current")), None) or next(
            (r for r in listed if r.get("status") == "succeeded"), None
        )
        if current is None:
            raise Failure(f"{app} has no current release to roll back from")
        earlier = [r for r in listed if _version_of(r) < _version_of(current)]
        if not earlier:
            raise Failure(f"{app} has no release before v{_version_of(current)} to roll back to")
        target = earlier[0]
    release = ctx.api.post(app_path(app, "/releases"), {"release": target.get("id")})
    ctx.say(f"Rolling back {app} to v{target.get('version')}... done, v{release.get('version')}")
    follow_release_phase(ctx, app, release)


def follow_release_phase(ctx: Context, app: str, release: Any) -> None:
    """Show a release command's output while it runs, then say if it failed."""
    url = release.get("output_stream_url")
    if not url:
        return
    ctx.note("Running release command...")
    ctx.copy_stream(ctx.api.stream(str(url)))
    version = release.get("version")
    status = ctx.api.get(app_path(app, f"/releases/{version}")).get("status")
    if status == "failed":
        raise Failure(
            f"the release command failed, so v{version} is not current: "
            f"see `dyno releases:output v{version} -a {app}`"
        )


def release_output(ctx: Context, parsed: Parsed) -> None:
    app = ctx.app(parsed)
    release = _release(ctx, app, parsed.arg("VERSION"))
    url = release.get("output_stream_url")
    if not url:
        raise Failure(
            f"v{release.get('version')} of {app} has no release command output "
            "(its slug has no `release` process type)"
        )
    ctx.copy_stream(ctx.api.stream(str(url)))
