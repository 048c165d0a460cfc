"""A tiny HTTP client for dynod's API (Heroku Platform API v3 shapes): where the API is and which
token to send, JSON requests with `Range` and `Next-Range`, uploads and streaming GETs. Every
failure surfaces as one exception type, `ApiError`, carrying the message to show."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any
from urllib.parse import SplitResult, urlsplit

from shell.errors import ApiError

DEFAULT_API_URL = "http://127.0.0.1:5050"
ACCEPT = "application/vnd.heroku+json; version=3"
REQUEST_TIMEOUT = 60.0


def data_dir(env: Mapping[str, str]) -> Path:
    """dynod's data directory, found the way the daemon finds it (docs/platform.md, "The data
    directory"; dynod/state/config.py's `resolve_data_dir` is the same rule): `DYNOD_DATA`,
    `~` expanded, else `$XDG_DATA_HOME/dynod` (ignored when relative), else
    `~/.local/share/dynod`."""
    home = env.get("HOME") or str(Path.home())
    if env.get("DYNOD_DATA"):
        chosen = _expand_home(env["DYNOD_DATA"], home)
    elif env.get("XDG_DATA_HOME") and Path(env["XDG_DATA_HOME"]).is_absolute():
        chosen = Path(env["XDG_DATA_HOME"]) / "dynod"
    else:
        chosen = Path(home) / ".local" / "share" / "dynod"
    return chosen.absolute()


def _expand_home(text: str, home: str) -> Path:
    """`~` and `~/…` against the given HOME; `~user/…` as the system knows that user."""
    if text == "~" or text.startswith("~/"):
        return Path(home, text[2:])
    return Path(text).expanduser()


def _read_setting(path: Path) -> str | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return text or None


def api_url(env: Mapping[str, str]) -> str:
    """`DYNOD_API_URL`, else the data directory's `api-url` file, else the default address."""
    url = env.get("DYNOD_API_URL") or _read_setting(data_dir(env) / "api-url") or DEFAULT_API_URL
    if "://" not in url:  # a bare HOST:PORT is what a person would write
        url = f"http://{url}"
    return url.rstrip("/")


def api_token(env: Mapping[str, str]) -> str | None:
    """`DYNOD_API_TOKEN`, else the data directory's `api-token` file (None: send no token)."""
    return env.get("DYNOD_API_TOKEN") or _read_setting(data_dir(env) / "api-token")


def range_header(field: str = "version", *, order: str = "desc", limit: int | None = None) -> str:
    """A Platform API `Range` header value, e.g. `version ..; order=desc,max=15`."""
    options = f"order={order}" + (f",max={limit}" if limit is not None else "")
    return f"{field} ..; {options}"


class Response:
    """A whole (non-streamed) answer: status, headers and the decoded JSON body (None if empty)."""

    def __init__(self, status: int, headers: Mapping[str, str], data: Any) -> None:
        self.status = status
        self.headers = headers
        self.data = data


