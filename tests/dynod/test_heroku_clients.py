"""dynod's API driven by clients no one on this project wrote: the heroku3 Python client and the
real Heroku CLI (README, A tour of the platform), against a real `dynod serve` on port 0.

heroku3 comes with the `test` extra (`pip install -e '.[test]'`); the test skips without it. The
Heroku CLI is ~400 MB of npm, so its test runs only when `DYNOD_HEROKU_CLI` names its binary:

    mkdir -p /tmp/hcli && (cd /tmp/hcli && npm install heroku@11)
    DYNOD_HEROKU_CLI=/tmp/hcli/node_modules/.bin/heroku pytest tests/dynod/test_heroku_clients.py
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dynod.slugs.pack import pack_slug
from tests.helpers import ROOT, start_serve, stop_serve, wait_until
from tests.terminal import Terminal

try:
    import heroku3  # type: ignore[import-untyped]
except ImportError as err:  # heroku3 also fails to import without `six`
    heroku3 = None
    HEROKU3_MISSING = f"heroku3 is not importable ({err}): pip install -e '.[test]'"
else:
    HEROKU3_MISSING = ""

HEROKU_CLI = os.environ.get("DYNOD_HEROKU_CLI", "")
SAMPLE = ROOT / "fixtures" / "sample"


class Served:
    """One `dynod serve` on ports 0, and plain HTTP to its API for what the clients cannot do
    (uploading a slug)."""

    def __init__(self, data: Path, log: Path) -> None:
        self.data, self.log = data, log
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DYNOD_", "DYNO_"))}
        self.process = start_serve(data, log, env, timeout=30)
        self.url = (data / "api-url").read_text().strip().rstrip("/")
        self.token = (data / "api-token").read_text().strip()

    def stop(self) -> None:
        stop_serve(self.process)

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        data: bytes | None = None,
        token: bool = True,
    ) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if token else {}
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        url = path if path.startswith("http") else self.url + path
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        with urllib.request.urlopen(request, timeout=20) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def dynos(self, app: str) -> list[tuple[str, str]]:
        return sorted((d["name"], d["state"]) for d in self.call("GET", f"/apps/{app}/dynos"))

    def deploy(self, app: str, tmp_path: Path) -> None:
        """The sample app's web process as a slug through the API; returns once web.1 is up."""
        app_dir = tmp_path / f"{app}-src"
        shutil.copytree(SAMPLE, app_dir)
        (app_dir / "Procfile").write_text("web: python3 web.py\n")
        tarball = pack_slug(app_dir, tmp_path / f"{app}.tgz").path.read_bytes()
        slug = self.call("POST", f"/apps/{app}/slugs", {"process_types": {"web": "python3 web.py"}})
        self.call("PUT", slug["blob"]["url"], data=tarball, token=False)
        self.call("POST", f"/apps/{app}/releases", {"slug": slug["id"]})
        assert wait_until(lambda: self.dynos(app) == [("web.1", "up")], 30), self.dynos(app)


