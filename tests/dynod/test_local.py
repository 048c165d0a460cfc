"""`dynod start`, `dynod run` and `dynod check` end to end, run as a user runs them."""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import trio
import trio.testing

from dynod.logs.printer import TerminalPrinter
from tests.helpers import PY, ROOT, dynod, pid_alive, spawn_dynod, wait_until

LINE = re.compile(r"^\d\d:\d\d:\d\d (\S+) +\| (.*)$")


def app(tmp_path: Path, procfile: str, env: str | None = None) -> Path:
    (tmp_path / "Procfile").write_text(procfile)
    if env is not None:
        (tmp_path / ".env").write_text(env)
    return tmp_path


def lines(output: str) -> list[tuple[str, str]]:
    """(name, text) for every prefixed line; fails on any line without the prefix."""
    parsed = []
    for raw in output.splitlines():
        match = LINE.match(raw)
        assert match, f"unprefixed output line: {raw!r}"
        parsed.append((match.group(1), match.group(2)))
    return parsed


def stop(
    process: subprocess.Popen[str], sig: int = signal.SIGINT, timeout: float = 20
) -> tuple[int, str, str]:
    process.send_signal(sig)
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def read_until(
    process: subprocess.Popen[str], needle: str, count: int = 1, timeout: float = 20
) -> list[str]:
    """Lines of stdout up to the count-th one containing needle (the test's condition)."""
    seen: list[str] = []
    assert process.stdout is not None
    found = 0
    deadline = time.monotonic() + timeout
    while found < count:
        assert time.monotonic() < deadline, f"no {needle!r} in {seen}"
        line = process.stdout.readline()
        assert line, f"dynod ended before {needle!r}: {seen}"
        seen.append(line.rstrip("\n"))
        found += needle in line
    return seen


def test_ports_prefixes_and_a_requested_stop(tmp_path: Path) -> None:
    app(
        tmp_path,
        "web: echo port=$PORT dyno=$DYNO; exec sleep 60\nworker: echo port=$PORT dyno=$DYNO; "
        "exec sleep 60\n",
    )
    process = spawn_dynod("start", "-m", "web=2,worker=1", cwd=tmp_path)
    seen = read_until(process, "| port=", count=3)
    status, out, err = stop(process)
    assert status == 0, err
    parsed = lines("\n".join(seen) + "\n" + out)
    ports = {text for name, text in parsed if text.startswith("port=")}
    assert ports == {"port=5000 dyno=web.1", "port=5001 dyno=web.2", "port=5100 dyno=worker.1"}
    assert ("heroku[web.1]", "Stopping all processes with SIGTERM") in parsed
    assert ("heroku[worker.1]", "State changed from up to down") in parsed
    assert "\x1b[" not in out  # no colour when not a terminal


def test_positional_type_and_base_port(tmp_path: Path) -> None:
    app(tmp_path, "web: echo port=$PORT; exec sleep 60\nworker: echo worker; exec sleep 60\n")
    process = spawn_dynod("start", "web", "-p", "7000", cwd=tmp_path)
    seen = read_until(process, "| port=")
    status, out, _ = stop(process, signal.SIGTERM)
    assert status == 0
    assert "port=7000" in "\n".join(seen)
    assert "worker.1" not in out + "\n".join(seen)


def test_env_file_and_inherited_environment(tmp_path: Path) -> None:
    app(
        tmp_path,
        'web: echo "$FROM_ENV $FROM_PARENT"; exec sleep 60\n',
        env="FROM_ENV='from .env'\n",
    )
    env = dict(os.environ, FROM_PARENT="parent")
    process = spawn_dynod("start", cwd=tmp_path, env=env)
    seen = read_until(process, "from .env")
    status, out, _ = stop(process, signal.SIGHUP)  # a closed terminal stops it like Ctrl-C
    assert status == 0
    assert "Stopping all processes with SIGTERM" in out
    assert seen[-1].endswith("| from .env parent")


