"""The API of a local run (`dynod start`): the Platform API's routes for its one app (`ps`, the
formation, restarts and stops, one-off dynos, log sessions) in dynod serve's JSON shapes
(docs/api.md), over a `LocalRun`, on the run's private socket (dynod/api/unix.py). The socket's
mode (0600, in a 0700 directory) is the credential: no token (README, "Steering a running
`dynod start`")."""

from __future__ import annotations

import errno
import json
import secrets
import socket
import urllib.parse
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import trio

from dynod.api.local_run import LocalDyno, LocalType
from dynod.api.server import (
    HTTPError,
    Request,
    Response,
    error_response,
    json_response,
    serve_listeners,
    stream_response,
)
from dynod.core.config_vars import apply_config_changes
from dynod.core.logline import APP, HEROKU
from dynod.errors import NotFound
from dynod.logs.logplex import LogFilter, LogRing
from dynod.proc.attached import Terminal
from dynod.state.files import heroku_time

if TYPE_CHECKING:
    from dynod.api.local_attach import LocalAttach

BASE_URL = "http://localhost"  # what the URLs handed out start with: the client's socket
SIZE = "standard-1X"
SESSION_LIFETIME = 300.0  # seconds to open a logplex_url
DEFAULT_LINES = 100
ACCEPTED = 202
PLAIN = "text/plain; charset=utf-8"
_ACCEPT_CAPACITY = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
_ACCEPT_PAUSE = 0.1


class LocalRun(Protocol):
    """What the API steers: `dynod start`'s app (dynod/local_control.py). Refusals are
    DynodErrors, answered as dynod serve answers them."""

    @property
    def name(self) -> str: ...
    @property
    def root(self) -> Path: ...
    @property
    def ring(self) -> LogRing: ...
    def config_vars(self) -> Mapping[str, str]: ...
    def formation(self) -> list[LocalType]: ...
    def dynos(self) -> list[LocalDyno]: ...
    def scale(self, counts: Mapping[str, object]) -> list[LocalType]:
        """Quantities as the API takes them (2, "2", "+1"): all checked before any applies."""
        ...

    def restart(self, target: str | None) -> None:
        """Every dyno (None), a process type's (`web`) or one dyno (`web.1`), the others
        untouched."""
        ...

    def stop(self, target: str) -> None:
        """A dyno or a type's dynos (the formation starts fresh ones), or a one-off for good."""
        ...

    def run_detached(self, command: str, env: Mapping[str, str]) -> LocalDyno:
        """A one-off `run.N` in the app directory with the app's .env (`env` over it), its
        output in the log ring, listed while it runs."""
        ...

    def run_attached(self, command: str, env: Mapping[str, str], terminal: Terminal) -> LocalDyno:
        """As run_detached, on `terminal`: it starts once its client has come. LINES and
        COLUMNS in `env` size the terminal."""
        ...


@attrs.define
class _Session:
    filters: LogFilter
    lines: int
    tail: bool
    expires: float


Handler = Callable[["LocalApi", Request, dict[str, str]], Awaitable[Response]]


