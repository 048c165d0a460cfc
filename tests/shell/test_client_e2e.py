"""End to end: a real `dynod serve` on a throwaway data directory, and the `dyno` commands run
as subprocesses exactly as a user runs them (only `DYNOD_DATA` tells them where dynod is)."""

from __future__ import annotations

import http.server
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ROOT, wait_until

PY = sys.executable
SAMPLE = ROOT / "fixtures" / "sample"


class Dyno:
    """Runs `dyno …` against one dynod, from a directory of the test's choosing."""

    def __init__(self, data: Path, cwd: Path) -> None:
        self.env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("DYNOD_API_URL", "DYNOD_API_TOKEN", "DYNO_APP")
        }
        self.env["DYNOD_DATA"] = str(data)
        self.cwd = cwd

    def __call__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PY, "-m", "shell.cli", *args],
            cwd=cwd or self.cwd,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def ok(self, *args: str, timeout: float = 60.0) -> str:
        done = self(*args, timeout=timeout)
        assert done.returncode == 0, f"dyno {' '.join(args)}: {done.stderr}{done.stdout}"
        return done.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json"))


@pytest.fixture(scope="module")
def dyno(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dyno]:
    data = tmp_path_factory.mktemp("data")
    log = (tmp_path_factory.mktemp("log") / "serve.log").open("w+")
    server = subprocess.Popen(
        [
            PY,
            "-m",
            "dynod.cli",
            "serve",
            "--data",
            str(data),
            "--api",
            "127.0.0.1:0",
            "--router",
            "127.0.0.1:0",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        client = Dyno(data, tmp_path_factory.mktemp("cwd"))
        up = wait_until(
            lambda: (
                (data / "api-url").exists()
                and (data / "api-token").exists()
                and client("apps", timeout=30).returncode == 0
            ),
            timeout=60,
            every=0.2,
        )
        log.seek(0)
        assert up, f"dynod serve did not come up:\n{log.read()}"
        yield client
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
        log.close()


def eventually(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    assert wait_until(check, timeout=timeout, every=0.3), f"timed out waiting for {what}"


def test_apps_create_list_info_destroy(dyno: Dyno) -> None:
    out = dyno.ok("apps:create", "e2e-apps")
    assert out.startswith("Creating e2e-apps... done\n")
    assert "e2e-apps" in dyno.ok("apps").splitlines()
    assert "e2e-apps" in [app["name"] for app in dyno.json("apps")]
    info = dyno.json("apps:info", "-a", "e2e-apps")
    assert isinstance(info, dict) and info["name"] == "e2e-apps"
    human = dyno.ok("apps:info", "-a", "e2e-apps")
    assert human.startswith("=== e2e-apps\n") and "Stack:" in human

    taken = dyno("apps:create", "e2e-apps")
    assert taken.returncode == 1 and taken.stdout == ""
    assert taken.stderr.startswith("dyno: ") and taken.stderr.count("\n") == 1

    refused = dyno("apps:destroy", "-a", "e2e-apps")
    assert refused.returncode == 1
    assert refused.stderr == (
        "dyno: this destroys e2e-apps and its add-ons permanently: "
        "run `dyno apps:destroy e2e-apps --confirm e2e-apps`\n"
    )
    assert dyno.ok("apps:destroy", "e2e-apps", "--confirm", "e2e-apps").startswith(
        "Destroying e2e-apps"
    )
    assert "e2e-apps" not in [app["name"] for app in dyno.json("apps")]


def test_config_vars_make_releases(dyno: Dyno) -> None:
    dyno.ok("apps:create", "e2e-config")
    app = ["-a", "e2e-config"]
    assert dyno.ok("config:set", "GREETING=hello there", "B=x=y", *app) == (
        "Setting GREETING, B and restarting e2e-config... done, v2\n"
        "GREETING: hello there\n"
        "B:        x=y\n"
    )
    assert dyno.ok("config:get", "GREETING", *app) == "hello there\n"
    assert dyno.ok("config:get", "NOPE", *app) == "\n"
    assert dyno.json("config", *app) == {"GREETING": "hello there", "B": "x=y"}
    assert dyno.ok("config", *app).splitlines() == [
        "=== e2e-config Config Vars",
        "B:        x=y",
        "GREETING: hello there",
    ]
    assert (
        dyno.ok("config:unset", "B", *app) == "Unsetting B and restarting e2e-config... done, v3\n"
    )

    releases = dyno.json("releases", *app)
    assert [r["version"] for r in releases] == [3, 2, 1]
    assert [r["description"] for r in releases] == [
        "Remove B config vars",
        "Set GREETING, B config vars",
        "Initial release",
    ]
    human = dyno.ok("releases", *app).splitlines()
    assert human[0] == "=== e2e-config Releases - Current: v3"
    assert human[2].startswith("v3  Remove B config vars")
    info = dyno.json("releases:info", "v2", *app)
    assert info["version"] == 2 and info["description"] == "Set GREETING, B config vars"
    assert "GREETING: hello there" in dyno.ok("releases:info", "2", *app)

    refused = dyno("config:set", "DYNOD_X=1", *app)
    assert refused.returncode == 1 and refused.stderr.startswith("dyno: ")
    assert [r["version"] for r in dyno.json("releases", *app)] == [3, 2, 1]  # nothing applied

    no_slug = dyno("releases:rollback", *app)  # v2 has no slug: the platform refuses
    assert no_slug.returncode == 1 and no_slug.stderr.count("\n") == 1


def test_usage_errors_exit_2_with_one_line(dyno: Dyno, tmp_path: Path) -> None:
    for args, message in [
        (["frobnicate"], "dyno: unknown command `frobnicate`: run `dyno help` for the list\n"),
        (["config:get", "-a", "x"], "dyno: missing KEY: usage: dyno config:get KEY [-a APP]\n"),
        (["ps", "--bogus"], "dyno: unknown flag --bogus for `dyno ps`: see `dyno help ps`\n"),
        (
            ["ps"],
            "dyno: no app given: pass -a APP, set DYNO_APP, or add the git remote `dynod` "
            "(`dyno git:remote -a APP`)\n",
        ),
        (
            ["ps:scale", "web=lots", "-a", "x"],
            "dyno: cannot read `web=lots`: scale with TYPE=N, "
            "TYPE+N or TYPE-N (e.g. `dyno ps:scale web=2 worker+1`)\n",
        ),
    ]:
        done = dyno(*args, cwd=tmp_path)
        assert (done.returncode, done.stderr, done.stdout) == (2, message, ""), args


def test_platform_refusals_exit_1(dyno: Dyno) -> None:
    missing = dyno("config", "-a", "no-such-app")
    assert missing.returncode == 1 and missing.stderr.startswith("dyno: ")
    assert missing.stderr.count("\n") == 1
    wrong = dyno("apps", env={"DYNOD_API_TOKEN": "wrong"})
    assert wrong.returncode == 1 and "DYNOD_API_TOKEN" in wrong.stderr
    away = dyno("apps", env={"DYNOD_API_URL": "http://127.0.0.1:9"})
    assert (away.returncode, away.stderr) == (
        1,
        "dyno: cannot reach dynod at http://127.0.0.1:9: start it with `dynod serve`\n",
    )


def test_app_from_env_and_git_remote(dyno: Dyno, tmp_path: Path) -> None:
    dyno.ok("apps:create", "e2e-remote")
    assert (
        dyno("config", "--json", env={"DYNO_APP": "e2e-remote"}, cwd=tmp_path).stdout.strip()
        == "{}"
    )
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True, timeout=30)
    done = dyno("git:remote", "-a", "e2e-remote", cwd=tmp_path)
    if done.returncode == 1 and "not available" in done.stderr:
        pytest.skip("this dynod has no git URLs yet")
    assert done.returncode == 0, done.stderr
    assert dyno("config", "--json", cwd=tmp_path).stdout.strip() == "{}"


@pytest.fixture(scope="module")
def deployed(dyno: Dyno) -> str:
    dyno.ok("apps:create", "e2e-deploy")
    done = dyno("deploy", str(SAMPLE), "-a", "e2e-deploy", timeout=300)
    assert done.returncode == 0, done.stderr + done.stdout
    assert "-----> " in done.stdout
    assert "Released v2 of e2e-deploy" in done.stdout
    return "e2e-deploy"


def dyno_states(dyno: Dyno, app: str) -> dict[str, str]:
    return {d["name"]: d["state"] for d in dyno.json("ps", "-a", app)}


def test_deploy_then_builds_and_release_output(dyno: Dyno, deployed: str) -> None:
    app = ["-a", deployed]
    builds = dyno.json("builds", *app)
    assert len(builds) == 1 and builds[0]["status"] == "succeeded"
    assert "succeeded" in dyno.ok("builds", *app)
    assert "-----> " in dyno.ok("builds:output", *app)
    assert "release phase: nothing to migrate" in dyno.ok("releases:output", "v2", *app)
    eventually(lambda: dyno_states(dyno, deployed).get("web.1") == "up", "web.1 up")


def test_scale_restart_stop(dyno: Dyno, deployed: str) -> None:
    app = ["-a", deployed]
    assert dyno.ok("ps:scale", "worker=1", *app) == (
        f"Scaling dynos on {deployed}... done, now running worker at 1:Standard-1X\n"
    )
    eventually(lambda: dyno_states(dyno, deployed).get("worker.1") == "up", "worker.1 up")
    assert "web=1:Standard-1X worker=1:Standard-1X" in dyno.ok("ps:scale", *app)
    human = dyno.ok("ps", *app)
    assert "=== web (Standard-1X): python3 web.py (1)" in human
    assert "worker.1: up " in human
    assert (
        dyno.ok("ps:restart", "worker", *app) == f"Restarting worker dynos on {deployed}... done\n"
    )
    assert dyno.ok("ps:stop", "worker.1", *app) == f"Stopping worker.1 dyno on {deployed}... done\n"
    dyno.ok("ps:scale", "worker-1", *app)
    eventually(lambda: "worker.1" not in dyno_states(dyno, deployed), "worker.1 gone")


def test_logs_and_run_detached(dyno: Dyno, deployed: str) -> None:
    app = ["-a", deployed]
    eventually(
        lambda: "listening on port" in dyno.ok("logs", "-n", "200", *app), "web's first line"
    )
    lines = dyno.ok("logs", "-n", "3", *app).splitlines()
    assert 0 < len(lines) <= 3
    assert all(" app[" in line or " heroku[" in line for line in lines)
    heroku_only = dyno.ok("logs", "-s", "heroku", *app).splitlines()
    assert heroku_only and all(" heroku[" in line for line in heroku_only)
    web_only = dyno.ok("logs", "-n", "200", "-p", "web", *app).splitlines()
    assert web_only and all("[web." in line for line in web_only)

    out = dyno.ok("run:detached", "echo", "from a one-off", *app)
    name = out.split(", ")[1].splitlines()[0]
    assert name.startswith("run.")
    eventually(lambda: "from a one-off" in dyno.ok("logs", "-d", name, *app), "the one-off's line")

    sleeper = dyno.ok("run:detached", "sleep", "600", *app).split(", ")[1].splitlines()[0]
    eventually(lambda: sleeper in dyno_states(dyno, deployed), "the one-off listed")
    assert dyno.ok("ps:stop", sleeper, *app) == f"Stopping {sleeper} dyno on {deployed}... done\n"
    eventually(lambda: sleeper not in dyno_states(dyno, deployed), "the one-off stopped")


def test_rollback_to_the_release_before(dyno: Dyno, deployed: str) -> None:
    app = ["-a", deployed]
    dyno.ok("config:set", "GREETING=bonjour", *app)
    before = dyno.json("releases", *app)[0]["version"]
    out = dyno.ok("releases:rollback", *app, timeout=120)
    assert out.startswith(f"Rolling back {deployed} to v{before - 1}... done, v{before + 1}\n")
    assert "GREETING" not in dyno.json("config", *app)


def test_logs_tail_ends_quietly_on_ctrl_c(dyno: Dyno, deployed: str) -> None:
    tail = subprocess.Popen(
        [PY, "-m", "shell.cli", "logs", "-t", "-n", "5", "-a", deployed],
        cwd=dyno.cwd,
        env=dyno.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert tail.stdout is not None
        ready, _, _ = select.select([tail.stdout], [], [], 60)
        assert ready, "no log line within 60 s"
        assert tail.stdout.readline().strip(), "the tail's first line"
        assert tail.poll() is None, "a tail must keep running"
        tail.send_signal(signal.SIGINT)
        _out, err = tail.communicate(timeout=30)
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.wait(timeout=10)
    assert (tail.returncode, err) == (0, "")


class _Drain(http.server.BaseHTTPRequestHandler):
    posts: list[tuple[dict[str, str], bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.posts.append(({k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_drains_add_list_remove_and_deliver_api_events(dyno: Dyno) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Drain)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        dyno.ok("apps:create", "e2e-drains")
        app = ["-a", "e2e-drains"]
        url = f"http://127.0.0.1:{server.server_address[1]}/logs"
        assert (
            dyno.ok("drains", *app)
            == "e2e-drains has no drains: add one with `dyno drains:add URL`.\n"
        )
        assert dyno.ok("drains:add", url, *app) == f"Successfully added drain {url}\n"
        [drain] = dyno.json("drains", *app)
        assert drain["url"] == url and drain["token"].startswith("d.")
        assert dyno.ok("drains", *app) == f"=== Drains\n{url} ({drain['token']})\n"
        refused = dyno("drains:add", "gopher://127.0.0.1:70", *app)
        assert refused.returncode == 1 and refused.stderr.count("\n") == 1
        dyno.ok("config:set", "FOO=1", *app)

        def delivered() -> bytes:
            return b"".join(body for _, body in _Drain.posts)

        eventually(lambda: b"Release v2 created" in delivered(), "the drain's POSTs")
        texts = [m.decode() for m in re.findall(rb"host app api - (.*?)(?=\d+ <|$)", delivered())]
        assert texts == [
            f"Add drain {url} by user {texts[0].rpartition(' ')[2]}",
            f"Set FOO config vars by user {texts[0].rpartition(' ')[2]}",
            f"Release v2 created by user {texts[0].rpartition(' ')[2]}",
        ]
        headers = _Drain.posts[0][0]
        assert headers["content-type"] == "application/logplex-1"
        assert headers["logplex-drain-token"] == drain["token"]
        assert dyno.ok("drains:remove", url, *app) == f"Successfully removed drain {url}\n"
        assert dyno.json("drains", *app) == []
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.skipif(
    shutil.which("redis-server") is None,
    reason="redis-server is not installed (apt-get install redis-server)",
)
def test_addons_create_list_info_destroy(dyno: Dyno) -> None:
    dyno.ok("apps:create", "stash")
    made = dyno.json("addons:create", "redis", "--as", "cache", "-a", "stash")
    assert (made["name"], made["config_vars"]) == ("cache", ["REDIS_URL"])
    out = dyno.ok("addons", "-a", "stash")
    assert "cache" in out and "heroku-redis:mini" in out and "REDIS_URL" in out
    assert [a["name"] for a in dyno.json("addons", "-a", "stash")] == ["cache"]
    assert "Plan:        heroku-redis:mini" in dyno.ok("addons:info", "cache", "-a", "stash")
    assert "Attach REDIS (cache)" in dyno.ok("releases", "-a", "stash")
    refused = dyno("addons:destroy", "cache", "-a", "stash")
    assert refused.returncode == 1 and "--confirm stash" in refused.stderr
    out = dyno.ok("addons:destroy", "cache", "-a", "stash", "--confirm", "stash")
    assert "Destroying cache on stash... done" in out
    assert "has no add-ons" in dyno.ok("addons", "-a", "stash")
    assert "REDIS_URL" not in dyno.ok("config", "-a", "stash")
    missing = dyno("addons:create", "memcached", "-a", "stash")
    assert missing.returncode == 1 and "heroku-redis" in missing.stderr
