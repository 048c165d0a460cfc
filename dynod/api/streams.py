"""API routes that move bytes: slug and source uploads (blob URLs to PUT a tarball to), builds
and their live output, and release-phase output (log sessions: api/log_sessions.py).

The URLs handed out here carry their own secret and need no token, as Heroku's do: clients pass
them to curl or an EventSource as they are.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncGenerator, Iterable
from pathlib import Path
from typing import Any

import trio

from dynod.api.common import (
    PLAIN,
    ApiState,
    Call,
    PendingSlug,
    Route,
    build_json,
    expire,
    invalid,
    paginate,
    stable_id,
    url_secret,
)
from dynod.api.server import Response, json_response, stream_response
from dynod.core.logline import APP, LogLine
from dynod.core.names import PROCESS_TYPE, STACK
from dynod.errors import DynodError, NotFound
from dynod.logs.logplex import LogFilter
from dynod.slugs.model import check_slug_size
from dynod.slugs.unpack import unpack_slug
from dynod.state.apps import App
from dynod.state.files import heroku_time

UPLOAD_LIFETIME = 3600.0  # seconds to PUT a blob after asking for its URL
RELEASE_POLL = 0.2  # how often a pending release's output stream checks whether it finished
UPLOAD_WRITE = 1 << 20  # bytes of an upload handed to a worker thread at once
_SECRET = re.compile(r"[A-Za-z0-9_-]{32,64}")


def _lines(texts: Iterable[str]) -> bytes:
    return "".join(f"{text}\n" for text in texts).encode()


def _blob_dir(state: ApiState, kind: str) -> Path:
    path = state.platform.data_dir / kind
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


async def _receive(call: Call, dest: Path) -> int:
    """Stream the request body into `dest`; refuse bodies over the slug size limit. Writes go
    to a worker thread a megabyte at a time (a write can block when the kernel throttles
    dirty pages), and so does the fsync."""
    limit = call.platform.config.build.slug_max_mb << 20
    size = 0
    pending: list[bytes] = []
    held = 0
    with dest.open("wb") as out:
        async for chunk in call.request.body.chunks(limit):
            pending.append(chunk)
            size += len(chunk)
            held += len(chunk)
            if held >= UPLOAD_WRITE:
                await trio.to_thread.run_sync(out.writelines, pending)
                pending, held = [], 0
        await trio.to_thread.run_sync(out.writelines, pending)
        await trio.to_thread.run_sync(out.flush)
        await trio.to_thread.run_sync(os.fsync, out.fileno())
    return size


# ----- slugs


def _slug_json(
    slug_id: str,
    types: dict[str, str],
    commit: str | None,
    checksum: str | None,
    size: int | None,
    created_at: str,
    blob: str | None,
) -> dict[str, Any]:
    return {
        "id": slug_id,
        "process_types": types,
        "commit": commit,
        "commit_description": None,
        "checksum": checksum,
        "size": size,
        "buildpack_provided_description": None,
        "stack": {"id": stable_id("stack", STACK), "name": STACK},
        "blob": {"method": "put", "url": blob} if blob else None,
        "created_at": created_at,
        "updated_at": created_at,
    }


async def create_slug(call: Call) -> Response:
    """Heroku's slug upload: the answer's `blob.url` takes a PUT of the gzip tarball."""
    app = call.app()
    body = await call.json()
    types = body.get("process_types")
    if not isinstance(types, dict) or not all(isinstance(v, str) for v in types.values()):
        raise invalid('process_types is required: {"process_types": {"web": "python web.py"}}.')
    for name, command in types.items():
        if not PROCESS_TYPE.fullmatch(name):
            raise invalid(
                f"Process type {name!r} is not valid: use 1-63 letters, digits, '_' or '-'."
            )
        if not command.strip() or "\0" in command:
            raise invalid(f"Process type {name} needs a command (without NUL characters).")
    commit, checksum = body.get("commit"), body.get("checksum")
    if commit is not None and not isinstance(commit, str):
        raise invalid("commit must be a string.")
    if checksum is not None and not (
        isinstance(checksum, str) and re.fullmatch(r"SHA256:[0-9a-f]{64}", checksum)
    ):
        raise invalid("checksum must look like SHA256:<64 lowercase hex digits>.")
    state = call.state
    expire(state.pending_slugs)
    secret = url_secret()
    pending = PendingSlug(
        app.id,
        str(uuid.uuid4()),
        dict(types),
        commit,
        checksum,
        heroku_time(),
        trio.current_time() + UPLOAD_LIFETIME,
    )
    state.pending_slugs[secret] = pending
    url = f"{state.base_url}/blobs/slugs/{secret}"
    return json_response(
        _slug_json(
            pending.id, pending.process_types, commit, checksum, None, pending.created_at, url
        ),
        201,
    )


async def slug_info(call: Call) -> Response:
    call.app()
    slug_id = call.params["slug"]
    for pending in call.state.pending_slugs.values():
        if pending.id == slug_id:
            return json_response(
                _slug_json(
                    slug_id,
                    pending.process_types,
                    pending.commit,
                    pending.checksum,
                    None,
                    pending.created_at,
                    None,
                )
            )
    try:
        slug = call.platform.slugs.get(slug_id)
    except DynodError:
        raise NotFound(f"Couldn't find slug {slug_id}.") from None
    return json_response(
        _slug_json(
            slug.id,
            slug.process_types,
            slug.commit,
            slug.checksum,
            slug.size,
            slug.created_at,
            None,
        )
    )


async def put_slug(call: Call) -> Response:
    """Store an uploaded slug, after checking every member (a hostile slug is refused whole)."""
    state = call.state
    expire(state.pending_slugs)
    pending = state.pending_slugs.get(call.params["secret"])
    if pending is None:
        raise NotFound("This slug upload URL is unknown or expired: create the slug again.")
    config = call.platform.config.build
    work = Path(tempfile.mkdtemp(prefix=".upload-", dir=_blob_dir(state, "uploads")))
    try:
        tarball = work / "slug.tgz"
        size = await _receive(call, tarball)
        check_slug_size(size, warn_mb=config.slug_warn_mb, max_mb=config.slug_max_mb)
        await trio.to_thread.run_sync(unpack_slug, tarball, work / "check")
        await trio.to_thread.run_sync(
            lambda: call.platform.slugs.put(
                tarball,
                pending.process_types,
                slug_id=pending.id,
                commit=pending.commit,
                expected_checksum=pending.checksum,
            )
        )
    finally:
        await trio.to_thread.run_sync(shutil.rmtree, work, True)
    del state.pending_slugs[call.params["secret"]]
    return Response(200)


# ----- sources


async def create_source(call: Call) -> Response:
    """Somewhere to upload a source tarball for a build: PUT it to `put_url`, then build
    with `source_blob.url` = `get_url`."""
    if "app" in call.params:
        call.app()
    state = call.state
    state.pending_sources = {
        key: until for key, until in state.pending_sources.items() if until >= trio.current_time()
    }
    secret = url_secret()
    state.pending_sources[secret] = trio.current_time() + UPLOAD_LIFETIME
    _drop_old_sources(_blob_dir(state, "sources"))
    url = f"{state.base_url}/blobs/sources/{secret}"
    return json_response({"source_blob": {"get_url": url, "put_url": url}}, 201)


SOURCE_KEEP = 24 * 3600.0  # an uploaded source is readable this long (a day, for rebuilds)


def _drop_old_sources(directory: Path) -> None:
    """Uploaded sources are deleted a day after upload, so the data directory does not grow
    with every deploy (their builds keep what they need: the slug)."""
    cutoff = time.time() - SOURCE_KEEP
    for path in directory.iterdir():
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
        except OSError:
            continue


def _source_path(call: Call) -> Path:
    secret = call.params["secret"]
    if not _SECRET.fullmatch(secret):
        raise NotFound("This source URL is unknown: ask for a new one with POST /sources.")
    return _blob_dir(call.state, "sources") / f"{secret}.tar.gz"


async def put_source(call: Call) -> Response:
    path = _source_path(call)
    if call.state.pending_sources.get(call.params["secret"], 0.0) < trio.current_time():
        raise NotFound(
            "This source upload URL is unknown or expired: ask for a new one with POST /sources."
        )
    incoming = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    try:
        await _receive(call, incoming)
        incoming.replace(path)
    finally:
        incoming.unlink(missing_ok=True)
    del call.state.pending_sources[call.params["secret"]]
    return Response(200)


async def get_source(call: Call) -> Response:
    path = _source_path(call)
    try:
        source = path.open("rb")
    except FileNotFoundError:
        raise NotFound("Nothing was uploaded to this source URL yet.") from None

    async def chunks() -> AsyncGenerator[bytes, None]:
        with source:
            while data := await trio.to_thread.run_sync(source.read, 1 << 20):
                yield data

    return stream_response(chunks(), "application/gzip")


# ----- builds


def _buildpacks(value: object) -> list[str]:
    if value is None:
        return []
    problem = invalid(
        'buildpacks must be a list such as [{"url": "python"}, {"url": "/path/to/buildpack"}].'
    )
    if not isinstance(value, list):
        raise problem
    names = []
    for item in value:
        name = item.get("url") or item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str) or not name:
            raise problem
        names.append(name)
    return names


async def create_build(call: Call) -> Response:
    app = call.app()
    body = await call.json()
    blob = body.get("source_blob")
    url = blob.get("url") if isinstance(blob, dict) else None
    if not isinstance(url, str) or not url:
        raise invalid(
            "source_blob.url is required: a directory, a tarball, a file:// URL or an "
            "upload's get_url."
        )
    version = blob.get("version") if isinstance(blob, dict) else None
    if version is not None and not isinstance(version, str):
        raise invalid("source_blob.version must be a string, such as a git commit.")
    build = await call.platform.builds.create(
        app, source_url=url, version=version, buildpacks=_buildpacks(body.get("buildpacks"))
    )
    return json_response(build_json(call.state, app, build), 201)


async def list_builds(call: Call) -> Response:
    app = call.app()
    return paginate(
        call.request,
        call.platform.builds.all(app),
        {"created_at": lambda b: b.created_at, "id": lambda b: b.id},
        lambda build: build_json(call.state, app, build),
    )


async def build_info(call: Call) -> Response:
    app = call.app()
    return json_response(
        build_json(call.state, app, call.platform.builds.get(app, call.params["build"]))
    )


def _signed_app(call: Call, kind: str, item: str) -> App:
    call.state.check_signature(call.params["signature"], kind, call.params["app"], item)
    return call.app()


async def build_output(call: Call) -> Response:
    """The build's output so far, then live until it ends."""
    build_id = call.params["item"]
    app = _signed_app(call, "builds", build_id)
    call.platform.builds.get(app, build_id)  # a 404 now, not halfway through a 200
    lines = call.platform.builds.output(app, build_id)

    async def chunks() -> AsyncGenerator[bytes, None]:
        async for line in lines:
            yield _lines([line])

    return stream_response(chunks(), PLAIN)


