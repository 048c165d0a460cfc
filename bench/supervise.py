#!/usr/bin/env python3
"""Process-supervision bench: `dynod start` against honcho, foreman, node-foreman and supervisord.

Run it by hand from the repository root, on a quiet machine (every figure is wall-clock or CPU
time on this machine, and another busy process skews all of them):

    python3 bench/supervise.py                        # every measurement, every peer (~10 min)
    python3 bench/supervise.py --quick                # smaller counts: a smoke run (~2 min)
    python3 bench/supervise.py --only a,d --peers honcho,supervisord

The peers it lacks are installed first: honcho and supervisor from PyPI into bench/.peers/venv,
foreman from Debian (`ruby-foreman`, through apt-get, so as root), node-foreman from npm into
bench/.peers/node. dynod is `.venv/bin/dynod start` from this checkout (`--dynod PATH` to use
another); it is skipped, with a note, while that command does not exist. The checkout's packages
are byte-compiled first, as pip compiles an installed package (the peers' included): an editable
install under PYTHONDONTWRITEBYTECODE=1 would otherwise compile dynod from source at every launch.
Every tool runs the same workloads in the same run, each supervisor in its own session, and each
is stopped afterwards with its whole process tree (its group, then SIGKILL to anything still
carrying the run's tag in its environment),
whatever happened. Scratch files live in bench/.work/supervise/.

What each figure means (one table per figure; the last column is dynod's factor against that
tool, >1 meaning dynod is better, and the line under each table compares dynod with the target):

(a) launch: seconds from starting the supervisor to the Nth "ready" line on its stdout (read
    from a pipe by this script), for N = 100 children that print "ready" and then sleep; once
    with `sh` children (`echo ready; exec sleep 120`) and once with `python3` children (the
    interpreter `python3` runs, by its path, so that a pyenv shim is not what is timed). Median
    of 5 runs, taken round by round (every tool once a round, so a VM that changes speed
    meanwhile weighs on all alike). Beside it: "cpu s", the CPU the supervisor itself used
    meanwhile (see (c) for what counts as the supervisor), and "torn", lines that held a "ready"
    but were not just it (supervisord merges lines when many children start at once; the
    "ready"s are counted wherever they fall). Target: at most node-foreman's time for sh,
    at most honcho's for python3.
(b) logs: lines per second through the supervisor, for 1,000,000 lines from one child and for
    250,000 from each of 4. Each child `cat`s a file of numbered lines `L<child>-<seq>-<payload>`
    (62 bytes) and then sleeps. Each tool runs twice per shape. With stdout on /dev/null the run
    is timed from the first child's start (the child writes the time to a file) to the
    supervisor's last write, seen by polling `wchar` in /proc/PID/io every 10 ms (all but the
    last 16 KiB, so a late message of the tool's own does not count): that is the lines/s
    figure. With stdout on a file ("to file") the run is timed the same way, to the file's
    growth, and the file is then checked: after stripping the tool's prefix, every expected
    line must appear once and intact. lost = expected lines not found intact; torn = output
    lines that are neither an intact line nor the tool's own message (a line split at a read
    boundary, or two merged); dup = lines seen more than once. Target: at least 2x
    node-foreman with none lost, torn or duplicated; moonshot 1M lines/s.
(c) idle CPU: percent of one core used by the supervisor while N = 100 `sh` children sleep, over
    10 s, from utime+stime in /proc/PID/stat (all threads; one clock tick, 10 ms, is 0.1% here).
    The supervisor is its process tree less the children: each workload command starts by
    exporting DYNOD_BENCH_CHILD=1, and the processes without it are the tool's own (honcho
    runs one relay process per child, dynod a reaper). Target: under 1% of a core.
(d) restart: milliseconds from `kill -9` of a child (its pid comes from its first line, `ready
    $$`) to its replacement's first line on the supervisor's stdout. honcho, foreman and
    node-foreman do not restart a child: they stop everything, which the table says. Median of
    --repeat runs, each with a fresh supervisor (so dynod's ladder is at its first step, 0).
    Target: under 50 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import re
import select
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PEERS_DIR = HERE / ".peers"
VENV = PEERS_DIR / "venv"
NODE_PREFIX = PEERS_DIR / "node"
WORK = HERE / ".work" / "supervise"
TAG_VAR = "DYNOD_BENCH_TAG"  # in every process of one launch: what to kill afterwards
CHILD_MARK = "DYNOD_BENCH_CHILD=1"  # in the children only: what is not the supervisor

PAYLOAD = b"the-quick-brown-fox-jumps-over-the-lazy-dog-0123456789"
RECORD = re.compile(rb"L(\d+)-(\d+)-" + re.escape(PAYLOAD))
ANSI = re.compile(rb"\x1b\[[0-9;]*[A-Za-z]")
NEVER = re.compile(rb"(?!)")
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- workloads: what the children run ------------------------------------------------------------


@dataclass(frozen=True)
class ProcType:
    name: str
    command: str  # a shell command line, as in a Procfile
    count: int = 1

    def line(self) -> str:
        """The command as written in the config: marked first, so helpers can be told apart."""
        return f"export {CHILD_MARK}; {self.command}"


@dataclass(frozen=True)
class Workload:
    types: tuple[ProcType, ...]

    def formation(self) -> str:
        return ",".join(f"{t.name}={t.count}" for t in self.types)


@functools.cache  # asked once a bench, not before every launch
def real_python3() -> str:
    """The interpreter `python3` runs, by its own path: a version manager's shim (pyenv's is a
    bash script that runs two more programs) would make (a) time the shim, not the supervisor."""
    try:
        found = subprocess.run(
            ["python3", "-c", "import sys; print(sys.executable)"],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
        path = found.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        path = ""
    return shlex.quote(path) if path else "python3"


def sleepers(n: int, child: str) -> Workload:
    """N children that print "ready" once and then sleep."""
    commands = {
        "sh": "echo ready; exec sleep 120",
        "python3": f"exec {real_python3()} -c \"import time; print('ready', flush=True); "
        'time.sleep(120)"',
    }
    return Workload((ProcType("w", commands[child], n),))


def loggers(files: list[Path], marks: Path) -> Workload:
    """One child per file: note the time, cat the file, note the time, then sleep."""
    return Workload(
        tuple(
            ProcType(
                f"c{i}",
                f"date +%s%N > {marks}/t0.{i}; cat {path}; "
                f"date +%s%N > {marks}/t1.{i}; exec sleep 600",
            )
            for i, path in enumerate(files)
        )
    )


def crasher() -> Workload:
    """One child whose first line carries its pid, so that the bench can kill it."""
    return Workload((ProcType("w", 'echo "ready $$"; exec sleep 600'),))


# --- peers: how each tool is configured, started, installed and read ---------------------------


@dataclass(frozen=True)
class Peer:
    name: str
    binary: str  # checked for with `which` or as a path
    command: Callable[[Path, Workload], list[str]]  # argv, given the config file
    write_config: Callable[[Path, Workload], Path]  # writes the Procfile or conf into a dir
    line: re.Pattern[bytes]  # one output line; group "text" is what the child wrote
    own: re.Pattern[bytes]  # the tool's own messages, never a child's line
    install: Callable[[], None] | None = None
    log_remark: str = ""  # said beside its log figures, when they are not like for like

    def present(self) -> bool:
        return shutil.which(self.binary) is not None

    def text(self, raw: bytes) -> bytes | None:
        """What the child wrote on this output line, or None for the tool's own lines."""
        if b"\x1b" in raw:
            raw = ANSI.sub(b"", raw)
        if self.own.search(raw):
            return None
        m = self.line.match(raw)
        return m["text"] if m else raw


