"""A program on a pseudo-terminal of its own, for tests of what a person sees: keys in; out, the
screen as a terminal shows it (pyte emulates one, answering the program's cursor-position
questions as a terminal does) and the text of everything written; waits with deadlines."""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pyte

# CSI and OSC sequences, charset choices, keypad modes, and carriage returns: what is left is
# the text the program wrote, in order.
ESCAPES = re.compile(
    r"\x1b\[[0-9;?<>=]*[ -/]*[@-~]"
    r"|\x1b\][^\x07\x1b]*(\x07|\x1b\\)"
    r"|\x1b[()][0-9A-Za-z]|\x1b[=>78]|\r"
)


class _Screen(pyte.Screen):
    """Answers what the program asks the terminal (where the cursor is) on its terminal."""

    def __init__(self, columns: int, rows: int, fd: int) -> None:
        super().__init__(columns, rows)
        self.fd = fd

    def write_process_input(self, data: str) -> None:
        os.write(self.fd, data.encode())


def _controlling_terminal() -> None:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path,
        rows: int = 30,
        columns: int = 120,
    ) -> None:
        self.fd, child = os.openpty()
        fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        self.process = subprocess.Popen(
            list(argv),
            stdin=child,
            stdout=child,
            stderr=child,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_controlling_terminal,
        )
        os.close(child)
        self.screen = _Screen(columns, rows, self.fd)
        self.stream = pyte.Stream(self.screen)
        self.raw = ""
        self.seen = 0  # how much of text() `expect` has gone past
        self.open = True

    def text(self) -> str:
        """Everything written so far, without escape sequences."""
        return ESCAPES.sub("", self.raw)

    def lines(self) -> list[str]:
        """The screen now, line by line, without trailing blanks."""
        return [line.rstrip() for line in self.screen.display]

    def read(self, timeout: float) -> None:
        """Whatever arrives within `timeout`."""
        if not self.open or not select.select([self.fd], [], [], timeout)[0]:
            return
        try:
            chunk = os.read(self.fd, 65536).decode("utf-8", "replace")
        except OSError:  # EIO: the program has closed the terminal
            chunk = ""
        if not chunk:
            self.open = False
            return
        self.raw += chunk
        self.stream.feed(chunk)

    def until(self, check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            left = deadline - time.monotonic()
            if left <= 0 or not self.open:
                screen = "\n".join(self.lines())
                raise AssertionError(f"no {what} within {timeout} s; the screen:\n{screen}")
            self.read(min(left, 0.1))

    def expect(self, pattern: str, timeout: float = 15.0) -> re.Match[str]:
        """Wait for `pattern` (a regular expression) in the text written after the last match."""
        compiled = re.compile(pattern)
        found: list[re.Match[str]] = []

        def check() -> bool:
            match = compiled.search(self.text(), self.seen)
            if match:
                found.append(match)
            return match is not None

        self.until(check, repr(pattern), timeout)
        self.seen = found[0].end()
        return found[0]

    def shows(self, pattern: str, timeout: float = 15.0) -> int:
        """Wait until a line of the screen matches `pattern`; its row."""
        compiled = re.compile(pattern)
        self.until(lambda: self.row(compiled) >= 0, f"line {pattern!r} on the screen", timeout)
        return self.row(compiled)

    def ready(self, pattern: str, timeout: float = 15.0) -> int:
        """Wait until the cursor's line matches `pattern` (a prompt waiting for keys, not an
        earlier one left on the screen); its row."""
        compiled = re.compile(pattern)
        self.until(
            lambda: compiled.search(self.cursor_line()) is not None,
            f"the cursor on a line {pattern!r}",
            timeout,
        )
        return int(self.screen.cursor.y)

    def row(self, pattern: re.Pattern[str]) -> int:
        return next((i for i, line in enumerate(self.lines()) if pattern.search(line)), -1)

    def cursor_line(self) -> str:
        return self.lines()[self.screen.cursor.y]

    def send(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def wait(self, timeout: float = 15.0) -> int:
        """The exit status, reading what is left meanwhile (a full terminal blocks a writer)."""
        deadline = time.monotonic() + timeout
        while self.open and self.process.poll() is None and time.monotonic() < deadline:
            self.read(0.1)
        return self.process.wait(timeout=max(0.1, deadline - time.monotonic()))

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        os.close(self.fd)
