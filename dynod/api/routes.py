"""dynod's HTTP API: Heroku Platform API v3 paths and JSON over the Platform, so that `dyno`, the
Heroku CLI and heroku3 all work against it. Owns authentication (the API token as Bearer or
as Basic password) and routing (404 unknown path, 405 wrong method); errors raised below become
`{"id", "message"}` answers in one place, dynod.api.server.error_answer.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import urllib.parse

from dynod.api import addons, apps, drains, log_sessions, streams
from dynod.api.common import ApiState, Call
from dynod.api.server import Request, Response, error_response
from dynod.platform.root import Platform

UNAUTHORIZED = (
    "Invalid credentials provided: send the API token from dynod's data directory (api-token)."
)
ROUTES = [*apps.ROUTES, *streams.ROUTES, *log_sessions.ROUTES, *drains.ROUTES, *addons.ROUTES]


class Api:
    """`await api.handle(request)` answers one request; give it to `dynod.api.server.serve_http`.
    `state.base_url` must be the address the API is reachable at (URLs it hands out use it)."""

    def __init__(self, platform: Platform, token: str, base_url: str) -> None:
        self.state = ApiState(platform, token, base_url)
        self._routes = [(route, route.pattern.strip("/").split("/")) for route in ROUTES]

    async def handle(self, request: Request) -> Response:
        segments = [urllib.parse.unquote(part) for part in request.path.strip("/").split("/")]
        matches = [
            (route, params)
            for route, pattern in self._routes
            if (params := _match(pattern, segments)) is not None
        ]
        public = any(route.public for route, _ in matches)
        if not public and not self._authorized(request):
            return error_response(401, "unauthorized", UNAUTHORIZED)
        if not matches:
            return error_response(404, "not_found", f"There is no {request.path} in dynod's API.")
        chosen = next(
            ((route, params) for route, params in matches if route.method == request.method), None
        )
        if chosen is None:
            allowed = ", ".join(sorted({route.method for route, _ in matches}))
            response = error_response(
                405,
                "method_not_allowed",
                f"{request.method} is not allowed on {request.path}: use {allowed}.",
            )
            return Response(response.status, (*response.headers, ("Allow", allowed)), response.body)
        route, params = chosen
        # Errors become answers in one place: dynod.api.server.error_answer.
        return await route.handler(Call(self.state, request, params))

    def _authorized(self, request: Request) -> bool:
        scheme, _, credentials = request.header("authorization").strip().partition(" ")
        scheme, credentials = scheme.lower(), credentials.strip()
        if scheme == "basic":
            try:
                decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return False
            # The token is the password; Heroku's clients put an email or nothing before it.
            credentials = decoded.partition(":")[2]
        elif scheme != "bearer":
            return False
        return bool(credentials) and hmac.compare_digest(
            credentials.encode(), self.state.token.encode()
        )


def _match(pattern: list[str], segments: list[str]) -> dict[str, str] | None:
    if len(pattern) != len(segments):
        return None
    params = {}
    for expected, actual in zip(pattern, segments, strict=True):
        if expected.startswith("{"):
            if not actual:
                return None
            params[expected[1:-1]] = actual
        elif expected != actual:
            return None
    return params
