"""`dynod start`, `dynod run` and `dynod check` end to end, run as a user runs them."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import trio
import trio.testing

from dynod.printer import TerminalPrinter
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


def stop(process: subprocess.Popen[str], sig: int = signal.SIGINT, timeout: float = 20) -> tuple[int, str, str]:
    process.send_signal(sig)
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def read_until(process: subprocess.Popen[str], needle: str, count: int = 1, timeout: float = 20) -> list[str]:
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
    app(tmp_path, "web: echo port=$PORT dyno=$DYNO; exec sleep 60\nworker: echo port=$PORT dyno=$DYNO; exec sleep 60\n")
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
    app(tmp_path, "web: echo \"$FROM_ENV $FROM_PARENT\"; exec sleep 60\n", env="FROM_ENV='from .env'\n")
    env = dict(os.environ, FROM_PARENT="parent")
    process = spawn_dynod("start", cwd=tmp_path, env=env)
    seen = read_until(process, "from .env")
    stop(process)
    assert seen[-1].endswith("| from .env parent")


def test_clean_env_drops_the_parent_environment(tmp_path: Path) -> None:
    app(tmp_path, "web: echo \"parent=[$FROM_PARENT] env=[$FROM_ENV] path=$PATH\"; exec sleep 60\n", env="FROM_ENV=yes\n")
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
    assert any("heroku[worker.1]" in line and "State changed from crashed to starting" in line for line in seen)


def test_exit_on_crash_exits_with_the_crashed_status(tmp_path: Path) -> None:
    app(tmp_path, "web: exec sleep 60\nworker: sleep 0.5; exit 3\n")
    result = dynod("start", "--exit-on-crash", cwd=tmp_path)
    assert result.returncode == 3
    parsed = lines(result.stdout)
    assert ("heroku[worker.1]", "Process exited with status 3") in parsed
    assert ("heroku[web.1]", "Process exited with status 143") in parsed


def test_a_process_ignoring_sigterm_is_killed_after_t(tmp_path: Path) -> None:
    app(tmp_path, f"stubborn: {PY} -c \"import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)\"\n")
    process = spawn_dynod("start", "-t", "1", cwd=tmp_path)
    read_until(process, "| ready")
    status, out, _ = stop(process)
    assert status == 0
    assert "Error R12 (Exit timeout) -> Process failed to exit within 1 seconds of SIGTERM" in out
    assert "Process exited with status 137" in out


def test_second_ctrl_c_kills_at_once(tmp_path: Path) -> None:
    app(tmp_path, f"stubborn: {PY} -c \"import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)\"\n")
    process = spawn_dynod("start", "-t", "30", cwd=tmp_path)
    read_until(process, "| ready")
    process.send_signal(signal.SIGINT)
    read_until(process, "Stopping all processes with SIGTERM")
    status, out, _ = stop(process, signal.SIGINT, timeout=10)
    assert status == 0
    assert "Process exited with status 137" in out


def test_kill_9_of_dynod_leaves_no_dyno_alive(tmp_path: Path) -> None:
    app(tmp_path, "web: echo pid=$$; exec sleep 60\nworker: sleep 60 & echo pid=$!; wait\n")
    process = spawn_dynod("start", cwd=tmp_path)
    seen = read_until(process, "| pid=", count=2)
    pids = [int(line.rsplit("pid=", 1)[1]) for line in seen if "| pid=" in line]
    assert all(pid_alive(pid) for pid in pids)
    process.kill()
    process.wait(timeout=5)
    assert wait_until(lambda: not any(pid_alive(pid) for pid in pids), timeout=2.0)


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
    assert result.stderr.strip() == f"dynod: no Procfile at Procfile: create one or pass -f PATH/TO/Procfile"
    app(tmp_path, "web: sleep 1\n")
    result = dynod("start", "-m", "nope=1", cwd=tmp_path)
    assert result.returncode == 2 and "nope" in result.stderr
    assert dynod("start", "--bogus", cwd=tmp_path).returncode == 2


def test_a_bad_procfile_line_is_named(tmp_path: Path) -> None:
    app(tmp_path, "web: sleep 1\n\nthis is not a process line\n")
    for command in ("start", "check"):
        result = dynod(command, cwd=tmp_path)
        assert result.returncode == 1
        assert "Procfile line 3" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_a_bad_env_line_is_named(tmp_path: Path) -> None:
    app(tmp_path, "web: sleep 1\n", env="OK=1\nNOT A LINE\n")
    result = dynod("check", cwd=tmp_path)
    assert result.returncode == 1
    assert ".env line 2" in result.stderr


def test_check_prints_the_types_and_formation(tmp_path: Path) -> None:
    app(tmp_path, "web: python app.py\nworker: python worker.py\nrelease: ./migrate\n", env="A=1\nB=2\n")
    result = dynod("check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "web" in result.stdout and "worker" in result.stdout
    assert "formation: web=1,worker=1" in result.stdout
    assert "2 variables" in result.stdout


def test_run_passes_status_env_and_procfile_types(tmp_path: Path) -> None:
    app(tmp_path, "greet: echo \"hello $WHO\"\n", env="WHO=world\n")
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
    process = spawn_dynod("start", "-f", str(ROOT / "fixtures/sample/Procfile"), "web", "-m", "web=3",
                          "-p", str(base), "--router", str(router))
    seen: list[str] = []
    while sum("heroku[web." in line and "starting to up" in line for line in seen) < 3:
        seen += read_until(process, "State changed from starting to up")
    answers = [urllib.request.urlopen(f"http://127.0.0.1:{router}/", timeout=10).read().decode().split()[2]
               for _ in range(6)]
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
