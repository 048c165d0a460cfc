"""Steering a running `dynod start` from another terminal (README, "Steering a running `dynod
start`"): real `dynod start` runs on small Procfiles, driven by the real `dyno` client over the
run's private socket, with no flag saying where it is."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from shell.errors import ApiError
from shell.local import find_local_run
from tests.dynod.test_local import free_port, read_until, stop
from tests.helpers import PY, pid_alive, spawn_dynod, wait_until

PROCFILE = "web: echo pid=$$; exec sleep 60\nworker: echo pid=$$ $FOO; exec sleep 60\n"
PID = re.compile(r" (\S+) +\| pid=(\d+)")


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    root = tmp_path / "shop"
    (root / "src" / "deep").mkdir(parents=True)
    (root / "Procfile").write_text(PROCFILE)
    (root / ".env").write_text("FOO=from-env\n")
    return root


SERVE_URL = "http://127.0.0.1:9"  # where the data directory says dynod serve is: nothing there


def client_env(cwd: Path) -> dict[str, str]:
    """The user's environment without anything naming an app or an API, and a data directory
    that points at a dynod serve (which does not answer)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DYNOD_API_URL", "DYNOD_API_TOKEN", "DYNO_APP", "DYNOD_DATA")
    }
    shop = next(path for path in (cwd, *cwd.parents) if path.name == "shop")
    data = shop.parent / "data"  # beside the app directory
    data.mkdir(exist_ok=True)
    (data / "api-url").write_text(SERVE_URL)
    env["DYNOD_DATA"] = str(data)
    return env


def dyno(cwd: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "shell.cli", *args],
        cwd=cwd,
        env=client_env(cwd),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def run(app_dir: Path) -> Iterator[subprocess.Popen[str]]:
    process = spawn_dynod("start", "-p", str(free_port()), cwd=app_dir)
    yield process
    if process.poll() is None:
        stop(process)


def pids(lines: list[str]) -> dict[str, int]:
    """The latest pid each dyno printed."""
    found: dict[str, int] = {}
    for line in lines:
        match = PID.search(line)
        if match:
            found[match.group(1)] = int(match.group(2))
    return found


def read_pid(process: subprocess.Popen[str], name: str) -> list[str]:
    """Lines of the run's output up to the next pid `name` prints."""
    seen: list[str] = []
    for _ in range(10):
        seen += read_until(process, "| pid=")
        if name in pids(seen[-1:]):
            return seen
    raise AssertionError(f"no new pid from {name} in {seen}")


def dynos(cwd: Path) -> list[str]:
    result = dyno(cwd, "ps", "--json")
    assert result.returncode == 0, result.stderr
    return sorted(d["name"] for d in json.loads(result.stdout))


def test_restarting_one_dyno_leaves_the_others_running(
    app_dir: Path, run: subprocess.Popen[str]
) -> None:
    seen = read_until(run, "| pid=", count=2)
    before = pids(seen)
    below = app_dir / "src" / "deep"  # found by walking up to the app directory
    ps = dyno(below, "ps")
    assert ps.returncode == 0, ps.stderr
    assert "web.1: " in ps.stdout and "worker.1: " in ps.stdout

    restarted = dyno(below, "ps:restart", "web.1")
    assert restarted.returncode == 0, restarted.stderr
    assert restarted.stdout == "Restarting web.1 dyno on shop... done\n"
    seen += read_pid(run, "web.1")
    after = pids(seen)
    assert after["web.1"] != before["web.1"]
    assert wait_until(lambda: not pid_alive(before["web.1"]))
    assert after["worker.1"] == before["worker.1"] and pid_alive(before["worker.1"])

    assert dyno(app_dir, "ps:restart", "worker").returncode == 0
    seen += read_pid(run, "worker.1")
    assert pids(seen)["web.1"] == after["web.1"] and pid_alive(after["web.1"])
    assert dyno(app_dir, "ps:restart").returncode == 0
    seen += read_until(run, "| pid=", count=2)
    assert set(pids(seen).values()).isdisjoint({after["web.1"], before["worker.1"]})

    unknown = dyno(app_dir, "ps:restart", "clock.1")
    assert (unknown.returncode, unknown.stderr) == (
        1,
        "dyno: Couldn't find dyno or process type clock.1: see `dyno ps`.\n",
    )


