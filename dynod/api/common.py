"""What every API route shares: the API's state, the per-request Call, Heroku Platform API v3
JSON shapes, and list pagination by the `Range` header (206 + `Next-Range` when cut).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
import secrets
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import attrs
import trio

from dynod.api.server import MAX_BODY, HTTPError, Request, Response, json_response
from dynod.builds.pipeline import Build
from dynod.errors import DynodError
from dynod.logs.logplex import LogFilter
from dynod.platform.formation import DynoInfo, FormationEntry
from dynod.platform.root import Platform
from dynod.proc.rendezvous import Rendezvous
from dynod.state.apps import App
from dynod.state.config import Address
from dynod.state.ledger import Release

PAGE_DEFAULT = 200  # Heroku's page size when the Range names no max
PAGE_MAX = 1000
MAX_NESTING = 64  # arrays and objects in a JSON body (docs/platform.md, "The API's limits")
SIZE = "standard-1X"
_T = TypeVar("_T")


@attrs.define
class LogSession:
    """A `logplex_url` handed out: usable once (a tail also for reconnects that carry
    `Last-Event-ID`, which get only lines it has not sent) until `expires` on the trio clock."""

    app_id: str
    filters: LogFilter
    lines: int
    tail: bool
    expires: float
    used: bool = False
    streaming: bool = False  # a tail is open on it now (no second reader)
    # The event id a reconnect resumes after, whatever its Last-Event-ID: the last line sent,
    # or the moment the tail opened (a used URL replays nothing).
    sent: tuple[int, int] | None = None


@attrs.frozen
class PendingSlug:
    """A slug created by POST /slugs whose tarball has not been PUT yet."""

    app_id: str
    id: str
    process_types: dict[str, str]
    commit: str | None
    checksum: str | None
    created_at: str
    expires: float


class ApiState:
    """The API's own state beside the Platform: its public URL (for URLs it hands out), the
    key that signs output stream URLs, and short-lived upload and log-session secrets."""

    def __init__(self, platform: Platform, token: str, base_url: str) -> None:
        self.platform = platform
        self.token = token
        self.base_url = base_url.rstrip("/")
        self.router: Address = (
            platform.config.router.listen
        )  # the lead rewires it if the router binds port 0
        self._key = secrets.token_bytes(32)
        self._release_phase: dict[
            str, bool
        ] = {}  # slug id -> has a `release` type (slugs never change)
        self.log_sessions: dict[str, LogSession] = {}  # by the secret in their URL
        self.pending_slugs: dict[str, PendingSlug] = {}  # by the secret in their blob URL
        self.pending_sources: dict[str, float] = {}  # upload secret -> expiry (trio clock)
        self.rendezvous: Rendezvous | None = None  # attached one-offs' listener (serve sets it)

    def signed_url(self, *parts: str) -> str:
        """An unguessable URL on the API for a stream that needs no header (clients `curl` it)."""
        path = "/".join(parts)
        signature = hmac.new(self._key, path.encode(), hashlib.sha256).hexdigest()[:32]
        return f"{self.base_url}/streams/{path}/{signature}"

    def check_signature(self, signature: str, *parts: str) -> None:
        expected = self.signed_url(*parts).rsplit("/", 1)[1]
        if not hmac.compare_digest(signature, expected):
            raise HTTPError(
                404, "not_found", "This stream URL is not valid: ask the API for a new one."
            )

    def has_release_phase(self, slug_id: str | None) -> bool:
        if slug_id is None:
            return False
        known = self._release_phase.get(slug_id)
        if known is None:
            try:
                known = "release" in self.platform.slugs.get(slug_id).process_types
            except DynodError:
                return False
            self._release_phase[slug_id] = known
        return known


@attrs.frozen
class Call:
    """One request as a route sees it: the path's parameters and helpers for the common steps."""

    state: ApiState
    request: Request
    params: dict[str, str]

    @property
    def platform(self) -> Platform:
        return self.state.platform

    def app(self) -> App:
        return self.platform.apps.find(self.params["app"])

    async def json(self) -> dict[str, Any]:
        """The body as a JSON object ({} when empty)."""
        raw = await self.request.body.read(MAX_BODY)
        if not raw.strip():
            return {}
        too_deep = HTTPError(
            400, "bad_request", f"The request body nests JSON over {MAX_NESTING} levels deep."
        )
        if _nesting(raw) > MAX_NESTING:
            raise too_deep
        try:
            data = json.loads(raw)
        except RecursionError:  # deep past the interpreter's limit (text the count misread)
            raise too_deep from None
        except (ValueError, UnicodeDecodeError):
            raise HTTPError(400, "bad_request", "The request body is not valid JSON.") from None
        if not isinstance(data, dict):
            raise HTTPError(400, "bad_request", "The request body must be a JSON object.")
        return data