def test_clean_env_drops_the_parent_environment(tmp_path: Path) -> None:
    app(
        tmp_path,
        'web: echo "parent=[$FROM_PARENT] env=[$FROM_ENV] path=$PATH"; exec sleep 60\n',
        env="FROM_ENV=yes\n",
    )
    env = dict(os.environ, FROM_PARENT="parent")
    process = spawn_dynod("start", "--clean-env", cwd=tmp_path, env=env)
    seen = read_until(process, "| parent=")
    stop(process)
    assert seen[-1].endswith("| parent=[] env=[yes] path=/usr/local/bin:/usr/bin:/bin")


def test_a_crashed_process_is_restarted(tmp_path: Path) -> None:
    app(tmp_path, "worker: echo attempt; exit 1\n")
    process = spawn_dynod("start", cwd=tmp_path)
    seen = read_until(process, "| attempt", count=2)
    stop(process)
    assert any(
        "heroku[worker.1]" in line and "State changed from crashed to starting" in line
        for line in seen
    )


def test_exit_on_crash_exits_with_the_crashed_status(tmp_path: Path) -> None:
    app(tmp_path, "web: exec sleep 60\nworker: sleep 0.5; exit 3\n")
    result = dynod("start", "--exit-on-crash", cwd=tmp_path)
    assert result.returncode == 3
    parsed = lines(result.stdout)
    assert ("heroku[worker.1]", "Process exited with status 3") in parsed
    assert ("heroku[web.1]", "Process exited with status 143") in parsed


def test_a_process_ignoring_sigterm_is_killed_after_t(tmp_path: Path) -> None:
    app(
        tmp_path,
        f'stubborn: {PY} -c "import signal, time; signal.signal(signal.SIGTERM, '
        "signal.SIG_IGN); print('ready', flush=True); time.sleep(60)\"\n",
    )
    process = spawn_dynod("start", "-t", "1", cwd=tmp_path)
    read_until(process, "| ready")
    status, out, _ = stop(process)
    assert status == 0
    assert "Error R12 (Exit timeout) -> Process failed to exit within 1 seconds of SIGTERM" in out
    assert "Process exited with status 137" in out


def test_second_ctrl_c_kills_at_once(tmp_path: Path) -> None:
    app(
        tmp_path,
        f'stubborn: {PY} -c "import signal, time; signal.signal(signal.SIGTERM, '
        "signal.SIG_IGN); print('ready', flush=True); time.sleep(60)\"\n",
    )
    process = spawn_dynod("start", "-t", "30", cwd=tmp_path)
    read_until(process, "| ready")
    process.send_signal(signal.SIGINT)
    read_until(process, "Stopping all processes with SIGTERM")
    status, out, _ = stop(process, signal.SIGINT, timeout=10)
    assert status == 0
    assert "Process exited with status 137" in out
    assert "R12" not in out  # killed on request, not after a 30 s timeout


def test_kill_9_of_dynod_leaves_no_dyno_alive(tmp_path: Path) -> None:
    app(tmp_path, "web: echo pid=$$; exec sleep 60\nworker: sleep 60 & echo pid=$!; wait\n")
    process = spawn_dynod("start", cwd=tmp_path)
    seen = read_until(process, "| pid=", count=2)
    pids = [int(line.rsplit("pid=", 1)[1]) for line in seen if "| pid=" in line]
    assert all(pid_alive(pid) for pid in pids)
    process.kill()
    process.wait(timeout=5)
    assert wait_until(lambda: not any(pid_alive(pid) for pid in pids), timeout=2.0)


# Processes that start a session of their own: a daemon that double-forks (its parent is gone
# at once) and a `setsid` child of a process that lives on. Each prints its pid first.
ESCAPING = (  # the daemon ignores SIGTERM too
    "web: (setsid sh -c 'trap \"\" TERM; echo escaped daemon=$$; exec sleep 600' &); exec "
    "sleep 600\n"
    "worker: setsid sh -c 'echo escaped child=$$; exec sleep 600' & exec sleep 600\n"
)