def test_naming_an_app_or_an_api_reaches_dynod_serve(
    app_dir: Path, run: subprocess.Popen[str]
) -> None:
    read_until(run, "| pid=", count=2)
    assert dyno(app_dir, "ps").returncode == 0
    elsewhere = dyno(app_dir, "ps", "-a", "shop")
    assert elsewhere.returncode == 1
    assert f"cannot reach dynod at {SERVE_URL}" in elsewhere.stderr
    env = dict(client_env(app_dir), DYNOD_API_URL="http://127.0.0.1:7")
    explicit = subprocess.run(
        [PY, "-m", "shell.cli", "ps", "-a", "shop"],
        cwd=app_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "cannot reach dynod at http://127.0.0.1:7" in explicit.stderr

    create = dyno(app_dir, "apps:create", "other")  # not a local run's to do: it says where
    assert create.returncode == 1
    assert "in a local run (dynod start): use GET, or pass -a APP or set DYNOD_API_URL" in (
        create.stderr
    )
    found = find_local_run(app_dir / "src")
    assert found is not None and found.app == "shop"
    with pytest.raises(ApiError, match="Give the command to run"):
        found.api().post("/apps/shop/dynos", {"command": " ", "attach": True})


def test_scaling_a_worker_up_and_down(app_dir: Path, run: subprocess.Popen[str]) -> None:
    seen = read_until(run, "| pid=", count=2)
    up = dyno(app_dir, "ps:scale", "worker=3")
    assert up.returncode == 0, up.stderr
    assert up.stdout == "Scaling dynos on shop... done, now running worker at 3:Standard-1X\n"
    seen += read_until(run, "| pid=", count=2)
    assert dynos(app_dir) == ["web.1", "worker.1", "worker.2", "worker.3"]
    started = pids(seen)
    assert set(started) == {"web.1", "worker.1", "worker.2", "worker.3"}
    assert any(re.search(r"worker\.3 +\| pid=\d+ from-env$", line) for line in seen)

    down = dyno(app_dir, "ps:scale", "worker=1")
    assert down.returncode == 0, down.stderr
    assert wait_until(lambda: dynos(app_dir) == ["web.1", "worker.1"], timeout=20)
    assert wait_until(
        lambda: not pid_alive(started["worker.3"]) and not pid_alive(started["worker.2"])
    )
    assert pid_alive(started["worker.1"]) and pid_alive(started["web.1"])

    shown = dyno(app_dir, "ps:scale")
    assert shown.stdout == "web=1:Standard-1X worker=1:Standard-1X\n"
    wrong = dyno(app_dir, "ps:scale", "clock=1")
    assert wrong.returncode == 1 and "the Procfile's types are web, worker" in wrong.stderr


def test_logs_tail_of_a_type_and_a_detached_one_off(
    app_dir: Path, run: subprocess.Popen[str]
) -> None:
    read_until(run, "| pid=", count=2)
    tail = subprocess.Popen(
        [PY, "-m", "shell.cli", "logs", "--tail", "-p", "web", "-n", "1"],
        cwd=app_dir,
        env=client_env(app_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = threading.Timer(20, tail.kill)  # a line that never comes ends the read
    deadline.start()
    try:
        assert tail.stdout is not None
        first = tail.stdout.readline()  # web.1's latest line: the tail is open
        old = re.search(r"app\[web\.1\]: pid=(\d+)$", first.rstrip("\n"))
        assert old, first
        assert dyno(app_dir, "ps:restart").returncode == 0  # web.1 and worker.1 print anew
        while True:
            line = tail.stdout.readline()
            assert "web.1]: " in line  # -p web: web.1's lines only, until its new pid
            new = re.search(r"app\[web\.1\]: pid=(\d+)$", line.rstrip("\n"))
            if new:
                assert new.group(1) != old.group(1)
                break
    finally:
        deadline.cancel()
        tail.send_signal(signal.SIGINT)  # Ctrl-C ends a tail
        assert tail.wait(timeout=10) == 0

    one_off = dyno(app_dir / "src", "run:detached", "echo one-off $FOO in $PWD")
    assert one_off.returncode == 0, one_off.stderr
    name = re.search(r"up, (run\.\d+)", one_off.stdout)
    assert name, one_off.stdout
    assert f"Run `dyno logs -d {name.group(1)}` to view the output." in one_off.stdout
    read_until(run, f"| one-off from-env in {app_dir}")
    logs = dyno(app_dir, "logs", "-d", name.group(1))
    assert f"app[{name.group(1)}]: one-off from-env in {app_dir}" in logs.stdout


def socket_path(root: Path) -> Path:
    return root / ".dynod" / "api.sock"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_the_socket_goes_when_the_run_stops(app_dir: Path, sig: int) -> None:
    process = spawn_dynod("start", "-p", str(free_port()), cwd=app_dir)
    read_until(process, "| pid=", count=2)
    info = os.lstat(socket_path(app_dir))
    assert oct(info.st_mode & 0o777) == oct(0o600)
    assert oct(os.lstat(app_dir / ".dynod").st_mode & 0o777) == oct(0o700)
    status, _, err = stop(process, sig)
    assert status == 0, err
    assert not (app_dir / ".dynod").exists()


def test_the_socket_goes_when_the_run_ends_by_itself_or_fails(app_dir: Path) -> None:
    (app_dir / "Procfile").write_text("worker: exit 3\n")
    process = spawn_dynod("start", "--exit-on-crash", cwd=app_dir)
    assert process.wait(timeout=30) == 3
    assert not (app_dir / ".dynod").exists()
    (app_dir / "Procfile").write_text("web: exec sleep 60\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        failed = spawn_dynod("start", "-p", port, cwd=app_dir)
        assert failed.wait(timeout=30) == 2  # the port is refused after the socket was claimed
    assert not (app_dir / ".dynod").exists()


def test_a_stale_socket_is_replaced_and_a_live_one_refused(app_dir: Path) -> None:
    first = spawn_dynod("start", "-p", str(free_port()), cwd=app_dir)
    read_until(first, "| pid=", count=2)
    second = spawn_dynod("start", "-p", str(free_port()), cwd=app_dir)
    assert second.wait(timeout=30) == 1
    assert second.stderr is not None
    assert second.stderr.read() == (
        f"dynod: another dynod start is running in {app_dir}: stop it first, or steer it from "
        "here with `dyno` (dyno ps, dyno ps:restart …)\n"
    )
    first.kill()  # kill -9: the socket stays behind
    first.wait(timeout=10)
    assert socket_path(app_dir).exists()
    gone = dyno(app_dir, "ps")
    assert gone.returncode == 1
    assert gone.stderr.startswith(f"dyno: cannot reach the dynod start in {app_dir}: start it")

    again = spawn_dynod("start", "-p", str(free_port()), cwd=app_dir)
    try:
        read_until(again, "| pid=", count=2)
        assert dynos(app_dir) == ["web.1", "worker.1"]
    finally:
        stop(again)
    assert not (app_dir / ".dynod").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a path another user owns")
def test_another_users_socket_path_is_refused_and_never_spoken_to(app_dir: Path) -> None:
    other = 65534  # nobody
    run_dir = app_dir / ".dynod"
    run_dir.mkdir(mode=0o700)
    os.chown(run_dir, other, other)
    refused = spawn_dynod("start", cwd=app_dir)
    assert refused.wait(timeout=30) == 1
    assert refused.stderr is not None
    assert refused.stderr.read() == (
        f"dynod: {run_dir} belongs to uid {other}, not to you (uid 0): remove it, or run "
        "dynod start as its owner\n"
    )
    os.chown(run_dir, 0, 0)
    with socket.socket(socket.AF_UNIX) as planted:
        planted.bind(str(socket_path(app_dir)))
        planted.listen()
        os.chown(socket_path(app_dir), other, other)
        taken = spawn_dynod("start", cwd=app_dir)
        assert taken.wait(timeout=30) == 1
        assert taken.stderr is not None
        assert f"{socket_path(app_dir)} belongs to uid {other}" in taken.stderr.read()
        # The client never speaks to a socket that is not the user's: no run is found here.
        assert dyno(app_dir, "ps").stderr.startswith("dyno: no app given")
        planted.setblocking(False)
        with pytest.raises(BlockingIOError):
            planted.accept()
    assert socket_path(app_dir).exists()  # not removed: it was not dynod's
