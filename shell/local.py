"""A running `dynod start` from the client's side: found from the current directory (it or a
directory above holds `.dynod/api.sock`, a socket of this user's in a directory of this user's)
and spoken to over that Unix socket, with no token: its mode is the credential (README,
"Steering a running `dynod start`"). dynod/api/unix.py makes the socket; its path and the app
name rule are kept the same on both sides (tests/shell/test_local.py)."""

from __future__ import annotations

import http.client
import os
import socket
import stat
from pathlib import Path
from urllib.parse import SplitResult

import attrs

from shell.api import REQUEST_TIMEOUT, Api

RUN_DIR = ".dynod"
SOCKET_NAME = "api.sock"
LOCAL_APP = "local"  # the app's name when the app directory is `/`
BASE_URL = "http://localhost"  # what the local API's URLs start with
_UNIX_PATH_MAX = 100


@attrs.frozen
class LocalRun:
    socket: Path  # the app directory's .dynod/api.sock

    @property
    def root(self) -> Path:
        return self.socket.parent.parent

    @property
    def app(self) -> str:
        return self.root.name or LOCAL_APP

    def api(self) -> LocalApi:
        return LocalApi(self)


def find_local_run(cwd: Path) -> LocalRun | None:
    """The nearest running `dynod start` at or above `cwd`: its socket must be this user's,
    in a directory only this user can use (another user's is never spoken to)."""
    me = os.geteuid()
    for directory in (cwd, *cwd.parents):
        run_dir = directory / RUN_DIR
        try:
            held = os.lstat(run_dir)
            sock = os.lstat(run_dir / SOCKET_NAME)
        except OSError:
            continue
        if (
            stat.S_ISDIR(held.st_mode)
            and held.st_uid == me
            and not held.st_mode & 0o077
            and stat.S_ISSOCK(sock.st_mode)
            and sock.st_uid == me
        ):
            return LocalRun(run_dir / SOCKET_NAME)
    return None


class LocalApi(Api):
    """The API client over a local run's socket: every URL the run hands out (on BASE_URL)
    goes through it; no token is sent."""

    def __init__(self, run: LocalRun, *, timeout: float = REQUEST_TIMEOUT) -> None:
        super().__init__(BASE_URL, None, timeout=timeout)
        self.run = run
        self.where = f"the dynod start in {run.root}"
        self.start_hint = (
            "start it there again with `dynod start`, or pass -a APP to reach dynod serve"
        )

    def _connection(self, parts: SplitResult, timeout: float | None) -> http.client.HTTPConnection:
        if (parts.scheme, parts.netloc) != (self._base.scheme, self._base.netloc):
            return super()._connection(parts, timeout)
        return _UnixConnection(self.run.socket, timeout)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            connect(sock, self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def connect(sock: socket.socket, path: Path) -> None:
    """Connect to `path`; through its directory's descriptor when the path is too long for a
    socket address (Linux's /proc)."""
    if len(os.fsencode(str(path))) <= _UNIX_PATH_MAX or not os.path.isdir("/proc/self/fd"):
        sock.connect(str(path))
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        sock.connect(f"/proc/self/fd/{fd}/{path.name}")
    finally:
        os.close(fd)