def escapee_pids(seen: list[str]) -> list[int]:
    pids = [int(line.rsplit("=", 1)[1]) for line in seen if "| escaped " in line]
    assert len(pids) == 2, seen
    return pids


def daemon_pid(seen: list[str]) -> int:
    return next(int(line.rsplit("=", 1)[1]) for line in seen if "| escaped daemon=" in line)


def adopted_and_swept(dynod_pid: int, daemon: int) -> None:
    """Wait until dynod adopted the daemon, then for its sweep (twice a second) to tie it to its
    dyno: that tie is dynod's inner state, so one second stands in for it."""
    assert wait_until(lambda: daemon in children_of(dynod_pid), timeout=5.0)
    time.sleep(1.0)


def test_processes_that_leave_the_dyno_group_stop_with_it(tmp_path: Path) -> None:
    app(tmp_path, ESCAPING)
    process = spawn_dynod("start", "-p", str(free_port()), cwd=tmp_path)
    seen = read_until(process, "| escaped ", count=2)
    pids = escapee_pids(seen)
    assert all(pid_alive(pid) for pid in pids)
    adopted_and_swept(process.pid, daemon_pid(seen))
    status, out, _ = stop(process)
    assert status == 0
    assert (
        "heroku[web.1]",
        "Killed 1 processes that had left the dyno's process group",
    ) in lines(out)
    assert wait_until(lambda: not any(pid_alive(pid) for pid in pids), timeout=3.0), out


def test_kill_9_of_dynod_ends_processes_that_left_the_group(tmp_path: Path) -> None:
    app(tmp_path, ESCAPING)
    process = spawn_dynod("start", "-p", str(free_port()), cwd=tmp_path)
    seen = read_until(process, "| escaped ", count=2)
    pids = escapee_pids(seen)
    adopted_and_swept(process.pid, daemon_pid(seen))
    process.kill()
    process.wait(timeout=5)
    assert wait_until(lambda: not any(pid_alive(pid) for pid in pids), timeout=2.0)


def test_orphans_of_a_dyno_are_reaped_and_its_crash_status_kept(tmp_path: Path) -> None:
    # Orphans come to dynod (its subreaper): the ones that end are reaped, never a dyno's own
    # exit, whose status must reach the log.
    app(tmp_path, "worker: for i in 1 2 3; do (sleep 0.1 &); done; echo spawned; sleep 2; exit 7\n")
    process = spawn_dynod("start", cwd=tmp_path)
    read_until(process, "| spawned")
    assert wait_until(
        lambda: not [pid for pid in children_of(process.pid) if proc_state(pid) == "Z"], timeout=3.0
    ), "dynod left its adopted orphans as zombies"
    seen = read_until(process, "Process exited with status 7")
    assert seen
    stop(process)


def children_of(pid: int) -> list[int]:
    found: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            found.extend(int(p) for p in f.read().split())
    return found


def proc_state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return "gone"
    return raw[raw.rfind(b")") + 2 :].split()[0].decode()


def test_release_runs_first_and_its_failure_stops_the_start(tmp_path: Path) -> None:
    app(tmp_path, "release: echo migrating; exit 5\nweb: echo web; exec sleep 60\n")
    result = dynod("start", cwd=tmp_path)
    assert result.returncode == 5
    parsed = lines(result.stdout)
    assert ("release.1", "migrating") in parsed
    assert not any(name.endswith("web.1]") or name == "web.1" for name, _ in parsed)


def test_release_success_then_formation(tmp_path: Path) -> None:
    app(tmp_path, "release: echo migrated\nweb: echo serving; exec sleep 60\n")
    process = spawn_dynod("start", cwd=tmp_path)
    seen = read_until(process, "| serving")
    stop(process)
    text = "\n".join(seen)
    assert text.index("migrated") < text.index("serving")


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    result = dynod("start", cwd=tmp_path)
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == "dynod: no Procfile at Procfile: create one or pass -f PATH/TO/Procfile"
    )
    app(tmp_path, "web: sleep 1\n")
    result = dynod("start", "-m", "nope=1", cwd=tmp_path)
    assert result.returncode == 2 and "nope" in result.stderr
    assert dynod("start", "--bogus", cwd=tmp_path).returncode == 2


