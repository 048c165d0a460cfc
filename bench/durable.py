#!/usr/bin/env python3
"""Durable-write bench: the router's latency under steady load, quiet and while a burst of
`config:set` runs (each one a release ledger append with its fsync) on another app.

Run it by hand, under the lock the other benches take (the machine is shared):

    flock /tmp/dynod-bench.lock python3 bench/durable.py
    flock /tmp/dynod-bench.lock python3 bench/durable.py --checkout ../dynod-before

(../dynod-before: e.g. `git worktree add ../dynod-before b3b047a`, with its own `.venv`.)

It starts `DIR/.venv/bin/dynod serve` (DIR is --checkout, this repository by default) on a
scratch data directory with random ports on 127.0.0.1, deploys a tiny Procfile app (a
standard-library web.py with keep-alive) as app `bench-a` at web=2 through the build API, creates
`bench-b` with no dynos (so the restarts its releases cause cost nothing). Then two phases of
--seconds each, with the same steady load on bench-a through the router (`wrk` when installed,
else a bounded Python load generator with keep-alive connections): quiet, then while a second
client sends sequential PATCH /apps/bench-b/config-vars as fast as they are answered. It prints
p50/p99 latency and requests/s of both phases side by side, how many config:sets were done (and
their own p50/p99), and the CPU seconds dynod used in each phase (utime + stime from /proc).

Every process it started is stopped (SIGTERM, then SIGKILL after 60 s; dyno process groups left
in dynod's dyno directories are killed) and the scratch directory deleted, whatever happened.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parent.parent
# A standard-library web process with keep-alive and a listen backlog that a burst of the
# router's connections does not overflow (a dropped SYN costs a 1 s retransmit: noise in a p99).
WEB_PY = """\
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Hello(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes

    def do_GET(self):
        body = f"Hello from {os.environ.get('DYNO', 'web')}\\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


class Server(ThreadingHTTPServer):
    request_queue_size = 512
    daemon_threads = True


Server(("0.0.0.0", int(os.environ["PORT"])), Hello).serve_forever()
"""
TICKS = os.sysconf("SC_CLK_TCK")
MAX_CONFIG_SETS = 100_000  # per phase: the burst is bounded even on a very fast disk
T = TypeVar("T")


class BenchError(Exception):
    pass


def wait_for(check: Callable[[], T], timeout: float, what: str, every: float = 0.1) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Served:
    """`dynod serve` from a checkout, on a scratch data directory, driven through its API."""

    def __init__(self, checkout: Path, home: Path) -> None:
        self.dynod = checkout / ".venv" / "bin" / "dynod"
        self.home = home
        self.data = home / "data"
        self.log = home / "serve.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.url = self.token = ""

    def start(self) -> None:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("DYNOD_API_URL", "DYNOD_API_TOKEN", "DYNO_APP")
        }
        env["DYNOD_DATA"] = str(self.data)
        argv = [str(self.dynod), "serve", "--data", str(self.data)]
        argv += ["--api", "127.0.0.1:0", "--router", "127.0.0.1:0"]
        with self.log.open("ab") as log:
            process = self.process = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        wait_for(
            lambda: (self.data / "api-url").exists() or process.poll() is not None,
            60,
            "dynod serve to write api-url",
            every=0.05,
        )
        if process.poll() is not None:
            raise BenchError(f"dynod serve exited {process.returncode}: {self.tail()}")
        self.url = (self.data / "api-url").read_text().strip()
        self.token = (self.data / "api-token").read_text().strip()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-800:] if self.log.exists() else ""

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        process = self.process
        if process is None:
            return
        scratch = Path(tempfile.gettempdir()) / f"dynod-dynos-{process.pid}"
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        prefix = f"{scratch}/"
        for entry in os.listdir("/proc"):
            try:
                if entry.isdigit() and os.readlink(f"/proc/{entry}/cwd").startswith(prefix):
                    os.killpg(os.getpgid(int(entry)), signal.SIGKILL)
            except OSError:
                continue
        shutil.rmtree(scratch, ignore_errors=True)

    def api(self, method: str, path: str, body: Any = None, timeout: float = 60.0) -> Any:
        headers = {
            "Authorization": f"Bearer {self.token}",
            "Accept": "application/vnd.heroku+json; version=3",
        }
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as err:
            raise BenchError(f"{method} {path}: HTTP {err.code} {err.read()[:300]!r}") from None
        return json.loads(raw) if raw else None


def deploy(served: Served, source: Path) -> tuple[str, int]:
    """bench-a built from `source` and scaled to web=2, bench-b created empty; (Host, port)."""
    app = served.api("POST", "/apps", {"name": "bench-a"})
    served.api("POST", "/apps", {"name": "bench-b"})
    build = served.api("POST", "/apps/bench-a/builds", {"source_blob": {"url": str(source)}})
    done = wait_for(
        lambda: served.api("GET", f"/apps/bench-a/builds/{build['id']}")["status"] != "pending",
        300,
        "the build of bench-a",
        every=0.2,
    )
    status = served.api("GET", f"/apps/bench-a/builds/{build['id']}")["status"]
    if not done or status != "succeeded":
        raise BenchError(f"the build of bench-a {status}: {served.tail()}")
    served.api("PATCH", "/apps/bench-a/formation", {"updates": [{"type": "web", "quantity": 2}]})

    def two_up() -> bool:
        dynos = served.api("GET", "/apps/bench-a/dynos")
        return sum(1 for d in dynos if d["type"] == "web" and d["state"] == "up") == 2

    wait_for(two_up, 120, "bench-a's two web dynos")
    web_url = str(app["web_url"]).rstrip("/")
    host_port = web_url.split("://", 1)[1]
    return host_port, int(host_port.rsplit(":", 1)[1])


# --- load against the router ----------------------------------------------------------------------


def load_wrk(port: int, host: str, seconds: float, connections: int) -> dict[str, float]:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s", "--latency"]
    argv += ["-H", f"Host: {host}", f"http://127.0.0.1:{port}/"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60).stdout

    def latency(label: str) -> float:
        found = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if found is None:
            raise BenchError(f"wrk printed no {label} latency:\n{out}")
        scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[found.group(2)]
        return float(found.group(1)) * scale

    rate = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if rate is None:
        raise BenchError(f"wrk printed no rate:\n{out}")
    return {
        "p50": latency("50%"),
        "p99": latency("99%"),
        "rate": float(rate.group(1)),
        "errors": float(errors.group(1)) if errors else 0.0,
    }


def load_python(port: int, host: str, seconds: float, connections: int) -> dict[str, float]:
    """Keep-alive GETs from `connections` threads for `seconds`: a bounded stand-in for wrk."""
    times: list[list[float]] = [[] for _ in range(connections)]
    errors = [0]
    end = time.monotonic() + seconds

    def client(mine: list[float]) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while time.monotonic() < end:
            start = time.monotonic()
            try:
                connection.request("GET", "/", headers={"Host": host})
                response = connection.getresponse()
                response.read()
                if response.status != 200:
                    errors[0] += 1
            except (OSError, http.client.HTTPException):
                errors[0] += 1
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                continue
            mine.append((time.monotonic() - start) * 1000)
        connection.close()

    threads = [threading.Thread(target=client, args=(mine,)) for mine in times]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 30)
    every = [t for mine in times for t in mine]
    return {
        "p50": percentile(every, 0.5),
        "p99": percentile(every, 0.99),
        "rate": len(every) / seconds,
        "errors": float(errors[0]),
    }


def config_burst(served: Served, stop: threading.Event, done: list[float]) -> None:
    """Sequential config:sets on bench-b until `stop`; each one's seconds go into `done`."""
    connection = http.client.HTTPConnection("127.0.0.1", int(served.url.rsplit(":", 1)[1]))
    headers = {
        "Authorization": f"Bearer {served.token}",
        "Accept": "application/vnd.heroku+json; version=3",
        "Content-Type": "application/json",
    }
    try:
        for n in range(MAX_CONFIG_SETS):
            if stop.is_set():
                return
            body = json.dumps({"BENCH": str(n)})
            start = time.monotonic()
            connection.request("PATCH", "/apps/bench-b/config-vars", body, headers)
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                print(f"config:set answered {response.status}: stopping the burst", flush=True)
                return
            done.append(time.monotonic() - start)
    finally:
        connection.close()


def phase(
    served: Served, port: int, host: str, args: argparse.Namespace, burst: bool
) -> dict[str, float]:
    load = load_wrk if shutil.which("wrk") else load_python
    stop = threading.Event()
    sets: list[float] = []
    burster = threading.Thread(target=config_burst, args=(served, stop, sets), daemon=True)
    cpu = cpu_seconds(served.pid)
    if burst:
        burster.start()
    try:
        result = load(port, host, args.seconds, args.connections)
    finally:
        stop.set()
        if burst:
            burster.join(60)
    result["cpu"] = cpu_seconds(served.pid) - cpu
    result["sets"] = float(len(sets))
    result["set p50"] = percentile(sets, 0.5) * 1000
    result["set p99"] = percentile(sets, 0.99) * 1000
    return result


def report(checkout: Path, quiet: dict[str, float], busy: dict[str, float], tool: str) -> None:
    print(f"\ndurable-write bench: {checkout} (load: {tool}, {len(os.sched_getaffinity(0))} CPUs)")
    rows = [
        ("router p50 (ms)", "p50", "{:.2f}"),
        ("router p99 (ms)", "p99", "{:.2f}"),
        ("router req/s", "rate", "{:.0f}"),
        ("router errors", "errors", "{:.0f}"),
        ("config:sets done", "sets", "{:.0f}"),
        ("config:set p50 (ms)", "set p50", "{:.2f}"),
        ("config:set p99 (ms)", "set p99", "{:.2f}"),
        ("dynod CPU (s)", "cpu", "{:.2f}"),
    ]
    print(f"  {'':22} {'quiet':>10} {'config:set burst':>18}")
    for label, key, form in rows:
        shown = [form.format(v) if v == v else "-" for v in (quiet[key], busy[key])]
        print(f"  {label:22} {shown[0]:>10} {shown[1]:>18}")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--checkout", type=Path, default=REPO, help="whose dynod to run")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each phase")
    parser.add_argument("--connections", type=int, default=8, help="keep-alive connections")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args()
    checkout = args.checkout.resolve()
    if not (checkout / ".venv" / "bin" / "dynod").exists():
        parser.error(f"{checkout}/.venv/bin/dynod is missing")
    if not 1 <= args.seconds <= 600 or not 1 <= args.connections <= 256:
        parser.error("--seconds takes 1-600, --connections 1-256")

    def interrupted(signum: int, frame: Any) -> None:
        for other in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(other, signal.SIG_IGN)  # the clean-up is bounded: let it finish
        raise KeyboardInterrupt

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, interrupted)
    home = Path(tempfile.mkdtemp(prefix="dynod-durable-"))
    served = Served(checkout, home)
    status = 0
    try:
        source = home / "app"
        source.mkdir()
        (source / "Procfile").write_text("web: python3 web.py\n")
        (source / "web.py").write_text(WEB_PY)
        served.start()
        host, port = deploy(served, source)
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        load = load_wrk if shutil.which("wrk") else load_python
        load(port, host, 2, args.connections)  # warm-up, not counted
        quiet = phase(served, port, host, args, burst=False)
        busy = phase(served, port, host, args, burst=True)
        report(checkout, quiet, busy, "wrk" if shutil.which("wrk") else "python")
    except BenchError as err:
        print(f"bench failed: {err}", file=sys.stderr)
        status = 1
    except KeyboardInterrupt:
        print("interrupted: stopping dynod, deleting the scratch directory", file=sys.stderr)
        status = 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        served.stop()
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
