"""Log storm: 4 dynos offer 200,000 lines/s to one logplex ring for ~5 s while 2 tails read.

One tail keeps up (it counts lines, or renders them with --render as `dyno logs --tail` would);
the other is deliberately slow (it pauses after every batch it takes), so it must drop and get
L11 notices while the producers carry on. Prints lines/s published, delivered and dropped per
tail, and dynod's CPU time. Producers are real dynos (`dynod.proc.dyno.run_dyno`: child processes
writing to pipes, read and split into lines as in production) unless --in-process, where trio
tasks call publish directly.

    .venv/bin/python bench/logstorm.py [--rate 200000] [--seconds 5] [--dynos 4] [--in-process]
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import attrs
import trio

from dynod.logs.logplex import OVERFLOW_DYNO, TAIL_BUFFER, LogRing, LogTail
from dynod.proc.dyno import DynoSpec, run_dyno

DROPPED = re.compile(r"dropped (\d+) messages")

# The child: writes its share of lines on schedule, in whatever blocks it has fallen behind by.
CHILD = r"""
import sys, time
rate, seconds, name = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
head = f"at=info method=GET path=/storm host=storm.local dyno={name} status=200 bytes=1234 n="
out = sys.stdout.buffer
total, sent, start = int(rate * seconds), 0, time.monotonic()
while sent < total:
    due = min(total, int((time.monotonic() - start) * rate))
    if due > sent:
        out.write("".join([f"{head}{i}\n" for i in range(sent, due)]).encode())
        out.flush()
        sent = due
    else:
        time.sleep(0.002)
"""


@attrs.define
class Batches:
    """What the producers' reads look like: a tail drops whenever one burst exceeds its buffer."""

    count: int = 0
    largest: int = 0

    def publish(self, source: str, dyno: str, texts: Sequence[str], when: float) -> None:
        self.count += 1
        self.largest = max(self.largest, len(texts))


@attrs.define
class Reader:
    name: str
    delivered: int = 0
    dropped: int = 0
    notices: int = 0


async def read(tail: LogTail, reader: Reader, *, pause: float, render: bool) -> None:
    """Count what the tail delivers; the slow reader pauses after each batch it takes."""
    while True:
        batch = await tail.receive_batch()
        if not batch:
            return
        for line in batch:
            if line.dyno == OVERFLOW_DYNO and (found := DROPPED.search(line.text)):
                reader.notices += 1
                reader.dropped += int(found.group(1))
            else:
                reader.delivered += 1
                if render:
                    line.render()
        if pause:
            await trio.sleep(pause)


async def in_process_dyno(ring: LogRing, name: str, rate: float, seconds: float) -> None:
    """Publishes on the same schedule as the child, from a trio task, every 2 ms: all producers
    wake in the same scheduler round, before any reader, so their bursts must fit a tail buffer."""
    texts = [f"at=info method=GET path=/storm dyno={name} status=200 n={i}" for i in range(10_000)]
    total, sent, start = int(rate * seconds), 0, trio.current_time()
    while sent < total:
        await trio.sleep(0.002)
        due = min(total, int((trio.current_time() - start) * rate))
        while sent < due:
            count = min(due - sent, len(texts))
            ring.publish("app", name, texts[:count], time.time())
            sent += count


async def real_dyno(ring: LogRing, name: str, rate: float, seconds: float, home: Path) -> None:
    command = shlex.join([sys.executable, "-S", "-c", CHILD, str(rate), str(seconds), name])
    spec = DynoSpec(name=name, command=command, cwd=home, env={"PATH": "/usr/bin:/bin"})
    await run_dyno(spec, ring)


async def storm(args: argparse.Namespace) -> None:
    ring = LogRing(tail_buffer=args.tail_buffer)
    batches = Batches()
    ring.subscribe(batches.publish)
    fast, slow = Reader("fast"), Reader(f"slow (pauses {args.slow_pause * 1000:.0f} ms/batch)")
    per_dyno = args.rate / args.dynos
    with tempfile.TemporaryDirectory() as home, ring.tail() as fast_tail, ring.tail() as slow_tail:
        async with trio.open_nursery() as readers:
            readers.start_soon(lambda: read(fast_tail, fast, pause=0, render=args.render))
            readers.start_soon(lambda: read(slow_tail, slow, pause=args.slow_pause, render=False))
            cpu, started = time.process_time(), time.perf_counter()
            async with trio.open_nursery() as dynos:
                for index in range(1, args.dynos + 1):
                    name = f"web.{index}"
                    if args.in_process:
                        dynos.start_soon(in_process_dyno, ring, name, per_dyno, args.seconds)
                    else:
                        dynos.start_soon(real_dyno, ring, name, per_dyno, args.seconds, Path(home))
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu
            published = ring.statistics().lines_published
            with trio.move_on_after(5):  # let both readers reach the end of the stream
                while any(r.delivered + r.dropped < published for r in (fast, slow)):
                    await trio.sleep(0.01)
            readers.cancel_scope.cancel()
    children = os.times().children_user + os.times().children_system
    mode = "in-process producers" if args.in_process else "real dynos"
    print(
        f"log storm: {args.dynos} {mode}, offered {args.rate:,.0f} lines/s for {args.seconds} s,"
        f" tail buffers of {args.tail_buffer} lines"
    )
    print(f"  published  {published:>10,} lines  {published / elapsed:>10,.0f} lines/s")
    for r in (fast, slow):
        print(
            f"  tail {r.name:<30} delivered {r.delivered / elapsed:>10,.0f} lines/s,"
            f" dropped {r.dropped:>9,} ({r.dropped / published:.1%}) in {r.notices} L11 notices"
        )
    print(f"  dynod CPU {cpu:.2f} s over {elapsed:.2f} s ({cpu / elapsed:.0%} of one core)", end="")
    print("" if args.in_process else f"; children {children:.2f} s")
    print(
        f"  {batches.count:,} batches, {published / batches.count:,.0f} lines on average,"
        f" largest {batches.largest:,}"
    )
    print(f"  ring: {ring.statistics()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200_000, help="lines/s offered in all")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--dynos", type=int, default=4)
    parser.add_argument("--slow-pause", type=float, default=0.05, help="slow tail, s per batch")
    parser.add_argument("--tail-buffer", type=int, default=TAIL_BUFFER, help="lines per tail")
    parser.add_argument("--render", action="store_true", help="fast tail renders each line")
    parser.add_argument("--in-process", action="store_true", help="trio tasks, not processes")
    trio.run(storm, parser.parse_args())


if __name__ == "__main__":
    main()