def cli_env(served: Served, tmp_path: Path) -> dict[str, str]:
    """The Heroku CLI's environment against `served`: its own HOME (it writes ~/.gitconfig and
    a banner cache), no telemetry or update checks, `GET /account` kept off the internet, and
    the rendezvous CA trusted for `heroku run` (README, "Attached one-offs")."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "HEROKU_HOST": served.url,
        "HEROKU_API_KEY": served.token,
        "NODE_EXTRA_CA_CERTS": str(served.data / "rendezvous-ca.pem"),
        "DISABLE_TELEMETRY": "true",
        "HEROKU_SKIP_NEW_VERSION_CHECK": "true",
        "HEROKU_DISABLE_AUTOUPDATE": "true",
        "HEROKU_PARTICLEBOARD_URL": served.url,
    }


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    server = Served(tmp_path_factory.mktemp("data"), tmp_path_factory.mktemp("log") / "serve.log")
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.skipif(heroku3 is None, reason=HEROKU3_MISSING)
def test_heroku3_drives_apps_config_releases_formation_dynos_and_logs(
    served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert heroku3 is not None
    monkeypatch.setattr(heroku3.api, "HEROKU_URL", served.url)  # heroku3 has no other way
    heroku = heroku3.from_key(served.token)  # HTTP Basic, empty user, token as password

    before = [app.name for app in heroku.apps()]
    app = heroku.create_app(name="heroku-three")  # sends "stack": "cedar"
    assert app.name == "heroku-three" and app.web_url.startswith("http://heroku-three.localhost:")
    assert [a.name for a in heroku.apps()] == sorted([*before, "heroku-three"])
    served.deploy("heroku-three", tmp_path)
    app = heroku.apps()["heroku-three"]  # from here heroku3 puts the app's id in most paths

    config = app.config()
    assert config.to_dict() == {}
    config["GREETING"] = "hello"
    config.update({"COLOR": "blue"})
    config = app.config()
    assert config.to_dict() == {"GREETING": "hello", "COLOR": "blue"}
    del config["COLOR"]
    assert app.config().to_dict() == {"GREETING": "hello"}

    releases = app.releases()  # heroku3's loose Range `id ..; ;`: ascending, v1 first
    assert [(r.version, r.description) for r in releases] == [
        (1, "Initial release"),
        (2, releases[1].description),
        (3, "Set GREETING config vars"),
        (4, "Set COLOR config vars"),
        (5, "Remove COLOR config vars"),
    ]
    assert releases[1].description.startswith("Deploy ")
    rolled = app.rollback(releases[1].id)  # answers with the last release of the list
    assert (rolled.version, rolled.description) == (6, "Rollback to v2")
    assert app.config().to_dict() == {}

    assert wait_until(lambda: [(d.name, d.state) for d in app.dynos()] == [("web.1", "up")], 20)
    web = app.process_formation()["web"]
    assert (web.type, web.quantity, web.command) == ("web", 1, "python3 web.py")
    assert web.scale(2).quantity == 2
    assert [(p.type, p.quantity) for p in app.process_formation()] == [("web", 2)]
    two_up = [("web.1", "up"), ("web.2", "up")]
    assert wait_until(lambda: served.dynos("heroku-three") == two_up, 20), served.dynos(
        "heroku-three"
    )

    dyno = app.run_command_detached("echo from-heroku3")  # sends "size": null
    assert dyno.name.startswith("run.") and dyno.command == "echo from-heroku3"
    assert wait_until(
        lambda: f"app[{dyno.name}]: from-heroku3" in app.get_log(lines=50), 15, every=0.2
    )
    assert len(app.get_log(lines=3).splitlines()) == 3

    assert app.delete()
    assert "heroku-three" not in [a.name for a in heroku.apps()]


@pytest.mark.skipif(
    not HEROKU_CLI,
    reason="the Heroku CLI test needs DYNOD_HEROKU_CLI=<path to the "
    "`heroku` binary> (mkdir -p /tmp/hcli && cd /tmp/hcli && npm install heroku@11)",
)
def test_the_heroku_cli_drives_apps_formation_config_releases_and_logs(
    served: Served, tmp_path: Path
) -> None:
    env = cli_env(served, tmp_path)

    def heroku(*args: str) -> tuple[str, str]:
        done = subprocess.run(
            [HEROKU_CLI, *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode == 0, f"heroku {' '.join(args)}: {done.stderr}{done.stdout}"
        return done.stdout, done.stderr

    out, err = heroku("apps:create", "cli")
    assert "http://cli.localhost:" in out and "Creating cli... done" in err
    served.deploy("cli", tmp_path)

    out, _ = heroku("apps")  # lists the apps whose owner is the account's email
    assert "cli (local)" in out
    out, _ = heroku("apps:info", "-a", "cli")
    email = served.call("GET", "/account")["email"]
    for line in (
        "=== cli",
        f"Owner:          {email}",
        "Region:         local",
        "Stack:          heroku-24",
        "Dynos:          web: 1",
        "Web URL:        http://cli.localhost:",
    ):
        assert line in out, out

    _, err = heroku("ps:scale", "web=2", "-a", "cli")  # "quantity": "2", a string
    assert "now running web at 2:standard-1X" in err
    _, err = heroku("ps:scale", "web-1", "-a", "cli")
    assert "now running web at 1:standard-1X" in err
    out, _ = heroku("ps", "-a", "cli")
    assert "=== web (standard-1X): python3 web.py (1)" in out and "web.1: " in out

    # config:set reads the new version back with `Range: version ..; order=desc,max=1`
    out, err = heroku("config:set", "GREETING=hello", "-a", "cli")
    assert "Setting GREETING and restarting cli... done, v3" in err and "GREETING: hello" in out
    out, _ = heroku("config:get", "GREETING", "-a", "cli")
    assert out == "hello\n"

    out, _ = heroku("releases", "-a", "cli")
    assert "=== cli Releases - Current: v3" in out
    versions = [line.split()[0] for line in out.splitlines() if re.match(r"\s*v\d+\s", line)]
    assert versions == ["v3", "v2", "v1"], out  # `Range: version ..; max=15, order=desc`
    assert "Set GREETING config vars" in out and "Initial release" in out

    out, _ = heroku("logs", "-n", "50", "-a", "cli")  # an EventSource on the logplex_url
    assert "app[api]: Scaled to web@2:Standard-1X" in out
    assert "heroku[web.1]: State changed from starting to up" in out
    set_at = out.index(f"app[api]: Set GREETING config vars by user {email}")
    assert set_at < out.index(f"app[api]: Release v3 created by user {email}")

    # drains:remove sends the URL itself, percent-encoded, as the drain's identity
    out, _ = heroku("drains:add", "syslog://127.0.0.1:9", "-a", "cli")
    assert out == "Successfully added drain syslog://127.0.0.1:9\n"
    out, _ = heroku("drains", "-a", "cli")
    assert re.fullmatch(r"=== Drains\n\nsyslog://127\.0\.0\.1:9 \(d\.[0-9a-f-]{36}\)\n", out), out
    out, _ = heroku("drains", "--json", "-a", "cli")
    [drain] = json.loads(out)
    assert drain["url"] == "syslog://127.0.0.1:9" and drain["addon"] is None
    out, _ = heroku("drains:remove", "syslog://127.0.0.1:9", "-a", "cli")
    assert out == "Successfully removed drain syslog://127.0.0.1:9\n"
    out, _ = heroku("drains", "-a", "cli")
    assert out == ""


needs_redis = pytest.mark.skipif(
    shutil.which("redis-server") is None,
    reason="redis-server is not installed (apt-get install redis-server)",
)


@needs_redis
@pytest.mark.skipif(heroku3 is None, reason=HEROKU3_MISSING)
def test_heroku3_provisions_lists_and_removes_an_addon(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert heroku3 is not None
    monkeypatch.setattr(heroku3.api, "HEROKU_URL", served.url)
    heroku = heroku3.from_key(served.token)
    app = heroku.create_app(name="three-addons")
    app = heroku.apps()["three-addons"]
    addon = app.install_addon("heroku-redis", attachment_name="CACHE")  # "plan": a string
    assert (addon.name, addon.plan.name) == ("redis-1", "heroku-redis:mini")
    assert [a.name for a in app.addons()] == ["redis-1"]
    assert app.config().to_dict()["CACHE_URL"].startswith("redis://:")
    app.remove_addon(addon.id)
    assert len(app.addons()) == 0 and "CACHE_URL" not in app.config().to_dict()
    assert app.delete()


@needs_redis
@pytest.mark.skipif(not HEROKU_CLI, reason="the Heroku CLI test needs DYNOD_HEROKU_CLI")
def test_the_heroku_cli_creates_shows_and_destroys_addons(served: Served, tmp_path: Path) -> None:
    env = cli_env(served, tmp_path)

    def heroku(*args: str) -> str:
        done = subprocess.run(
            [HEROKU_CLI, *args, "-a", "cli-addons"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode == 0, f"heroku {' '.join(args)}: {done.stderr}{done.stdout}"
        return done.stdout + done.stderr

    served.call("POST", "/apps", {"name": "cli-addons"})
    out = heroku("addons:create", "heroku-redis")  # {"plan": {"name": "heroku-redis"}}
    assert "Created redis-1 as REDIS_URL" in out and "undefined" not in out
    out = heroku("addons")  # /apps/X/addons and the attachments
    assert "heroku-redis (redis-1)" in out and "as REDIS" in out and "created" in out
    out = heroku("addons:info", "redis-1")  # POST /actions/addons/resolve first: a list
    assert "=== redis-1" in out and "heroku-redis:mini" in out and "cli-addons::REDIS" in out
    out = heroku("releases")
    assert "Attach REDIS (redis-1)" in out
    out = heroku("addons:destroy", "redis-1", "--confirm", "cli-addons")
    assert "Destroying redis-1 on cli-addons... done" in out
    assert "Detach REDIS (redis-1)" in heroku("releases")
    assert "REDIS_URL" not in heroku("config")


@pytest.mark.skipif(
    not HEROKU_CLI,
    reason="the Heroku CLI test needs DYNOD_HEROKU_CLI=<path to the "
    "`heroku` binary> (mkdir -p /tmp/hcli && cd /tmp/hcli && npm install heroku@11)",
)
def test_the_heroku_cli_runs_attached_one_offs(served: Served, tmp_path: Path) -> None:
    """`heroku run` through dynod's rendezvous, trusting the data directory's CA (README,
    "Attached one-offs")."""
    env = cli_env(served, tmp_path)

    def heroku(*args: str, input: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [HEROKU_CLI, *args, "-a", "cli-run"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            input=input,
        )

    served.call("POST", "/apps", {"name": "cli-run"})
    served.deploy("cli-run", tmp_path)
    done = heroku("run", "bash", input="echo hello-$((6*7)); exit 5\n")  # a pty; stdin piped
    assert done.returncode == 0 and "hello-42" in done.stdout, done.stderr + done.stdout
    assert "up, run." in done.stderr
    done = heroku("run", "exit 3")  # as on Heroku: the CLI's own status without -x
    assert done.returncode == 0, done.stderr + done.stdout
    done = heroku("run", "-x", "exit 3")  # dynod answers the exit-code marker itself
    assert done.returncode == 3 and "Process exited with code 3" in done.stderr, done.stderr
    done = heroku("run", "-x", "echo from-the-dyno")
    assert done.returncode == 0 and "from-the-dyno" in done.stdout, done.stderr + done.stdout
    assert "heroku-command-exit-status" not in done.stdout

    argv = [HEROKU_CLI, "run", "bash", "-a", "cli-run"]  # on a terminal: raw mode, its size
    term = Terminal(argv, tmp_path, {**env, "TERM": "xterm"}, rows=27, cols=91)
    try:
        term.type(b"stty size\r")
        term.expect(rb"27 91\r")
        term.type(b"exit\r")
        assert term.wait() == 0
    finally:
        term.process.kill()  # a no-op once it has ended
    assert wait_until(lambda: [d for d, _ in served.dynos("cli-run")] == ["web.1"], 10)
