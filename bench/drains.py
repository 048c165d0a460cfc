"""Drains under a log storm: what two drains (syslog and HTTP) cost an app logging at full speed.

One real dyno (a child process writing lines to its pipe as fast as dynod reads them) logs for
a few seconds into one logplex ring, in three set-ups run in turn, several times each, all in one
run: no drain; two live drains (a syslog listener and an HTTP listener, each its own process on
127.0.0.1 counting the frames it parses); and one dead drain (a socket that listens but never
accepts). Prints the app's lines/s published (medians), its ratio to the no-drain runs (of the
medians, and the median of each round's own ratio), dynod's CPU time and the app's lines per
CPU-second of dynod, the lines/s each drain delivered and the L10 notices. The target (README,
Drains): a drain costs the app's logging under 10%.

    flock /tmp/dynod-bench.lock .venv/bin/python bench/drains.py [--seconds 3] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import attrs
import trio

from dynod.core.drains import DRAIN_BUFFER, L10, parse_drain_url
from dynod.logs.drains import DrainSender, transport_for
from dynod.logs.logplex import LogRing
from dynod.proc.dyno import DynoSpec, run_dyno

# The app: a request-log line, written in blocks as fast as the pipe takes them.
CHILD = r"""
import sys, time
seconds, name = float(sys.argv[1]), sys.argv[2]
head = f"at=info method=GET path=/storm host=storm.local dyno={name} status=200 bytes=1234 n="
out = sys.stdout.buffer
block = "".join(f"{head}{i}\n" for i in range(1000)).encode()
end = time.monotonic() + seconds
while time.monotonic() < end:
    out.write(block)
