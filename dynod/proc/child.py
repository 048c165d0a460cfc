"""How a dyno's main process is started and waited for.

`Child.spawn` starts it from the event loop's own thread and `Child.wait` waits through a pidfd
(Linux), as trio waits for its processes. trio's `open_process` hands each spawn to a worker
thread instead: 100 dynos starting at once cost a score of new threads. A spawn blocks the loop
only until the child has exec'ed: under a millisecond with vfork (posix_spawn, and Popen when it
has nothing to do in the child); a root dynod's Popen switching to the dyno user (or taking a
terminal) forks instead, a few milliseconds of a large process's page tables.

Two routes, one behaviour (a new session, the given stdio, default signal dispositions, no other
file descriptors, the environment as given):
- `os.posix_spawn`, a quarter of Popen's CPU, when nothing asks for more than it can do: the
  working directory is already ours (the local runner's usual case: `dynod start` in the app's
  directory), no user to switch to, no terminal to take;
- `subprocess.Popen` otherwise (another directory, a dyno user, --tty, a cgroup to start in:
  the child joins it before exec, so nothing it starts is ever outside; dynod/proc/cgroups.py;
  mounts of its own: a private /tmp and /dev/shm, dynod/proc/mounts.py).
(One difference remains: glibc's posix_spawn leaves its two internal signals, 32 and 33,
ignored in the child, as in every program it starts; glibc re-arms them when it uses them.)
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Mapping
from typing import Any

import trio

from dynod.errors import DynodError
from dynod.proc.cgroups import Cgroup
from dynod.proc.mounts import Mounts

# Python ignores these; a program started by Popen gets them back at their defaults.
_DEFAULT_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGPIPE", "SIGXFSZ", "SIGXFZ") if hasattr(signal, name)
)


class Child:
    """A dyno's main process: its pid, and its exit status once waited for."""

    def __init__(self, pid: int, popen: subprocess.Popen[bytes] | None = None) -> None:
        self.pid = pid
        self._popen = popen  # the Popen route keeps Popen's bookkeeping right
        self.returncode: int | None = None
        self._pidfd = -1
        if hasattr(os, "pidfd_open"):
            try:
                self._pidfd = os.pidfd_open(pid)
            except OSError:  # before Linux 5.3: polled instead
                pass
        self._waiting = trio.Lock()

    @classmethod
    def spawn(
        cls,
        argv: list[str],
        *,
        stdin: int,
        stdout: int,
        stderr: int,
        cwd: str,
        env: Mapping[str, str],
        owner: tuple[int, int] | None = None,
        preexec_fn: Callable[[], None] | None = None,
        cgroup: Cgroup | None = None,
        mounts: Mounts | None = None,
    ) -> Child:
        """Start `argv` in a session of its own (and in `cgroup`, with `mounts` of its own).
        stdin/stdout/stderr: file descriptors, or subprocess.DEVNULL for stdin."""
        if (
            owner is None
            and preexec_fn is None
            and cgroup is None
            and mounts is None
            and hasattr(os, "posix_spawn")
            and _is_cwd(cwd)
        ):
            return cls(_posix_spawn(argv, stdin, stdout, stderr, env))
        if cgroup is not None or mounts is not None:  # joins, mounts, becomes owner, goes on
            preexec_fn, owner = joining(cgroup, owner, preexec_fn, mounts=mounts), None
        try:
            popen = subprocess.Popen(
                argv,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                cwd=cwd,
                env=dict(env),
                start_new_session=True,
                preexec_fn=preexec_fn,
                **as_user(owner),
            )
        except subprocess.SubprocessError:  # preexec_fn failed; Popen keeps no more than that
            if mounts is None:
                raise
            raise DynodError(
                "could not give the process its mounts (its directory's overlay, a private"
                " /tmp and /dev/shm in a mount namespace of its own), so it was not started;"
                " set [dynos] private_tmp = false to run dynos without"
            ) from None
        return cls(popen.pid, popen)

    def poll(self) -> int | None:
        if self.returncode is None:
            if self._popen is not None:
                self.returncode = self._popen.poll()
            else:
                try:
                    pid, status = os.waitpid(self.pid, os.WNOHANG)
                except ChildProcessError:  # reaped elsewhere: its status is lost (as Popen)
                    pid, status = self.pid, 0
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    async def wait(self) -> int:
        """The exit status (negative: killed by that signal), once the process has exited."""
        async with self._waiting:
            while self.poll() is None:
                if self._pidfd >= 0:
                    await trio.lowlevel.wait_readable(self._pidfd)
                else:
                    await trio.sleep(0.05)
            if self._pidfd >= 0:
                os.close(self._pidfd)
                self._pidfd = -1
        assert self.returncode is not None
        return self.returncode


