"""The multi-request commands against a scripted local server: what `deploy` uploads and asks
for, how it reports a failed build, and which release `releases:rollback` picks by default."""

from __future__ import annotations

import io
import subprocess
import tarfile
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from shell.commands import run
from shell.context import Context
from tests.shell.conftest import FakeApi, Seen, send_json


def context(fake: FakeApi, cwd: Path) -> tuple[Context, io.StringIO, io.StringIO]:
    out, err = io.StringIO(), io.StringIO()
    return (
        Context(
            env={"DYNOD_API_URL": fake.url, "DYNOD_API_TOKEN": "tok"}, cwd=cwd, out=out, err=err
        ),
        out,
        err,
    )


def script_deploy(fake: FakeApi, statuses: list[str]) -> None:
    fake.json(
        "POST",
        "/sources",
        {"source_blob": {"put_url": f"{fake.url}/blob/put", "get_url": f"{fake.url}/blob/get"}},
    )
    fake.on("PUT", "/blob/put", lambda h, _s: send_json(h, 200, {}))
    build = {"id": "b1", "status": "pending", "output_stream_url": f"{fake.url}/streams/b1"}
    fake.json("POST", "/apps/demo/builds", build, 201)

    def output(handler: BaseHTTPRequestHandler, seen: Seen) -> None:
        body = b"-----> Procfile app detected\n       done\n"
        handler.send_response(200)
        handler.send_header("Content-Type", "text/plain")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    fake.on("GET", "/streams/b1", output)
    answers = iter(statuses)

    def status(handler: BaseHTTPRequestHandler, seen: Seen) -> None:
        current = next(answers, statuses[-1])
        release = {"id": "r2", "version": 2} if current == "succeeded" else None
        send_json(handler, 200, {**build, "status": current, "release": release})

    fake.on("GET", "/apps/demo/builds/b1", status)
    fake.json(
        "GET", "/apps/demo/releases/r2", {"id": "r2", "version": 2, "output_stream_url": None}
    )
    fake.json("GET", "/apps/demo", {"name": "demo", "web_url": "http://demo.localhost:8080/"})


def git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@localhost", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        timeout=30,
    )


def test_deploy_uploads_builds_streams_and_reports(fake_api: FakeApi, tmp_path: Path) -> None:
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "Procfile").write_text("web: python3 web.py\n")
    git(app_dir, "init", "-q")
    git(app_dir, "add", "Procfile")
    git(app_dir, "commit", "-qm", "first")
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"],
        cwd=app_dir,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()
    script_deploy(fake_api, ["pending", "succeeded"])
    ctx, out, err = context(fake_api, tmp_path)
    assert run(ctx, ["deploy", "app", "-a", "demo", "-b", "python", "-b", "./bp"]) == 0, (
        err.getvalue()
    )
    assert out.getvalue() == (
        "-----> Procfile app detected\n       done\n"
        "Released v2 of demo: http://demo.localhost:8080/\n"
    )
    upload = fake_api.requests("PUT", "/blob/put")[0]
    assert upload.headers["authorization"] == "Bearer tok"  # same origin as the API
    with tarfile.open(fileobj=io.BytesIO(upload.body), mode="r:gz") as tar:
        assert tar.getnames() == ["Procfile"]
    body: Any = fake_api.requests("POST", "/apps/demo/builds")[0].json()
    assert body == {
        "source_blob": {"url": f"{fake_api.url}/blob/get", "version": commit},
        "buildpacks": [{"url": "python"}, {"url": "./bp"}],
    }


def test_failed_build_exits_1(fake_api: FakeApi, tmp_path: Path) -> None:
    (tmp_path / "Procfile").write_text("web: python3 web.py\n")
    script_deploy(fake_api, ["failed"])
    ctx, out, err = context(fake_api, tmp_path)
    assert run(ctx, ["deploy", "-a", "demo"]) == 1
    assert out.getvalue().startswith("-----> Procfile app detected\n")
    assert err.getvalue().endswith(
        "dyno: the build failed: see the output above (`dyno builds:output b1 -a demo`)\n"
    )
    body: Any = fake_api.requests("POST", "/apps/demo/builds")[0].json()
    assert body == {"source_blob": {"url": f"{fake_api.url}/blob/get", "version": None}}


