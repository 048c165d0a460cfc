#!/usr/bin/env python3
"""Add-on bench: how long provisioning takes, and whether Redis run as an add-on costs
throughput, each against the same work done by hand in the same run.

Run it by hand, under the lock the other benches take (the machine is shared):

    flock /tmp/dynod-bench.lock .venv/bin/python bench/addons.py [--rounds 3] [--requests 100000]

It starts this repository's `.venv/bin/dynod serve` on a scratch data directory with random
ports on 127.0.0.1 and creates one app. Then, --rounds times each, alternating:

- provisioning: `POST /apps/A/addons` for heroku-redis and heroku-postgresql, timed until the
  answer (the server made, started and answering, the Attach release made), then destroyed;
  against the same by hand: a config file and `redis-server` until `PING` answers; `initdb`,
  `CREATE DATABASE` in single-user mode and `postgres` until it accepts connections;
- throughput: `redis-benchmark -q -t set,get` against the add-on's server and against a plain
  `redis-server` started by hand with the same settings (append-only file, `everysec`), one
  after the other.

It prints medians, the ratios (dynod / by hand) and CPU seconds: dynod's own and its waited
children's (initdb) for provisioning, each server's for the throughput runs (utime + stime from
/proc). Everything it started is stopped and the scratch directory deleted, whatever happened.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")
PG_BIN = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1:] or [Path("/usr/bin")]


def cpu_seconds(pid: int, children: bool = False) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own = int(fields[11]) + int(fields[12])  # utime, stime
    waited = int(fields[13]) + int(fields[14]) if children else 0  # cutime, cstime
    return (own + waited) / TICKS


def wait_for(check: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: gave up waiting after {timeout:g} s")
        time.sleep(0.01)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def redis_answers(port: int, password: str) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
            conn.sendall(f"AUTH {password}\r\nPING\r\n".encode())
            data = b""
            while data.count(b"\r\n") < 2 and (chunk := conn.recv(100)):
                data += chunk
            return data.endswith(b"+PONG\r\n")
    except OSError:
        return False


def pg_answers(port: int) -> bool:
    done = subprocess.run(
        [str(PG_BIN[0] / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)], check=False
    )
    return done.returncode == 0


class Dynod:
    def __init__(self, home: Path) -> None:
        self.data = home / "data"
        self.data.mkdir(mode=0o700)
        self.log = (home / "serve.log").open("wb")
        self.process = subprocess.Popen(
            [str(REPO / ".venv/bin/dynod"), "serve", "--data", str(self.data)]
            + ["--api", "127.0.0.1:0", "--router", "127.0.0.1:0"],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(lambda: (self.data / "api-url").exists() or self.process.poll() is not None)
        if self.process.poll() is not None:
            raise SystemExit(f"bench: dynod serve exited; see {home / 'serve.log'}")
        self.url = (self.data / "api-url").read_text().strip()
        self.token = (self.data / "api-token").read_text().strip()

    def call(self, method: str, path: str, body: Any = None) -> Any:
        request = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


def provision_by_dynod(dynod: Dynod, service: str) -> tuple[float, float, Any]:
    cpu = cpu_seconds(dynod.process.pid, children=True)
    started = time.perf_counter()
    addon = dynod.call("POST", "/apps/bench-addons/addons", {"plan": service})
    wall = time.perf_counter() - started
    return wall, cpu_seconds(dynod.process.pid, children=True) - cpu, addon


def redis_by_hand(directory: Path) -> tuple[subprocess.Popen[bytes], int, str]:
    port, password = free_port(), "benchpassword"
    directory.mkdir()
    (directory / "redis.conf").write_text(
        f"bind 127.0.0.1\nport {port}\nrequirepass {password}\ndir ./\nappendonly yes\n"
        'appendfsync everysec\nsave 3600 1 300 100 60 10000\ndaemonize no\nlogfile ""\n'
    )
    server = subprocess.Popen(
        ["redis-server", "./redis.conf"], cwd=directory, stdout=subprocess.DEVNULL
    )
    wait_for(lambda: redis_answers(port, password))
    return server, port, password


def postgres_by_hand(directory: Path) -> subprocess.Popen[bytes]:
    """As dynod does it, run as `nobody` when root (PostgreSQL refuses root)."""
    directory.mkdir()
    user: dict[str, Any] = {"user": "nobody", "group": "nogroup"} if os.geteuid() == 0 else {}
    if user:
        directory.chmod(0o755)
        shutil.chown(directory, "nobody", "nogroup")
    (directory / "pw").write_text("benchpassword\n")
    if user:
        shutil.chown(directory / "pw", "nobody", "nogroup")
    initdb = [str(PG_BIN[0] / "initdb"), "-D", str(directory / "pgdata"), "-U", "bench"]
    initdb += [f"--pwfile={directory / 'pw'}", "--auth=scram-sha-256", "--locale=C", "-E", "UTF8"]
    subprocess.run(initdb, check=True, stdout=subprocess.DEVNULL, cwd=directory, **user)
    single = [str(PG_BIN[0] / "postgres"), "--single", "-D", str(directory / "pgdata"), "postgres"]
    subprocess.run(
        single,
        input=b"CREATE DATABASE bench;\n",
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        **user,
    )
    port = free_port()
    server = subprocess.Popen(
        [str(PG_BIN[0] / "postgres"), "-D", str(directory / "pgdata"), "-p", str(port)]
        + ["-k", str(directory), "-c", "listen_addresses=127.0.0.1"],
        cwd=directory,
        stderr=subprocess.DEVNULL,
        **user,
    )
    wait_for(lambda: pg_answers(port))
    return server


def timed(action: Any) -> tuple[float, float, Any]:
    """Wall and CPU seconds (this process's waited children, e.g. initdb) of `action`."""
    before = os.times()
    started = time.perf_counter()
    result = action()
    wall = time.perf_counter() - started
    after = os.times()
    cpu = (after.children_user + after.children_system) - (
        before.children_user + before.children_system
    )
    return wall, cpu, result


def benchmark(port: int, password: str, requests: int) -> dict[str, float]:
    done = subprocess.run(
        ["redis-benchmark", "-q", "-t", "set,get", "-n", str(requests)]
        + ["-h", "127.0.0.1", "-p", str(port), "-a", password],
        capture_output=True,
        text=True,
        check=True,
    )
    rates = {}
    for line in done.stdout.replace("\r", "\n").splitlines():
        found = re.match(r"(SET|GET): ([\d.]+) requests per second", line.strip())
        if found:
            rates[found.group(1)] = float(found.group(2))
    return rates


def redis_pid(port: int, password: str) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(f"AUTH {password}\r\nINFO server\r\n".encode())
        data = b""
        while b"process_id:" not in data or not data.endswith(b"\r\n"):
            data += conn.recv(65536)
    return int(re.search(rb"process_id:(\d+)", data).group(1))  # type: ignore[union-attr]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=100_000)
    options = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="dynod-addons-bench-"))
    home.chmod(0o755)
    dynod: Dynod | None = None
    by_hand: list[subprocess.Popen[bytes]] = []
    rows: dict[str, list[tuple[float, float]]] = {}
    rates: dict[str, list[float]] = {}
    try:
        dynod = Dynod(home)
        dynod.call("POST", "/apps", {"name": "bench-addons"})
        for n in range(options.rounds):
            for service in ("heroku-redis", "heroku-postgresql"):
                wall, cpu, addon = provision_by_dynod(dynod, service)
                rows.setdefault(f"{service} dynod", []).append((wall, cpu))
                dynod.call("DELETE", f"/apps/bench-addons/addons/{addon['id']}")
            wall, cpu, server = timed(lambda n=n: redis_by_hand(home / f"redis-{n}"))
            rows.setdefault("heroku-redis by hand", []).append((wall, cpu))
            server[0].terminate()
            server[0].wait()
            wall, cpu, pg = timed(lambda n=n: postgres_by_hand(home / f"pg-{n}"))
            rows.setdefault("heroku-postgresql by hand", []).append((wall, cpu))
            pg.send_signal(signal.SIGINT)
            pg.wait()

        addon = dynod.call("POST", "/apps/bench-addons/addons", {"plan": "heroku-redis"})
        url = dynod.call("GET", "/apps/bench-addons/config-vars")["REDIS_URL"]
        password, port = url.split("://:", 1)[1].split("@")[0], int(url.rsplit(":", 1)[1])
        plain, plain_port, plain_password = redis_by_hand(home / "redis-plain")
        by_hand.append(plain)
        targets = {
            "add-on": (port, password, redis_pid(port, password)),
            "by hand": (plain_port, plain_password, plain.pid),
        }
        for _ in range(options.rounds):
            for name, (target_port, target_password, pid) in targets.items():
                cpu = cpu_seconds(pid)
                result = benchmark(target_port, target_password, options.requests)
                rates.setdefault(f"{name} cpu", []).append(cpu_seconds(pid) - cpu)
                for kind, rate in result.items():
                    rates.setdefault(f"{name} {kind}", []).append(rate)
    finally:
        for process in by_hand:
            process.terminate()
            process.wait()
        if dynod is not None:
            dynod.stop()
        shutil.rmtree(home, ignore_errors=True)

    load = os.getloadavg()[0]
    print(f"add-on bench: {options.rounds} rounds, load {load:.1f}, {os.cpu_count()} CPUs")
    print("\nprovisioning (median wall s, CPU s)     dynod          by hand        ratio")
    for service in ("heroku-redis", "heroku-postgresql"):
        ours, theirs = rows[f"{service} dynod"], rows[f"{service} by hand"]
        wall = statistics.median(w for w, _ in ours)
        hand = statistics.median(w for w, _ in theirs)
        cpu = statistics.median(c for _, c in ours)
        hand_cpu = statistics.median(c for _, c in theirs)
        print(
            f"  {service:<36} {wall:6.3f} ({cpu:5.2f})  {hand:6.3f} ({hand_cpu:5.2f})  "
            f"{wall / hand:5.2f}"
        )
    print(f"\nredis-benchmark -q -t set,get -n {options.requests} (median requests/s)")
    for kind in ("SET", "GET"):
        ours_rate = statistics.median(rates[f"add-on {kind}"])
        hand_rate = statistics.median(rates[f"by hand {kind}"])
        print(
            f"  {kind}: add-on {ours_rate:>10,.0f}   by hand {hand_rate:>10,.0f}   "
            f"ratio {ours_rate / hand_rate:.3f}"
        )
    print(
        f"  server CPU s per run (median): add-on {statistics.median(rates['add-on cpu']):.2f}, "
        f"by hand {statistics.median(rates['by hand cpu']):.2f}"
    )


if __name__ == "__main__":
    main()