out.flush()
"""


def listen(kind: str) -> None:
    """A drain's far end (its own process): counts the frames it receives, and when its stdin
    closes prints `frames L10-notices` and exits."""
    server = socket.create_server(("127.0.0.1", 0))
    print(server.getsockname()[1], flush=True)
    counts = {"frames": 0, "l10": 0}

    def serve(conn: socket.socket) -> None:
        pending = b""
        with conn:
            while data := conn.recv(1 << 20):
                pending += data
                if kind == "http":
                    pending = http_requests(conn, pending, counts)
                else:
                    pending = syslog_frames(pending, counts)

    def accept() -> None:
        while True:
            conn, _ = server.accept()
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    sys.stdin.read()
    print(counts["frames"], counts["l10"], flush=True)


def syslog_frames(data: bytes, counts: dict[str, int]) -> bytes:
    at = 0
    while True:
        space = data.find(b" ", at)
        if space < 0:
            return data[at:]
        end = space + 1 + int(data[at:space])
        if end > len(data):
            return data[at:]
        counts["frames"] += 1
        if b"Error L10" in data[space:end]:
            counts["l10"] += 1
        at = end


def http_requests(conn: socket.socket, data: bytes, counts: dict[str, int]) -> bytes:
    while True:
        head_end = data.find(b"\r\n\r\n")
        if head_end < 0:
            return data
        headers = dict(
            line.split(b": ", 1) for line in data[:head_end].split(b"\r\n")[1:] if b": " in line
        )
        size = int(headers[b"Content-Length"])
        if len(data) < head_end + 4 + size:
            return data
        body = data[head_end + 4 : head_end + 4 + size]
        counts["frames"] += int(headers[b"Logplex-Msg-Count"])
        counts["l10"] += body.count(b"Error L10")
        conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
        data = data[head_end + 4 + size :]


@attrs.frozen
class Listener:
    process: subprocess.Popen[str]
    port: int

    @classmethod
    def start(cls, kind: str) -> Listener:
        process = subprocess.Popen(
            [sys.executable, __file__, "--listen", kind],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        return cls(process, int(process.stdout.readline()))

    def counts(self) -> tuple[int, int]:
        """Frames and L10 notices received, and the listener is gone."""
        assert self.process.stdout is not None and self.process.stdin is not None
        self.process.stdin.close()
        frames, l10 = self.process.stdout.readline().split()
        self.process.wait(timeout=10)
        return int(frames), int(l10)


@attrs.frozen
class Result:
    mode: str
    published: float  # lines/s
    cpu: float  # dynod's CPU seconds over the run
    elapsed: float
    delivered: tuple[float, ...] = ()  # lines/s per drain
    l10: int = 0


async def one_run(mode: str, seconds: float, home: Path) -> Result:
    ring = LogRing()
    listeners: list[tuple[str, Listener]] = []
    dead: socket.socket | None = None
    urls = []
    if mode == "two drains":
        listeners = [(kind, Listener.start(kind)) for kind in ("syslog", "http")]
        urls = [f"syslog://127.0.0.1:{listeners[0][1].port}"]
        urls.append(f"http://127.0.0.1:{listeners[1][1].port}/logs")
    elif mode == "dead drain":
        dead = socket.create_server(("127.0.0.1", 0), backlog=1)
        urls = [f"syslog://127.0.0.1:{dead.getsockname()[1]}"]
    senders = []
    async with trio.open_nursery() as nursery:
        for url in urls:
            tail = ring.tail(buffer=DRAIN_BUFFER, overflow=L10)
            sender = DrainSender(tail, transport_for(parse_drain_url(url), "d.bench"), name=url)
            senders.append(sender)
            nursery.start_soon(sender.run)
        command = shlex.join([sys.executable, "-S", "-c", CHILD, str(seconds), "web.1"])
        spec = DynoSpec(name="web.1", command=command, cwd=home, env={"PATH": "/usr/bin:/bin"})
        cpu, started = time.process_time(), time.perf_counter()
        await run_dyno(spec, ring)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
        # What the drains still hold goes out before the count: at most a buffer each.
        with trio.move_on_after(5):
            while any(s.tail._buffer for s in senders) and mode == "two drains":
                await trio.sleep(0.05)
        await trio.sleep(0.3)
        nursery.cancel_scope.cancel()
    published = ring.statistics().lines_published
    delivered, l10 = [], 0
    for _, listener in listeners:
        frames, notices = listener.counts()
        delivered.append(frames / elapsed)
        l10 += notices
    if dead is not None:
        dead.close()
    return Result(mode, published / elapsed, cpu, elapsed, tuple(delivered), l10)


async def bench(args: argparse.Namespace) -> None:
    modes = ["no drain", "two drains", "dead drain"]
    results: dict[str, list[Result]] = {mode: [] for mode in modes}
    with tempfile.TemporaryDirectory() as home:
        for run in range(args.runs):
            for mode in modes if run % 2 == 0 else reversed(modes):
                results[mode].append(await one_run(mode, args.seconds, Path(home)))
    base = statistics.median(r.published for r in results["no drain"])
    # Lines per second of dynod's CPU: what the drains cost, even when other work on the
    # machine takes the core from dynod now and then (wall lines/s is then mostly that).
    base_cpu = statistics.median(r.published * r.elapsed / r.cpu for r in results["no drain"])
    print(
        f"drains bench: one real dyno logging at full speed for {args.seconds:g} s, "
        f"{args.runs} runs per set-up, alternating; load {os.getloadavg()[0]:.1f}"
    )
    for mode in modes:
        rs = results[mode]
        published = statistics.median(r.published for r in rs)
        cpu = statistics.median(r.cpu / r.elapsed for r in rs)
        per_cpu = statistics.median(r.published * r.elapsed / r.cpu for r in rs)
        # Each run against the no-drain run of the same round (seconds apart): the machine's
        # load drifts over a bench, and paired ratios cancel most of it.
        paired = statistics.median(
            r.published / none.published for r, none in zip(rs, results["no drain"], strict=True)
        )
        line = (
            f"  {mode:<11} app {published:>10,.0f} lines/s (x{published / base:.3f},"
            f" paired x{paired:.3f}), {per_cpu:>10,.0f} lines per CPU-s"
            f" (x{per_cpu / base_cpu:.3f}); dynod CPU {cpu:.0%} of one core"
        )
        if mode == "two drains":
            syslog = statistics.median(r.delivered[0] for r in rs)
            http = statistics.median(r.delivered[1] for r in rs)
            l10 = statistics.median(r.l10 for r in rs)
            line += f"  delivered syslog {syslog:,.0f}/s, http {http:,.0f}/s, L10 {l10:.0f}"
        print(line)
    print("  runs (lines/s): " + "; ".join(
        f"{mode}: " + ", ".join(f"{r.published:,.0f}" for r in results[mode]) for mode in modes
    ))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--listen", choices=("syslog", "http"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.listen:
        listen(args.listen)
    else:
        trio.run(bench, args)


if __name__ == "__main__":
    main()