def write_procfile(directory: Path, work: Workload) -> Path:
    path = directory / "Procfile"
    path.write_text("".join(f"{t.name}: {t.line()}\n" for t in work.types))
    return path


def write_supervisord_conf(directory: Path, work: Workload) -> Path:
    """supervisord in the foreground, its own log in a file, children's output on its stdout."""
    path = directory / "supervisord.conf"
    lines = [
        "[supervisord]",
        "nodaemon=true",
        "silent=true",
        *(["user=root"] if os.geteuid() == 0 else []),  # else it warns on every start
        f"logfile={directory}/supervisord.log",
        f"pidfile={directory}/supervisord.pid",
    ]
    for t in work.types:
        command = "sh -c " + shlex.quote(t.line())
        lines += [
            f"[program:{t.name}]",
            "command=" + command.replace("%", "%%"),
            f"numprocs={t.count}",
            "numprocs_start=1",
            "process_name=%(program_name)s.%(process_num)d",
            "stdout_logfile=/dev/stdout",
            "stdout_logfile_maxbytes=0",
            "redirect_stderr=true",
            "autorestart=true",
            "stopwaitsecs=5",
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_checked(argv: list[str], timeout: float = 900) -> None:
    print("  $", " ".join(argv), flush=True)
    subprocess.run(argv, check=True, timeout=timeout, stdin=subprocess.DEVNULL)


def install_python_peers() -> None:
    if not (VENV / "bin" / "python").exists():
        run_checked([sys.executable, "-m", "venv", str(VENV)])
    run_checked([str(VENV / "bin" / "pip"), "install", "-q", "honcho", "supervisor"])


def install_foreman() -> None:
    run_checked(["apt-get", "update", "-qq"])
    run_checked(["apt-get", "install", "-y", "-qq", "ruby-foreman"])


def install_node_foreman() -> None:
    run_checked(["npm", "install", "--silent", "--prefix", str(NODE_PREFIX), "foreman"])


TIME_PREFIX = re.compile(rb"^\d\d:\d\d:\d\d (?P<name>\S+) +\| (?P<text>.*)$", re.S)

HONCHO = Peer(
    "honcho",
    str(VENV / "bin" / "honcho"),
    lambda cfg, w: [
        str(VENV / "bin" / "honcho"),
        "start",
        "--no-colour",
        "-f",
        str(cfg),
        "-c",
        w.formation(),
        *(t.name for t in w.types),
    ],
    write_procfile,
    TIME_PREFIX,
    re.compile(rb"^\S+ system +\| "),
    install_python_peers,
)

FOREMAN = Peer(
    "foreman",
    "foreman",
    lambda cfg, w: ["foreman", "start", "--no-color", "-f", str(cfg), "-m", w.formation()],
    write_procfile,
    TIME_PREFIX,
    re.compile(
        rb"^\S+ system +\| |^\S+ \S+ +\| (started with pid \d+|exited with code \d+"
        rb"|terminated by SIG\w+)$"
    ),
    install_foreman,
)

NODE_FOREMAN = Peer(
    "node-foreman",
    str(NODE_PREFIX / "node_modules" / ".bin" / "nf"),
    lambda cfg, w: [
        str(NODE_PREFIX / "node_modules" / ".bin" / "nf"),
        "-j",
        str(cfg),
        "start",
        w.formation(),
    ],
    write_procfile,
    re.compile(rb"^\d+:\d\d:\d\d [AP]M (?P<name>\S+) +\| +(?P<text>.*)$", re.S),
    re.compile(rb"^\[[A-Z]+\] |^\d+:\d\d:\d\d [AP]M \S+ +Exited "),
    install_node_foreman,
)

SUPERVISORD = Peer(
    "supervisord",
    str(VENV / "bin" / "supervisord"),
    lambda cfg, w: [str(VENV / "bin" / "supervisord"), "-c", str(cfg)],
    write_supervisord_conf,
    re.compile(rb"^(?P<text>.*)$", re.S),
    NEVER,
    install_python_peers,
    log_remark="copies raw chunks: no prefix, no line handling",
)

PEERS = (HONCHO, FOREMAN, NODE_FOREMAN, SUPERVISORD)


def dynod_peer(binary: str) -> Peer:
    return Peer(
        "dynod",
        binary,
        lambda cfg, w: [binary, "start", "-f", str(cfg), "-m", w.formation()],
        write_procfile,
        TIME_PREFIX,
        re.compile(rb"^\S+ (heroku|dynod|system)(\[[^\]]*\])? +\| "),
    )


def dynod_ready(peer: Peer) -> str | None:
    """Why `dynod start` cannot be measured, or None when it can."""
    if not peer.present():
        return f"{peer.binary} not found"
    try:
        done = subprocess.run(
            [peer.binary, "start", "--help"],
            capture_output=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return "`dynod start --help` timed out"
    if done.returncode != 0:
        said = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()
        return f"`dynod start --help` exited {done.returncode}" + (
            f": {said[-1][:120]}" if said else ""
        )
    return None


def byte_compile_checkout(binary: str) -> str:
    """Byte-compile this checkout's packages with the interpreter that runs `binary`, as pip does
    when it installs a package (the peers in bench/.peers got theirs at install). The checkout is
    an editable install, and under PYTHONDONTWRITEBYTECODE=1 (set on the development machine) no
    run ever writes the cache, so without this every `dynod start` compiled its modules from
    source (40-70 ms of CPU) and the bench timed the environment, not dynod. Says what it did."""
    try:
        first = Path(binary).read_bytes().split(b"\n", 1)[0].decode()
    except (OSError, UnicodeDecodeError):
        return "not byte-compiled: cannot read the dynod script"
    python = first[2:].strip().split()[0] if first.startswith("#!") else ""
    if "python" not in Path(python).name:
        return f"not byte-compiled: {binary} is not a Python script"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    packages = [str(REPO / name) for name in ("dynod", "router") if (REPO / name).is_dir()]
    done = subprocess.run(
        [python, "-m", "compileall", "-q", *packages],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=300,
    )
    names = " and ".join(Path(p).name for p in packages)
    return (
        f"byte-compiled {names} with {python}"
        if done.returncode == 0
        else f"byte-compiling failed ({done.returncode}): {done.stderr.decode()[-200:]}"
    )


def version_of(peer: Peer) -> str:
    flags = {"foreman": ["version"], "supervisord": ["--version"], "dynod": ["--version"]}
    try:
        done = subprocess.run(
            [peer.binary, *flags.get(peer.name, ["--version"])],
            capture_output=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
        return (done.stdout or done.stderr).decode(errors="replace").strip().splitlines()[0]
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return "?"


# --- running a supervisor, and making sure it is gone afterwards -------------------------------


class BenchTimeout(Exception):
    pass


class Exited(Exception):
    """The supervisor's stdout closed: it exited."""


@dataclass
class Launch:
    proc: subprocess.Popen[bytes]
    directory: Path
    tag: str
    started: float  # time.monotonic() just before the spawn
    _buffer: bytes = b""
    _eof: bool = False

    def read_lines(self, deadline: float) -> Iterator[bytes]:
        """Lines from the supervisor's stdout pipe as they arrive, until `deadline` (monotonic)."""
        fd = self.proc.stdout.fileno()  # type: ignore[union-attr]
        while True:
            nl = self._buffer.find(b"\n")
            if nl >= 0:
                line, self._buffer = self._buffer[:nl], self._buffer[nl + 1 :]
                yield line
                continue
            if self._eof:
                raise Exited()
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchTimeout()
            if select.select([fd], [], [], left)[0]:
                chunk = os.read(fd, 1 << 16)
                self._eof = not chunk
                self._buffer += chunk

    def drain(self, seconds: float) -> None:
        """Keep reading (and dropping) output for a while, so the supervisor never blocks on us."""
        with contextlib.suppress(BenchTimeout):
            for _ in self.read_lines(time.monotonic() + seconds):
                pass


@contextlib.contextmanager
def launched(
    peer: Peer, work: Workload, directory: Path, stdout: int | IO[bytes] = subprocess.PIPE
) -> Iterator[Launch]:
    """Start `peer` on `work` in a fresh `directory`, in its own session; always stop it after."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    config = peer.write_config(directory, work)
    tag = os.urandom(16).hex()  # not uuid: it imports `platform`, which bench/platform.py shadows
    env = dict(os.environ, **{TAG_VAR: tag})
    with open(directory / "stderr.txt", "wb") as stderr:
        started = time.monotonic()
        proc = subprocess.Popen(
            peer.command(config, work),
            cwd=directory,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
        try:
            yield Launch(proc, directory, tag, started)
        finally:
            stop(proc, tag)
            if proc.stdout:
                proc.stdout.close()


def stop(proc: subprocess.Popen[bytes], tag: str) -> None:
    """SIGTERM the supervisor's group; after 10 s, SIGKILL the group and every tagged process."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    for _ in range(50):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        left = tagged(tag)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if not left and proc.poll() is not None:
            return
        time.sleep(0.1)
    print(
        f"  warning: processes tagged {tag} survived SIGKILL: {sorted(tagged(tag))}",
        file=sys.stderr,
    )


def tagged(tag: str) -> set[int]:
    """Living processes whose environment carries this run's tag (children inherit it)."""
    needle = f"{TAG_VAR}={tag}".encode()
    found = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if needle in Path(entry.path, "environ").read_bytes():
                    found.add(int(entry.name))
    found.discard(os.getpid())
    return {pid for pid in found if not is_zombie(pid)}


def is_zombie(pid: int) -> bool:
    try:
        return proc_stat(pid)[0] == "Z"
    except OSError:
        return True


def proc_stat(pid: int) -> list[str]:
    """/proc/PID/stat after the command name: [state, ppid, …, utime (11), stime (12), …]."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def supervisor_processes(root: int) -> list[int]:
    """The supervisor and its helper processes: its process tree without the children's part.

    Every workload command starts by exporting CHILD_MARK, so a child (and all it starts) is
    told apart by its environment, whatever it runs; what is left is the tool's own (honcho's
    relay per child, dynod's reaper).
    """
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError):
                children.setdefault(int(proc_stat(int(entry.name))[1]), []).append(int(entry.name))
    mark = CHILD_MARK.encode() + b"\0"
    found, todo = [root], [root]
    while todo:
        for pid in children.get(todo.pop(), []):
            with contextlib.suppress(OSError):
                if mark not in Path(f"/proc/{pid}/environ").read_bytes():
                    found.append(pid)
                    todo.append(pid)
    return found


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = proc_stat(pid)
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def bytes_written(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for row in Path(f"/proc/{pid}/io").read_text().splitlines():
                if row.startswith("wchar:"):
                    total += int(row.split()[1])
    return total


# --- results and tables ------------------------------------------------------------------------


@dataclass
class Figure:
    value: float | None  # None when the tool has no figure; `note` says why
    note: str = ""
    extra: dict[str, str] = field(default_factory=dict)


def factor(dynod: Figure | None, peer: Figure, lower_is_better: bool) -> str:
    if dynod is None or not dynod.value or not peer.value:
        return ""  # no figure, or a zero (below the measure's resolution): no ratio
    ratio = peer.value / dynod.value if lower_is_better else dynod.value / peer.value
    return f"{ratio:.2f}x"


def print_table(
    title: str,
    unit: str,
    figures: dict[str, Figure],
    lower_is_better: bool,
    fmt: str,
    target: Callable[[dict[str, Figure]], str] | None = None,
) -> None:
    """One row per tool: its figure, dynod's factor against it, the extra columns, a note."""
    dynod = figures.get("dynod")
    extras = list(dict.fromkeys(k for f in figures.values() for k in f.extra))
    header = ["tool", unit, "dynod vs it", *extras]
    rows = [
        [
            name,
            fmt.format(fig.value) if fig.value is not None else "-",
            "" if name == "dynod" else factor(dynod, fig, lower_is_better),
            *(fig.extra.get(k, "") for k in extras),
        ]
        for name, fig in figures.items()
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str], note: str = "") -> str:
        text = cells[0].ljust(widths[0]) + "".join(
            "  " + cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True)
        )
        return ("  " + text + ("  " + note if note else "")).rstrip()

    print(f"\n{title}")
    print(line(header))
    for row, fig in zip(rows, figures.values(), strict=True):
        print(line(row, fig.note))
    print("  (dynod vs it: >1 means dynod is better)")
    if target:
        print("  target: " + target(figures))
    sys.stdout.flush()


def verdict(
    figures: dict[str, Figure], goal: float | None, what: str, lower_is_better: bool, fmt: str
) -> str:
    dynod = figures.get("dynod")
    if goal is None:
        return f"{what}: no reference figure in this run"
    if dynod is None or dynod.value is None:
        return f"{what} ({fmt.format(goal)}): dynod not measured"
    met = dynod.value <= goal if lower_is_better else dynod.value >= goal
    return f"{what} ({fmt.format(goal)}): dynod {fmt.format(dynod.value)}, " + (
        "met" if met else "missed"
    )


# --- (a) launch to the Nth ready line ----------------------------------------------------------


def wait_ready(run: Launch, peer: Peer, n: int, deadline: float) -> int:
    """Read until n "ready"s have appeared; returns how many lines held one but were not just it.

    A supervisor that merges or splits lines (supervisord does, with many children starting at
    once) still gets a launch time: the "ready"s are counted wherever they fall, and the damaged
    lines are reported beside it.
    """
    ready = damaged = 0
    for line in run.read_lines(deadline):
        text = peer.text(line)
        if text is None:
            continue
        if text.strip() != b"ready" and (b"ready" in text or not text.strip()):
            damaged += 1
        ready += text.count(b"ready")
        if ready >= n:
            return damaged
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class LaunchRun:
    seconds: float  # from the spawn of the supervisor to the nth "ready"
    cpu: float  # CPU seconds the supervisor's own processes used meanwhile
    damaged: int  # lines that held a "ready" but were not just it


def launch_time(peer: Peer, n: int, child: str, directory: Path) -> LaunchRun:
    with launched(peer, sleepers(n, child), directory) as run:
        damaged = wait_ready(run, peer, n, time.monotonic() + 60)
        seconds = time.monotonic() - run.started
        return LaunchRun(seconds, cpu_seconds(supervisor_processes(run.proc.pid)), damaged)


def measure_launch(tools: list[Peer], opts: argparse.Namespace) -> None:
    for child in ("sh", "python3"):
        # Round by round, each tool once per round: a machine that slows down or speeds up
        # meanwhile (a shared VM does) weighs on every tool alike.
        runs: dict[str, list[LaunchRun]] = {peer.name: [] for peer in tools}
        notes: dict[str, str] = {}
        for i in range(opts.launch_repeat):
            for peer in tools:
                if peer.name in notes:
                    continue
                time.sleep(0.5)  # the last run's hundred processes are gone; let the kernel settle
                try:
                    runs[peer.name].append(launch_time(peer, opts.n, child, WORK / "a" / peer.name))
                except BenchTimeout:
                    notes[peer.name] = f"timed out (run {i + 1}; see {WORK / 'a' / peer.name})"
                except Exited:
                    notes[peer.name] = f"exited early (see {WORK / 'a' / peer.name}/stderr.txt)"
        figures = {}
        for peer in tools:
            done, note = runs[peer.name], notes.get(peer.name, "")
            figures[peer.name] = Figure(
                statistics.median(r.seconds for r in done) if done and not note else None,
                note,
                {
                    "runs": " ".join(f"{r.seconds:.2f}" for r in done),
                    "cpu s": f"{statistics.median(r.cpu for r in done):.2f}" if done else "",
                    "torn": str(sum(r.damaged for r in done)),
                },
            )
        reference = "node-foreman" if child == "sh" else "honcho"
        goal = figures.get(reference, Figure(None)).value
        print_table(
            f'(a) launch to the {opts.n}th "ready" line, {opts.n} {child} children '
            f"(median of {opts.launch_repeat})",
            "seconds",
            figures,
            True,
            "{:.3f}",
            lambda f, goal=goal, reference=reference: verdict(
                f, goal, f"at most {reference}'s time", True, "{:.3f} s"
            ),
        )


# --- (b) log throughput ------------------------------------------------------------------------


def lines_file(child: int, count: int) -> Path:
    """A file of `count` numbered lines for child `child`, made once and kept in bench/.work."""
    path = WORK / "lines" / f"L{child}-{count}.txt"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".part")
        with open(partial, "wb") as out:
            for start in range(0, count, 100_000):
                out.write(
                    b"".join(
                        b"L%d-%d-%s\n" % (child, seq, PAYLOAD)
                        for seq in range(start, min(count, start + 100_000))
                    )
                )
        partial.rename(path)
    return path