class LocalApi:
    """`await api.handle(request)` answers one request about `run`."""

    def __init__(self, run: LocalRun) -> None:
        self.run = run
        self.id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"dynod:local:{run.root}"))
        self.sessions: dict[str, _Session] = {}
        self.nursery: trio.Nursery | None = None  # serve_local_api's
        self.attach: LocalAttach | None = None  # made at the first attach

    async def handle(self, request: Request) -> Response:
        segments = [urllib.parse.unquote(part) for part in request.path.strip("/").split("/")]
        allowed = []
        for method, pattern, handler in ROUTES:
            params = _match(pattern, segments)
            if params is None:
                continue
            if method != request.method:
                allowed.append(method)
                continue
            if "app" in params and params["app"] not in (self.run.name, self.id):
                raise NotFound(
                    f"This local run's app is {self.run.name}, not {params['app']}: "
                    "pass -a APP or set DYNOD_API_URL to reach dynod serve."
                )
            return await handler(self, request, params)
        if allowed:
            text = ", ".join(sorted(allowed))
            response = error_response(
                405,
                "method_not_allowed",
                f"{request.method} is not allowed on {request.path} in a local run (dynod "
                f"start): use {text}, or pass -a APP or set DYNOD_API_URL to reach dynod serve.",
            )
            return attrs.evolve(response, headers=(*response.headers, ("Allow", text)))
        return error_response(
            404,
            "not_found",
            f"A local run (dynod start) has no {request.method} {request.path}: it serves its "
            "dynos, formation, logs and one-offs. Pass -a APP or set DYNOD_API_URL to reach "
            "dynod serve.",
        )

    # ----- JSON shapes (as dynod/api/common.py's)

    def ref(self) -> dict[str, str]:
        return {"id": self.id, "name": self.run.name}

    def app_json(self) -> dict[str, Any]:
        return {
            **self.ref(),
            "created_at": None,
            "updated_at": None,
            "released_at": None,
            "owner": None,
            "region": {"id": _stable_id("region", "local"), "name": "local"},
            "stack": None,
            "build_stack": None,
            "generation": {"id": _stable_id("generation", "cedar"), "name": "cedar"},
            "web_url": None,
            "git_url": None,
            "buildpack_provided_description": None,
            "maintenance": False,
            "acm": False,
            "archived_at": None,
            "repo_size": None,
            "slug_size": None,
            "space": None,
            "internal_routing": None,
            "organization": None,
            "team": None,
        }

    def formation_json(self, entry: LocalType) -> dict[str, Any]:
        return {
            "id": _stable_id("formation", self.id, entry.type),
            "type": entry.type,
            "quantity": entry.quantity,
            "size": SIZE,
            "command": entry.command,
            "app": self.ref(),
            "created_at": None,
            "updated_at": None,
        }

    def dyno_json(self, dyno: LocalDyno) -> dict[str, Any]:
        return {
            "id": _stable_id("dyno", self.id, dyno.name),
            "name": dyno.name,
            "type": dyno.type,
            "command": dyno.command,
            "state": dyno.state,
            "size": SIZE,
            "app": self.ref(),
            "release": None,
            "attach_url": None,
            "created_at": heroku_time(dyno.updated_at),
            "updated_at": heroku_time(dyno.updated_at),
            "memory": dyno.memory.to_json() if dyno.memory else None,
            "exit_status": dyno.exit_status,
            "next_start_at": heroku_time(dyno.next_start_at) if dyno.next_start_at else None,
        }


def _stable_id(*parts: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "dynod:" + "/".join(parts)))


