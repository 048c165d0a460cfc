"""`dyno run` end to end through real terminals (README, "Attached one-offs"): a real `dynod
serve`, and `dyno` started on a pseudo-terminal of the test's own, as a person types into it;
piped stdin as in CI; the dyno and its directory gone afterwards. The framed messages' kinds are
the same on both sides of the rendezvous."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dynod.proc import attached
from shell import attach
from tests.helpers import running, start_serve, stop_serve, wait_until
from tests.terminal import Terminal

PY = sys.executable
APP = "attach-e2e"


class Served:
    def __init__(self, data: Path, cwd: Path) -> None:
        self.data = data
        self.cwd = cwd
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("DYNOD_", "DYNO_"))}
        self.env.update(DYNOD_DATA=str(data), DYNO_APP=APP, TERM="xterm")

    def dyno(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PY, "-m", "shell.cli", *args],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
        )

    def one_offs(self) -> list[str]:
        done = self.dyno("ps", "--json")
        assert done.returncode == 0, done.stderr
        return [d["name"] for d in json.loads(done.stdout) if d["name"].startswith("run.")]

    def dyno_dirs(self) -> list[str]:
        """The one-offs' directories in this dynod's scratch directory."""
        scratch = Path((self.data / "scratch.path").read_text().strip())
        return [p.name for p in scratch.iterdir() if p.name.startswith("run.")]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data = tmp_path_factory.mktemp("data")
    app = tmp_path_factory.mktemp("app")
    (app / "Procfile").write_text("hello: echo hello from the type; exit 6\n")
    process = start_serve(data, tmp_path_factory.mktemp("log") / "serve.log", dict(os.environ))
    try:
        here = Served(data, app)
        for args in (("apps:create", APP), ("deploy", str(app))):
            done = here.dyno(*args)
            assert done.returncode == 0, done.stderr + done.stdout
        yield here
    finally:
        stop_serve(process)


def test_the_message_kinds_are_the_same_on_both_sides() -> None:
    assert attach.HEADER.format == attached.HEADER.format
    assert (attach.INPUT, attach.WINDOW, attach.OUTPUT, attach.STDERR, attach.EXIT) == (
        attached.INPUT,
        attached.WINDOW,
        attached.OUTPUT,
        attached.STDERR,
        attached.EXIT,
    )


def test_run_on_a_terminal_resizes_interrupts_and_returns_the_status(served: Served) -> None:
    argv = [PY, "-m", "shell.cli", "run", "bash"]
    term = Terminal(argv, served.cwd, served.env, rows=30, cols=100)
    try:
        talk_to_bash(served, term)
    finally:
        term.process.kill()  # a no-op once it has ended
    assert wait_until(lambda: served.one_offs() == [] and served.dyno_dirs() == [], 10)


def talk_to_bash(served: Served, term: Terminal) -> None:
    term.type(b"echo ready-$((2*3))\r")
    term.expect(rb"ready-6")
    assert len(served.one_offs()) == 1  # listed by `ps` while it runs
    term.type(b"stty size\r")
    term.expect(rb"30 100\r\n")
    term.resize(41, 123)
    term.until_seen(b"stty size\r", rb"41 123\r\n")
    term.type(b"sleep 37\r")
    assert wait_until(lambda: bool(running("sleep\x0037\x00")), 10)
    started = time.monotonic()
    term.type(b"\x03")  # Ctrl-C: SIGINT in the dyno, through its terminal
    term.until_seen(b"echo after=$?\r", rb"after=130")
    assert time.monotonic() - started < 20 and not running("sleep\x0037\x00")
    term.type(b"(exit 7)\r")
    term.type(b"\x04")  # Ctrl-D at an empty line: bash ends with the last status
    assert term.wait() == 7


def test_piped_stdin_feeds_the_dyno_and_its_end_ends_it(served: Served) -> None:
    before = (served.one_offs(), served.dyno_dirs())
    script = "echo one\nls Procfile\necho two >&2\nexit 5\n"
    done = served.dyno("run", "bash", input=script)
    assert (done.returncode, done.stdout) == (5, "one\nProcfile\n")
    assert done.stderr == "two\n"  # stderr stays apart without a terminal
    assert wait_until(lambda: (served.one_offs(), served.dyno_dirs()) == before, 10)


def test_a_process_type_env_and_size_as_the_heroku_cli_sends_them(served: Served) -> None:
    done = served.dyno("run", "hello")
    assert (done.returncode, done.stdout) == (6, "hello from the type\n")
    done = served.dyno(
        "run", "-e", "A=1;B=two", "-e", "C=3", "--size", "standard-2X", "echo $A$B$C"
    )
    assert (done.returncode, done.stdout) == (0, "1two3\n")
    done = served.dyno("run", "-e", "oops", "true")
    assert done.returncode == 2 and "-e takes KEY=VALUE" in done.stderr


def test_a_client_that_goes_away_hangs_the_dyno_up(served: Served) -> None:
    before = (served.one_offs(), served.dyno_dirs())
    client = subprocess.Popen(
        [PY, "-m", "shell.cli", "run", "sleep 77"],
        cwd=served.cwd,
        env=served.env,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_until(lambda: bool(running("sleep\x0077\x00")), 15)
    finally:
        client.kill()  # no goodbye: the connection just ends
        client.wait()
        assert client.stdin is not None
        client.stdin.close()
    assert wait_until(lambda: not running("sleep\x0077\x00"), 10)  # SIGHUP
    assert wait_until(lambda: (served.one_offs(), served.dyno_dirs()) == before, 10)
