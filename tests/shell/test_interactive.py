"""The interactive shell (`dyno` alone) on a pseudo-terminal, against a real `dynod serve`: what a
person types and what the screen shows (README.md, "The interactive shell")."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ROOT, stop_serve, wait_until
from tests.shell.terminal import Terminal

PY = sys.executable
APP = "pty-app"
UP = "\x1b[A"
CTRL_C, CTRL_D, TAB = "\x03", "\x04", "\t"


def client_env(data: Path, home: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DYNOD_API_URL", "DYNOD_API_TOKEN", "DYNO_APP", "XDG_DATA_HOME")
    }
    return {**env, "DYNOD_DATA": str(data), "HOME": str(home), "TERM": "xterm-256color"}


def serve(data: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    """`dynod serve` with its API on `port` (the same port again after a restart)."""
    (data / "api-url").unlink(missing_ok=True)
    with log.open("ab") as out:
        process = subprocess.Popen(
            [PY, "-m", "dynod.cli", "serve", "--data", str(data)]
            + ["--api", f"127.0.0.1:{port}", "--router", "127.0.0.1:0"],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    up = wait_until(lambda: (data / "api-url").exists() or process.poll() is not None, 60)
    assert up and process.poll() is None, log.read_text()
    return process


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Platform:
    def __init__(self, data: Path, home: Path) -> None:
        self.data = data
        self.home = home
        self.env = client_env(data, home)

    def dyno(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PY, "-m", "shell.cli", *args],
            cwd=self.home,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def shell(self) -> Terminal:
        return Terminal([PY, "-m", "shell.cli"], env=self.env, cwd=self.home)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    data = tmp_path_factory.mktemp("data")
    home = tmp_path_factory.mktemp("home")
    server = serve(data, 0, home / "serve.log")
    try:
        here = Platform(data, home)
        assert here.dyno("apps:create", APP).returncode == 0
        done = here.dyno("deploy", str(ROOT / "fixtures" / "sample"), "-a", APP, timeout=300)
        assert done.returncode == 0, done.stderr + done.stdout
        assert wait_until(lambda: "web.1: up" in here.dyno("ps", "-a", APP).stdout, 60, 0.2)
        yield here
    finally:
        stop_serve(server)


@pytest.fixture
def shell(platform: Platform) -> Iterator[Terminal]:
    # No history from earlier tests: its grey suggestions would show on the typed line.
    (platform.data / "shell-history").unlink(missing_ok=True)
    terminal = platform.shell()
    try:
        terminal.ready(r"^dyno>$")
        yield terminal
    finally:
        terminal.close()


def prompt_row(terminal: Terminal, app: str = APP) -> int:
    """The row of the prompt, ready for keys (nothing typed yet)."""
    return terminal.ready(rf"^dyno {app}>$")


def test_completes_an_app_and_a_dyno_and_shows_the_formation(shell: Terminal) -> None:
    shell.send("use pty-")
    shell.ready(r"^dyno> use pty-$")
    shell.send(TAB)
    shell.ready(r"^dyno> use pty-app$")
    shell.send("\r")
    prompt_row(shell)
    toolbar = shell.shows(rf"^ {APP}: web 1/1 up · v\d+$")
    assert toolbar == len(shell.lines()) - 1, "the toolbar is the bottom line"

    shell.send("ps:restart web.")
    shell.ready(r"^dyno pty-app> ps:restart web\.$")
    shell.send(TAB)
    shell.ready(r"^dyno pty-app> ps:restart web\.1$")
    shell.send("\r")
    shell.expect(rf"Restarting web\.1 dyno on {APP}\.\.\. done")
    prompt_row(shell)
    shell.send(CTRL_D)
    assert shell.wait() == 0


def test_errors_keep_the_prompt_and_exit_leaves_with_0(shell: Terminal) -> None:
    for line, error in [
        ("frobnicate", "dyno: unknown command `frobnicate`: run `dyno help` for the list"),
        ("ps", "dyno: no app given: pass -a APP, set DYNO_APP, or add the git remote"),
        ("config -a no-such-app", "dyno: "),
        ("use no-such-app", "dyno: "),
        ("config:set 'unclosed", "dyno: cannot read that line: No closing quotation"),
        ("exit now", "dyno: `exit` takes no arguments"),
    ]:
        shell.send(line + "\r")
        found = shell.expect(r"\n(dyno: [^\n]*)\n")
        assert found.group(1).startswith(error), line
        shell.ready(r"^dyno>$")
    shell.send("help use\r")
    shell.expect(r"Usage: use APP")
    shell.ready(r"^dyno>$")
    shell.send("help\r")
    shell.expect(r"use +pick the app")
    shell.ready(r"^dyno>$")
    shell.send("exit\r")
    assert shell.wait() == 0


def test_a_tailed_line_appears_above_the_prompt(platform: Platform, shell: Terminal) -> None:
    shell.send(f"use {APP}\r")
    prompt_row(shell)
    shell.send("logs -t -n 1\r")
    shell.expect("Following the logs above the prompt")
    prompt_row(shell)
    shell.send("ps:scale w")  # half typed when the line arrives: it stays, below the line
    shell.ready(r"^dyno pty-app> ps:scale w$")
    assert platform.dyno("run:detached", "echo", "tail-marker-1", "-a", APP).returncode == 0
    line = shell.shows(r"app\[run\.\d+\]: tail-marker-1$")
    assert line < shell.ready(r"^dyno pty-app> ps:scale w$"), "the log line is above the prompt"
    shell.send(CTRL_C)
    shell.expect("Stopped following the logs.")
    prompt_row(shell)
    assert platform.dyno("run:detached", "echo", "tail-marker-2", "-a", APP).returncode == 0
    assert wait_until(lambda: "tail-marker-2" in platform.dyno("logs", "-a", APP).stdout, 30, 0.2)
    shell.send("help use\r")
    shell.expect("Usage: use APP")
    prompt_row(shell)
    assert "tail-marker-2" not in shell.text(), "the tail ended with Ctrl-C"
    shell.send(CTRL_D)
    assert shell.wait() == 0


def test_log_lines_wait_while_a_command_has_the_terminal(shell: Terminal) -> None:
    """What the background prints is held while a command runs (as `run bash` needs), and
    shown above the prompt once it is back."""
    shell.send(f"use {APP}\r")
    prompt_row(shell)
    shell.send("logs -t -n 0\r")
    shell.expect("Following the logs above the prompt")
    prompt_row(shell)
    shell.send(f"deploy {ROOT / 'fixtures' / 'sample'}\r")
    shell.expect(r"Uploading sample")
    during = shell.expect(rf"Released v\d+ of {APP}", timeout=120)
    dated = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[^\n]* (app|heroku)\[")
    assert not dated.search(shell.text(), 0, during.end()), "no log line during the deploy"
    shell.expect(r"heroku\[web\.1\]: State changed from starting to up", timeout=60)
    prompt_row(shell)
    shell.send(CTRL_C)
    shell.expect("Stopped following the logs.")
    prompt_row(shell)
    shell.send(CTRL_D)
    assert shell.wait() == 0


def test_history_survives_a_restart(platform: Platform) -> None:
    (platform.data / "shell-history").unlink(missing_ok=True)
    first = platform.shell()
    try:
        first.ready(r"^dyno>$")
        first.send("help exit\r")
        first.expect("Usage: exit")
        first.ready(r"^dyno>$")
        first.send(CTRL_D)
        assert first.wait() == 0
    finally:
        first.close()
    kept = platform.data / "shell-history"
    assert kept.stat().st_mode & 0o777 == 0o600, "typed config vars stay private"
    second = platform.shell()
    try:
        second.ready(r"^dyno>$")
        second.send(UP)
        second.ready(r"^dyno> help exit$")
        second.send(CTRL_C)  # clears the line (Ctrl-D leaves only from an empty one)
        second.ready(r"^dyno>$")
        second.send(CTRL_D)
        assert second.wait() == 0
    finally:
        second.close()


def test_dynod_going_away_and_coming_back(tmp_path: Path) -> None:
    data, home = tmp_path / "data", tmp_path / "home"
    data.mkdir(mode=0o700)
    home.mkdir()
    port = free_port()
    server = serve(data, port, tmp_path / "serve.log")
    here = Platform(data, home)
    terminal = here.shell()
    try:
        terminal.ready(r"^dyno>$")
        terminal.send("apps\r")
        terminal.expect("You have no apps")
        terminal.ready(r"^dyno>$")
        stop_serve(server)
        terminal.expect(r"dyno: dynod is not answering at http://127\.0\.0\.1:\d+")
        terminal.shows(r"^ dynod is not answering at ")  # the toolbar says so too
        terminal.send("apps\r")
        terminal.expect(r"\ndyno: cannot reach dynod at [^\n]*\n")
        terminal.ready(r"^dyno>$")
        server = serve(data, port, tmp_path / "serve.log")
        terminal.expect(r"dyno: dynod is back at http://127\.0\.0\.1:\d+")
        terminal.send("apps:create back-again\r")
        terminal.expect(r"Creating back-again\.\.\. done")
        terminal.ready(r"^dyno>$")
        assert terminal.text().count("dyno: dynod is not answering") == 1
        terminal.send(CTRL_D)
        assert terminal.wait() == 0
    finally:
        terminal.close()
        stop_serve(server)


def test_lines_on_standard_input_run_in_order(platform: Platform) -> None:
    """Not a terminal (a script, a pipe): each line runs as typed, `use` carries over."""
    done = subprocess.run(
        [PY, "-m", "shell.cli"],
        input=f"use {APP}\nconfig:get NOPE\nps\n",
        cwd=platform.home,
        env=platform.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert "=== web (Standard-1X): python3 web.py (1)" in done.stdout
    failed = subprocess.run(
        [PY, "-m", "shell.cli"],
        input="frobnicate\n",
        cwd=platform.home,
        env=platform.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert failed.returncode == 2 and failed.stderr.count("\n") == 1


def test_a_dynod_that_never_answers_hangs_nothing(tmp_path: Path) -> None:
    """Connections accepted and read, never answered: the background gives up on its own (and
    says so once), and Ctrl-C takes a command waiting on it back to the prompt."""
    asked = threading.Event()
    held: list[socket.socket] = []

    def never_answer(listener: socket.socket) -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:  # closed: the test is over
                return
            held.append(connection)
            connection.settimeout(5)
            try:
                if b"/apps/hung-app/config-vars" in connection.recv(65536):
                    asked.set()  # the command itself (the background never asks this)
            except OSError:
                pass

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        threading.Thread(target=never_answer, args=(silent,), daemon=True).start()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        env = {**client_env(tmp_path, tmp_path), "DYNOD_API_URL": url}
        terminal = Terminal([PY, "-m", "shell.cli"], env=env, cwd=tmp_path)
        try:
            terminal.ready(r"^dyno>$")
            terminal.expect(rf"dyno: dynod is not answering at {url}")
            terminal.send("config -a hung-app\r")
            terminal.until(asked.is_set, "the command's request")
            terminal.send(CTRL_C)
            terminal.ready(r"^dyno>$")
            terminal.send("help use\r")
            terminal.expect("Usage: use APP")
            terminal.ready(r"^dyno>$")
            terminal.send(CTRL_D)
            assert terminal.wait() == 0
        finally:
            terminal.close()
            silent.shutdown(socket.SHUT_RDWR)
            for connection in held:
                connection.close()