def test_a_bad_procfile_line_is_named(tmp_path: Path) -> None:
    app(tmp_path, "web: sleep 1\n\nthis is not a process line\n")
    for command in ("start", "check"):
        result = dynod(command, cwd=tmp_path)
        assert result.returncode == 2
        assert "Procfile line 3" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_a_bad_env_line_is_named(tmp_path: Path) -> None:
    app(tmp_path, "web: sleep 1\n", env="OK=1\nNOT A LINE\n")
    for command in (("check",), ("start",), ("run", "true")):
        result = dynod(*command, cwd=tmp_path)
        assert result.returncode == 2
        assert ".env line 2" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_bad_inputs_are_one_line_usage_errors(tmp_path: Path) -> None:
    app(tmp_path, "web: sleep 60\nworker: sleep 60\nrelease: true\n")
    (tmp_path / "bad.env").write_text("A='unterminated\n")
    (tmp_path / "only-release").write_text("release: true\n")
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    cases: list[tuple[tuple[str, ...], dict[str, str], str]] = [
        (("start", "-e", "missing.env"), {}, "no env file at missing.env"),
        (("start", "-e", "bad.env"), {}, "bad.env line 1: unterminated single quote"),
        (("check", "-e", "missing.env"), {}, "no env file at missing.env"),
        (("start", "-t", "nan"), {}, "-t nan is not a grace period"),
        (("start", "-t", "inf"), {}, "-t inf is not a grace period"),
        (("start", "-t", "-1"), {}, "-t -1 is not a grace period"),
        (("start",), {"PORT": "abc"}, "$PORT is 'abc', not a port"),
        (("start", "-p", "65500"), {}, "base port 65500 gives ports up to 65600"),
        (
            ("start", "wrker"),
            {},
            "unknown process type 'wrker': the Procfile's types are web, worker",
        ),
        (("start", "-m", "web=x"), {}, "bad entry 'web=x'"),
        (("start", "-f", "only-release"), {}, "the Procfile has only a release command"),
        (
            ("start", "web", "-p", str(free_port()), "--router", str(busy.getsockname()[1])),
            {},
            "cannot listen there",
        ),
        (
            ("start", "web", "-p", str(busy.getsockname()[1])),
            {},
            f"port {busy.getsockname()[1]} for web.1 is already in use by another program",
        ),
    ]
    with busy:
        for args, env, message in cases:
            result = dynod(*args, cwd=tmp_path, env={**os.environ, **env})
            assert result.returncode == 2, (args, result.stderr)
            assert result.stderr.startswith("dynod: ") and message in result.stderr, (
                args,
                result.stderr,
            )
            assert len(result.stderr.strip().splitlines()) == 1, (args, result.stderr)
            assert "release.1" not in result.stdout  # refused before anything ran


