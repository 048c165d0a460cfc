#!/usr/bin/env python3
"""Attached one-offs bench: `dyno run true` from request to exit status, and keystroke-to-echo
latency through the rendezvous, beside `ssh 127.0.0.1 true` and an ssh keystroke echo against a
private sshd (the usual way to a remote shell), in the same run.

Run it by hand from the repository root with the virtualenv's Python (it calls `dyno run`'s own
functions for the in-process figure), under the lock the other benches take:

    flock /tmp/dynod-bench.lock .venv/bin/python bench/attach.py [--runs 20] [--keys 300]

It starts its own `dynod serve --data <scratch> --api 127.0.0.1:0 --router 127.0.0.1:0` with an
app whose slug holds only a Procfile, and its own sshd (`/usr/sbin/sshd -D`, Debian's
openssh-server) on a free loopback port with a throwaway host key and authorized key, no PAM;
both stop at the end and the scratch directory is deleted, Ctrl-C included.

What each figure means (medians; CPU seconds beside wall time, client + server):
(a) start to exit: `dyno run -a APP true` (stdin /dev/null, so no terminal: pipes) as a command,
    Python's start-up included; the same from the API request to the exit status, in this
    process (`shell.attach`: POST, TLS claim, relay); and `ssh -p PORT 127.0.0.1 true` (a fresh
    connection each time: key exchange, public-key authentication, a session). Server CPU is
    the server's process tree (dynod serve, its reaper and dynos; sshd and its session
    processes), reaped children included. --runs of each, interleaved.
(b) keystroke to echo: `dyno run -a APP CMD` and `ssh -tt -p PORT 127.0.0.1 CMD` on a
    pseudo-terminal of the bench, CMD = `stty -icanon echo; cat >/dev/null`: one byte typed, timed
    until the remote terminal's echo of it is read back; --keys keystrokes one after the other
    in each of 3 sessions per side, sessions interleaved. CPU per keystroke: the client process
    and the server's process tree over the keystrokes.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VENV = REPO / ".venv" / "bin"
TICKS = os.sysconf("SC_CLK_TCK")
APP = "bench-attach"
ECHO_COMMAND = "stty -icanon echo; cat >/dev/null"

sys.path.insert(0, str(REPO))


def say(text: str = "") -> None:
    print(text, flush=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out waiting for {what}")
        time.sleep(0.05)


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and every live descendant, reaped children included."""
    total, stack, seen = 0, [pid], set()
    while stack:
        here = stack.pop()
        if here in seen:
            continue
        seen.add(here)
        try:
            with open(f"/proc/{here}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in fields[11:15])
            with open(f"/proc/{here}/task/{here}/children") as f:
                stack.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return total / TICKS


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@contextlib.contextmanager
def dynod(work: Path) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, str]]]:
    data = work / "data"
    log = (work / "serve.log").open("wb")
    argv = [str(VENV / "python"), "-m", "dynod.cli", "serve", "--data", str(data)]
    argv += ["--api", "127.0.0.1:0", "--router", "127.0.0.1:0"]
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DYNOD_", "DYNO_"))}
    env.update(DYNOD_DATA=str(data), DYNO_APP=APP, TERM="xterm")
    try:
        wait_for(lambda: (data / "api-url").exists(), 60, "dynod serve")
        app = work / "app"
        app.mkdir()
        (app / "Procfile").write_text("idle: sleep 1\n")
        for args in (["apps:create", APP], ["deploy", str(app)]):
            subprocess.run([str(VENV / "dyno"), *args], env=env, check=True, capture_output=True)
        yield process, env
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@contextlib.contextmanager
def sshd(work: Path) -> Iterator[tuple[subprocess.Popen[bytes], list[str]]]:
    keys = work / "ssh"
    keys.mkdir()
    for name in ("host", "user"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / name)], check=True
        )
    shutil.copy(keys / "user.pub", keys / "authorized_keys")
    port = free_port()
    config = keys / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {keys / 'host'}\n"
        f"AuthorizedKeysFile {keys / 'authorized_keys'}\nPidFile none\nStrictModes no\n"
        "UsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PubkeyAuthentication yes\nPermitRootLogin yes\nUseDNS no\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # its privilege separation directory
    argv = ["/usr/sbin/sshd", "-D", "-f", str(config), "-E", str(keys / "log")]
    process = subprocess.Popen(argv, start_new_session=True)
    client = ["ssh", "-i", str(keys / "user"), "-p", str(port), "-o", "BatchMode=yes"]
    client += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
    client += ["-o", "LogLevel=ERROR"]
    try:

        def accepting() -> bool:
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", port)) == 0

        wait_for(accepting, 20, "sshd")
        yield process, client
    finally:
        process.terminate()
        process.wait(20)


def timed_command(argv: list[str], env: dict[str, str] | None, server: int) -> tuple[float, ...]:
    before = (time.perf_counter(), children_cpu(), tree_cpu(server))
    done = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True)
    after = (time.perf_counter(), children_cpu(), tree_cpu(server))
    if done.returncode != 0:
        raise SystemExit(f"bench: {' '.join(argv)} failed: {done.stderr.decode()}")
    return tuple(b - a for a, b in zip(before, after, strict=True))


