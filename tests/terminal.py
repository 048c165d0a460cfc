"""A pseudo-terminal of the test's own for programs that need one (`dyno run`, `heroku run`):
CI has no terminal, so tests make theirs."""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import termios
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


class Terminal:
    """A program on a pseudo-terminal of ours, as a person at a terminal runs it: what it
    shows, keys typed into it, resizes."""

    def __init__(
        self,
        argv: Sequence[str],
        cwd: Path,
        env: Mapping[str, str],
        *,
        rows: int = 30,
        cols: int = 100,
    ) -> None:
        self.master, slave = os.openpty()
        self.resize(rows, cols, slave)
        self.process = subprocess.Popen(
            list(argv),
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=cwd,
            env=dict(env),
            start_new_session=True,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
        )
        os.close(slave)
        self.seen = b""

    def resize(self, rows: int, cols: int, fd: int | None = None) -> None:
        """The kernel sends SIGWINCH to `dyno`, the terminal's foreground process."""
        size = struct.pack("HHHH", rows, cols, 0, 0)
        fcntl.ioctl(self.master if fd is None else fd, termios.TIOCSWINSZ, size)

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def expect(self, pattern: bytes, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.seen):
            left = deadline - time.monotonic()
            assert left > 0, f"never saw {pattern!r} in {self.seen!r}"
            if select.select([self.master], [], [], left)[0]:
                try:
                    self.seen += os.read(self.master, 65536)
                except OSError:  # EIO: the terminal's last user has gone
                    assert re.search(pattern, self.seen), f"never saw {pattern!r}: {self.seen!r}"

    def until_seen(self, keys: bytes, pattern: bytes) -> None:
        """Type `keys` until `pattern` shows: for what happens on its own time (a SIGWINCH
        reaching `dyno`; typeahead the terminal flushes on Ctrl-C)."""
        for _ in range(50):
            self.type(keys)
            try:
                return self.expect(pattern, timeout=0.2)
            except AssertionError:
                continue
        self.expect(pattern)

    def wait(self) -> int:
        status = self.process.wait(timeout=30)
        os.close(self.master)
        return status