_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_BRACKET = re.compile(rb"[\[\]{}]")
_STEP = {b"[": 1, b"{": 1, b"]": -1, b"}": -1}


def _nesting(raw: bytes) -> int:
    """How deep arrays and objects nest in the JSON text `raw`: its brackets outside strings,
    counted at C speed (a walk of the parsed value in Python took a third of a second on
    the event loop for a megabyte of `[]`)."""
    brackets = _BRACKET.findall(_JSON_STRING.sub(b"", raw))
    return max(itertools.accumulate(map(_STEP.__getitem__, brackets)), default=0)


Handler = Callable[[Call], Awaitable[Response]]


@attrs.frozen
class Route:
    method: str
    pattern: str  # "/apps/{app}/releases/{release}"
    handler: Handler
    public: bool = False  # needs no token: its URL carries a secret instead


def invalid(message: str) -> HTTPError:
    return HTTPError(422, "invalid_params", message)


# ----- JSON shapes (Heroku Platform API v3)


def stable_id(*parts: str) -> str:
    """A uuid for things dynod does not number itself (a formation entry, a dyno, the user)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "dynod:" + "/".join(parts)))


def ref(app: App) -> dict[str, str]:
    return {"id": app.id, "name": app.name}


def user_json(email: str) -> dict[str, str]:
    return {"email": email, "id": stable_id("user", email)}


def account_json(email: str) -> dict[str, Any]:
    return {
        **user_json(email),
        "name": email.partition("@")[0],
        "allow_tracking": False,
        "beta": False,
        "verified": True,
        "two_factor_authentication": False,
        "default_organization": None,
        "default_team": None,
        "delinquent_at": None,
        "suspended_at": None,
        "created_at": None,
        "updated_at": None,
        "last_login": None,
    }


def app_json(state: ApiState, app: App) -> dict[str, Any]:
    platform = state.platform
    current = platform.releases.current(app)
    router = state.router
    slug_size = None
    if current is not None and current.slug_id is not None:
        try:
            slug_size = platform.slugs.get(current.slug_id).size
        except DynodError:
            pass  # a slug record lost from the store: the release shows it when it runs
    return {
        "id": app.id,
        "name": app.name,
        "created_at": app.created_at,
        "updated_at": app.updated_at,
        "released_at": current.created_at if current else None,
        "owner": user_json(platform.user),
        "region": {"id": stable_id("region", "local"), "name": "local"},
        "stack": {"id": stable_id("stack", app.stack), "name": app.stack},
        "build_stack": {"id": stable_id("stack", app.stack), "name": app.stack},
        "generation": {"id": stable_id("generation", "cedar"), "name": "cedar"},
        "web_url": f"http://{app.name}.{platform.config.router.domain}:{router.port}/",
        "git_url": platform.git_url(app),
        "buildpack_provided_description": None,
        "maintenance": False,
        "acm": False,
        "archived_at": None,
        "repo_size": None,
        "slug_size": slug_size,
        "space": None,
        "internal_routing": None,
        "organization": None,
        "team": None,
    }


def release_json(
    state: ApiState, app: App, release: Release, current: Release | None
) -> dict[str, Any]:
    phase = release.status == "pending" or state.has_release_phase(release.slug_id)
    return {
        "id": release.id,
        "version": release.version,
        "description": release.description,
        "status": release.status,
        "current": current is not None and current.id == release.id,
        "user": user_json(release.user),
        "app": ref(app),
        "slug": {"id": release.slug_id} if release.slug_id else None,
        "addon_plan_names": list(release.addons),
        "eligible_for_rollback": release.slug_id is not None,
        "created_at": release.created_at,
        "updated_at": release.updated_at,
        "output_stream_url": state.signed_url("releases", app.id, str(release.version))
        if phase
        else None,
    }


def formation_json(app: App, entry: FormationEntry) -> dict[str, Any]:
    return {
        "id": stable_id("formation", app.id, entry.type),
        "type": entry.type,
        "quantity": entry.quantity,
        "size": entry.size,
        "command": entry.command,
        "app": ref(app),
        "created_at": app.created_at,
        "updated_at": app.updated_at,
    }


def dyno_json(platform: Platform, app: App, dyno: DynoInfo) -> dict[str, Any]:
    release = None
    if dyno.release_version is not None:
        release = {
            "id": platform.releases.get(app, dyno.release_version).id,
            "version": dyno.release_version,
        }
    return {
        "id": stable_id("dyno", app.id, dyno.name),
        "name": dyno.name,
        "type": dyno.type,
        "command": dyno.command,
        "state": dyno.state,
        "size": dyno.size,
        "app": ref(app),
        "release": release,
        "attach_url": None,
        "created_at": dyno.updated_at,
        "updated_at": dyno.updated_at,
        "memory": dyno.memory.to_json() if dyno.memory else None,
        "exit_status": dyno.exit_status,
        "next_start_at": dyno.next_start_at,
    }


def build_json(state: ApiState, app: App, build: Build) -> dict[str, Any]:
    release = None
    if build.release_version is not None:
        found = state.platform.releases.get(app, build.release_version)
        release = {"id": found.id, "version": found.version}
    return {
        "id": build.id,
        "status": build.status,
        "app": ref(app),
        "source_blob": {"url": build.source_url, "version": build.version, "checksum": None},
        "slug": {"id": build.slug_id} if build.slug_id else None,
        "release": release,
        "buildpacks": [{"url": name, "name": name} for name in build.buildpacks],
        "output_stream_url": state.signed_url("builds", app.id, build.id),
        "user": user_json(state.platform.user),
        "stack": app.stack,
        "created_at": build.created_at,
        "updated_at": build.updated_at,
    }


# ----- Range


@attrs.frozen
class Range:
    field: str
    start: str | None = None
    exclusive: bool = False  # `]start..`: begin after the item whose value is `start`
    max: int = PAGE_DEFAULT
    descending: bool = False


def parse_range(header: str, fields: Sequence[str]) -> Range:
    """`version ..; order=desc,max=1`, `version ]5..; max=10, order=desc`, and loose forms such
    as heroku3's `id ..; ;` (whatever is missing or unknown takes its default)."""
    head, _, options = header.partition(";")
    name, _, bounds = head.strip().partition(" ")
    start = bounds.strip().partition("..")[0].strip()
    exclusive = start.startswith("]")
    start = start.lstrip("]").strip()
    page, descending = PAGE_DEFAULT, False
    for option in re.split(r"[;,]", options):
        key, _, value = (part.strip() for part in option.partition("="))
        if key == "max":
            if not value.isdigit() or int(value) < 1:
                raise HTTPError(
                    400, "bad_request", f"Range max must be a whole number from 1 to {PAGE_MAX}."
                )
            page = min(int(value), PAGE_MAX)
        elif key == "order":
            descending = value == "desc"
    return Range(name if name in fields else fields[0], start or None, exclusive, page, descending)