@dataclass
class Check:
    intact: int = 0
    lost: int = 0
    torn: int = 0
    dup: int = 0
    examples: list[bytes] = field(default_factory=list)


def check_output(peer: Peer, output: Path, counts: list[int]) -> Check:
    """Every expected line must appear exactly once, intact, after stripping the tool's prefix."""
    seen = [bytearray(n) for n in counts]
    result = Check()
    data = output.read_bytes()
    for line in data.split(b"\n")[:-1] if data.endswith(b"\n") else data.split(b"\n"):
        text = peer.text(line)
        if text is None:
            continue
        m = RECORD.fullmatch(text)
        child, seq = (int(m[1]), int(m[2])) if m else (-1, -1)
        if 0 <= child < len(seen) and seq < len(seen[child]):
            if seen[child][seq]:
                result.dup += 1
            else:
                seen[child][seq] = 1
                result.intact += 1
        elif text.strip():
            result.torn += 1
            if len(result.examples) < 3:
                result.examples.append(line[:100])
    result.lost = sum(counts) - result.intact
    return result


QUIET_S = 1.0  # a run is over once every child has finished and the output has not moved this long
SLACK = 16 << 10  # bytes: the tool's own late messages (supervisord logs RUNNING after 1 s)


def timed_log_run(
    peer: Peer, files: list[Path], directory: Path, to_file: bool, deadline_s: float
) -> tuple[float, Path]:
    """One run; returns (seconds from the first child's start to the end of output, its path).

    Output is followed by polling every 10 ms: the file's size, or for /dev/null the bytes the
    supervisor's processes have written (wchar). The end is the first poll that saw all but
    SLACK bytes of the final amount, so a late message of the tool's own does not count.
    """
    marks = directory / "marks"
    output = directory / "stdout.txt"
    shutil.rmtree(directory, ignore_errors=True)
    marks.mkdir(parents=True)
    with (
        open(output if to_file else os.devnull, "wb") as sink,
        launched(peer, loggers(files, marks), directory / "run", stdout=sink) as run,
    ):
        deadline = time.monotonic() + deadline_s

        def done(mark: str) -> bool:
            return all((marks / f"{mark}.{i}").exists() for i in range(len(files)))

        while not done("t0"):
            wait_step(run, deadline)
        own = supervisor_processes(run.proc.pid)

        def progress() -> int:
            return output.stat().st_size if to_file else bytes_written(own)

        samples = [(time.time(), progress())]
        while not (done("t1") and time.time() - samples[-1][0] >= QUIET_S):
            wait_step(run, deadline)
            now = progress()
            if now != samples[-1][1]:
                samples.append((time.time(), now))
        end = next(t for t, written in samples if written >= samples[-1][1] - SLACK)
        first = min(int((marks / f"t0.{i}").read_text()) for i in range(len(files))) / 1e9
        return end - first, output


