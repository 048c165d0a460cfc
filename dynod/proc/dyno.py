"""One dyno process: its environment, its own session, its output as lines, its stop sequence.

`run_dyno` starts a Procfile command under `bash -c` (profile scripts sourced first), reads its
stdout and stderr as whole lines into a LogSink, and returns the exit status. Cancelling the scope
around it is how a dyno stops: SIGTERM to the whole group, a grace period, then SIGKILL (R12).
Where the reaper makes cgroups (dynod/proc/cgroups.py) the dyno runs in one of its own: SIGTERM
goes to every process in it, `cgroup.kill` ends it, and the dyno is gone once it is empty.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import subprocess
import termios
import time
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from pathlib import Path

import attrs
import trio

from dynod.core.logline import APP, HEROKU, LogSink
from dynod.core.names import MAX_LINE_BYTES
from dynod.proc.attached import Terminal
from dynod.proc.cgroups import Cgroup
from dynod.proc.child import Child
from dynod.proc.mounts import Mounts, Overlay, available, plan
from dynod.proc.orphans import become_subreaper, kill_groups
from dynod.proc.reaper import Reaper, group_alive, live_group_members

# Heroku's dyno PATH; buildpacks extend it through .profile.d scripts.
DYNO_PATH = "/usr/local/bin:/usr/bin:/bin"

# The command is appended after the profile prelude rather than passed to `exec`, so compound
# commands (`a && b`) keep working; bash >= 5.1 still execs a simple last command itself.
PROFILE_PRELUDE = (
    'for f in .profile.d/*.sh; do if [ -r "$f" ]; then . "$f"; fi; done; unset f\n'
    "if [ -r .profile ]; then . ./.profile; fi\n"
)

READ_SIZE = 1 << 20
PIPE_SIZE = 1 << 20  # fewer wake-ups for chatty dynos; best effort (Linux F_SETPIPE_SZ)


@attrs.frozen
class DynoSpec:
    """What to run: everything a dyno process needs, already resolved."""

    name: str  # "web.1", "release.3", "run.4821"
    command: str
    cwd: Path
    env: Mapping[str, str]
    tty: bool = False
    stop_timeout: float = 30.0
    max_line_bytes: int = MAX_LINE_BYTES
    owner: tuple[int, int] | None = None  # (uid, gid) to run as: a root dynod's dyno user
    private_tmp: bool = False  # its own /tmp and /dev/shm, where dynod can (proc/mounts.py)
    overlay: Overlay | None = None  # its directory an overlay of the slug's tree (proc/mounts.py)
    bind_at: str | None = None  # with private_tmp: its directory bound here too (add-on servers)
    terminal: Terminal | None = None  # attached: started once its client came, output to it


def _mounts(spec: DynoSpec) -> Mounts | None:
    tmp = spec.private_tmp and available()
    if not tmp and spec.overlay is None:
        return None
    return plan(str(spec.cwd), spec.bind_at if tmp else None, tmp=tmp, overlay=spec.overlay)


def dyno_env(
    config_vars: Mapping[str, str],
    *,
    name: str,
    port: int | None,
    home: Path,
    inherit: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """A dyno's environment, layer by layer: the inherited base (nothing on the platform), the
    config vars, then the variables the platform owns. PATH defaults to Heroku's."""
    env: dict[str, str] = {}
    if inherit is not None:
        env.update(inherit)
    env.update(config_vars)
    env.setdefault("PATH", DYNO_PATH)
    if port is not None:
        env["PORT"] = str(port)
    env["DYNO"] = name
    env["HOME"] = str(home)
    env["PWD"] = str(home)
    return env


def bash_argv(command: str, root: Path | None = None) -> list[str]:
    """`bash -c` with the profile prelude, which is left out when the dyno's directory `root`
    has neither .profile.d nor .profile: it would source nothing (a glob and two tests; what
    that saves is below bench/childcost.py's resolution)."""
    if root is not None and not (root / ".profile.d").exists() and not (root / ".profile").exists():
        return ["bash", "-c", command]
    return ["bash", "-c", PROFILE_PRELUDE + command]


