#!/usr/bin/env python3
"""Shell start-up bench: from starting an interactive client on a pseudo-terminal to its first
prompt, for `dyno` (the interactive shell) and for the interactive clients people know, in the
same run, rounds interleaved (each round starts every client once, in turn).

Run it by hand, under the lock the other benches take (the machine is shared):

    flock /tmp/dynod-bench.lock .venv/bin/python bench/shell.py [--runs 15]

What it starts, on a scratch directory with unix sockets and random loopback ports:
- `dynod serve` with one app, `bench`, given a config var (so it has a release to show);
- a throwaway PostgreSQL cluster (`initdb`, run as the `postgres` user when the bench is root),
  for `psql`: its prompt comes once it has connected and authenticated (trust, unix socket);
- `redis-server` on a unix socket, for `redis-cli`: its prompt comes once it has connected.

Measured, wall time and CPU time (user + system of the client and the children it waited for,
read from /proc when the prompt shows; from wait4 for a client that exits by itself):
- `dyno`: (a) the prompt `dyno bench>`, drawn before dynod has answered anything; (b) the
  bottom toolbar filled from the API (`bench: … v2`): connected and showing data, which is when
  psql and redis-cli show their prompt;
- `psql` and `redis-cli`: their prompt, connected (C programs: the floor for this job);
- `python3 -q -i`: the interpreter's own prompt, the floor for any client in Python;
- the Heroku CLI's `heroku apps` against the same dynod, to its exit (when
  /tmp/hcli/node_modules/.bin/heroku or --heroku is there): what a Heroku user waits for, each
  command; it has no interactive shell.
The terminal is answered as a terminal answers (a cursor-position question gets its answer at
once). Medians are printed with the ratio of each to `dyno`'s (a) and (b).

Every process it started is stopped and the scratch directory deleted, whatever happened.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import pwd
import select
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PY = REPO / ".venv" / "bin" / "python"
PG = Path("/usr/lib/postgresql/15/bin")
HEROKU = Path("/tmp/hcli/node_modules/.bin/heroku")
TICK = os.sysconf("SC_CLK_TCK")
CURSOR_QUESTION = b"\x1b[6n"


def _controlling_terminal() -> None:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def cpu_of(pid: int) -> float:
    """User + system seconds of `pid` and the children it has waited for."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / TICK


def start_up(
    argv: Sequence[str], env: dict[str, str], cwd: Path, marks: Sequence[bytes], timeout: float
) -> list[tuple[float, float]]:
    """(wall, CPU) seconds at which each of `marks` first showed on the client's terminal."""
    fd, child = os.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    begun = time.perf_counter()
    process = subprocess.Popen(
        list(argv),
        stdin=child,
        stdout=child,
        stderr=child,
        env=env,
        cwd=cwd,
        start_new_session=True,
        preexec_fn=_controlling_terminal,
    )
    os.close(child)
    seen = b""
    found: list[tuple[float, float]] = []
    try:
        while len(found) < len(marks):
            if time.perf_counter() - begun > timeout:
                raise RuntimeError(f"{argv[0]}: no {marks[len(found)]!r}; it wrote {seen[-500:]!r}")
            if not select.select([fd], [], [], 0.5)[0]:
                continue
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                raise RuntimeError(f"{argv[0]} closed its terminal: {seen[-500:]!r}")
            if CURSOR_QUESTION in chunk:
                os.write(fd, b"\x1b[1;1R")
            seen += chunk
            while len(found) < len(marks) and marks[len(found)] in seen:
                found.append((time.perf_counter() - begun, cpu_of(process.pid)))
        return found
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        os.close(fd)