def in_process(env: dict[str, str], server: int) -> tuple[float, ...]:
    """`dyno run true`'s own steps, from the API request to the exit status."""
    from shell.api import Api, data_dir
    from shell.attach import CA_FILE, claim, relay

    api = Api.from_env(env)
    ca = data_dir(env) / CA_FILE
    body = {"attach": True, "command": "true", "env": {}, "force_no_tty": True}
    before = (time.perf_counter(), self_cpu(), tree_cpu(server))
    dyno = api.post(f"/apps/{APP}/dynos", body)
    with claim(dyno["attach_url"], ca) as (sock, early):
        status = relay(sock, early, False)
    after = (time.perf_counter(), self_cpu(), tree_cpu(server))
    assert status == 0, status
    return tuple(b - a for a, b in zip(before, after, strict=True))


def keystrokes(
    argv: list[str], env: dict[str, str], server: int, keys: int
) -> tuple[list[float], float, float]:
    """Per-keystroke echo latencies, and the client's and server's CPU over them."""
    master, slave = os.openpty()
    quiet = termios.tcgetattr(slave)
    quiet[3] &= ~termios.ECHO  # only the remote terminal echoes, even before the client is up
    termios.tcsetattr(slave, termios.TCSANOW, quiet)
    process = subprocess.Popen(
        argv,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        start_new_session=True,
        preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
    )
    os.close(slave)

    def echoed(byte: bytes, timeout: float) -> bool:
        deadline = time.perf_counter() + timeout
        while (left := deadline - time.perf_counter()) > 0:
            try:
                if select.select([master], [], [], left)[0] and byte in os.read(master, 4096):
                    return True
            except OSError:  # EIO: the client has gone
                raise SystemExit(f"bench: {' '.join(argv)} ended: {process.wait()}") from None
        return False

    try:
        for _ in range(200):  # until the remote terminal is there and non-canonical
            os.write(master, b"!")
            if echoed(b"!", 0.1):
                break
        else:
            raise SystemExit(f"bench: {' '.join(argv)} never echoed")
        time.sleep(0.2)
        with contextlib.suppress(BlockingIOError):
            while select.select([master], [], [], 0)[0]:
                os.read(master, 4096)
        latencies = []
        cpu = (tree_cpu(process.pid), tree_cpu(server))
        for i in range(keys):
            byte = bytes([97 + i % 26])
            start = time.perf_counter()
            os.write(master, byte)
            if not echoed(byte, 5):
                raise SystemExit("bench: a keystroke never came back")
            latencies.append(time.perf_counter() - start)
        client_cpu = tree_cpu(process.pid) - cpu[0]
        server_cpu = tree_cpu(server) - cpu[1]
        os.write(master, b"\x03")  # Ctrl-C ends the remote cat, and the session
        process.wait(20)
        return latencies, client_cpu, server_cpu
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--keys", type=int, default=300)
    options = parser.parse_args()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # `relay` in this process reads stdin: nothing
    work = Path(tempfile.mkdtemp(prefix="dynod-bench-attach-"))
    load = os.getloadavg()[0]
    try:
        with dynod(work) as (served, env), sshd(work) as (daemon, ssh):
            when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            say(f"attach bench, {when}, load {load:.1f}")
            whole, request, remote = [], [], []
            for _ in range(options.runs):
                whole.append(timed_command([str(VENV / "dyno"), "run", "true"], env, served.pid))
                request.append(in_process(env, served.pid))
                remote.append(timed_command([*ssh, "127.0.0.1", "true"], None, daemon.pid))
            say(f"(a) start to exit status, median of {options.runs} (CPU: client + server)")
            rows = [
                ("dyno run true (command)", whole),
                ("dyno run true (request to status)", request),
                ("ssh 127.0.0.1 true", remote),
            ]
            for name, figures in rows:
                wall, client, server = (statistics.median(f[i] for f in figures) for i in range(3))
                say(f"  {name:36} {ms(wall):>9}  [{ms(client)} + {ms(server)}]")
            ssh_wall = statistics.median(f[0] for f in remote)
            say(
                f"  ratio to ssh: command {statistics.median(f[0] for f in whole) / ssh_wall:.2f}x,"
                f" request {statistics.median(f[0] for f in request) / ssh_wall:.2f}x"
            )
            sides = {
                "dyno run (rendezvous)": (
                    [str(VENV / "dyno"), "run", ECHO_COMMAND],
                    env,
                    served.pid,
                ),
                "ssh -tt (sshd)": (
                    [*ssh, "-tt", "127.0.0.1", ECHO_COMMAND],
                    dict(os.environ),
                    daemon.pid,
                ),
            }
            found: dict[str, tuple[list[float], float, float]] = {k: ([], 0.0, 0.0) for k in sides}
            for _ in range(3):
                for name, (argv, side_env, server) in sides.items():
                    lat, client, server_cpu = keystrokes(argv, side_env, server, options.keys)
                    had = found[name]
                    found[name] = (had[0] + lat, had[1] + client, had[2] + server_cpu)
            keys = 3 * options.keys
            say(f"(b) keystroke to echo, {keys} keys per side (CPU per key: client + server)")
            for name, (lat, client, server_cpu) in found.items():
                per = len(lat)
                p90 = statistics.quantiles(lat, n=10)[-1]
                say(
                    f"  {name:36} {ms(statistics.median(lat)):>9}  (p90 {ms(p90)})"
                    f"  [{client / per * 1e6:.0f} us + {server_cpu / per * 1e6:.0f} us]"
                )
            dyno_key = statistics.median(found["dyno run (rendezvous)"][0])
            ssh_key = statistics.median(found["ssh -tt (sshd)"][0])
            say(f"  ratio to ssh: {dyno_key / ssh_key:.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
