#!/usr/bin/env python3
"""Router bench: dynod's router against nginx, HAProxy and node-foreman's proxy, same run.

Run it from the repository root, on a quiet machine (every figure shares the CPUs with wrk and
the backends, so another busy process skews all of them):

    python3 bench/router.py                          # 50 and 200 connections, 10 s each
    python3 bench/router.py --duration 2 --peers direct,dynod      # a smoke run

Two nginx backends answer `200 ok` (one worker each), so the backends stay out of the figure.
wrk (keep-alive, 2 threads) drives each peer for --duration seconds per connection count:
`direct` is wrk against one backend; `nginx` round-robins over both with upstream keep-alive
(one worker); `haproxy` uses roundrobin with connection reuse (one thread); `node-foreman` is
`nf start -x` (its http-proxy); `straightforward` is bench/router/straightforward.py, the trio +
h11 proxy one writes first; `dynod` is `python -m router` from this checkout. Missing peers
are installed first (wrk, nginx, haproxy through apt-get, so as root; foreman from npm into
bench/.peers/node). Scratch files live in bench/.work/router/.

Columns: req/s; p50 and p99 latency from wrk; `ratio` = req/s over the direct figure at the same
connection count; `cpu` = the proxy's CPU (all its processes) as % of one core while wrk ran.
The lines under the table compare dynod with the targets: ≥ 12,000 req/s and p99 < 10 ms at 50
connections, twice the straightforward proxy, ahead of node-foreman, (stretch) ≥ 0.25 of nginx.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import string
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from attrs import frozen

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "bench" / "router"
WORK = ROOT / "bench" / ".work" / "router"
NODE_PREFIX = ROOT / "bench" / ".peers" / "node"
NF = NODE_PREFIX / "node_modules" / ".bin" / "nf"
PYTHON = ROOT / ".venv" / "bin" / "python"
PEERS = ("direct", "nginx", "haproxy", "node-foreman", "straightforward", "dynod")
TICKS = os.sysconf("SC_CLK_TCK")


class PeerFailed(Exception):
    """A peer that did not start; the bench goes on without it."""


@frozen
class Figure:
    peer: str
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    cpu: float | None  # % of one core
    errors: int


def install() -> None:
    missing = [tool for tool in ("wrk", "nginx", "haproxy") if shutil.which(tool) is None]
    if missing:
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", *missing],
            check=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
    if not NF.exists():
        subprocess.run(
            [
                "npm",
                "install",
                "--silent",
                "--no-audit",
                "--no-fund",
                "--prefix",
                str(NODE_PREFIX),
                "foreman",
            ],
            check=True,
        )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def consecutive_free_ports(count: int) -> list[int]:
    """node-foreman's proxy counts its upstream ports up from one base port."""
    while True:
        first = free_port()
        wanted = list(range(first, first + count))
        if all(_free(port) for port in wanted):
            return wanted


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def render(name: str, **values: object) -> Path:
    text = string.Template((CONFIGS / name).read_text()).substitute(work=WORK, **values)
    path = WORK / f"{name}.{values.get('port', '')}"
    path.write_text(text)
    return path


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise PeerFailed(f"{proc.args!r} exited with {proc.returncode} before listening")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise PeerFailed(f"nothing listens on {port} after {timeout} s: {proc.args!r}")


