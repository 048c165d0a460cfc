"""The HTTP client against a real local server: headers, Range and Next-Range, errors as one
exception with the API's message, uploads, live streams, and an unreachable dynod."""

from __future__ import annotations

import io
import socket
import tarfile
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from shell.api import ACCEPT, Api, range_header
from shell.builds import pack_source
from shell.commands import run
from shell.context import Context
from shell.errors import ApiError
from tests.shell.conftest import FakeApi, Seen, send_json


def test_json_request_headers(fake_api: FakeApi) -> None:
    fake_api.json("GET", "/apps/x/releases", [{"version": 2}])
    api = Api(fake_api.url, "tok")
    assert api.get("/apps/x/releases", range=range_header(limit=15)) == [{"version": 2}]
    seen = fake_api.requests("GET", "/apps/x/releases")[0]
    assert seen.headers["accept"] == ACCEPT
    assert seen.headers["authorization"] == "Bearer tok"
    assert seen.headers["range"] == "version ..; order=desc,max=15"


def test_body_is_json(fake_api: FakeApi) -> None:
    fake_api.json("PATCH", "/apps/x/config-vars", {"A": "1"})
    assert Api(fake_api.url, None).patch("/apps/x/config-vars", {"A": "1", "B": None}) == {"A": "1"}
    seen = fake_api.requests("PATCH", "/apps/x/config-vars")[0]
    assert seen.json() == {"A": "1", "B": None}
    assert seen.headers["content-type"] == "application/json"
    assert "authorization" not in seen.headers


def test_list_follows_next_range_only_when_asked(fake_api: FakeApi) -> None:
    def page(handler: BaseHTTPRequestHandler, seen: Seen) -> None:
        if seen.headers.get("range") == "id ]b..; max=2":
            send_json(handler, 200, [{"id": "c"}])
        else:
            send_json(handler, 206, [{"id": "a"}, {"id": "b"}], {"Next-Range": "id ]b..; max=2"})

    fake_api.on("GET", "/apps", page)
    api = Api(fake_api.url, None)
    assert [a["id"] for a in api.list("/apps")] == ["a", "b", "c"]
    assert [a["id"] for a in api.list("/apps", follow=False)] == ["a", "b"]


def test_errors_carry_the_apis_message(fake_api: FakeApi) -> None:
    fake_api.json("POST", "/apps", {"id": "conflict", "message": "Name is already taken"}, 409)
    with pytest.raises(ApiError) as caught:
        Api(fake_api.url, None).post("/apps", {"name": "x"})
    assert (caught.value.message, caught.value.id, caught.value.status) == (
        "Name is already taken",
        "conflict",
        409,
    )


def test_401_says_where_the_token_comes_from(fake_api: FakeApi) -> None:
    fake_api.json(
        "GET", "/apps", {"id": "unauthorized", "message": "Invalid credentials provided."}, 401
    )
    with pytest.raises(ApiError, match="Invalid credentials provided. \\(set DYNOD_API_TOKEN"):
        Api(fake_api.url, "wrong").get("/apps")


def test_error_without_json(fake_api: FakeApi) -> None:
    def broken(handler: BaseHTTPRequestHandler, seen: Seen) -> None:
        handler.send_response(502)
        handler.send_header("Content-Length", "4")
        handler.end_headers()
        handler.wfile.write(b"oops")

    fake_api.on("GET", "/apps", broken)
    with pytest.raises(ApiError, match="^dynod answered 502 Bad Gateway$"):
        Api(fake_api.url, None).get("/apps")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_dynod_through_a_command() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    out, err = io.StringIO(), io.StringIO()
    ctx = Context(env={"DYNOD_API_URL": url}, cwd=Path("/"), out=out, err=err)
    assert run(ctx, ["config", "-a", "x"]) == 1
    assert err.getvalue() == f"dyno: cannot reach dynod at {url}: start it with `dynod serve`\n"
    assert out.getvalue() == ""


def test_api_error_through_a_command(fake_api: FakeApi) -> None:
    fake_api.json(
        "GET",
        "/apps/nope/config-vars",
        {"id": "not_found", "message": "Couldn't find that app."},
        404,
    )
    out, err = io.StringIO(), io.StringIO()
    ctx = Context(env={"DYNOD_API_URL": fake_api.url}, cwd=Path("/"), out=out, err=err)
    assert run(ctx, ["config", "-a", "nope"]) == 1
    assert err.getvalue() == "dyno: Couldn't find that app.\n"


def test_upload_sends_the_token_only_to_the_api(fake_api: FakeApi) -> None:
    elsewhere = FakeApi()
    elsewhere.thread.start()
    try:
        for server in (fake_api, elsewhere):
            server.on("PUT", "/blob", lambda h, _s: send_json(h, 200, {}))
        api = Api(fake_api.url, "tok")
        api.put_bytes(f"{fake_api.url}/blob", io.BytesIO(b"abc"), 3)
        api.put_bytes(f"{elsewhere.url}/blob", io.BytesIO(b"xyz"), 3)
    finally:
        elsewhere.server.shutdown()
        elsewhere.server.server_close()
    mine, theirs = fake_api.requests("PUT", "/blob")[0], elsewhere.requests("PUT", "/blob")[0]
    assert (mine.body, theirs.body) == (b"abc", b"xyz")
    assert mine.headers["authorization"] == "Bearer tok"
    assert "authorization" not in theirs.headers


def test_stream_delivers_chunks_as_they_come(fake_api: FakeApi) -> None:
    release = threading.Event()

    def chunked(handler: BaseHTTPRequestHandler, seen: Seen) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/plain")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        for part in (b"-----> first\n", b"-----> second\n"):
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            handler.wfile.flush()
            release.wait(timeout=10)
        handler.wfile.write(b"0\r\n\r\n")

    fake_api.on("GET", "/stream", chunked)
    chunks = Api(fake_api.url, None).stream(f"{fake_api.url}/stream")
    assert next(chunks) == b"-----> first\n"  # arrives while the server still holds the rest
    release.set()
    assert b"".join(chunks) == b"-----> second\n"
    assert fake_api.requests("GET", "/stream")[0].headers["accept"] == "text/plain"


def test_pack_source_leaves_out_git(tmp_path: Path) -> None:
    (tmp_path / ".git" / "objects").mkdir(parents=True)
    (tmp_path / ".git" / "HEAD").write_text("ref")
    (tmp_path / "lib" / ".git").mkdir(parents=True)
    (tmp_path / "lib" / "mod.py").write_text("x = 1\n")
    (tmp_path / "Procfile").write_text("web: python web.py\n")
    (tmp_path / ".env").write_text("A=1\n")
    buffer = io.BytesIO()
    pack_source(tmp_path, buffer)
    buffer.seek(0)
    with tarfile.open(fileobj=buffer, mode="r:gz") as tar:
        assert sorted(tar.getnames()) == [".env", "Procfile", "lib", "lib/mod.py"]
