"""The platform end to end, as a user drives it: a real `dynod serve`, the `dyno` client and
`git` as subprocesses, and HTTP through the router with `Host: <app>.localhost`.

The tests run in file order on one dynod and one data directory; the last one kills dynod with
SIGKILL and starts it again on the same data.
"""

from __future__ import annotations

import http.client
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.dynod.slugs.test_slug import GOOD, HOSTILE, make_slug
from tests.dynod.test_serve import dyno_pids, scratch_of
from tests.helpers import ROOT, pid_alive, start_serve, stop_serve, wait_until

PY = sys.executable
PYTHON_APP = ROOT / "fixtures" / "python-app"
SECRET = "DYNOD_E2E_SECRET_OF_THE_DAEMON"


class Served:
    """One `dynod serve` on a data directory, restartable, and `dyno` run against it."""

    def __init__(self, data: Path, cwd: Path, log: Path) -> None:
        self.data, self.cwd, self.log = data, cwd, log
        self.env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("DYNOD_API_URL", "DYNOD_API_TOKEN", "DYNO_APP")
        }
        self.env["DYNOD_DATA"] = str(data)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = start_serve(self.data, self.log, {**self.env, SECRET: "leaked"})

    def stop(self) -> None:
        if self.process is not None:
            stop_serve(self.process)

    def __call__(
        self, *args: str, cwd: Path | None = None, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PY, "-m", "shell.cli", *args],
            cwd=cwd or self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def ok(self, *args: str, cwd: Path | None = None, timeout: float = 120.0) -> str:
        done = self(*args, cwd=cwd, timeout=timeout)
        assert done.returncode == 0, f"dyno {' '.join(args)}: {done.stderr}{done.stdout}"
        return done.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json"))

    def router(self, app: str) -> int:
        """The router's port, read from the app's web_url (`http://<app>.localhost:PORT/`)."""
        url = self.json("apps:info", "-a", app)["web_url"]
        assert url.startswith(f"http://{app}.localhost:"), url
        return int(url.rsplit(":", 1)[1].rstrip("/"))

    def get(self, app: str, path: str = "/", port: int | None = None) -> tuple[int, str]:
        """GET through the router, as a browser at http://<app>.localhost:PORT/ would."""
        connection = http.client.HTTPConnection("127.0.0.1", port or self.router(app), timeout=30)
        try:
            connection.request("GET", path, headers={"Host": f"{app}.localhost"})
            response = connection.getresponse()
            return response.status, response.read().decode()
        finally:
            connection.close()

    def states(self, app: str) -> dict[str, str]:
        return {d["name"]: d["state"] for d in self.json("ps", "-a", app)}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    server = Served(
        tmp_path_factory.mktemp("data"),
        tmp_path_factory.mktemp("cwd"),
        tmp_path_factory.mktemp("log") / "serve.log",
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def eventually(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    assert wait_until(check, timeout=timeout, every=0.2), f"timed out waiting for {what}"


def answers(served: Served, app: str, path: str, want: str) -> Callable[[], bool]:
    def check() -> bool:
        status, body = served.get(app, path)
        return status == 200 and body == want

    return check


def git(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def repository(tmp_path: Path, source: Path | None) -> Path:
    work = tmp_path / "work"
    if source is None:
        work.mkdir(parents=True)
        (work / "README").write_text("nothing any buildpack knows\n")
    else:
        shutil.copytree(source, work)
    assert git(work, "init", "--quiet", "--initial-branch=main").returncode == 0
    git(work, "add", ".")
    assert git(work, "commit", "--quiet", "-m", "first").returncode == 0
    return work


def test_git_push_deploys_and_a_failed_build_rejects_the_push(
    served: Served, tmp_path: Path
) -> None:
    served.ok("apps:create", "pushed")
    work = repository(tmp_path, PYTHON_APP)
    assert "dynod" in served.ok("git:remote", "-a", "pushed", cwd=work)
    push = git(work, "push", "dynod", "main")
    assert push.returncode == 0, push.stderr
    assert "remote: -----> " in push.stderr
    assert served.json("releases", "-a", "pushed")[0]["description"].startswith("Deploy ")
    eventually(
        answers(served, "pushed", "/", "Hello from web.1\n"), "the pushed app through the router"
    )

    served.ok("apps:create", "unbuildable")
    broken = repository(tmp_path / "broken", None)
    served.ok("git:remote", "-a", "unbuildable", cwd=broken)
    rejected = git(broken, "push", "dynod", "main")
    assert rejected.returncode != 0
    assert "remote:  !     " in rejected.stderr
    assert [r["version"] for r in served.json("releases", "-a", "unbuildable")] == [1]


def test_deploy_scale_round_robin_config_and_rollback(served: Served) -> None:
    app = ["-a", "shop"]
    served.ok("apps:create", "shop")
    port = served.router("shop")
    out = served.ok("deploy", str(PYTHON_APP), *app, timeout=300)
    assert "-----> " in out and "Released v2 of shop" in out
    # At once: the router holds a request while the app's web dyno is starting (no H14).
    assert served.get("shop", port=port) == (200, "Hello from web.1\n")

    served.ok("ps:scale", "web=3", *app)
    eventually(
        lambda: served.states("shop") == {"web.1": "up", "web.2": "up", "web.3": "up"},
        "3 web dynos up",
    )
    eventually(
        lambda: (
            {served.get("shop")[1] for _ in range(3)}
            == {"Hello from web.1\n", "Hello from web.2\n", "Hello from web.3\n"}
        ),
        "round robin over 3",
    )

    # A file written in one dyno is seen by neither another dyno nor the same one after a restart.
    first = [served.get("shop", "/scratch")[1] for _ in range(3)]
    assert sorted(first) == ["web.1 seen=no\n", "web.2 seen=no\n", "web.3 seen=no\n"]
    assert sorted(served.get("shop", "/scratch")[1] for _ in range(3)) == [
        "web.1 seen=yes\n",
        "web.2 seen=yes\n",
        "web.3 seen=yes\n",
    ]
    served.ok("ps:scale", "web=1", *app)
    eventually(lambda: served.states("shop") == {"web.1": "up"}, "scaled down to web.1")
    served.ok("ps:restart", *app)
    eventually(
        answers(served, "shop", "/scratch", "web.1 seen=no\n"),
        "a fresh directory after the restart",
    )

    # dynod's own environment never reaches a dyno.
    assert served.get("shop", f"/env/{SECRET}") == (404, "unset\n")
    assert served.get("shop", "/env/DYNO") == (200, "web.1\n")

    served.ok("config:set", "GREETING=bonjour", *app)
    latest = served.json("releases", *app)[0]
    assert (latest["version"], latest["description"]) == (3, "Set GREETING config vars")
    eventually(answers(served, "shop", "/env/GREETING", "bonjour\n"), "the dynos restarted on v3")

    out = served.ok("releases:rollback", "v2", *app)
    assert out.startswith("Rolling back shop to v2... done, v4")
    assert served.json("releases", *app)[0]["description"] == "Rollback to v2"
    eventually(
        lambda: served.get("shop", "/env/GREETING") == (404, "unset\n"),
        "the dynos back on v2's config",
    )


def _dyno_of(served: Served, app_env: str) -> tuple[int, int, int, str]:
    """(pid, uid, gid, directory) of the dyno whose environment holds `app_env` (KEY=value)."""
    assert served.process is not None
    for pid in dyno_pids(served.data):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            status = Path(f"/proc/{pid}/status").read_text()
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if app_env.encode() in environ:
            uid = int(
                next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1]
            )
            gid = int(
                next(line for line in status.splitlines() if line.startswith("Gid:")).split()[1]
            )
            return pid, uid, gid, cwd
    raise AssertionError(f"no dyno with {app_env}")


@pytest.mark.skipif(os.geteuid() != 0, reason="apps get users of their own only under a root dynod")
def test_builds_run_as_the_apps_user_and_keep_their_cache(served: Served, tmp_path: Path) -> None:
    shared = Path(tempfile.mkdtemp(prefix="dynod-test-buildpack-"))  # /tmp: every user passes
    shared.chmod(0o755)
    try:
        _builds_as_the_apps_user(served, tmp_path, shared)
    finally:
        shutil.rmtree(shared)


def _builds_as_the_apps_user(served: Served, tmp_path: Path, shared: Path) -> None:
    pack = (
        tmp_path / "probe-buildpack"
    )  # under pytest's 0700 directory: the app's user cannot read it
    (pack / "bin").mkdir(parents=True)
    (pack / "bin" / "detect").write_text("#!/bin/sh\necho Probe\n")
    (pack / "bin" / "compile").write_text(
        "#!/bin/bash\n"
        'echo "       uid=$(id -u) groups=$(id -G) home=$HOME"\n'
        f'if cat {served.data}/api-token >/dev/null 2>&1; then echo "       token=read"; '
        'else echo "       token=refused"; fi\n'
        'count=$(( $(cat "$2/count" 2>/dev/null || echo 0) + 1 )); echo "$count" > "$2/count"\n'
        'echo "       cache=$count"\n'
        # What the build user can do to the directories around it: nothing.
        'bp="$(dirname "$0")/.."\n'
        'echo "       around: $(stat -c %u:%a "$bp/.." "$bp/../.." "$1/.." | tr "\\n" " ")"\n'
        'if touch "$bp/../../planted" "$bp/../planted" 2>/dev/null; then echo "       '
        'planted=yes"; '
        'else echo "       planted=no"; fi\n'
        'if ls "$1/.." >/dev/null 2>&1; then echo "       listed=yes"; else echo "       '
        'listed=no"; fi\n'
    )
    for script in ("detect", "compile"):
        (pack / "bin" / script).chmod(0o755)
    source = tmp_path / "probe"
    source.mkdir()
    (source / ".buildpacks").write_text(f"{pack}\n")
    (source / "Procfile").write_text("worker: sleep 600\n")
    served.ok("apps:create", "probe")
    refused = served("deploy", str(source), "-a", "probe", timeout=300)
    assert refused.returncode == 1 and "cannot be copied by the app's user" in refused.stdout, (
        refused
    )
    shutil.copytree(
        pack, shared / "pack", symlinks=True
    )  # readable by every user: builds may use it
    (source / ".buildpacks").write_text(f"{shared / 'pack'}\n")
    first = served.ok("deploy", str(source), "-a", "probe", timeout=300)
    uid, groups, home = re.search(r"uid=(\d+) groups=([\d ]+) home=(\S+)", first).groups()  # type: ignore[union-attr]
    assert int(uid) != 0 and groups.split() == [str(pwd.getpwnam("nobody").pw_gid)], first
    assert not home.startswith("/root"), first
    assert "token=refused" in first and "cache=1" in first, first
    # buildpacks/ and the scratch directory above it, and the work directory holding the build
    # and the source: dynod's, passable, not writable or listable by the build user
    assert "around: 0:711 0:711 0:711 " in first and "planted=no" in first, first
    assert "listed=no" in first, first
    second = served.ok("deploy", str(source), "-a", "probe", timeout=300)
    assert f"uid={uid} " in second and "cache=2" in second, second  # same user, cache kept
    served.ok("apps:destroy", "probe", "--confirm", "probe")


@pytest.mark.skipif(os.geteuid() != 0, reason="apps get users of their own only under a root dynod")
def test_no_other_user_reads_a_pushed_source(served: Served, tmp_path: Path) -> None:
    """Issue 11: the push hook's temporary directory was 0755 in the shared /tmp, and another
    app's code copied a victim's source tarball from it during `git push`. Here the pushed app's
    own buildpack (its uid, not the pusher's) looks for it in the push's temporary directory."""
    shared = Path(tempfile.mkdtemp(prefix="dynod-test-push-"))  # the push's /tmp: 1777 as /tmp
    shared.chmod(0o1777)
    try:
        pack = shared / "pack"
        (pack / "bin").mkdir(parents=True)
        (pack / "bin" / "detect").write_text("#!/bin/sh\necho Peek\n")
        (pack / "bin" / "compile").write_text(
            "#!/bin/bash\n"
            f"for f in {shared}/dynod-push-*/*; do\n"
            '  [ -f "$f" ] && cat "$f" >/dev/null 2>&1 && echo "       stolen $f"\n'
            "done\n"
            'echo "       peeked as $(id -u)"\n'
        )
        for path in (pack, pack / "bin", pack / "bin" / "detect", pack / "bin" / "compile"):
            path.chmod(0o755)
        source = tmp_path / "victim"
        source.mkdir()
        (source / ".buildpacks").write_text(f"{pack}\n")
        (source / "Procfile").write_text("worker: sleep 600\n")
        (source / "SECRET_SOURCE").write_text("the victim's code\n")
        work = repository(tmp_path / "repo", source)
        served.ok("apps:create", "victim")
        served.ok("git:remote", "-a", "victim", cwd=work)
        push = subprocess.run(
            ["git", "push", "dynod", "main"],
            cwd=work,
            env={**os.environ, "TMPDIR": str(shared)},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert push.returncode == 0, push.stderr
        peeked = re.search(r"remote:        peeked as (\d+)", push.stderr)
        assert peeked is not None and peeked.group(1) != "0", push.stderr
        assert "stolen" not in push.stderr, push.stderr
    finally:
        shutil.rmtree(shared)
    served.ok("apps:destroy", "victim", "--confirm", "victim")


@pytest.mark.skipif(os.geteuid() != 0, reason="apps get users of their own only under a root dynod")
def test_no_app_reads_another_apps_config_or_files(served: Served) -> None:
    served.ok("config:set", "PUSHED_SECRET=s3cret", "-a", "pushed")
    eventually(
        answers(served, "pushed", "/env/PUSHED_SECRET", "s3cret\n"),
        "pushed's dyno on its new config",
    )
    served.ok("config:set", "SHOP_MARK=1", "-a", "shop")
    eventually(answers(served, "shop", "/env/SHOP_MARK", "1\n"), "shop's dyno on its new config")
    pushed_pid, pushed_uid, _, pushed_dir = _dyno_of(served, "PUSHED_SECRET=s3cret")
    _, shop_uid, shop_gid, _ = _dyno_of(served, "SHOP_MARK=1")
    assert 0 not in (pushed_uid, shop_uid) and pushed_uid != shop_uid
    # As shop's dyno user: pushed's dyno's environment and directory are closed.
    for argv in (["cat", f"/proc/{pushed_pid}/environ"], ["ls", pushed_dir]):
        peek = subprocess.run(
            argv,
            user=shop_uid,
            group=shop_gid,
            extra_groups=[],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert peek.returncode != 0 and "s3cret" not in peek.stdout, (argv, peek)
        assert "Permission denied" in peek.stderr, peek.stderr
    served.ok("config:unset", "SHOP_MARK", "-a", "shop")


def test_a_failing_release_phase_keeps_the_old_release_serving(served: Served) -> None:
    app = ["-a", "shop"]
    current = served.json("releases", *app)[0]["version"]
    served("config:set", "FAIL_RELEASE=1", *app)  # the client may report the failed release
    eventually(
        lambda: served.json("releases", *app)[0]["status"] == "failed", "the release phase to fail"
    )
    assert served.json("releases", *app)[0]["version"] == current + 1
    assert "release phase on" in served.ok("releases:output", f"v{current + 1}", *app)
    assert served.get("shop", "/env/FAIL_RELEASE") == (404, "unset\n")
    assert served.get("shop", "/")[0] == 200
    # As on Heroku, the app's config holds the change; unsetting it is the way back.
    assert served.json("config", *app)["FAIL_RELEASE"] == "1"
    served.ok("config:unset", "FAIL_RELEASE", *app)
    eventually(
        lambda: served.json("releases", *app)[0]["status"] == "succeeded", "the next release"
    )
    assert "FAIL_RELEASE" not in served.json("config", *app)


def reaper_of(pid: int) -> int:
    """dynod's reaper sidecar: its child running `python -I -S …/reaper_child.py`."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_bytes()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat[stat.rfind(b")") + 2 :].split()[1]) == pid and b"-S" in cmdline:
            return int(entry)
    raise AssertionError("dynod has no reaper")


def test_kill_9_then_serve_again_brings_everything_back(served: Served) -> None:
    app = ["-a", "shop"]
    served.ok("ps:scale", "web=2", *app)
    served.ok("config:set", "KEPT=yes", *app)
    eventually(lambda: served.states("shop") == {"web.1": "up", "web.2": "up"}, "2 web dynos")
    before = {
        "apps": sorted(a["name"] for a in served.json("apps")),
        "releases": [
            (r["version"], r["description"], r["status"]) for r in served.json("releases", *app)
        ],
        "config": served.json("config", *app),
    }
    assert served.process is not None

    # SIGKILL to dynod alone: its reaper ends every dyno within seconds.
    pids = dyno_pids(served.data)
    assert len(pids) >= 2
    served.process.kill()
    served.process.wait(timeout=10)
    eventually(
        lambda: not any(pid_alive(pid) for pid in pids), "the killed dynod's dynos to end", 5
    )

    served.start()
    eventually(
        lambda: served.states("shop") == {"web.1": "up", "web.2": "up"}, "the formation back"
    )
    after = {
        "apps": sorted(a["name"] for a in served.json("apps")),
        "releases": [
            (r["version"], r["description"], r["status"]) for r in served.json("releases", *app)
        ],
        "config": served.json("config", *app),
    }
    assert after == before
    eventually(
        answers(served, "shop", "/env/KEPT", "yes\n"), "the app serving on its current release"
    )

    # SIGKILL to dynod and its reaper together: the next dynod finds and ends what they left.
    pids = dyno_pids(served.data)
    scratch = scratch_of(served.data)
    assert scratch.is_dir()
    os.kill(reaper_of(served.process.pid), signal.SIGKILL)
    served.process.kill()
    served.process.wait(timeout=10)
    assert any(pid_alive(pid) for pid in pids)  # nothing could end them yet
    served.start()
    eventually(lambda: not any(pid_alive(pid) for pid in pids), "the leftovers to be ended", 10)
    assert not scratch.exists()  # their directories went with them
    # shop's web.1 and web.2, and pushed's web.1
    assert "ended 3 dyno process group(s) an earlier dynod left running" in served.log.read_text()
    eventually(
        lambda: served.states("shop") == {"web.1": "up", "web.2": "up"}, "the formation back again"
    )


# ----- hostile slugs, through the API of a running dynod


def api(
    served: Served,
    method: str,
    path: str,
    body: Any = None,
    data: bytes | None = None,
    auth: bool = True,
) -> tuple[int, Any]:
    base = (served.data / "api-url").read_text().strip()
    token = (served.data / "api-token").read_text().strip()
    headers = {"Authorization": f"Bearer {token}"} if auth else {}
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    url = path if path.startswith("http") else base + path
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            raw, status = response.read(), response.status
    except urllib.error.HTTPError as err:
        raw, status = err.read(), err.code
    return status, json.loads(raw) if raw else None


def test_every_hostile_slug_kind_is_refused_and_nothing_runs(
    served: Served, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    tmp_path.chmod(0o777)  # the dyno user could write the marker, were anything run
    types = {"web": f"touch {marker}; exec sleep 60", "release": f"touch {marker}"}
    served.ok("apps:create", "victim")
    for kind, (extra, _member, rule) in sorted(HOSTILE.items()):
        slug = make_slug(tmp_path / "slug.tgz", GOOD + extra).read_bytes()
        status, created = api(served, "POST", "/apps/victim/slugs", {"process_types": types})
        assert status == 201, created
        status, refused = api(served, "PUT", created["blob"]["url"], data=slug, auth=False)
        assert status == 422 and rule in refused["message"], (kind, refused)
        status, _ = api(served, "POST", "/apps/victim/releases", {"slug": created["id"]})
        assert status == 404, kind

    # A slug whose checksum is not the one announced is refused too (R17 before storing) …
    good = make_slug(tmp_path / "good.tgz", GOOD).read_bytes()
    status, created = api(
        served,
        "POST",
        "/apps/victim/slugs",
        {"process_types": types, "checksum": "SHA256:" + "0" * 64},
    )
    status, refused = api(served, "PUT", created["blob"]["url"], data=good, auth=False)
    assert status == 422 and "R17" in refused["message"], refused

    # … and so is one whose stored blob changed on disk after the upload: its dynos never start.
    status, created = api(served, "POST", "/apps/victim/slugs", {"process_types": types})
    assert api(served, "PUT", created["blob"]["url"], data=good, auth=False)[0] == 200
    for blob in (served.data / "slugs").rglob("*.tar.gz"):
        blob.write_bytes(blob.read_bytes() + b"tampered")
    api(served, "POST", "/apps/victim/releases", {"slug": created["id"]})
    eventually(lambda: "R17" in served.ok("logs", "-n", "200", "-a", "victim"), "the R17 line")
    assert "Error R17 (Checksum error)" in served.ok("releases:output", "-a", "victim")
    assert not marker.exists()
    assert [
        r["version"] for r in served.json("releases", "-a", "victim") if r["status"] == "succeeded"
    ] == [1]