@contextlib.contextmanager
def running(argv: list[str], port: int, **kw: object) -> Iterator[subprocess.Popen[bytes]]:
    """A process group that is stopped with everything it started, whatever happens."""
    log = open(WORK / f"{Path(argv[0]).name}-{port}.log", "wb")
    proc = subprocess.Popen(
        argv,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        **kw,  # type: ignore
    )
    try:
        wait_listening(port, proc)
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def tree(root: int) -> list[int]:
    """`root` and its descendants (nginx's worker, nf's forked proxy)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(peer: str, port: int, connections: int, duration: int, measured: list[int]) -> Figure:
    argv = [
        "wrk",
        "-t2",
        f"-c{connections}",
        f"-d{duration}s",
        "--latency",
        f"http://127.0.0.1:{port}/",
    ]
    subprocess.run([*argv[:3], "-d1s", argv[-1]], check=True, capture_output=True)  # warm the pools
    before = cpu_seconds(measured) if measured else 0.0
    started = time.monotonic()
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    elapsed = time.monotonic() - started
    cpu = 100 * (cpu_seconds(measured) - before) / elapsed if measured else None
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(non2xx.group(1)) if non2xx else 0
    return Figure(peer, connections, rps, p50, p99, cpu, errors)


@contextlib.contextmanager
def peer(name: str, backends: list[int]) -> Iterator[tuple[int, list[int]]]:
    """(port, pids whose CPU is the proxy's) for a running peer."""
    b1, b2 = backends
    if name == "direct":
        yield b1, []
        return
    port = free_port()
    if name == "nginx":
        conf = render("nginx.conf", port=port, backend1=b1, backend2=b2)
        argv = ["nginx", "-p", str(WORK), "-e", "stderr", "-c", str(conf)]
    elif name == "haproxy":
        argv = [
            "haproxy",
            "-db",
            "-f",
            str(render("haproxy.cfg", port=port, backend1=b1, backend2=b2)),
        ]
    elif name == "node-foreman":
        argv = [
            str(NF),
            "start",
            "-j",
            str(CONFIGS / "Procfile"),
            "-p",
            str(b1),
            "-x",
            str(port),
            "web=2",
        ]
    elif name == "straightforward":
        argv = [str(PYTHON), str(CONFIGS / "straightforward.py"), str(port), str(b1), str(b2)]
    else:
        argv = [
            str(PYTHON),
            "-m",
            "router",
            "--listen",
            f"127.0.0.1:{port}",
            "--dyno",
            f"127.0.0.1:{b1}",
            "--dyno",
            f"127.0.0.1:{b2}",
        ]
    with running(argv, port, cwd=str(ROOT)) as proc:
        pids = tree(proc.pid)
        if name == "node-foreman":  # only its proxy, not the `sleep` web processes
            pids = [
                p
                for p in pids
                if "proxy.js" in Path(f"/proc/{p}/cmdline").read_text(errors="replace")
            ]
        yield port, pids


def table(figures: list[Figure]) -> str:
    direct = {f.connections: f.rps for f in figures if f.peer == "direct"}
    rows = [
        f"{'peer':<16}{'conns':>6}{'req/s':>10}{'ratio':>8}"
        f"{'p50 ms':>9}{'p99 ms':>9}{'cpu %':>8}{'errors':>8}"
    ]
    for f in figures:
        ratio = f"{f.rps / direct[f.connections]:.2f}" if f.connections in direct else "-"
        cpu = "-" if f.cpu is None else f"{f.cpu:.0f}"
        rows.append(
            f"{f.peer:<16}{f.connections:>6}{f.rps:>10.0f}{ratio:>8}{f.p50_ms:>9.2f}{f.p99_ms:>9.2f}{cpu:>8}{f.errors:>8}"
        )
    return "\n".join(rows)


def verdict(figures: list[Figure]) -> list[str]:
    got = {(f.peer, f.connections): f for f in figures}
    ours = got.get(("dynod", 50))
    if ours is None:
        return []
    lines = [
        f"dynod at 50 connections: {ours.rps:.0f} req/s (target >= 12000), p99 "
        f"{ours.p99_ms:.2f} ms (target < 10)"
    ]
    for other, target in (
        ("straightforward", "target 2"),
        ("node-foreman", "ahead"),
        ("nginx", "stretch 0.25"),
    ):
        theirs = got.get((other, 50))
        if theirs:
            lines.append(
                f"dynod / {other} at 50 connections: {ours.rps / theirs.rps:.2f} ({target})"
            )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    parser.add_argument("--connections", default="50,200", help="comma-separated (default 50,200)")
    parser.add_argument(
        "--peers", default=",".join(PEERS), help=f"comma-separated subset of {','.join(PEERS)}"
    )
    args = parser.parse_args()
    peers = [p for p in args.peers.split(",") if p]
    unknown = set(peers) - set(PEERS)
    if unknown:
        parser.error(f"unknown peers: {', '.join(sorted(unknown))}")
    install()
    WORK.mkdir(parents=True, exist_ok=True)
    backends = consecutive_free_ports(2)
    figures = []
    with contextlib.ExitStack() as stack:
        for port in backends:
            stack.enter_context(
                running(
                    [
                        "nginx",
                        "-p",
                        str(WORK),
                        "-e",
                        "stderr",
                        "-c",
                        str(render("backend.conf", port=port)),
                    ],
                    port,
                )
            )
        for name in peers:
            try:
                with peer(name, backends) as (port, pids):
                    for connections in (int(c) for c in args.connections.split(",")):
                        figure = wrk(name, port, connections, args.duration, pids)
                        figures.append(figure)
                        print(
                            f"  {name} at {connections} connections: {figure.rps:.0f} req/s",
                            file=sys.stderr,
                            flush=True,
                        )
            except (PeerFailed, subprocess.CalledProcessError) as exc:
                print(f"  {name} skipped: {exc} (logs in {WORK})", file=sys.stderr, flush=True)
    print(table(figures))
    for line in verdict(figures):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