def _match(pattern: str, segments: list[str]) -> dict[str, str] | None:
    expected = pattern.strip("/").split("/")
    if len(expected) != len(segments):
        return None
    params = {}
    for want, have in zip(expected, segments, strict=True):
        if want.startswith("{") and have:
            params[want[1:-1]] = have
        elif want != have:
            return None
    return params


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body.read()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise HTTPError(400, "bad_request", "The request body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise HTTPError(400, "bad_request", "The request body must be a JSON object.")
    return data


def _invalid(message: str) -> HTTPError:
    return HTTPError(422, "invalid_params", message)


# ----- routes


async def _account(api: LocalApi, request: Request, params: dict[str, str]) -> Response:
    return json_response({"email": None, "id": _stable_id("user", "local"), "name": "local"})


async def _apps(api: LocalApi, request: Request, params: dict[str, str]) -> Response:
    return json_response([api.app_json()])


async def _app(api: LocalApi, request: Request, params: dict[str, str]) -> Response:
    return json_response(api.app_json())


async def _config_vars(api: LocalApi, request: Request, params: dict[str, str]) -> Response:
    return json_response(dict(api.run.config_vars()))


async def _no_releases(api: LocalApi, request: Request, params: dict[str, str]) -> Response:
    return json_response([])  # a local run runs the app directory as it is: no releases


async def _formation(api: LocalApi, request: Request, params: dict[str, str]) -> Response:
    return json_response([api.formation_json(entry) for entry in api.run.formation()])


async def _formation_type(api: LocalApi, request: Request, params: dict[str, str]) -> Response:
    for entry in api.run.formation():
        if entry.type == params["type"]:
            return json_response(api.formation_json(entry))
    raise NotFound(f"Couldn't find that process type ({params['type']}): see `dyno ps`.")


def _scale(api: LocalApi, updates: object) -> list[dict[str, Any]]:
    if not isinstance(updates, list) or not updates:
        raise _invalid('Send {"updates": [{"type": "web", "quantity": 2}]}.')
    counts = {entry.type: entry.quantity for entry in api.run.formation()}
    wanted: dict[str, object] = {}
    for update in updates:
        if not isinstance(update, dict) or not isinstance(update.get("type"), str):
            raise _invalid(
                'Each update needs a process type and a quantity: {"type": "web", "quantity": 2}.'
            )
        wanted[update["type"]] = update.get("quantity", counts.get(update["type"], 0))
    return [api.formation_json(entry) for entry in api.run.scale(wanted)]


async def _scale_batch(api: LocalApi, request: Request, params: dict[str, str]) -> Response:
    return json_response(_scale(api, (await _body(request)).get("updates")))


async def _scale_one(api: LocalApi, request: Request, params: dict[str, str]) -> Response:
    body = await _body(request)
    return json_response(_scale(api, [{**body, "type": params["type"]}])[0])


async def _dynos(api: LocalApi, request: Request, params: dict[str, str]) -> Response:
    return json_response([api.dyno_json(dyno) for dyno in api.run.dynos()])


async def _dyno(api: LocalApi, request: Request, params: dict[str, str]) -> Response:
    for dyno in api.run.dynos():
        shown = api.dyno_json(dyno)
        if params["dyno"] in (dyno.name, shown["id"]):
            return json_response(shown)
    raise NotFound(f"Couldn't find dyno {params['dyno']}: see `dyno ps`.")


async def _run(api: LocalApi, request: Request, params: dict[str, str]) -> Response:
    body = await _body(request)
    command = body.get("command")
    if not isinstance(command, str) or not command.strip():
        raise _invalid('Give the command to run: {"command": "python manage.py migrate"}.')
    env = body.get("env") or {}
    if not isinstance(env, dict):
        raise _invalid('"env" must be an object of variables: {"env": {"FOO": "bar"}}.')
    extra = apply_config_changes({}, env)[0] if env else {}
    if body.get("attach"):
        if api.attach is None:
            assert api.nursery is not None, "serve_local_api is not running"
            from dynod.api.local_attach import LocalAttach  # the rendezvous: at the first attach

            api.attach = await LocalAttach.start(api.nursery)
        return await api.attach.run(api, body, command, extra)
    return json_response(api.dyno_json(api.run.run_detached(command, extra)), 201)


async def _restart_all(api: LocalApi, request: Request, params: dict[str, str]) -> Response:
    api.run.restart(None)
    return json_response({}, ACCEPTED)


async def _restart(api: LocalApi, request: Request, params: dict[str, str]) -> Response:
    api.run.restart(params.get("dyno") or params["type"])
    return json_response({}, ACCEPTED)


async def _stop(api: LocalApi, request: Request, params: dict[str, str]) -> Response:
    api.run.stop(params.get("dyno") or params["type"])
    return json_response({}, ACCEPTED)


async def _create_log_session(api: LocalApi, request: Request, params: dict[str, str]) -> Response:
    body = await _body(request)
    lines, tail = body.get("lines", DEFAULT_LINES), bool(body.get("tail", False))
    dyno, source = body.get("dyno") or None, body.get("source") or None
    if isinstance(lines, str) and lines.isdigit():
        lines = int(lines)
    if isinstance(lines, bool) or not isinstance(lines, int) or lines < 0:
        raise _invalid("lines must be a whole number of lines, such as 100.")
    if dyno is not None and not isinstance(dyno, str):
        raise _invalid("dyno must be a dyno name (web.1) or a process type (web).")
    if source not in (None, APP, HEROKU):
        raise _invalid(f"source must be {APP} or {HEROKU}.")
    filters = (
        LogFilter(dyno=dyno, source=source)
        if dyno and "." in dyno
        else LogFilter(ps=dyno, source=source)
    )
    now = trio.current_time()
    for key in [key for key, session in api.sessions.items() if session.expires < now]:
        del api.sessions[key]
    secret = secrets.token_urlsafe(32)
    api.sessions[secret] = _Session(filters, lines, tail, now + SESSION_LIFETIME)
    stamp = heroku_time()
    return json_response(
        {
            "id": str(uuid.uuid4()),
            "logplex_url": f"{BASE_URL}/log-sessions/{secret}",
            "created_at": stamp,
            "updated_at": stamp,
        },
        201,
    )


async def _read_log_session(api: LocalApi, request: Request, params: dict[str, str]) -> Response:
    """The session's lines, plain, once; a tail follows new ones until the client leaves."""
    session = api.sessions.pop(params["secret"], None)
    if session is None or session.expires < trio.current_time():
        raise NotFound("This log session is unknown, used or expired: run `dyno logs` again.")
    ring = api.run.ring
    n = min(session.lines, ring.history)

    async def chunks() -> AsyncGenerator[bytes, None]:
        if not session.tail:
            yield _lines(line.render() for line in ring.recent(n, session.filters))
            return
        with ring.tail(session.filters, last=n) as tail:
            while batch := await tail.receive_batch():
                yield _lines(line.render() for line in batch)

    return stream_response(chunks(), PLAIN)


def _lines(texts: Any) -> bytes:
    return "".join(f"{text}\n" for text in texts).encode()


ROUTES: list[tuple[str, str, Handler]] = [
    ("GET", "/account", _account),
    ("GET", "/apps", _apps),
    ("GET", "/users/~/apps", _apps),
    ("GET", "/apps/{app}", _app),
    ("GET", "/apps/{app}/config-vars", _config_vars),
    ("GET", "/apps/{app}/releases", _no_releases),
    ("GET", "/apps/{app}/formation", _formation),
    ("PATCH", "/apps/{app}/formation", _scale_batch),
    ("GET", "/apps/{app}/formation/{type}", _formation_type),
    ("PATCH", "/apps/{app}/formation/{type}", _scale_one),
    ("GET", "/apps/{app}/dynos", _dynos),
    ("POST", "/apps/{app}/dynos", _run),
    ("DELETE", "/apps/{app}/dynos", _restart_all),
    ("GET", "/apps/{app}/dynos/{dyno}", _dyno),
    ("DELETE", "/apps/{app}/dynos/{dyno}", _restart),
    ("POST", "/apps/{app}/dynos/{dyno}/actions/stop", _stop),
    ("DELETE", "/apps/{app}/formations/{type}", _restart),
    ("POST", "/apps/{app}/formations/{type}/actions/stop", _stop),
    ("POST", "/apps/{app}/log-sessions", _create_log_session),
    ("GET", "/log-sessions/{secret}", _read_log_session),
]


async def serve_local_api(listener: socket.socket, run: LocalRun) -> None:
    """Answer requests about `run` on its claimed socket until cancelled. Once an attached
    one-off is offered, a connection that opens with a rendezvous claim goes to it instead
    (dynod/api/local_attach.py)."""
    api = LocalApi(run)
    trio_listener = trio.SocketListener(trio.socket.from_stdlib_socket(listener))
    send, receive = trio.open_memory_channel[trio.SocketStream](0)

    async def handle(request: Request) -> Response:
        return await api.handle(request)

    async def sort(stream: trio.SocketStream) -> None:
        if api.attach is not None:
            from dynod.api.local_attach import is_claim

            if await is_claim(stream):
                return await api.attach.serve(stream)
        try:
            await send.send(stream)  # to the HTTP server, which closes it
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        api.nursery = nursery
        nursery.start_soon(serve_listeners, [_Handed(receive)], handle)
        while True:  # trio.serve_listeners would close a stream once handed on
            try:
                stream = await trio_listener.accept()
            except OSError as err:
                if err.errno not in _ACCEPT_CAPACITY:
                    raise
                await trio.sleep(_ACCEPT_PAUSE)  # out of descriptors: let connections end
                continue
            nursery.start_soon(sort, stream)


class _Handed(trio.abc.Listener[trio.SocketStream]):
    """The HTTP server's connections: those of the run's socket that claim no rendezvous."""

    def __init__(self, receive: trio.MemoryReceiveChannel[trio.SocketStream]) -> None:
        self.receive = receive

    async def accept(self) -> trio.SocketStream:
        return await self.receive.receive()

    async def aclose(self) -> None:
        await self.receive.aclose()
