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
_UNIX_PATH_MAX = 100  # sun_path holds 108 bytes on Linux, 104 on macOS
_PROC_FD = "/proc/self/fd"


class Unsteerable(Exception):
    """The app directory cannot hold the socket (read-only, not the user's to write): the run
    goes on without its API, and says why once."""


@contextmanager
def claim_socket(root: Path) -> Iterator[socket.socket]:
    """A listening Unix socket at `root/.dynod/api.sock`, which only this user can connect to,
    until the block ends (by return, exception or a stop signal's unwinding): then it is
    removed, with its directory when nothing else is in it. Raises DynodError for a path
    another user owns and Conflict for a live run's socket (another `dynod start` here);
    Unsteerable when the directory cannot be made. Everything in `.dynod` is done through a
    descriptor of the directory once checked, so swapping it meanwhile changes nothing."""
    run_dir = root / RUN_DIR
    fd = _private_dir(run_dir)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _live(root) from None
        _check_old_socket(root, run_dir, fd)
        temporary = f".{SOCKET_NAME}.{os.getpid()}"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            _unlink(temporary, fd)
            listener.bind(_address(run_dir, temporary, fd))
            # Nobody else can reach the 0700 directory between the bind and this chmod.
            os.chmod(temporary, 0o600, dir_fd=fd)
            listener.listen(64)
            # Over a stale socket, at once.
            os.replace(temporary, SOCKET_NAME, src_dir_fd=fd, dst_dir_fd=fd)
            made = os.lstat(SOCKET_NAME, dir_fd=fd)
            try:
                yield listener
            finally:
                _remove(made, fd)
                _remove_dir(run_dir, fd)
        finally:
            listener.close()
            _unlink(temporary, fd)
    finally:
        os.close(fd)  # and the lock with it


def _private_dir(run_dir: Path) -> int:
    """`.dynod`, made 0700 (or checked: a directory of this user's, set to 0700); a descriptor
    of it, to lock and to work in."""
    made = False
    try:
        os.mkdir(run_dir, 0o700)
        made = True
    except FileExistsError:
        pass
    except OSError as err:
        raise Unsteerable(f"cannot make {run_dir} ({err.strerror})") from None
    try:
        fd = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as err:
        info = os.lstat(run_dir)
        if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
            raise DynodError(
                f"{run_dir} is not a directory: remove it, dynod start keeps its socket there"
            ) from None
        _check_owner(run_dir, info)
        raise Unsteerable(f"cannot open {run_dir} ({err.strerror})") from None
    try:
        info = os.fstat(fd)
        _check_owner(run_dir, info)
        if stat.S_IMODE(info.st_mode) != 0o700:
            os.fchmod(fd, 0o700)
        if made:
            ignore = os.open(".gitignore", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=fd)
            with open(ignore, "w") as out:
                out.write("# dynod start's socket: not for git\n*\n")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_owner(path: Path, info: os.stat_result) -> None:
    if info.st_uid != os.geteuid():
        raise DynodError(
            f"{path} belongs to uid {info.st_uid}, not to you (uid {os.geteuid()}): "
            "remove it, or run dynod start as its owner"
        )


def _check_old_socket(root: Path, run_dir: Path, fd: int) -> None:
    """A socket left in `.dynod` may be replaced only when it is this user's and dead (its run
    was killed: connecting is refused)."""
    try:
        info = os.lstat(SOCKET_NAME, dir_fd=fd)
    except FileNotFoundError:
        return
    path = run_dir / SOCKET_NAME
    if not stat.S_ISSOCK(info.st_mode):
        raise DynodError(f"{path} is not a socket: remove it, dynod start keeps its socket there")
    _check_owner(path, info)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(PROBE_TIMEOUT)
        try:
            probe.connect(_address(run_dir, SOCKET_NAME, fd))
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


def _address(run_dir: Path, name: str, fd: int) -> str:
    """`name` in the directory `fd` as a socket address: through the descriptor where there is
    /proc (Linux), else by its path, which must then fit in an address."""
    if os.path.isdir(_PROC_FD):
        return f"{_PROC_FD}/{fd}/{name}"
    path = str(run_dir / name)
    if len(os.fsencode(path)) > _UNIX_PATH_MAX:
        raise Unsteerable(f"the path {path} is too long for a Unix socket")
    return path


def _unlink(name: str, fd: int) -> None:
    try:
        os.unlink(name, dir_fd=fd)
    except FileNotFoundError:
        pass


def _remove(made: os.stat_result, fd: int) -> None:
    """Remove the socket this run made (and nothing that replaced it)."""
    try:
        info = os.lstat(SOCKET_NAME, dir_fd=fd)
    except FileNotFoundError:
        return
    if (info.st_dev, info.st_ino) == (made.st_dev, made.st_ino):
        _unlink(SOCKET_NAME, fd)


def _remove_dir(run_dir: Path, fd: int) -> None:
    """The directory goes when only what dynod put there is left (and it is still the one at
    `run_dir`)."""
    try:
        if set(os.listdir(fd)) <= {".gitignore"}:
            here, held = os.lstat(run_dir), os.fstat(fd)
            if (here.st_dev, here.st_ino) == (held.st_dev, held.st_ino):
                _unlink(".gitignore", fd)
                os.rmdir(run_dir)
    except OSError:
        pass  # gone already, or something of the user's is in it: it stays
