"""The private socket a local run (`dynod start`) serves its API on: `.dynod/api.sock` in the app
directory, in a directory of the user's own (0700) holding a 0600 socket; claimed over a stale
one, never over another user's or a live run's, and removed when the run ends (README,
"Steering a running `dynod start`"). Only the standard library: `dynod start` imports this."""

from __future__ import annotations

import fcntl
import os
import socket
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dynod.errors import Conflict, DynodError

RUN_DIR = ".dynod"
SOCKET_NAME = "api.sock"
PROBE_TIMEOUT = 1.0  # a live run's socket that does not take a connection within this is busy
_UNIX_PATH_MAX = 100  # sun_path holds 108 bytes on Linux, 104 on macOS: longer paths go via fd


class Unsteerable(Exception):
    """The app directory cannot hold the socket (read-only, not the user's to write): the run
    goes on without its API, and says why once."""


def socket_path(root: Path) -> Path:
    return root / RUN_DIR / SOCKET_NAME


@contextmanager
def claim_socket(root: Path) -> Iterator[socket.socket]:
    """A listening Unix socket at `root/.dynod/api.sock`, which only this user can connect to,
    until the block ends (by return, exception or a stop signal's unwinding): then it is
    removed, with its directory when nothing else is in it. Raises DynodError for a path
    another user owns and Conflict for a live run's socket (another `dynod start` here);
    Unsteerable when the directory cannot be made."""
    run_dir = root / RUN_DIR
    dir_fd = _private_dir(run_dir)
    try:
        try:
            fcntl.flock(dir_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _live(root) from None
        final = run_dir / SOCKET_NAME
        _check_old_socket(root, final, dir_fd)
        temporary = f".{SOCKET_NAME}.{os.getpid()}"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            _unlink(run_dir / temporary)
            listener.bind(_address(run_dir, temporary, dir_fd))
            # Nobody else can reach the 0700 directory between the bind and this chmod.
            os.chmod(run_dir / temporary, 0o600)
            listener.listen(64)
            os.replace(run_dir / temporary, final)  # over a stale socket, at once
            made = os.lstat(final)
            try:
                yield listener
            finally:
                _remove(final, made)
                _remove_dir(run_dir)
        finally:
            listener.close()
            _unlink(run_dir / temporary)
    finally:
        os.close(dir_fd)  # and the lock with it


def _private_dir(run_dir: Path) -> int:
    """`.dynod`, made 0700 (or checked: a directory of this user's, set to 0700); a descriptor
    of it, to lock and to reach it by a short path."""
    try:
        os.mkdir(run_dir, 0o700)
        (run_dir / ".gitignore").write_text("# dynod start's socket: not for git\n*\n")
    except FileExistsError:
        pass
    except OSError as err:
        raise Unsteerable(f"cannot make {run_dir} ({err.strerror})") from None
    info = os.lstat(run_dir)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise DynodError(
            f"{run_dir} is not a directory: remove it, dynod start keeps its socket there"
        )
    if info.st_uid != os.geteuid():
        raise DynodError(
            f"{run_dir} belongs to uid {info.st_uid}, not to you (uid {os.geteuid()}): "
            "remove it, or run dynod start as its owner"
        )
    fd = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        if stat.S_IMODE(info.st_mode) != 0o700:
            os.fchmod(fd, 0o700)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_old_socket(root: Path, path: Path, dir_fd: int) -> None:
    """A socket left at `path` may be replaced only when it is this user's and dead (its run
    was killed: connecting is refused)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise DynodError(f"{path} is not a socket: remove it, dynod start keeps its socket there")
    if info.st_uid != os.geteuid():
        raise DynodError(
            f"{path} belongs to uid {info.st_uid}, not to you (uid {os.geteuid()}): "
            "remove it, or run dynod start as its owner"
        )
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(PROBE_TIMEOUT)
        try:
            probe.connect(_address(path.parent, path.name, dir_fd))
        except (ConnectionRefusedError, FileNotFoundError):
            return  # stale: left by a run that was killed
        except TimeoutError:
            pass  # alive, and busy
    raise _live(root)


def _live(root: Path) -> Conflict:
    return Conflict(
        f"another dynod start is running in {root}: stop it first, or steer it from here "
        "with `dyno` (dyno ps, dyno ps:restart …)"
    )


def _address(directory: Path, name: str, dir_fd: int) -> str:
    """`directory/name` as a socket address: through the directory's descriptor when the path
    is too long for one (Linux's /proc)."""
    path = str(directory / name)
    if len(os.fsencode(path)) <= _UNIX_PATH_MAX:
        return path
    if not os.path.isdir("/proc/self/fd"):
        raise Unsteerable(f"the path {path} is too long for a Unix socket")
    return f"/proc/self/fd/{dir_fd}/{name}"


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _remove(path: Path, made: os.stat_result) -> None:
    """Remove the socket this run made (and nothing that replaced it)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if (info.st_dev, info.st_ino) == (made.st_dev, made.st_ino):
        _unlink(path)


def _remove_dir(run_dir: Path) -> None:
    """The directory goes when only what dynod put there is left."""
    try:
        if set(os.listdir(run_dir)) <= {".gitignore"}:
            _unlink(run_dir / ".gitignore")
            os.rmdir(run_dir)
    except OSError:
        pass  # gone already, or something of the user's is in it: it stays
