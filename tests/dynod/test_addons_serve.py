"""Add-ons through a real `dynod serve` killed with SIGKILL (README, "Add-ons"): the servers end
with it, and the data written before is there when the next dynod starts them again."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from dynod.addons.postgres import PostgresProvider
from dynod.addons.provider import program
from tests.helpers import start_serve, stop_serve, wait_until

PSQL = program("psql", ("/usr/lib/postgresql/*/bin",))[0]
pytestmark = pytest.mark.skipif(
    program("redis-server")[0] is None or PostgresProvider().missing() is not None or not PSQL,
    reason="needs redis-server and PostgreSQL (apt-get install redis-server postgresql)",
)


def call(data: Path, method: str, path: str, body: Any = None) -> Any:
    url = (data / "api-url").read_text().strip() + path
    token = (data / "api-token").read_text().strip()
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def redis(port: int, password: str, *words: str, lines: int = 2) -> bytes:
    request = b""
    for command in (("AUTH", password), words):
        request += b"*%d\r\n" % len(command)
        request += b"".join(b"$%d\r\n%s\r\n" % (len(w), w.encode()) for w in command)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(request)
        received = b""
        while received.count(b"\r\n") < lines and (chunk := conn.recv(65536)):
            received += chunk
    return received


def psql(url: str, sql: str) -> str:
    done = subprocess.run(
        [str(PSQL), url, "-tAc", sql], capture_output=True, text=True, timeout=30, check=False
    )
    return done.stdout.strip() or done.stderr.strip()


def refuses(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


def test_addon_data_survives_a_kill_9_of_dynod(tmp_path: Path) -> None:
    data, log = tmp_path / "data", tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DYNOD_", "DYNO_"))}
    process = start_serve(data, log, env, timeout=30)
    try:
        call(data, "POST", "/apps", {"name": "durable"})
        cache = call(data, "POST", "/apps/durable/addons", {"plan": "heroku-redis"})
        db = call(data, "POST", "/apps/durable/addons", {"plan": {"name": "heroku-postgresql"}})
        assert (cache["state"], db["state"]) == ("provisioned", "provisioned")
        config = call(data, "GET", "/apps/durable/config-vars")
        redis_url, db_url = config["REDIS_URL"], config["DATABASE_URL"]
        port = int(redis_url.rsplit(":", 1)[1])
        password = redis_url.split("://:", 1)[1].split("@", 1)[0]
        assert redis(port, password, "SET", "greeting", "hello").endswith(b"+OK\r\n")
        assert psql(db_url, "CREATE TABLE t (x text); INSERT INTO t VALUES ('kept')").endswith(
            "INSERT 0 1"
        )
        db_port = int(db_url.rsplit(":", 1)[1].split("/")[0])

        process.kill()  # SIGKILL: no graceful stop; the reaper ends the servers
        process.wait(timeout=10)
        assert wait_until(lambda: refuses(port) and refuses(db_port), 10)

        process = start_serve(data, log, env, timeout=60)
        assert wait_until(lambda: not refuses(port) and not refuses(db_port), 30)
        assert redis(port, password, "GET", "greeting", lines=3).endswith(b"$5\r\nhello\r\n")
        assert wait_until(lambda: psql(db_url, "SELECT x FROM t") == "kept", 20)
        assert call(data, "GET", "/apps/durable/config-vars") == config
    finally:
        stop_serve(process)