def as_user(owner: tuple[int, int] | None) -> dict[str, Any]:
    """Popen's arguments to run as `owner` (uid, gid) with no supplementary groups of ours:
    a root dynod's dyno or build user. None: as dynod."""
    if owner is None:
        return {}
    return {"user": owner[0], "group": owner[1], "extra_groups": []}


def joining(
    cgroup: Cgroup | None,
    owner: tuple[int, int] | None,
    then: Callable[[], None] | None = None,
    *,
    mounts: Mounts | None = None,
) -> Callable[[], None]:
    """Popen's preexec_fn to start in `cgroup` (and `mounts`) as `owner` (pass no user to
    Popen), then run `then` (in the child, after setsid). The child joins and mounts while
    still root, before it becomes `owner`: a dyno user may not move itself into a cgroup nor
    mount. The user switch is done as `as_user` would have Popen do it."""

    def prepare() -> None:
        if cgroup is not None:
            cgroup.join()
        if mounts is not None:
            mounts.enter()
        if owner is not None:
            os.setgroups([])
            os.setregid(owner[1], owner[1])
            os.setreuid(owner[0], owner[0])
        if then is not None:
            then()

    return prepare


def _is_cwd(path: str) -> bool:
    try:
        return os.path.samefile(path, ".")
    except OSError:
        return False


_found: dict[str, str] = {}  # (name, PATH) -> the program, as the child's PATH finds it
_inherited_closed = False


def _posix_spawn(
    argv: list[str], stdin: int, stdout: int, stderr: int, env: Mapping[str, str]
) -> int:
    global _inherited_closed
    if not _inherited_closed:
        _close_inherited_on_exec()
        _inherited_closed = True
    search = env.get("PATH", os.defpath)
    key = f"{argv[0]}\0{search}"
    program = _found.get(key)
    if program is None:
        program = shutil.which(argv[0], path=search) if "/" not in argv[0] else argv[0]
        if program is None:
            raise FileNotFoundError(2, f"No such file or directory: {argv[0]!r}")
        _found[key] = program
    actions: list[tuple[Any, ...]] = []
    if stdin == subprocess.DEVNULL:
        actions.append((os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0))
    else:
        actions.append((os.POSIX_SPAWN_DUP2, stdin, 0))
    actions.append((os.POSIX_SPAWN_DUP2, stdout, 1))
    actions.append((os.POSIX_SPAWN_DUP2, stderr, 2))
    return os.posix_spawn(
        program,
        argv,
        dict(env),
        file_actions=actions,
        setsid=True,
        setsigdef=_DEFAULT_SIGNALS,
        setsigmask=(),
    )


def _close_inherited_on_exec() -> None:
    """posix_spawn has no close_fds: descriptors dynod inherited without close-on-exec (a
    shell's or a CI runner's) get it, once, so that dynos do not inherit them either. dynod's
    own descriptors are close-on-exec already (Python's default)."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return
    for fd in fds:
        if fd > 2:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass  # the listing's own descriptor, closed by now