async def release_output(call: Call) -> Response:
    """A release phase's output: followed live while the release is pending."""
    version = call.params["item"]
    app = _signed_app(call, "releases", version)
    platform = call.platform
    release = platform.releases.get(app, version)

    async def chunks() -> AsyncGenerator[bytes, None]:
        sent = 0
        if platform.releases.get(app, release.version).status == "pending":
            ring = platform.ring(app)
            with ring.tail(
                LogFilter(dyno=f"release.{release.version}", source=APP), last=ring.history
            ) as tail:
                while platform.releases.get(app, release.version).status == "pending":
                    batch: list[LogLine] = []
                    with trio.move_on_after(RELEASE_POLL):
                        batch = await tail.receive_batch()
                    if batch:
                        sent += len(batch)
                        yield _lines(line.text for line in batch)
        # Finished: the platform kept every line; send those the ring did not deliver.
        kept = (platform.releases.output(app, release.version) or "").splitlines()
        if kept[sent:]:
            yield _lines(kept[sent:])

    return stream_response(chunks(), PLAIN)


ROUTES = [
    Route("POST", "/apps/{app}/slugs", create_slug),
    Route("GET", "/apps/{app}/slugs/{slug}", slug_info),
    Route("POST", "/sources", create_source),
    Route("POST", "/apps/{app}/sources", create_source),
    Route("POST", "/apps/{app}/builds", create_build),
    Route("GET", "/apps/{app}/builds", list_builds),
    Route("GET", "/apps/{app}/builds/{build}", build_info),
    Route("PUT", "/blobs/slugs/{secret}", put_slug, public=True),
    Route("PUT", "/blobs/sources/{secret}", put_source, public=True),
    Route("GET", "/blobs/sources/{secret}", get_source, public=True),
    Route("GET", "/streams/builds/{app}/{item}/{signature}", build_output, public=True),
    Route("GET", "/streams/releases/{app}/{item}/{signature}", release_output, public=True),
]