def wait_step(run: Launch, deadline: float) -> None:
    if time.monotonic() > deadline:
        raise BenchTimeout()
    if run.proc.poll() is not None:
        raise Exited()
    time.sleep(0.01)


def measure_logs(tools: list[Peer], opts: argparse.Namespace) -> None:
    for children, per_child in ((1, opts.lines), (4, opts.lines // 4)):
        files = [lines_file(i, per_child) for i in range(children)]
        total = children * per_child
        figures = {}
        for peer in tools:
            directory = WORK / "b" / f"{peer.name}-{children}"
            try:
                null_s, _ = timed_log_run(peer, files, directory / "null", False, opts.log_deadline)
                file_s, output = timed_log_run(
                    peer, files, directory / "file", True, opts.log_deadline
                )
            except BenchTimeout:
                figures[peer.name] = Figure(None, f"timed out after {opts.log_deadline:.0f} s")
                continue
            except Exited:
                figures[peer.name] = Figure(None, f"exited early (see {directory})")
                continue
            check = check_output(peer, output, [per_child] * children)
            output.unlink()  # tens of MB each; the checked counts are what matter
            examples = " / ".join(repr(e)[2:-1] for e in check.examples[:2])
            figures[peer.name] = Figure(
                total / null_s,
                "; ".join(filter(None, [peer.log_remark, examples and "e.g. " + examples])),
                {
                    "to file": f"{total / file_s / 1000:.0f}k",
                    "lost": str(check.lost),
                    "torn": str(check.torn),
                    "dup": str(check.dup),
                },
            )
        goal_peer = figures.get("node-foreman", Figure(None)).value
        goal = 2 * goal_peer if goal_peer else None

        def target(f: dict[str, Figure], goal: float | None = goal) -> str:
            said = verdict(f, goal, "at least 2x node-foreman", False, "{:,.0f} lines/s")
            d = f.get("dynod")
            if d and d.value is not None:
                clean = all(d.extra.get(k) == "0" for k in ("lost", "torn", "dup"))
                said += "; none lost, torn or duplicated: " + ("yes" if clean else "NO")
                said += f"; moonshot 1M lines/s: {'met' if d.value >= 1e6 else 'missed'}"
            return said

        print_table(
            f"(b) log throughput, {children} x {per_child:,} lines, to /dev/null "
            f"(and to a file, checked)",
            "lines/s",
            figures,
            False,
            "{:,.0f}",
            target,
        )


# --- (c) idle CPU ------------------------------------------------------------------------------


def idle_cpu(peer: Peer, n: int, seconds: float, directory: Path) -> tuple[float, int]:
    """Percent of one core used by the supervisor's own processes while n children sleep."""
    with launched(peer, sleepers(n, "sh"), directory) as run:
        wait_ready(run, peer, n, time.monotonic() + 60)
        run.drain(2.0)  # let start-up settle (supervisord's startsecs is 1 s)
        own = supervisor_processes(run.proc.pid)
        before, t0 = cpu_seconds(own), time.monotonic()
        run.drain(seconds)
        used, elapsed = cpu_seconds(own) - before, time.monotonic() - t0
        if run.proc.poll() is not None:
            raise Exited()
        return 100 * used / elapsed, len(own)


def measure_idle_cpu(tools: list[Peer], opts: argparse.Namespace) -> None:
    figures = {}
    for peer in tools:
        try:
            percent, processes = idle_cpu(peer, opts.n, opts.idle, WORK / "c" / peer.name)
            figures[peer.name] = Figure(percent, "", {"procs": str(processes)})
        except BenchTimeout:
            figures[peer.name] = Figure(None, "timed out waiting for ready lines")
        except Exited:
            figures[peer.name] = Figure(None, "exited early")
    print_table(
        f"(c) supervisor CPU while {opts.n} sh children sleep for {opts.idle:.0f} s",
        "% of a core",
        figures,
        True,
        "{:.2f}",
        lambda f: verdict(f, 1.0, "under 1% of a core", True, "{:.2f}%"),
    )


# --- (d) restart after kill -9 -----------------------------------------------------------------


READY_PID = re.compile(rb"\s*ready (\d+)\s*")


def restart_time(peer: Peer, directory: Path) -> float | str:
    """Seconds from kill -9 of the child to its replacement's first line, or why there is none."""
    with launched(peer, crasher(), directory) as run:
        lines = run.read_lines(time.monotonic() + 30)
        victim = next(
            int(m[1])
            for line in lines
            if (text := peer.text(line)) is not None and (m := READY_PID.fullmatch(text))
        )
        run.drain(1.5)  # past supervisord's startsecs, so the child counts as started
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        try:
            for line in run.read_lines(killed + 10):
                text = peer.text(line)
                m = READY_PID.fullmatch(text) if text is not None else None
                if m and int(m[1]) != victim:
                    return time.monotonic() - killed
        except Exited:
            return "does not restart: it stopped everything"
        except BenchTimeout:
            return "no replacement within 10 s"
    raise AssertionError("unreachable")


def measure_restart(tools: list[Peer], opts: argparse.Namespace) -> None:
    figures = {}
    for peer in tools:
        times, note = [], ""
        for _ in range(opts.repeat):
            try:
                got = restart_time(peer, WORK / "d" / peer.name)
            except (BenchTimeout, StopIteration):
                got = "no first line within 30 s"
            except Exited:
                got = "exited before the kill"
            if isinstance(got, str):
                note = got
                break
            times.append(got * 1000)
        figures[peer.name] = Figure(
            statistics.median(times) if times else None,
            note,
            {"runs": " ".join(f"{t:.0f}" for t in times)},
        )
    print_table(
        f"(d) kill -9 of a child to its replacement's first line (median of {opts.repeat})",
        "ms",
        figures,
        True,
        "{:.1f}",
        lambda f: verdict(f, 50.0, "under 50 ms", True, "{:.1f} ms"),
    )


# --- main --------------------------------------------------------------------------------------


MEASUREMENTS = {"a": measure_launch, "b": measure_logs, "c": measure_idle_cpu, "d": measure_restart}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default="a,b,c,d", help="measurements to run, e.g. a,b")
    parser.add_argument(
        "--peers",
        default=",".join(p.name for p in PEERS),
        help="peers to measure beside dynod, e.g. honcho,foreman",
    )
    parser.add_argument("--quick", action="store_true", help="smaller counts, for a smoke run")
    parser.add_argument(
        "--dynod",
        default=str(REPO / ".venv" / "bin" / "dynod"),
        help="the dynod executable (default: this checkout's .venv)",
    )
    parser.add_argument("--no-install", action="store_true", help="measure only what is present")
    opts = parser.parse_args(argv)
    opts.only = [m.strip() for m in opts.only.split(",") if m.strip()]
    opts.peers = [p.strip() for p in opts.peers.split(",") if p.strip()]
    unknown = [m for m in opts.only if m not in MEASUREMENTS] + [
        p for p in opts.peers if p not in {peer.name for peer in PEERS}
    ]
    if unknown:
        parser.error(f"unknown: {', '.join(unknown)}")
    # counts: children for (a) and (c), lines for (b), seconds for (c), runs for (a) and (d)
    opts.n, opts.lines, opts.idle, opts.repeat = (
        (25, 100_000, 3.0, 1) if opts.quick else (100, 1_000_000, 10.0, 3)
    )
    opts.launch_repeat = 1 if opts.quick else 5
    opts.log_deadline = 300.0
    return opts


def available_tools(opts: argparse.Namespace) -> list[Peer]:
    tools = []
    for peer in (p for p in PEERS if p.name in opts.peers):
        if not peer.present() and peer.install and not opts.no_install:
            print(f"installing {peer.name}:", flush=True)
            try:
                peer.install()
            except (OSError, subprocess.SubprocessError) as err:
                print(f"  could not install {peer.name}: {err}")
        if peer.present():
            tools.append(peer)
        else:
            print(f"skipping {peer.name}: {peer.binary} not found")
    dynod = dynod_peer(opts.dynod)
    why_not = dynod_ready(dynod)
    if why_not:
        print(f"skipping dynod: {why_not}")
    else:
        print(f"dynod: {byte_compile_checkout(opts.dynod)}")
        tools.append(dynod)
    return tools


def main(argv: list[str]) -> int:
    opts = parse_args(argv)
    tools = available_tools(opts)
    print(
        f"\nsupervision bench, {'quick' if opts.quick else 'full'} run: "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start"
    )
    for peer in tools:
        print(f"  {peer.name:<14}{version_of(peer)}")
    for key in opts.only:
        MEASUREMENTS[key](tools, opts)
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end; scratch files in {WORK}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
