"""Drains on a real `dynod serve` (README, Drains): a drain added through the API is still
there after dynod restarts, and receives the whole stream: the API's events, the dyno
manager's lines, the app's own and the router's."""

from __future__ import annotations

import http.server
import threading
import urllib.request
from pathlib import Path
from typing import Any

from tests.dynod.test_heroku_clients import Served
from tests.helpers import wait_until


class _Drain(http.server.BaseHTTPRequestHandler):
    bodies: list[bytes] = []

    def do_POST(self) -> None:
        self.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_a_drain_survives_a_restart_and_gets_router_and_platform_lines(tmp_path: Path) -> None:
    listener = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Drain)
    threading.Thread(target=listener.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{listener.server_address[1]}/drain"
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    served = Served(data, tmp_path / "serve.log")
    try:
        served.call("POST", "/apps", {"name": "drained"})
        drain = served.call("POST", "/apps/drained/log-drains", {"url": url})
        served.stop()
        served = Served(data, tmp_path / "serve.log")
        assert served.call("GET", "/apps/drained/log-drains") == [drain]

        served.deploy("drained", tmp_path)
        web_url = served.call("GET", "/apps/drained")["web_url"]
        port = web_url.rstrip("/").rpartition(":")[2]
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/", headers={"Host": "drained.localhost"}
        )
        with urllib.request.urlopen(request, timeout=20) as response:
            assert response.status == 200

        def delivered() -> bytes:
            return b"".join(_Drain.bodies)

        wanted = [
            b"host app api - Deploy ",
            b"host heroku web.1 - State changed from starting to up",
            b"<158>1 ",  # the router's line, local3
            b'host heroku router - at=info method=GET path="/"',
        ]
        assert wait_until(lambda: all(w in delivered() for w in wanted), 20), delivered()
        assert delivered().index(b"Deploy ") < delivered().index(b"Release v2 created")
    finally:
        served.stop()
        listener.shutdown()
        listener.server_close()