class Scratch:
    """The servers the clients talk to, stopped and deleted by `close`."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="dynod-shell-bench-"))
        os.chmod(self.dir, 0o755)
        self.stops: list[Callable[[], None]] = []

    def dynod(self) -> dict[str, str]:
        data = self.dir / "data"
        data.mkdir(mode=0o700)
        serve = subprocess.Popen(
            [PY, "-m", "dynod.cli", "serve", "--data", str(data)]
            + ["--api", "127.0.0.1:0", "--router", "127.0.0.1:0"],
            stdout=(self.dir / "serve.log").open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.stops.append(lambda: stop(serve))
        wait_for(lambda: (data / "api-url").exists() and (data / "api-token").exists(), 60)
        home = self.dir / "home"
        home.mkdir()
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(home),
            "TERM": "xterm-256color",
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "DYNOD_DATA": str(data),
        }
        for args in (["apps:create", "bench"], ["config:set", "A=1", "-a", "bench"]):
            subprocess.run(
                [PY, "-m", "shell.cli", *args], env=env, check=True, timeout=60, capture_output=True
            )
        return env

    def postgres(self) -> tuple[list[str], dict[str, str]]:
        data, sockets = self.dir / "pg", self.dir / "pgsock"
        sockets.mkdir()
        data.mkdir(mode=0o700)
        as_user: list[str] = []
        if os.getuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(sockets, user.pw_uid, user.pw_gid)
            os.chown(data, user.pw_uid, user.pw_gid)
            as_user = ["runuser", "-u", "postgres", "--"]
        subprocess.run(
            [*as_user, str(PG / "initdb"), "-A", "trust", "-U", "postgres", "-D", str(data)],
            check=True,
            timeout=120,
            capture_output=True,
        )
        options = f"-k {sockets} -h '' -c fsync=off"
        log = data / "server.log"  # the server's output: not a pipe that this run waits on
        self.stops.append(
            lambda: subprocess.run(
                [*as_user, str(PG / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                timeout=60,
                capture_output=True,
            )
        )
        subprocess.run(
            [*as_user, str(PG / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log)]
            + ["-w", "start"],
            check=True,
            timeout=120,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        argv = ["psql", "-h", str(sockets), "-U", "postgres", "postgres"]
        return argv, {"PATH": os.environ["PATH"], "TERM": "xterm-256color", "HOME": str(self.dir)}

    def redis(self) -> list[str]:
        sock = self.dir / "redis.sock"
        server = subprocess.Popen(
            ["redis-server", "--port", "0", "--unixsocket", str(sock), "--save", ""]
            + ["--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.stops.append(lambda: stop(server))
        wait_for(sock.exists, 30)
        return ["redis-cli", "-s", str(sock)]

    def close(self) -> None:
        for halt in reversed(self.stops):
            try:
                halt()
            except Exception as error:  # stop the others whatever one did
                print(f"bench: stopping: {error}", file=sys.stderr)
        shutil.rmtree(self.dir, ignore_errors=True)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def wait_for(check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError("a server did not come up")
        time.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--heroku", type=Path, default=HEROKU)
    options = parser.parse_args()
    # This machine may set PYTHONDONTWRITEBYTECODE: compile the client as pip compiled its
    # dependencies, so no run pays for compiling it.
    subprocess.run([PY, "-m", "compileall", "-q", str(REPO / "shell")], check=True, timeout=120)
    scratch = Scratch()
    try:
        env = scratch.dynod()
        dyno_env = {**env, "DYNO_APP": "bench"}
        cwd = Path(env["HOME"])
        psql, pg_env = scratch.postgres()
        redis = scratch.redis()
        clients: dict[str, Callable[[], list[tuple[float, float]]]] = {
            "dyno": lambda: start_up(
                [str(PY), "-m", "shell.cli"], dyno_env, cwd, [b"bench", b"v2"], 30
            ),
            "psql": lambda: start_up(psql, pg_env, cwd, [b"postgres=#"], 30),
            "redis-cli": lambda: start_up(redis, pg_env, cwd, [b"redis "], 30),
            "python3 -q -i": lambda: start_up(
                [sys.executable, "-q", "-i"], pg_env, cwd, [b">>> "], 30
            ),
        }
        if options.heroku.exists():
            api_url = (Path(env["DYNOD_DATA"]) / "api-url").read_text().strip()
            heroku_env = {
                **env,
                "HEROKU_HOST": api_url,
                "HEROKU_API_KEY": (Path(env["DYNOD_DATA"]) / "api-token").read_text().strip(),
                "HEROKU_PARTICLEBOARD_URL": api_url,
                "DISABLE_TELEMETRY": "true",
                "HEROKU_SKIP_NEW_VERSION_CHECK": "true",
                "HEROKU_DISABLE_AUTOUPDATE": "true",
            }
            clients["heroku apps"] = lambda: [heroku_apps(options.heroku, heroku_env, cwd)]
        results: dict[str, list[list[tuple[float, float]]]] = {name: [] for name in clients}
        for client in clients.values():  # one unmeasured start each: caches warm
            client()
        for _ in range(options.runs):
            for name, client in clients.items():
                results[name].append(client())
        report(results, options.runs)
    finally:
        scratch.close()
    return 0


def heroku_apps(binary: Path, env: dict[str, str], cwd: Path) -> tuple[float, float]:
    begun = time.perf_counter()
    process = subprocess.Popen(
        [str(binary), "apps"], env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None and process.stderr is not None
    out, err = process.stdout.read(), process.stderr.read()
    _pid, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - begun
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0 or b"bench" not in out:
        raise RuntimeError(f"heroku apps failed: {err.decode()[-500:]}")
    return wall, usage.ru_utime + usage.ru_stime


def report(results: dict[str, list[list[tuple[float, float]]]], runs: int) -> None:
    rows: list[tuple[str, float, float]] = []
    for name, samples in results.items():
        for index in range(len(samples[0])):
            label = name
            if name == "dyno":
                label = ["dyno: prompt (a)", "dyno: toolbar filled (b)"][index]
            wall = statistics.median(s[index][0] for s in samples)
            cpu = statistics.median(s[index][1] for s in samples)
            rows.append((label, wall, cpu))
    a, b = rows[0][1], rows[1][1]
    load = os.getloadavg()[0]
    print(f"shell start-up, medians of {runs} interleaved rounds (load {load:.1f})")
    print(f"{'client':28} {'wall ms':>8} {'CPU ms':>8} {'÷ dyno (a)':>11} {'÷ dyno (b)':>11}")
    for label, wall, cpu in rows:
        print(
            f"{label:28} {wall * 1000:8.1f} {cpu * 1000:8.1f} {wall / a:10.2f}× {wall / b:10.2f}×"
        )


if __name__ == "__main__":
    sys.exit(main())
