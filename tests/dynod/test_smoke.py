"""`dynod smoke` as CI runs it (README, "`dynod smoke`"): it passes on the fixture apps, fails with
exit 1 naming the cause on apps that go wrong (fixtures/smoke/), and leaves no process, file
or temporary directory behind, nor any change in the app's directory, also when interrupted."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dynod.smoke_helpers import (
    APPS,
    HOSTILE,
    Scene,
    junit_cases,
    marked,
    scene,
    tree_digest,
)
from tests.helpers import PY, ROOT, wait_until


@pytest.fixture
def place() -> Iterator[Scene]:
    yield from scene()


def _nothing_left(place: Scene) -> None:
    assert wait_until(lambda: not place.left_behind(), timeout=5), place.left_behind()


@pytest.mark.parametrize("app", ["sample", "python-app", "node-app"])
def test_passes_on_the_fixture_apps(app: str, place: Scene, tmp_path: Path) -> None:
    if app == "node-app" and shutil.which("node") is None:
        pytest.skip("node is not installed: the Node.js buildpack needs it")
    directory = APPS / app
    before = tree_digest(directory)
    report = tmp_path / "smoke.xml"
    done = place.run(str(directory), "--junit", str(report))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"dynod smoke: {app} passed" in done.stdout
    assert re.search(r"^ +ok  GET / -> 200 ", done.stdout, re.M), done.stdout
    cases = junit_cases(report)
    assert {"build", "boot", "GET / -> 200"} <= set(cases)
    assert not any(case.find("failure") is not None for case in cases.values())
    assert tree_digest(directory) == before
    _nothing_left(place)
    port = int(re.findall(r"web\.1 :(\d+)", done.stdout)[0])
    with socket.socket() as probe:  # no one listens on the web dyno's port (TIME_WAIT aside)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))


def test_formation_paths_and_expectations(place: Scene) -> None:
    done = place.run(
        str(APPS / "sample"),
        "-m",
        "web=2,worker=1",
        "--path",
        "/health",
        "--path",
        "/",
        "--expect",
        "200",
        "--env",
        "GREETING=bonjour",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"ok  boot .*web\.1 :\d+, web\.2 :\d+, worker\.1", done.stdout), done.stdout
    assert "ok  GET /health -> 200" in done.stdout
    assert "ok  worker.1 stays up" in done.stdout
    _nothing_left(place)


# (fixture, extra flags, failing check, what the failure says, a line of the log tail)
HOSTILE_CASES = [
    ("status500", (), "GET / -> 200", "answered 500, expected 200", "OperationalError"),
    ("nobind", ("--timeout", "2"), "boot", "web.1: Error R10 (Boot timeout)", "port 8000"),
    ("crash", (), "boot", "web.1 crashed: Process exited with status 1", "KeyError"),
    (
        "release-fails",
        (),
        "release v3",
        "the release command exited with status 3",
        "relation users already exists",
    ),
    ("nobuild", (), "build", "compile of python failed", "missing-package"),
    (
        "worker-crash",
        (),
        "worker.1 stays up",
        "worker.1 crashed: Process exited with status 2",
        "lost the queue connection",
    ),
]


@pytest.mark.parametrize(
    ("app", "flags", "check", "says", "logged"), HOSTILE_CASES, ids=[c[0] for c in HOSTILE_CASES]
)
def test_fails_naming_the_cause(
    app: str,
    flags: tuple[str, ...],
    check: str,
    says: str,
    logged: str,
    place: Scene,
    tmp_path: Path,
) -> None:
    directory = HOSTILE / app
    before = tree_digest(directory)
    report = tmp_path / "smoke.xml"
    done = place.run(str(directory), "--junit", str(report), *flags)
    assert done.returncode == 1, done.stdout + done.stderr
    assert re.search(rf"^  FAIL  {re.escape(check)} .*{re.escape(says)}", done.stdout, re.M), (
        done.stdout
    )
    assert f"dynod smoke: {app} FAILED ({check}: " in done.stdout
    assert logged in done.stdout  # the log tail, or the build's output
    failure = junit_cases(report)[check].find("failure")
    assert failure is not None and says in failure.attrib["message"]
    if app != "nobuild":  # a build failure's output was shown as it came
        assert logged in (failure.text or "")
    assert tree_digest(directory) == before
    _nothing_left(place)


def test_a_daemon_the_app_forks_does_not_survive(place: Scene) -> None:
    done = place.run(str(HOSTILE / "daemon"))
    assert done.returncode == 0, done.stdout + done.stderr
    _nothing_left(place)


def _unprivileged_python() -> list[str] | None:
    """A command running the system's python3 (3.11 or later) as `nobody`, whom root's own
    interpreters are closed to; None when there is none, or this is not root."""
    python, setpriv = Path("/usr/bin/python3"), shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None or not python.exists():
        return None
    version = subprocess.run(
        [str(python), "-c", "import sys; print(sys.version_info >= (3, 11))"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if version.stdout.strip() != "True":
        return None
    gid = pwd.getpwnam("nobody").pw_gid
    return [setpriv, "--reuid=nobody", f"--regid={gid}", "--clear-groups", str(python)]


def test_without_cgroups_a_daemon_does_not_survive_either(place: Scene) -> None:
    """As CI runners run it: not root, so no cgroups; the daemon, orphaned when its dyno ends,
    is ended by the last sweep of orphans before `dynod smoke` exits."""
    python = _unprivileged_python()
    if python is None:
        pytest.skip("needs root (to become nobody) and a /usr/bin/python3 of 3.11 or later")
    home = place.tmpdir / "nobody"
    home.mkdir()
    shutil.chown(home, "nobody", pwd.getpwnam("nobody").pw_gid)
    site = sysconfig.get_paths()["purelib"]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "TMPDIR": str(home)}
    env |= {"PYTHONPATH": f"{ROOT}{os.pathsep}{site}", "SMOKE_MARK": place.mark}
    done = subprocess.run(
        [*python, "-m", "dynod.cli", "smoke", str(HOSTILE / "daemon")]
        + ["--env", f"SMOKE_MARK={place.mark}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert wait_until(lambda: not marked(place.mark), timeout=5), marked(place.mark)
    assert not list(home.iterdir())


# (signal, the check it cuts short, the flags that make the run wait there)
INTERRUPTS = [
    (signal.SIGINT, "boot", ["--timeout", "60"]),
    (signal.SIGTERM, "boot", ["--timeout", "60"]),
    (signal.SIGTERM, "build", ["--buildpack", str(HOSTILE / "buildpacks" / "slow")]),
]


@pytest.mark.parametrize(
    ("sig", "check", "flags"), INTERRUPTS, ids=[f"{s.name}-{c}" for s, c, _ in INTERRUPTS]
)
def test_an_interrupted_run_leaves_nothing(
    sig: signal.Signals, check: str, flags: list[str], place: Scene, tmp_path: Path
) -> None:
    """Stopped while the web dyno boots (it never binds) or while the build compiles (it never
    ends): each sleeps with the run's mark on its command line."""
    report = tmp_path / "smoke.xml"
    args = ["smoke", str(HOSTILE / "nobind"), *flags, "--junit", str(report)]
    args += ["--env", f"SMOKE_MARK={place.mark}"]
    process = subprocess.Popen(
        [PY, "-m", "dynod.cli", *args],
        env=place.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        there = wait_until(
            lambda: any("sleep(3600)" in cmd for _, cmd in marked(place.mark)), timeout=60
        )
        assert there, f"the run never reached its {check}"
        process.send_signal(sig)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 1, out + err
    assert f"FAIL  {check}" in out and f"interrupted by {sig.name}" in out, out
    failure = junit_cases(report)[check].find("failure")
    assert failure is not None and sig.name in failure.attrib["message"]
    _nothing_left(place)


def test_cache_carries_the_build_cache_between_runs(place: Scene, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = place.run(str(APPS / "python-app"), "--cache", str(cache))
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Creating a virtual environment" in first.stdout
    assert (cache / "python" / "venv").is_dir()
    second = place.run(str(APPS / "python-app"), "--cache", str(cache))
    assert second.returncode == 0, second.stdout + second.stderr
    assert "Using the cached virtual environment" in second.stdout
    _nothing_left(place)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--expect", "404"], "--expect 404 must follow the --path"),
        (["--path", "/", "--expect", "200", "--expect", "404"], "must follow the --path"),
        (["--path", "health"], "give a path starting with /"),
        (["--path", "/", "--expect", "99"], "give an HTTP status"),
        (["--env", "NOEQUALS"], "write KEY=VALUE"),
        (["-m", "web=x"], "bad entry"),
        (["--timeout", "0"], "--timeout 0"),
        (["no/such/dir"], "is not a directory"),
    ],
)
def test_usage_errors_exit_2(args: list[str], says: str, place: Scene) -> None:
    done = place.run(*args) if args[0].startswith("no/") else place.run(str(APPS / "sample"), *args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert says in done.stderr
    assert not list(place.tmpdir.iterdir())
