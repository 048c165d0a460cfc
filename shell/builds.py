"""Handlers for builds: `deploy` (pack a directory, upload it through `POST /sources`, start a
build and stream its output), `builds` and `builds:output`."""

from __future__ import annotations

import tarfile
import tempfile
import time
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from shell import git
from shell.apps import app_path
from shell.context import Context
from shell.errors import Failure, UsageError
from shell.grammar import Parsed
from shell.output import byte_size, columns, format_time, header
from shell.releases import follow_release_phase

DEFAULT_BUILDS = 15
# The output stream can end a moment before the build records its outcome.
OUTCOME_WAIT = 60.0
EXCLUDED = frozenset({".git", ".dynod"})  # .dynod: a running `dynod start`'s socket


def pack_source(directory: Path, into: IO[bytes]) -> None:
    """A gzip tarball of the directory's contents at its root, without `.git` or `.dynod`
    anywhere."""

    def keep(member: tarfile.TarInfo) -> tarfile.TarInfo | None:
        return None if EXCLUDED.intersection(Path(member.name).parts) else member

    with tarfile.open(fileobj=into, mode="w:gz") as tar:
        for entry in sorted(directory.iterdir()):
            tar.add(entry, arcname=entry.name, filter=keep)


def _newest_first(builds: list[Any]) -> list[Any]:
    return sorted(builds, key=lambda b: str(b.get("created_at") or ""), reverse=True)


def deploy(ctx: Context, parsed: Parsed) -> None:
    directory = ctx.cwd / (parsed.arg("DIR") or ".")
    if not directory.is_dir():
        raise UsageError(f"{directory} is not a directory: pass the app's directory (default .)")
    app = ctx.app(parsed)
    api = ctx.api
    web_url = api.get(app_path(app)).get("web_url")  # an unknown app fails here, before the upload
    with tempfile.TemporaryFile() as tarball:
        pack_source(directory, tarball)
        size = tarball.tell()
        tarball.seek(0)
        blob = api.post("/sources").get("source_blob") or {}
        if not blob.get("put_url") or not blob.get("get_url"):
            raise Failure("dynod gave no upload URL for the source (POST /sources)")
        ctx.note(f"Uploading {directory.resolve().name} ({byte_size(size)})...")
        api.put_bytes(str(blob["put_url"]), tarball, size, "application/gzip")
    body: dict[str, Any] = {
        "source_blob": {"url": blob["get_url"], "version": git.head_commit(directory)},
    }
    buildpacks = parsed.values("buildpack")
    if buildpacks:
        body["buildpacks"] = [{"url": url} for url in buildpacks]
    build = api.post(app_path(app, "/builds"), body)
    if build.get("output_stream_url"):
        ctx.copy_stream(api.stream(str(build["output_stream_url"])))
    build = _outcome(ctx, app, build)
    if build.get("status") != "succeeded":
        failed = (build.get("release") or {}).get("version")
        if failed is not None:  # built, but its release command failed: the old release serves
            raise Failure(
                f"the release command failed, so v{failed} is not current: "
                f"see `dyno releases:output v{failed} -a {app}`"
            )
        raise Failure(
            f"the build failed: see the output above "
            f"(`dyno builds:output {build.get('id')} -a {app}`)"
        )
    release_id = (build.get("release") or {}).get("id")
    if not release_id:
        ctx.say(f"Build {build.get('id')} succeeded")
        return
    release = api.get(app_path(app, f"/releases/{quote(str(release_id), safe='')}"))
    follow_release_phase(ctx, app, release)
    ctx.say(f"Released v{release.get('version')} of {app}" + (f": {web_url}" if web_url else ""))


def _outcome(ctx: Context, app: str, build: Any) -> Any:
    """The build once it is no longer pending (a condition with a deadline)."""
    path = app_path(app, f"/builds/{quote(str(build.get('id')), safe='')}")
    deadline = time.monotonic() + OUTCOME_WAIT
    build = ctx.api.get(path)
    while build.get("status") == "pending":
        if time.monotonic() > deadline:
            raise Failure(
                f"build {build.get('id')} is still pending after its output ended: "
                f"check `dyno builds -a {app}`"
            )
        time.sleep(0.2)
        build = ctx.api.get(path)
    return build


def builds(ctx: Context, parsed: Parsed) -> None:
    app = ctx.app(parsed)
    count = parsed.value("num")
    if count is not None and not count.isdigit():
        raise UsageError(f"-n takes a number of builds, not `{count}`")
    listed = ctx.api.list(app_path(app, "/builds"))
    if parsed.on("json"):
        ctx.json(listed)
        return
    if not listed:
        ctx.say(f"{app} has no builds yet: run `dyno deploy`")
        return
    now = ctx.clock()
    rows = []
    for build in _newest_first(listed)[: int(count) if count else DEFAULT_BUILDS]:
        user = build.get("user") or {}
        version = (build.get("source_blob") or {}).get("version") or ""
        rows.append(
            [
                str(build.get("id")),
                str(build.get("status")),
                format_time(build.get("created_at"), now),
                str(user.get("email", "")),
                str(version)[:8],
            ]
        )
    ctx.say(header(f"{app} Builds"))
    ctx.lines(columns(rows))


def build_output(ctx: Context, parsed: Parsed) -> None:
    app = ctx.app(parsed)
    wanted = parsed.arg("ID")
    if wanted is None:
        listed = _newest_first(ctx.api.list(app_path(app, "/builds")))
        if not listed:
            raise Failure(f"{app} has no builds yet: run `dyno deploy`")
        wanted = str(listed[0].get("id"))
    build = ctx.api.get(app_path(app, f"/builds/{quote(wanted, safe='')}"))
    url = build.get("output_stream_url")
    if not url:
        raise Failure(f"build {wanted} of {app} has no output to show")
    ctx.copy_stream(ctx.api.stream(str(url)))