def paginate(
    request: Request,
    items: list[_T],
    fields: Mapping[str, Callable[[_T], Any]],
    render: Callable[[_T], object],
) -> Response:
    """A list answer: `items` in their natural order (reversed for `order=desc`) from the Range's
    start, at most `max` of them; 206 and `Next-Range` when there are more."""
    spec = parse_range(request.header("range"), list(fields))
    value_of = fields[spec.field]
    ordered = list(reversed(items)) if spec.descending else list(items)
    if spec.start is not None:
        ordered = ordered[_start_index(ordered, value_of, spec) :]
    page = ordered[: spec.max]
    body = [render(item) for item in page]
    if len(ordered) <= spec.max:
        return json_response(body, 200)
    order = "desc" if spec.descending else "asc"
    following = f"{spec.field} ]{value_of(page[-1])}..; max={spec.max}, order={order}"
    return json_response(body, 206, [("Next-Range", following)])


def _start_index(ordered: list[_T], value_of: Callable[[_T], Any], spec: Range) -> int:
    for index, item in enumerate(ordered):
        if str(value_of(item)) == spec.start:
            return index + 1 if spec.exclusive else index
    # No exact match (an item since removed): the first item past `start` in this order.
    for index, item in enumerate(ordered):
        value = value_of(item)
        try:
            bound = type(value)(spec.start)
        except (TypeError, ValueError):
            raise HTTPError(
                400, "bad_request", f"Range start {spec.start!r} does not fit {spec.field}."
            ) from None
        if (value < bound) if spec.descending else (value > bound):
            return index
    return len(ordered)


PLAIN = "text/plain; charset=utf-8"


def url_secret() -> str:
    """The secret in a URL handed out without a token (a blob, a stream, a log session)."""
    return secrets.token_urlsafe(32)


class _Expiring(Protocol):
    @property
    def expires(self) -> float: ...


_E = TypeVar("_E", bound=_Expiring)


def expire(table: dict[str, _E]) -> None:
    """Forget what expired by trio's clock: unused upload URLs, log sessions."""
    now = trio.current_time()
    for key in [key for key, item in table.items() if item.expires < now]:
        del table[key]