def test_check_prints_the_types_and_formation(tmp_path: Path) -> None:
    app(
        tmp_path,
        "web: python app.py\nworker: python worker.py\nrelease: ./migrate\n",
        env="A=1\nB=2\n",
    )
    result = dynod("check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "web" in result.stdout and "worker" in result.stdout
    assert "formation: web=1,worker=1" in result.stdout
    assert "2 variables" in result.stdout


def test_run_passes_status_env_and_procfile_types(tmp_path: Path) -> None:
    app(tmp_path, 'greet: echo "hello $WHO"\n', env="WHO=world\n")
    assert dynod("run", "exit 7", cwd=tmp_path).returncode == 7
    result = dynod("run", "greet", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (0, "hello world\n")
    result = dynod("run", "echo", "$WHO", cwd=tmp_path)
    assert result.stdout == "world\n"
    assert dynod("run", cwd=tmp_path).returncode == 2


def test_the_readme_sample_app_starts(tmp_path: Path) -> None:
    process = spawn_dynod("start", "-f", str(ROOT / "fixtures/sample/Procfile"), "-p", "6200")
    seen = read_until(process, "State changed from starting to up", count=3)  # release, web, worker
    seen += read_until(process, "| tick 1") if "| tick 1" not in "\n".join(seen) else []
    status, out, _ = stop(process)
    text = "\n".join(seen) + out
    assert status == 0
    assert "release phase: nothing to migrate" in text
    assert "worker: got SIGTERM, finishing" in out


def free_ports(count: int) -> int:
    """A base port with `count` consecutive free ports after it."""
    import random
    import socket

    for _ in range(100):
        base = random.randint(20000, 29000)
        try:
            for port in range(base, base + count):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise AssertionError("no free ports")


def test_router_round_robins_across_web_dynos(tmp_path: Path) -> None:
    import urllib.request

    base, router = free_ports(3), free_ports(1)
    process = spawn_dynod(
        "start",
        "-f",
        str(ROOT / "fixtures/sample/Procfile"),
        "web",
        "-m",
        "web=3",
        "-p",
        str(base),
        "--router",
        str(router),
    )
    seen: list[str] = []
    while sum("heroku[web." in line and "starting to up" in line for line in seen) < 3:
        seen += read_until(process, "State changed from starting to up")
    answers = [
        urllib.request.urlopen(f"http://127.0.0.1:{router}/", timeout=10).read().decode().split()[2]
        for _ in range(6)
    ]
    status, out, _ = stop(process)
    assert status == 0
    assert sorted(answers[:3]) == ["web.1", "web.2", "web.3"]
    assert answers[3:] == answers[:3]
    assert "heroku[router]" in out and "at=info method=GET" in out


class _Writes(io.BytesIO):
    """A terminal stand-in that remembers each write call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[bytes] = []

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.calls.append(bytes(data))
        return super().write(data)


def test_the_printer_writes_a_burst_of_lines_once_and_in_order() -> None:
    out = _Writes()
    printer = TerminalPrinter(out, colour=False, types=["web"], names=["web.1", "web.2"])

    async def main() -> None:
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                await nursery.start(printer.run)
                for i in range(50):  # many dynos speaking in one pass of the event loop
                    printer.publish("app", f"web.{i % 2 + 1}", [f"line {i}"], 0.0)
                assert out.calls == []
                await trio.testing.wait_all_tasks_blocked()
                assert len(out.calls) == 1
                printer.publish("app", "web.1", ["late"], 0.0)
                nursery.cancel_scope.cancel()
        printer.publish("app", "web.1", ["after"], 0.0)  # no writer task: written at once

    trio.run(main)
    texts = [line.split("| ", 1)[1] for line in out.getvalue().decode().splitlines()]
    assert texts == [f"line {i}" for i in range(50)] + ["late", "after"]
    assert len(out.calls) == 3


def on_a_terminal(tmp_path: Path, *args: str) -> str:
    """Everything `dynod start ARGS` writes when its stdout is a terminal (it must end by
    itself)."""
    import pty

    master, slave = pty.openpty()
    process = subprocess.Popen(
        [PY, "-m", "dynod.cli", *args],
        cwd=tmp_path,
        stdout=slave,
        stderr=subprocess.PIPE,
        start_new_session=True,
        env={k: v for k, v in os.environ.items() if k != "NO_COLOR"},
    )
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: every writer of the terminal is gone
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert process.wait(timeout=10) == 4
    return b"".join(chunks).decode()


def test_colours_per_type_on_a_terminal_and_none_with_no_color(tmp_path: Path) -> None:
    app(tmp_path, "web: exec sleep 60\nworker: sleep 0.2; exit 4\n")
    out = on_a_terminal(tmp_path, "start", "--exit-on-crash")
    web, worker = (
        re.search(rf"\x1b\[(\d+)m[\d:]+ heroku\[{name}\.1\] +\| \x1b\[0mStarting process", out)
        for name in ("web", "worker")
    )
    assert web and worker, out
    assert web.group(1) != worker.group(1)
    assert "\x1b[" not in on_a_terminal(tmp_path, "start", "--exit-on-crash", "--no-color")


def test_tty_gives_each_process_a_terminal(tmp_path: Path) -> None:
    app(tmp_path, "worker: [ -t 1 ] && [ -t 0 ] && echo on a tty; exit 4\n")
    result = dynod("start", "--tty", "--exit-on-crash", cwd=tmp_path)
    assert result.returncode == 4
    assert ("worker.1", "on a tty") in lines(result.stdout)
    result = dynod("start", "--exit-on-crash", cwd=tmp_path)
    assert ("worker.1", "on a tty") not in lines(result.stdout)


def test_chatty_processes_arrive_complete_untorn_and_unmerged(tmp_path: Path) -> None:
    """50,000 lines from 4 concurrent processes through `dynod start`'s terminal output."""
    writer = (
        f"{PY} -c \"import os; n = os.environ['DYNO']; "
        "data = ''.join(f'{n}-{i:05d}-' + 'p' * (i % 97) + '\\n' for i in range(12500)).encode(); "
        '[os.write(1, data[k:k + 4093]) for k in range(0, len(data), 4093)]"; echo done; '
        "exec sleep 60"
    )
    app(tmp_path, f"chatty: {writer}\n")
    process = spawn_dynod("start", "-m", "chatty=4", cwd=tmp_path)
    seen = read_until(process, "| done", count=4, timeout=60)
    status, out, _ = stop(process)
    assert status == 0
    parsed = lines("\n".join(seen) + "\n" + out)
    for n in range(1, 5):
        got = [text for name, text in parsed if name == f"chatty.{n}" and text != "done"]
        assert got == [f"chatty.{n}-{i:05d}-" + "p" * (i % 97) for i in range(12500)]


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        if entry.isdigit() and int(stat[stat.rfind(b")") + 2 :].split()[1]) == pid:
            found.append(int(entry))
    return found


def test_ctrl_c_while_starting_up_is_a_quiet_requested_stop(tmp_path: Path) -> None:
    """Ctrl-C once dynod has begun (its reaper runs) but before its signal watcher listens
    (while trio and the dyno manager are imported): no traceback, status 0. (Rarely the signal
    lands where the interpreter dies of it silently, before any dyno runs: that is fine too.)"""
    app(tmp_path, "web: echo ready; exec sleep 60\n")
    for delay in (0.0, 0.05, 0.1):
        process = spawn_dynod("start", "-p", "6400", cwd=tmp_path)
        pid = process.pid
        assert wait_until(lambda: bool(children(pid)), timeout=20, every=0.002)  # noqa: B023
        time.sleep(delay)
        status, _, err = stop(process)
        assert "Traceback" not in err, (delay, err)
        assert status in (0, -signal.SIGINT), (delay, status, err)


def test_a_closed_terminal_and_its_sighup_stop_the_run_quietly(tmp_path: Path) -> None:
    """Writing to a terminal that went away fails with EIO: that ends the run like SIGHUP does,
    with no traceback and no process left."""
    import pty

    app(tmp_path, "web: echo pid=$$; exec sleep 60\n")
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [PY, "-m", "dynod.cli", "start", "-p", "6500"],
        cwd=tmp_path,
        stdout=slave,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 20
    while not (found := re.search(rb"pid=(\d+)\r?\n", seen)):
        assert time.monotonic() < deadline, seen
        seen += os.read(master, 65536)
    pid = int(found.group(1))
    os.close(master)  # the terminal goes away ...
    process.send_signal(signal.SIGHUP)  # ... and says so
    _, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    assert b"Traceback" not in err and b"Error" not in err, err
    assert wait_until(lambda: not pid_alive(pid), 3)