def exit_status(returncode: int) -> int:
    """Heroku (and shells) report death by signal N as 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


class LineSplitter:
    """Turns a byte stream into whole lines: nothing lost or torn, a partial last line kept for
    `flush`, lines longer than `max_line_bytes` split (at a UTF-8 character boundary)."""

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self.max_line_bytes = max_line_bytes
        self._partial = b""

    def feed(self, data: bytes) -> list[str]:
        if self._partial:
            data = self._partial + data
        end = data.rfind(b"\n")
        if end < 0:
            self._partial = data
            if len(data) > self.max_line_bytes:
                head, self._partial = self._cut(data)
                return head
            return []
        self._partial = data[end + 1 :]
        return self._lines(data[:end])

    def flush(self) -> list[str]:
        rest, self._partial = self._partial, b""
        return self._lines(rest) if rest else []

    def _lines(self, block: bytes) -> list[str]:
        if b"\r" in block:
            # The block ends where a "\n" was cut off, so a final "\r" was a CRLF too.
            block = block.replace(b"\r\n", b"\n").removesuffix(b"\r")
        lines = block.decode("utf-8", "replace").split("\n")
        limit = self.max_line_bytes
        # A str of n characters holds at most 4n bytes: only look closer when that could exceed.
        if len(block) > limit and max(map(len, lines)) * 4 > limit:
            lines = [piece for line in lines for piece in self._split_long(line)]
        return lines

    def _split_long(self, line: str) -> list[str]:
        raw = line.encode("utf-8", "surrogateescape")
        if len(raw) <= self.max_line_bytes:
            return [line]
        pieces = []
        while len(raw) > self.max_line_bytes:
            cut = _char_boundary(raw, self.max_line_bytes)
            pieces.append(raw[:cut].decode("utf-8", "replace"))
            raw = raw[cut:]
        pieces.append(raw.decode("utf-8", "replace"))
        return pieces

    def _cut(self, data: bytes) -> tuple[list[str], bytes]:
        """A long unterminated line: hand out whole max-size pieces, keep the rest pending."""
        pieces = []
        while len(data) > self.max_line_bytes:
            cut = _char_boundary(data, self.max_line_bytes)
            pieces.append(data[:cut].decode("utf-8", "replace"))
            data = data[cut:]
        return pieces, data


def _char_boundary(raw: bytes, limit: int) -> int:
    cut = limit
    while cut > 0 and (raw[cut] & 0xC0) == 0x80:  # never cut inside a UTF-8 sequence
        cut -= 1
    return cut or limit


@attrs.define
class DynoProcess:
    """The handle `run_dyno` reports once the process is running."""

    name: str
    pid: int
    started_at: float
    cgroup: Cgroup | None = None  # where dynod makes cgroups (dynod/proc/cgroups.py)

    @property
    def pgid(self) -> int:
        return self.pid  # the dyno leads its own session and process group

    def memory_usage(self) -> int | None:
        """Bytes of memory the dyno's processes use, read from its cgroup; None without one
        (or without a memory controller)."""
        return self.cgroup.memory_usage() if self.cgroup is not None else None

    def signal(self, signum: int) -> None:
        try:
            os.killpg(self.pgid, signum)
        except ProcessLookupError:
            pass


def _pipe() -> tuple[int, int]:
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    if hasattr(fcntl, "F_SETPIPE_SZ"):
        try:
            fcntl.fcntl(read_fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass  # above /proc/sys/fs/pipe-max-size for unprivileged users: keep the default
    return read_fd, write_fd


def _take_controlling_tty() -> None:
    # Runs in the child after setsid(): the pty becomes its controlling terminal, so Ctrl-C
    # and job control work inside the dyno.
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


async def _pump(fd: int, splitter: LineSplitter, sink: LogSink, name: str) -> None:
    stream = trio.lowlevel.FdStream(fd)
    publish = sink.publish
    async with stream:
        while True:
            try:
                data = await stream.receive_some(READ_SIZE)
            except (trio.BrokenResourceError, OSError) as exc:
                # A pty master reads EIO once the last slave fd is closed: that is EOF.
                cause = exc.__cause__ if isinstance(exc, trio.BrokenResourceError) else exc
                if isinstance(cause, OSError) and cause.errno == errno.EIO:
                    break
                raise
            if not data:
                break
            lines = splitter.feed(data)
            if lines:
                publish(APP, name, lines, time.time())
    rest = splitter.flush()
    if rest:
        publish(APP, name, rest, time.time())


async def run_dyno(
    spec: DynoSpec,
    sink: LogSink,
    *,
    reaper: Reaper | None = None,
    hurry: trio.Event | None = None,
    task_status: trio.TaskStatus[DynoProcess] = trio.TASK_STATUS_IGNORED,
) -> int:
    """Run one dyno to completion and return its exit status (128 + N for signal N).

    Cancellation stops it: SIGTERM to the group, `spec.stop_timeout` of grace (cut short when
    `hurry` is set; none when it is set already, as for R15), then SIGKILL.
    Every process left in the group is killed and reported.
    """

    def say(text: str) -> None:
        sink.publish(HEROKU, spec.name, [text], time.time())

    terminal = spec.terminal
    if terminal is not None:
        await terminal.wait_client()
        stdin, stdout, stderr = terminal.open()
        outputs: list[int] = []
        child_ends = sorted({stdin, stdout, stderr})
    elif spec.tty:
        master, slave = os.openpty()
        os.set_inheritable(master, False)
        stdin = stdout = stderr = slave
        outputs = [master]
        child_ends = [slave]
    else:
        out_r, stdout = _pipe()
        err_r, stderr = _pipe()
        stdin = subprocess.DEVNULL
        outputs = [out_r, err_r]
        child_ends = [stdout, stderr]
    cgroup: Cgroup | None = None
    try:
        cgroup = reaper.cgroup(spec.name) if reaper is not None else None
        tty = terminal.tty if terminal is not None else spec.tty
        process = Child.spawn(
            # An overlay's files are seen only inside the dyno: its slug's tree has them too.
            bash_argv(
                spec.command, Path(os.fsdecode(spec.overlay.lower)) if spec.overlay else spec.cwd
            ),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            cwd=str(spec.cwd),
            env=spec.env,
            owner=spec.owner,
            preexec_fn=_take_controlling_tty if tty else None,
            cgroup=cgroup,
            mounts=_mounts(spec),
        )
    except BaseException:
        for fd in outputs:
            os.close(fd)
        if cgroup is not None:
            cgroup.remove()
        if terminal is not None:
            with trio.CancelScope(shield=True):
                await terminal.finish(None)
        raise
    finally:
        for fd in child_ends:
            os.close(fd)
    handle = DynoProcess(spec.name, process.pid, time.time(), cgroup)
    if reaper is not None:
        reaper.watch(handle.pgid, (spec.name, spec.env.get("PORT", "")))
    readers: list[Callable[[], Awaitable[None]]] = [
        partial(_pump, fd, LineSplitter(spec.max_line_bytes), sink, spec.name) for fd in outputs
    ]
    if terminal is not None:
        readers = [terminal.relay_output]
    drained = trio.Event()
    pending = [len(readers)]

    pump_scopes: list[trio.CancelScope] = []

    async def pump(read: Callable[[], Awaitable[None]]) -> None:
        # Shielded: a stopping dyno's last words (written after SIGTERM) must still be read.
        # The pumps end at EOF, or when the cleanup below cancels them.
        with trio.CancelScope(shield=True) as scope:
            pump_scopes.append(scope)
            try:
                await read()
            finally:
                pending[0] -= 1
                if not pending[0]:
                    drained.set()

    async def hang_up(terminal: Terminal) -> None:
        # The client went away: the dyno's terminal hangs up (SIGHUP), then it is killed.
        with trio.CancelScope() as scope:
            pump_scopes.append(scope)
            await terminal.hangup.wait()
            say("Client disconnected: hanging up (SIGHUP)")
            _signal_dyno(handle, cgroup, signal.SIGHUP)
            await trio.sleep(spec.stop_timeout)
            _signal_dyno(handle, cgroup, signal.SIGKILL)

    try:
        async with trio.open_nursery() as nursery:
            for read in readers:
                nursery.start_soon(pump, read)
            if terminal is not None:
                nursery.start_soon(hang_up, terminal)
            task_status.started(handle)
            try:
                await process.wait()
            except trio.Cancelled:
                with trio.CancelScope(shield=True):
                    await _stop(spec, handle, process, say, hurry, reaper, cgroup)
                raise
            finally:
                with trio.CancelScope(shield=True):
                    if cgroup is not None:
                        await _empty(cgroup, say)
                    else:
                        await _end_leftovers(handle, say, reaper)
                    # Output still in flight is read to the end; a process that escaped the
                    # group may hold the pipe open, so the wait is bounded.
                    with trio.move_on_after(1.0):
                        await drained.wait()
                    for scope in pump_scopes:
                        scope.cancel()
    finally:
        if reaper is not None:
            reaper.forget(handle.pgid)
        if cgroup is not None:
            cgroup.remove()
        if process.returncode is not None:
            say(f"Process exited with status {exit_status(process.returncode)}")
        if terminal is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(5.0):
                code = process.returncode
                await terminal.finish(None if code is None else exit_status(code))
    assert process.returncode is not None
    return exit_status(process.returncode)


def _signal_dyno(handle: DynoProcess, cgroup: Cgroup | None, signum: int) -> None:
    if cgroup is not None:
        cgroup.signal_all(signum)
    else:
        handle.signal(signum)


async def _stop(
    spec: DynoSpec,
    handle: DynoProcess,
    process: Child,
    say: Callable[[str], None],
    hurry: trio.Event | None,
    reaper: Reaper | None = None,
    cgroup: Cgroup | None = None,
) -> None:
    if hurry is None or not hurry.is_set():  # hurried from the start (R15): SIGKILL at once
        await _terminate(spec, handle, process, say, hurry, reaper, cgroup)
    alive = cgroup.populated() if cgroup is not None else group_alive(handle.pgid)
    if process.returncode is None or alive:
        if hurry is None or not hurry.is_set():  # hurried (a second Ctrl-C): no timeout to report
            grace = f"{spec.stop_timeout:g}"
            say(
                "Error R12 (Exit timeout) -> "
                f"Process failed to exit within {grace} seconds of SIGTERM"
            )
        say("Stopping all processes with SIGKILL")
        if cgroup is not None:
            cgroup.kill()
            await process.wait()
            await cgroup.wait_empty(2.0)  # what survives that is reported with the leftovers
        else:
            handle.signal(signal.SIGKILL)
            await process.wait()


async def _terminate(
    spec: DynoSpec,
    handle: DynoProcess,
    process: Child,
    say: Callable[[str], None],
    hurry: trio.Event | None,
    reaper: Reaper | None,
    cgroup: Cgroup | None,
) -> None:
    """SIGTERM to every process of the dyno, then its grace (cut short by `hurry`)."""
    say("Stopping all processes with SIGTERM")
    if cgroup is not None:  # every process of the dyno, whatever its session
        cgroup.signal_all(signal.SIGTERM)
    else:
        handle.signal(signal.SIGTERM)
    if reaper is not None:  # and the sessions its processes started (dynod/proc/orphans.py)
        kill_groups(reaper.escapees_of(handle.pgid), signal.SIGTERM)
    with trio.move_on_after(spec.stop_timeout):
        async with trio.open_nursery() as race:

            async def group_gone() -> None:
                await process.wait()
                if cgroup is not None:
                    await cgroup.wait_empty()
                else:
                    await _wait_group_empty(handle.pgid)
                race.cancel_scope.cancel()

            async def hurried() -> None:
                assert hurry is not None
                await hurry.wait()
                race.cancel_scope.cancel()

            race.start_soon(group_gone)
            if hurry is not None:
                race.start_soon(hurried)


async def _wait_group_empty(pgid: int, timeout: float | None = None) -> bool:
    with trio.move_on_after(timeout if timeout is not None else float("inf")):
        while group_alive(pgid):
            await trio.sleep(0.01)
        return True
    return False


async def _end_leftovers(
    handle: DynoProcess, say: Callable[[str], None], reaper: Reaper | None = None
) -> None:
    """After the main process is gone, nothing of its group may live on (daemons it forked,
    grandchildren that ignored SIGTERM), nor of the sessions its processes started."""
    escaped = reaper.end_escapees(handle.pgid) if reaper is not None else 0
    if escaped:
        say(f"Killed {escaped} processes that had left the dyno's process group")
    if not group_alive(handle.pgid):
        return
    leftovers = live_group_members(handle.pgid)
    handle.signal(signal.SIGKILL)
    listed = ", ".join(map(str, leftovers))
    say(f"Killed {len(leftovers)} processes left behind in the dyno (pids {listed})")
    if not await _wait_group_empty(handle.pgid, 2.0):
        say(f"Process group {handle.pgid} survived SIGKILL")


async def _empty(cgroup: Cgroup, say: Callable[[str], None]) -> None:
    """After the main process is gone, nothing of the dyno's cgroup may live on, whatever
    session or group it is in."""
    if not cgroup.populated():
        return
    leftovers = cgroup.procs()
    cgroup.kill()
    listed = ", ".join(map(str, leftovers))
    say(f"Killed {len(leftovers)} processes left behind in the dyno (pids {listed})")
    if not await cgroup.wait_empty(2.0):
        say(f"Processes of cgroup {cgroup.path} survived cgroup.kill")


async def watch_orphans(reaper: Reaper, every: float = 0.5) -> None:
    """Make dynod the subreaper of its dynos' orphans and sweep them (dynod/proc/orphans.py): the
    processes that leave a dyno's process group are stopped with it."""
    if not become_subreaper():
        return
    while True:
        await trio.sleep(every)
        reaper.sweep()
