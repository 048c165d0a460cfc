"""`dyno run` against a running `dynod start` (README, "Steering a running `dynod start`"): a
real run, and the real `dyno` client on a pseudo-terminal of the test's own or with stdin piped;
the one-off is claimed over the run's private socket, listed while it runs, and gone after."""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path

from dynod.api.unix import RUN_DIR
from shell.local import find_local_run
from tests.dynod.test_local import read_until, stop
from tests.dynod.test_local_steer import app_dir, client_env, dyno, dynos, run
from tests.helpers import PY, running, wait_until
from tests.shell.terminal import Terminal as Screen
from tests.terminal import Terminal

__all__ = ["app_dir", "run"]  # the fixtures


def one_offs(cwd: Path) -> list[str]:
    return [name for name in dynos(cwd) if name.startswith("run.")]


def test_the_rendezvous_loads_only_at_the_first_attach() -> None:
    probe = "import sys, dynod.local, dynod.api.local; print(sorted(set(sys.modules) & {%r, %r}))"
    shown = subprocess.run(
        [PY, "-c", probe % ("dynod.proc.rendezvous", "dynod.api.local_attach")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (shown.returncode, shown.stdout) == (0, "[]\n"), shown.stderr


def test_run_bash_on_a_terminal_resizes_and_returns_the_status(
    app_dir: Path, run: subprocess.Popen[str]
) -> None:
    read_until(run, "| pid=", count=2)
    term = Terminal([PY, "-m", "shell.cli", "run", "bash"], app_dir / "src", client_env(app_dir))
    try:
        term.type(b"echo ready-$FOO-$DYNO-$(pwd)\r")
        term.expect(rb"ready-from-env-run\.\d+-" + re.escape(str(app_dir)).encode() + rb"\r\n")
        assert len(one_offs(app_dir)) == 1  # listed by `ps` while it runs
        term.type(b"stty size\r")
        term.expect(rb"30 100\r\n")
        term.resize(41, 123)
        term.until_seen(b"stty size\r", rb"41 123\r\n")
        term.type(b"sleep 38\r")
        assert wait_until(lambda: bool(running("sleep\x0038\x00")), 10)
        term.type(b"\x03")  # Ctrl-C: SIGINT in the dyno, through its terminal
        term.until_seen(b"echo after=$?\r", rb"after=130")
        term.type(b"exit 3\r")
        assert term.wait() == 3
    finally:
        term.process.kill()  # a no-op once it has ended
    assert wait_until(lambda: one_offs(app_dir) == [], 10)


def test_piped_stdin_and_the_exit_status(app_dir: Path, run: subprocess.Popen[str]) -> None:
    read_until(run, "| pid=", count=2)
    done = subprocess.run(
        [PY, "-m", "shell.cli", "run", "bash"],
        cwd=app_dir,
        env=client_env(app_dir),
        input="echo hi-$DYNO\necho $FOO >&2\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"hi-run\.\d+\n", done.stdout) and done.stderr == "from-env\n"
    assert dyno(app_dir, "run", "exit 3").returncode == 3
    assert dyno(app_dir, "run", "-e", "A=1", "echo $A$FOO").stdout == "1from-env\n"
    assert wait_until(lambda: one_offs(app_dir) == [], 10)


def test_an_attached_one_off_stops_with_the_run(app_dir: Path, run: subprocess.Popen[str]) -> None:
    read_until(run, "| pid=", count=2)
    client = subprocess.Popen(
        [PY, "-m", "shell.cli", "run", "sleep 71"],
        cwd=app_dir,
        env=client_env(app_dir),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_until(lambda: bool(running("sleep\x0071\x00")), 15)
        assert len(one_offs(app_dir)) == 1
        code, _, _ = stop(run, signal.SIGTERM)
        assert code == 0
        assert client.wait(timeout=20) != 0  # the dyno was stopped: SIGTERM's status
    finally:
        client.kill()
        client.communicate()
    assert not running("sleep\x0071\x00")
    assert find_local_run(app_dir) is None and not (app_dir / RUN_DIR).exists()


def test_run_bash_from_the_interactive_shell_returns_to_the_prompt(
    app_dir: Path, run: subprocess.Popen[str]
) -> None:
    read_until(run, "| pid=", count=2)
    home = app_dir.parent / "home"
    home.mkdir()
    env = {**client_env(app_dir), "HOME": str(home), "TERM": "xterm-256color"}
    env.pop("XDG_DATA_HOME", None)
    shell = Screen([PY, "-m", "shell.cli"], env=env, cwd=app_dir)
    try:
        shell.ready(r"^dyno shop>$")
        shell.send("run bash\r")
        shell.ready(r"/shop[#$]$")  # bash's prompt
        shell.send("echo inside-$((6*7))-$FOO\r")
        shell.expect(r"\ninside-42-from-env\n")
        assert len(one_offs(app_dir)) == 1
        shell.send("exit 4\r")
        shell.ready(r"^dyno shop>$")  # the terminal is the shell's again
        assert wait_until(lambda: one_offs(app_dir) == [], 10)
        shell.send("ps\r")
        shell.expect(r"web\.1: ")
        shell.ready(r"^dyno shop>$")
        shell.send("\x04")
        assert shell.wait() == 0
    finally:
        shell.close()