def test_a_failed_release_command_is_not_called_a_failed_build(
    fake_api: FakeApi, tmp_path: Path
) -> None:
    (tmp_path / "Procfile").write_text("web: python3 web.py\nrelease: false\n")
    script_deploy(fake_api, ["failed"])
    fake_api.json(
        "GET",
        "/apps/demo/builds/b1",
        {"id": "b1", "status": "failed", "release": {"id": "r2", "version": 2}},
    )
    ctx, _out, err = context(fake_api, tmp_path)
    assert run(ctx, ["deploy", "-a", "demo"]) == 1
    assert err.getvalue().endswith(
        "dyno: the release command failed, so v2 is not current: see `dyno releases:output "
        "v2 -a demo`\n"
    )


def test_deploy_to_an_unknown_app_uploads_nothing(fake_api: FakeApi, tmp_path: Path) -> None:
    (tmp_path / "Procfile").write_text("web: python3 web.py\n")
    script_deploy(fake_api, ["succeeded"])
    fake_api.json(
        "GET", "/apps/demo", {"id": "not_found", "message": "Couldn't find that app: demo."}, 404
    )
    ctx, _out, err = context(fake_api, tmp_path)
    assert run(ctx, ["deploy", "-a", "demo"]) == 1
    assert err.getvalue() == "dyno: Couldn't find that app: demo.\n"
    assert [s.path for s in fake_api.seen] == ["/apps/demo"]


def test_deploy_of_a_missing_directory_is_a_usage_error(fake_api: FakeApi, tmp_path: Path) -> None:
    ctx, _out, err = context(fake_api, tmp_path)
    assert run(ctx, ["deploy", "nowhere", "-a", "demo"]) == 2
    assert "is not a directory" in err.getvalue()
    assert fake_api.seen == []


def test_rollback_defaults_to_the_release_before_the_current_one(
    fake_api: FakeApi, tmp_path: Path
) -> None:
    releases = [
        {"id": "r5", "version": 5, "status": "failed", "current": False},
        {"id": "r4", "version": 4, "status": "succeeded", "current": True},
        {"id": "r3", "version": 3, "status": "succeeded", "current": False},
        {"id": "r1", "version": 1, "status": "succeeded", "current": False},
    ]
    fake_api.json("GET", "/apps/demo/releases", releases)
    fake_api.json(
        "POST", "/apps/demo/releases", {"id": "r6", "version": 6, "output_stream_url": None}, 201
    )
    ctx, out, err = context(fake_api, tmp_path)
    assert run(ctx, ["releases:rollback", "-a", "demo"]) == 0, err.getvalue()
    assert out.getvalue() == "Rolling back demo to v3... done, v6\n"
    assert fake_api.requests("POST", "/apps/demo/releases")[0].json() == {"release": "r3"}


def test_ps_type_sets_every_type_or_one_and_shows_the_sizes(
    fake_api: FakeApi, tmp_path: Path
) -> None:
    formation = [
        {"type": "worker", "quantity": 0, "size": "eco"},
        {"type": "web", "quantity": 1, "size": "eco"},
    ]
    fake_api.json("GET", "/apps/demo/formation", formation)
    fake_api.json("PATCH", "/apps/demo/formation", formation)
    ctx, out, _ = context(fake_api, tmp_path)
    assert run(ctx, ["ps:type", "eco", "-a", "demo"]) == 0
    patches = [seen.json() for seen in fake_api.seen if seen.method == "PATCH"]
    assert patches == [
        {"updates": [{"type": "worker", "size": "eco"}, {"type": "web", "size": "eco"}]}
    ]
    assert out.getvalue().splitlines() == [
        "=== Process Types",
        "Type    Size  Qty",
        "web     Eco   1",
        "worker  Eco   0",
    ]
    assert run(ctx, ["ps:type", "web=standard-1X", "-a", "demo"]) == 0
    patches = [seen.json() for seen in fake_api.seen if seen.method == "PATCH"]
    assert patches[-1] == {"updates": [{"type": "web", "size": "standard-1X"}]}
    assert run(ctx, ["ps:type", "web=", "-a", "demo"]) == 2
