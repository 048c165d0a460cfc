"""A small real HTTP server for the client's tests before (and besides) `dynod serve`: each test
scripts its answers per request path and reads back what the client sent."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import attrs
import pytest


@attrs.frozen
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


Reply = Callable[[BaseHTTPRequestHandler, Seen], None]


def send_json(
    handler: BaseHTTPRequestHandler, status: int, data: Any, headers: dict[str, str] | None = None
) -> None:
    body = json.dumps(data).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)


class FakeApi:
    """Answers `(METHOD, path)` with a scripted reply; anything else is a 404 in the API's shape."""

    def __init__(self) -> None:
        self.replies: dict[tuple[str, str], Reply] = {}
        self.seen: list[Seen] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def handle_one(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                seen = Seen(
                    self.command,
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length),
                )
                fake.seen.append(seen)
                reply = fake.replies.get((self.command, self.path))
                if reply is None:
                    send_json(self, 404, {"id": "not_found", "message": f"no route {self.path}"})
                else:
                    reply(self, seen)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = handle_one

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)

    def on(self, method: str, path: str, reply: Reply) -> None:
        self.replies[(method, path)] = reply

    def json(
        self,
        method: str,
        path: str,
        data: Any,
        status: int = 200,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.on(method, path, lambda h, _seen: send_json(h, status, data, headers))

    def requests(self, method: str, path: str) -> list[Seen]:
        return [s for s in self.seen if (s.method, s.path) == (method, path)]


@pytest.fixture
def fake_api() -> Iterator[FakeApi]:
    fake = FakeApi()
    fake.thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()
    fake.thread.join(timeout=10)