class Api:
    """One API endpoint and its token. Paths are relative to the base URL; absolute URLs (an
    upload's `put_url`, a build's `output_stream_url`) are used as given."""

    def __init__(
        self, base_url: str, token: str | None, *, timeout: float = REQUEST_TIMEOUT
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self._base = urlsplit(self.base_url)
        self.where = f"dynod at {self.base_url}"  # for messages: what could not be reached
        self.start_hint = "start it with `dynod serve`"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Api:
        return cls(api_url(env), api_token(env))

    # ----- JSON requests

    def request(
        self, method: str, path: str, body: object = None, *, range: str | None = None
    ) -> Response:
        headers = {"Accept": ACCEPT}
        payload: bytes | None = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if range is not None:
            headers["Range"] = range
        with self._open(method, path, headers, payload, self.timeout) as response:
            raw = self._read(response)
            status = response.status
            answer_headers = {k.lower(): v for k, v in response.getheaders()}
        data = _decode(raw, answer_headers.get("content-type", ""))
        if status >= 400:
            raise _error(status, response.reason, data)
        return Response(status, answer_headers, data)

    def get(self, path: str, *, range: str | None = None) -> Any:
        return self.request("GET", path, range=range).data

    def post(self, path: str, body: object = None) -> Any:
        return self.request("POST", path, {} if body is None else body).data

    def patch(self, path: str, body: object) -> Any:
        return self.request("PATCH", path, body).data

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path).data

    def list(self, path: str, *, range: str | None = None, follow: bool = True) -> list[Any]:
        """A listing; with `follow`, every page the server cut off (206 + `Next-Range`) too."""
        items: list[Any] = []
        while True:
            response = self.request("GET", path, range=range)
            if not isinstance(response.data, list):
                raise ApiError(
                    f"dynod answered GET {path} with something other than a list",
                    id="bad_response",
                    status=response.status,
                )
            items.extend(response.data)
            next_range = response.headers.get("next-range")
            if not (follow and response.status == 206 and next_range):
                return items
            range = next_range

    # ----- bytes

    def put_bytes(
        self, url: str, body: IO[bytes], size: int, content_type: str = "application/octet-stream"
    ) -> None:
        """Upload a file's bytes (a source tarball to a `put_url`) without reading it whole."""
        headers = {"Content-Type": content_type, "Content-Length": str(size)}
        with self._open("PUT", url, headers, body, self.timeout) as response:
            raw = self._read(response)
            if response.status >= 400:
                content_type = response.getheader("Content-Type", "")
                raise _error(response.status, response.reason, _decode(raw, content_type))

    def stream(
        self,
        url: str,
        *,
        accept: str = "text/plain",
        opened: Callable[[http.client.HTTPResponse], None] | None = None,
    ) -> Iterator[bytes]:
        """GET a stream (build output, a log session) and yield its bytes as they arrive, until
        the server ends it. No read timeout: a quiet `logs --tail` is still alive. `opened` is
        given the response once the stream flows (the shell ends a tail by its socket)."""
        with self._open("GET", url, {"Accept": accept}, None, None) as response:
            if response.status >= 400:
                raw = self._read(response)
                raise _error(
                    response.status,
                    response.reason,
                    _decode(raw, response.getheader("Content-Type", "")),
                )
            if opened is not None:
                opened(response)
            while True:
                try:
                    chunk = response.read1(65536)
                except (OSError, http.client.HTTPException) as exc:
                    raise ApiError(
                        f"the stream from dynod broke off: {exc}", id="unreachable"
                    ) from None
                if not chunk:
                    return
                yield chunk

    # ----- plumbing

    def _target(self, url: str) -> tuple[SplitResult, str]:
        """The parsed URL to connect to and the request target on it."""
        parts = urlsplit(url) if "://" in url else urlsplit(self.base_url + "/" + url.lstrip("/"))
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        return parts, target

    @contextmanager
    def _open(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes | IO[bytes] | None,
        timeout: float | None,
    ) -> Iterator[http.client.HTTPResponse]:
        parts, target = self._target(url)
        # The token goes only to the API's own address, never to wherever a URL points.
        if self.token and (parts.scheme, parts.netloc) == (self._base.scheme, self._base.netloc):
            headers = {**headers, "Authorization": f"Bearer {self.token}"}
        connection = self._connection(parts, timeout)
        try:
            try:
                connection.request(method, target, body=body, headers=headers)
                response = connection.getresponse()
            except (ConnectionRefusedError, FileNotFoundError, socket.gaierror):
                raise ApiError(
                    f"cannot reach {self.where}: {self.start_hint}", id="unreachable"
                ) from None
            except TimeoutError:
                raise ApiError(
                    f"{self.where} did not answer {method} within {self.timeout:g} s: see its log",
                    id="timeout",
                ) from None
            except (OSError, http.client.HTTPException) as exc:
                raise ApiError(f"talking to {self.where} failed: {exc}", id="unreachable") from None
            with response:
                yield response
        finally:
            connection.close()

    def _connection(self, parts: SplitResult, timeout: float | None) -> http.client.HTTPConnection:
        connection_type = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        return connection_type(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)

    def _read(self, response: http.client.HTTPResponse) -> bytes:
        try:
            return response.read()
        except TimeoutError:
            raise ApiError(f"{self.where} stopped answering: see its log", id="timeout") from None
        except (OSError, http.client.HTTPException) as exc:
            raise ApiError(f"the answer from dynod broke off: {exc}", id="unreachable") from None


def _decode(raw: bytes, content_type: str) -> Any:
    if not raw:
        return None
    if "json" in content_type.lower():
        try:
            return json.loads(raw)
        except ValueError:
            raise ApiError("dynod answered with malformed JSON", id="bad_response") from None
    return raw.decode("utf-8", "replace")


def _error(status: int, reason: str, data: Any) -> ApiError:
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        message = data["message"]
        if status == 401:
            message += " (set DYNOD_API_TOKEN, or DYNOD_DATA to dynod's data directory)"
        return ApiError(message, id=str(data.get("id", "error")), status=status)
    if status == 401:
        return ApiError(
            "dynod refused the API token: set DYNOD_API_TOKEN, or DYNOD_DATA to "
            "dynod's data directory",
            id="unauthorized",
            status=status,
        )
    return ApiError(f"dynod answered {status} {reason}".rstrip(), id="error", status=status)
