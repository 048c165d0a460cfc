#!/usr/bin/env python3
"""Platform bench: `dynod serve` deploying, scaling a big slug, and sitting idle with 60 dynos.

Run it by hand from the repository root, under the lock the other benches take (the machine is
shared, and every figure is wall-clock or CPU time on it):

    flock /tmp/dynod-bench.lock python3 bench/deploy.py    # everything (8-20 minutes)
    python3 bench/deploy.py --quick                         # a smoke run (3-5 minutes)
    python3 bench/deploy.py --only b --runs 5

Each part starts its own `.venv/bin/dynod serve --data <scratch> --api 127.0.0.1:0 --router
127.0.0.1:0`, finds it through the `api-url` and `api-token` files of its data directory, and
stops it afterwards whatever happened, Ctrl-C included (SIGTERM; SIGKILL after 60 s; then any
process left in its dyno directories is killed and the directories deleted). Scratch files live
in bench/.work/deploy/run-*/ and are deleted at the end (--keep keeps them).

What each figure means:

(a) deploy: seconds from starting `dyno deploy DIR -a APP` (the client packs and uploads the
    source, dynod builds it, runs the release phase and restarts the formation) to the first
    HTTP 200 of the *new* release through the router: GET / with `Host: APP.localhost`, polled
    every 10 ms once the build output says `Launching...`. Every deploy changes the greeting
    in app.py, so the answer tells the releases apart. The app is fixtures/python-app with the
    build cache warm: one deploy before the timed ones (shown as "cold"). Median of --runs
    (default 5). Breakdown, from when each output line of `dyno deploy` arrived: build = start
    to `-----> Launching...` (pack, upload, buildpacks, compressing; "compress" alone is
    `Compressing...` to `Done:`), release = `Launching...` to `Released vN` (the release phase
    in its own dyno, the release made current), boot = `Released vN` to the first 200 (the old
    web dyno stopped, the new one made from the slug, started, bound, reached by the router).
(b) scale: a 50 MB, 5,000-file slug (random, incompressible files of 1-20 KB in 50 x 10
    directories, plus a standard-library web.py that binds $PORT) released at web=1; then
    seconds from PATCH /apps/NAME/formation web=20 until GET /apps/NAME/dynos shows 20 web
    dynos `up` (polled every 100 ms), against `tar -xzf` of the same slug 20 times in a row into
    fresh directories, in the same run. Target: at most 0.2x the tar loop (medians), in wall
    time and in CPU, with the disk the 20 running dynos take (`du -sx` of the dyno
    directories: their overlays' upper layers) beside the one unpacked tree. For information:
    the same 20 `tar -xzf` all at once, and 20 `cp -a` of the unpacked tree in a row (a dyno's
    copy where overlays cannot be had). Beside each time, in brackets, the CPU seconds it cost:
    the tars' or cps' (with tar's gzip), or dynod's own plus the children it ended (not the
    dynos, still running). Median and best of --runs (default 5); each run takes the four steps
    in a new order, and every step starts from the same state (see `quiesce`). Also shown: one
    `tar -xzf` against dynod's checked `unpack_slug` (in a fresh process), 5 of each in turn,
    medians of wall and CPU (target: at most 1.2x tar's, both); the slug's first
    boot (POST /releases to web.1 up: dynod checks and unpacks the slug into its tree cache
    once, then mounts the dyno's overlay of it); and a new slug released while at web=20 (POST
    /releases to 20 web dynos up on it: one unpack, then 20 dynos stopped and started at once).
(c) idle: with 3 apps x 20 dynos up (one app at web=20 running the tiny web.py, two at
    worker=20 running `sleep 100000`), the resident memory (VmRSS) of the `dynod serve` process
    and of its reaper sidecar, never the dynos, and their CPU while nothing happens: utime +
    stime from /proc/PID/stat over 10 s, as % of one core (one clock tick, 10 ms, is 0.1%).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VENV = REPO / ".venv" / "bin"
WORK = HERE / ".work" / "deploy"
PYTHON_APP = REPO / "fixtures" / "python-app"
TICKS = os.sysconf("SC_CLK_TCK")
T = TypeVar("T")

BIG_FILES, BIG_BYTES, BIG_DIRS = 5000, 50 << 20, (50, 10)  # 50 dirs x 10 subdirs x 10 files
SCALE_TO = 20
SETTLE = 5.0  # seconds of quiet before each timed step of (b)
IDLE_APPS, IDLE_DYNOS, IDLE_WINDOW = 3, 20, 10.0
GREETING = 'f"Hello from {DYNO}\\n"'  # what fixtures/python-app/app.py answers; (a) changes it

# The web process of the slugs of (b) and (c): binds $PORT and answers "ok"; standard library.
WEB_PY = """\
import os, socket

server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("0.0.0.0", int(os.environ["PORT"])))
server.listen(64)
while True:
    conn, _ = server.accept()
    try:
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: 3\\r\\n"
                     b"Connection: close\\r\\n\\r\\nok\\n")
    except OSError:
        pass  # dynod's boot check connects and hangs up at once
    finally:
        conn.close()
"""


class BenchError(Exception):
    """Something the bench could not do, said in one line; the part stops, the others run."""


def say(text: str = "") -> None:
    print(text, flush=True)


def wait_for(check: Callable[[], T], timeout: float, what: str, every: float = 0.1) -> T:
    """Poll `check` until it returns something truthy; BenchError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


def run(argv: list[str], timeout: float = 120.0, **kwargs: Any) -> str:
    """Run a command to completion; its stdout, or BenchError with the end of its output."""
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kwargs
    )
    if done.returncode != 0:
        raise BenchError(
            f"{' '.join(argv[:3])}... exited {done.returncode}: "
            f"{(done.stderr or done.stdout).strip()[-500:]}"
        )
    return str(done.stdout)


def first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return out.splitlines()[0].strip() if out.strip() else ""


def timed(action: Callable[[], object]) -> float:
    start = time.monotonic()
    action()
    return time.monotonic() - start


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# --- /proc: what a process costs ------------------------------------------------------------------


def cpu_ticks(pid: int, ended_children: bool = False) -> int:
    """utime+stime of the whole process (all its threads, ended ones included), in clock ticks;
    with `ended_children`, plus that of the children it has waited for (cutime+cstime)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rfind(")") + 2 :].split()
    return sum(int(value) for value in fields[11 : 15 if ended_children else 13])


def status_kb(pid: int, key: str) -> int:
    """A figure of /proc/PID/status, such as VmRSS (kB) or Threads."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


# --- one `dynod serve` ----------------------------------------------------------------------------


class Dynod:
    """A `dynod serve` on a scratch data directory, driven through its API and `dyno`."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.data = home / "data"
        self.log = home / "serve.log"
        self.env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("DYNOD_API_URL", "DYNOD_API_TOKEN", "DYNO_APP")
        }
        self.env["DYNOD_DATA"] = str(self.data)
        self.process: subprocess.Popen[bytes] | None = None
        self.url = self.token = ""
        # Where it makes its dyno directories: what `scratch.path` in its data directory names
        # (dynod.platform.runtime.scratch_dir), read at each start.
        self.scratch = Path()

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            process = self.process = subprocess.Popen(
                [
                    str(VENV / "dynod"),
                    "serve",
                    "--data",
                    str(self.data),
                    "--api",
                    "127.0.0.1:0",
                    "--router",
                    "127.0.0.1:0",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,  # the terminal's Ctrl-C is the bench's, passed on gently
            )
        wait_for(
            lambda: (self.data / "api-url").exists() or process.poll() is not None,
            60,
            "dynod serve to write api-url",
            every=0.05,
        )
        if process.poll() is not None:
            raise BenchError(
                f"dynod serve exited {process.returncode}: {self.log.read_text()[-500:]}"
            )
        self.url = (self.data / "api-url").read_text().strip()
        self.token = (self.data / "api-token").read_text().strip()
        self.scratch = Path((self.data / "scratch.path").read_text().strip())

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def reaper(self) -> int | None:
        """The reaper sidecar: the child running `python -I -S …/reaper_child.py`."""
        for child in children(self.pid):
            line = cmdline(child)
            if b"-S\0" in line and b"reaper_child.py" in line:
                return child
        return None

    def dyno_processes(self) -> list[int]:
        """The processes whose working directory is inside one of this dynod's dynos."""
        prefix = str(self.scratch) + "/"
        found = []
        for entry in os.listdir("/proc"):
            try:
                if entry.isdigit() and os.readlink(f"/proc/{entry}/cwd").startswith(prefix):
                    found.append(int(entry))
            except OSError:
                continue
        return found

    def stop(self) -> None:
        """SIGTERM (the dynos get their grace), SIGKILL after 60 s, then anything left in the
        dyno directories is killed by process group and the directories deleted."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        for pid in self.dyno_processes():
            try:
                os.killpg(os.getpgid(pid), signal.SIGKILL)
            except OSError:
                continue
        shutil.rmtree(self.scratch, ignore_errors=True)

    def api(
        self,
        method: str,
        path: str,
        body: Any = None,
        data: bytes | None = None,
        timeout: float = 60.0,
    ) -> Any:
        headers = {
            "Authorization": f"Bearer {self.token}",
            "Accept": "application/vnd.heroku+json; version=3",
        }
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        url = path if path.startswith("http") else self.url + path
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as err:
            raise BenchError(f"{method} {path}: HTTP {err.code} {err.read()[:300]!r}") from None
        return json.loads(raw) if raw else None

    def create_app(self, name: str) -> int:
        """Create the app; returns the router's port, from the app's web_url."""
        app = self.api("POST", "/apps", {"name": name})
        return int(str(app["web_url"]).rstrip("/").rsplit(":", 1)[1])

    def upload_slug(self, app: str, tarball: Path, process_types: dict[str, str]) -> str:
        """POST a slug and PUT its tarball; returns the slug's id."""
        slug = self.api("POST", f"/apps/{app}/slugs", {"process_types": process_types})
        self.api("PUT", slug["blob"]["url"], data=tarball.read_bytes(), timeout=300)
        return str(slug["id"])

    def release(self, app: str, slug_id: str) -> int:
        """Release a slug; returns the new release's version."""
        return int(self.api("POST", f"/apps/{app}/releases", {"slug": slug_id})["version"])

    def scale(self, app: str, **counts: int) -> None:
        updates = [{"type": kind, "quantity": n} for kind, n in counts.items()]
        self.api("PATCH", f"/apps/{app}/formation", {"updates": updates})

    def dynos(self, app: str) -> list[dict[str, Any]]:
        return list(self.api("GET", f"/apps/{app}/dynos"))

    def all_up(self, app: str, kind: str, count: int, version: int | None = None) -> bool:
        """Exactly `count` dynos of `kind`, every one up (on release `version` when given)."""
        mine = [d for d in self.dynos(app) if d["type"] == kind]
        return len(mine) == count and all(
            d["state"] == "up"
            and (version is None or (d.get("release") or {}).get("version") == version)
            for d in mine
        )

    def dyno_dirs(self) -> int:
        """How many dynos have a directory: each has one (`web.1-…`), and beside it one for its
        overlay's layers (`web.1-….overlay`) when it is an overlay."""
        names = os.listdir(self.scratch)
        return max(
            sum(n.endswith(".overlay") for n in names), sum(".overlay" not in n for n in names)
        )

    def settle(self, app: str, kind: str, count: int) -> None:
        """Wait until the app runs `count` dynos of `kind` and the stopped ones' directories
        are gone."""
        wait_for(lambda: self.all_up(app, kind, count), 180, f"{app} back to {kind}={count}")
        wait_for(
            lambda: self.dyno_dirs() <= count,
            120,
            "the stopped dynos' directories to be deleted",
        )


@contextmanager
def running_dynod(work: Path, name: str) -> Iterator[Dynod]:
    served = Dynod(work / name)
    try:
        served.start()
        yield served
    finally:
        served.stop()


# --- slugs made for the bench ---------------------------------------------------------------------


def in_venv(code: str, *args: Path) -> float:
    """Run `code` with the project's venv (dynod imports there); it prints a number of seconds."""
    return float(run([str(VENV / "python"), "-c", code, *map(str, args)], timeout=600, cwd=REPO))


def pack(app_dir: Path, out: Path) -> float:
    """dynod's own pack_slug; returns the seconds it took."""
    return in_venv(
        "import sys, time; from dynod.slugs.pack import pack_slug; t = time.monotonic(); "
        "pack_slug(sys.argv[1], sys.argv[2]); print(time.monotonic() - t)",
        app_dir,
        out,
    )


def checked_unpack(tarball: Path, into: Path) -> tuple[float, float]:
    """dynod's own unpack_slug (one pass, checking as it writes): seconds, and the CPU seconds
    of its process (its inflating thread's included)."""
    try:
        wall, cpu = run(
            [
                str(VENV / "python"),
                "-c",
                "import sys, time; from dynod.slugs.unpack import unpack_slug; "
                "t, c = time.monotonic(), time.process_time(); "
                "unpack_slug(sys.argv[1], sys.argv[2]); "
                "print(time.monotonic() - t, time.process_time() - c)",
                str(tarball),
                str(into),
            ],
            timeout=600,
            cwd=REPO,
        ).split()
        return float(wall), float(cpu)
    finally:
        shutil.rmtree(into, ignore_errors=True)


def tar_unpack(tarball: Path, into: Path) -> tuple[float, float]:
    """One `tar -xzf`: seconds, and the CPU seconds of tar and its gzip."""
    into.mkdir()
    try:
        cpu = children_cpu()
        took = timed(lambda: run(["tar", "-xzf", str(tarball), "-C", str(into)], timeout=300))
        return took, children_cpu() - cpu
    finally:
        shutil.rmtree(into, ignore_errors=True)


UNPACKS = 5  # one tar -xzf against one checked unpack, alternating: medians of this many each


def make_big_app(root: Path, seed: int = 20261126) -> None:
    """5,000 random files of 1-20 KB, 50 MB in all, in 50 x 10 directories; plus web.py."""
    rng = random.Random(seed)
    root.mkdir(parents=True)
    (root / "Procfile").write_text("web: python3 web.py\n")
    (root / "web.py").write_text(WEB_PY)
    mean = BIG_BYTES // BIG_FILES
    sizes = []
    for _ in range(BIG_FILES // 2):  # in pairs around the mean, so the total is exact
        spread = rng.randint(-(mean - 1024), mean - 1024)
        sizes += [mean + spread, mean - spread]
    sizes[0] += BIG_BYTES - sum(sizes)
    outer, inner = BIG_DIRS
    per_dir = BIG_FILES // (outer * inner)
    next_size = iter(sizes)
    for i in range(outer):
        for j in range(inner):
            directory = root / "data" / f"d{i:02}" / f"s{j}"
            directory.mkdir(parents=True)
            for k in range(per_dir):
                (directory / f"f{k}.bin").write_bytes(rng.randbytes(next(next_size)))


# --- (a) deploy to first 200 ----------------------------------------------------------------------


def http_get(port: int, host: str, timeout: float = 10.0) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", "/", headers={"Host": host})
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        connection.close()


def deploy_until_200(
    served: Dynod, source: Path, app: str, port: int, mark: str, timeout: float = 300.0
) -> dict[str, float]:
    """One timed `dyno deploy` of `source`, whose app answers with `mark`; the phase times."""
    text = (PYTHON_APP / "app.py").read_text()
    if GREETING not in text:
        raise BenchError(
            f"fixtures/python-app/app.py no longer answers {GREETING}: update the bench"
        )
    (source / "app.py").write_text(text.replace(GREETING, f'f"Hello from {{DYNO}} {mark}\\n"'))
    want = f" {mark}\n"

    lines: list[tuple[float, str]] = []  # (seconds since start, line) of `dyno deploy`'s output
    closed: list[float] = []
    start = time.monotonic()
    process = subprocess.Popen(
        [str(VENV / "dyno"), "deploy", str(source), "-a", app],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=served.env,
        cwd=served.home,
    )
    output = process.stdout
    assert output is not None

    def read() -> None:
        for raw in output:
            lines.append((time.monotonic() - start, raw.decode(errors="replace").rstrip("\n")))
        closed.append(time.monotonic() - start)  # the client closed its output: it is ending

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    first_200 = None
    try:
        deadline = start + timeout
        while first_200 is None and process.poll() in (None, 0):
            if time.monotonic() > deadline:
                raise BenchError(f"no 200 from the new release of {app} within {timeout:g} s")
            # No new release can answer before its slug exists: poll gently until then.
            launched = any("-----> Launching" in line for _, line in lines)
            if launched or process.poll() is not None:
                try:
                    status, body = http_get(port, f"{app}.localhost")
                    if status == 200 and body.endswith(want):
                        first_200 = time.monotonic() - start
                        break
                except OSError:
                    pass
            time.sleep(0.01 if launched else 0.2)
        process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        reader.join(timeout=10)
    if process.returncode != 0 or first_200 is None:
        tail = "\n".join(line for _, line in lines[-15:])
        raise BenchError(f"dyno deploy exited {process.returncode}:\n{tail}")

    def at(needle: str) -> float:
        return next((t for t, line in lines if needle in line), float("nan"))

    launching, released = at("-----> Launching"), at("       Released v")
    return {
        "total": first_200,
        "build": launching,
        "compress": at("       Done: ") - at("-----> Compressing"),
        "release": released - launching,
        "boot": first_200 - released,
        "client exit": closed[0] if closed else float("nan"),
    }


def part_a(work: Path, runs: int) -> dict[str, Any]:
    say(
        f"(a) deploy to first 200: fixtures/python-app, warm build cache ({runs} runs;"
        f" load {loadavg()})"
    )
    with running_dynod(work, "a") as served:
        app = "bench-deploy"
        port = served.create_app(app)
        source = work / "python-app"
        shutil.copytree(PYTHON_APP, source)
        phases = ("total", "build", "compress", "release", "boot", "client exit")
        say("  run      " + "".join(f"{p:>12}" for p in phases))
        cold = deploy_until_200(served, source, app, port, "cold")
        say("  cold     " + "".join(f"{cold[p]:12.2f}" for p in phases))
        warm = []
        for i in range(1, runs + 1):
            warm.append(deploy_until_200(served, source, app, port, f"run{i}"))
            say(f"  warm {i:<4}" + "".join(f"{warm[-1][p]:12.2f}" for p in phases))
    medians = {p: median([w[p] for w in warm]) for p in phases}
    say("  median   " + "".join(f"{medians[p]:12.2f}" for p in phases))
    say("  (seconds since `dyno deploy` started; build ends at `Launching...`, release at")
    say("   `Released vN`, boot at the first 200 of the new release through the router)")
    say()
    return {"deploy": medians["total"], "phases": medians, "cold": cold["total"]}


# --- (b) scaling a big slug -----------------------------------------------------------------------


def quiesce() -> None:
    """The same starting point for every timed step: the previous step's files are deleted
    already; write back what is dirty, then pause. On this VM the first large copy after a
    pause can be several times slower than the ones right after it (a `cp -a` of the tree:
    1-3 s, then 0.15 s), so every step gets the same pause, whichever comes first."""
    subprocess.run(["sync"], timeout=120, check=False)
    time.sleep(SETTLE)


def children_cpu() -> float:
    """CPU seconds of this bench's ended children (and theirs: tar's gzip), all so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def tar_loop(tarball: Path, into: Path, parallel: bool) -> tuple[float, float]:
    """20 `tar -xzf` of the slug into fresh directories, in a row or all at once: seconds, and
    CPU seconds of the tars."""

    def extract() -> None:
        procs: list[subprocess.Popen[bytes]] = []
        try:
            for i in range(SCALE_TO):
                target = into / f"x{i}"
                target.mkdir(parents=True)
                argv = ["tar", "-xzf", str(tarball), "-C", str(target)]
                if parallel:
                    procs.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL))
                else:
                    subprocess.run(argv, check=True, timeout=300, stdin=subprocess.DEVNULL)
            for proc in procs:
                if proc.wait(timeout=300) != 0:
                    raise BenchError(f"tar -xzf exited {proc.returncode}")
        finally:
            for proc in procs:
                if proc.poll() is None:  # interrupted: none may outlive the step
                    proc.kill()
                    proc.wait(timeout=10)

    try:
        cpu = children_cpu()
        return timed(extract), children_cpu() - cpu
    finally:
        shutil.rmtree(into, ignore_errors=True)


def cp_loop(tree: Path, into: Path) -> tuple[float, float]:
    """20 `cp -a --reflink=auto` of the unpacked tree in a row (dynod's copy, without dynod):
    seconds, and CPU seconds of the cps."""

    def copy() -> None:
        into.mkdir(parents=True)
        for i in range(SCALE_TO):
            run(
                ["cp", "-a", "--reflink=auto", "-T", "--", str(tree), str(into / f"x{i}")],
                timeout=300,
            )

    try:
        cpu = children_cpu()
        return timed(copy), children_cpu() - cpu
    finally:
        shutil.rmtree(into, ignore_errors=True)


def scale_up(served: Dynod, app: str, disk: list[int]) -> tuple[float, float]:
    """Seconds from PATCH web=20 to 20 web dynos up, and the CPU seconds of dynod and of the
    children it ended meanwhile (`cp`s where dynos get copies; not the dynos, which still run).
    Appends to `disk` the bytes the 20 running dynos' directories take (`du`: their overlays'
    upper layers, or their copies). Back to web=1 afterwards, not timed."""
    cpu = cpu_ticks(served.pid, ended_children=True)
    start = time.monotonic()
    served.scale(app, web=SCALE_TO)
    wait_for(lambda: served.all_up(app, "web", SCALE_TO), 300, f"web={SCALE_TO} up")
    took = time.monotonic() - start
    cpu = cpu_ticks(served.pid, ended_children=True) - cpu
    disk.append(du(served.scratch))
    served.scale(app, web=1)
    served.settle(app, "web", 1)
    return took, cpu / TICKS


def du(path: Path) -> int:
    """Bytes of disk under `path`, one filesystem, as `du -sx` counts them."""
    return int(run(["du", "-sxB1", str(path)]).split()[0])


TARGET = 0.2  # (b): dynod's wall and CPU against the tar loop's, at most


def part_b(work: Path, runs: int) -> dict[str, Any]:
    say(
        f"(b) scale web=1 -> web={SCALE_TO} with a {BIG_BYTES >> 20} MB / {BIG_FILES:,}-file slug"
        f" ({runs} runs; load {loadavg()})"
    )
    big = work / "big-app"
    make_big_app(big)
    tarball = work / "big.tgz"
    packed = pack(big, tarball)
    size = tarball.stat().st_size
    say(
        f"  slug: {size / 1e6:.1f} MB compressed ({size / (BIG_BYTES + len(WEB_PY)):.3f} of its"
        f" content), packed by dynod.slugs.pack.pack_slug in {packed:.2f} s"
    )
    tree = work / "tree"
    tree.mkdir()
    quiesce()
    run(["tar", "-xzf", str(tarball), "-C", str(tree)], timeout=300)
    tree = tree / "app"
    tars, unpacks = [], []
    for _ in range(UNPACKS):
        quiesce()
        tars.append(tar_unpack(tarball, work / "tar-once"))
        quiesce()
        unpacks.append(checked_unpack(tarball, work / "unpack"))
    tar_wall, tar_cpu = median([w for w, _ in tars]), median([c for _, c in tars])
    unpack_wall, unpack_cpu = median([w for w, _ in unpacks]), median([c for _, c in unpacks])
    check = max(unpack_wall / tar_wall, unpack_cpu / tar_cpu)
    say(
        f"  one unpack (medians of {UNPACKS}): tar -xzf {tar_wall:.2f} s ({tar_cpu:.2f} CPU);"
        f" dynod's checked unpack_slug {unpack_wall:.2f} s ({unpack_cpu:.2f} CPU):"
        f" {unpack_wall / tar_wall:.2f}x wall, {unpack_cpu / tar_cpu:.2f}x CPU (target at most"
        f" 1.2x: {'met' if check <= 1.2 else 'missed'})"
    )

    types = {"web": "python3 web.py"}
    names = ("dynod", "tar", "tar-par", "cp")
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    disk: list[int] = []
    with running_dynod(work, "b") as served:
        app = "bench-scale"
        served.create_app(app)
        quiesce()
        upload = time.monotonic()
        slug_id = served.upload_slug(app, tarball, types)
        start = time.monotonic()
        version = served.release(app, slug_id)
        wait_for(
            lambda: served.all_up(app, "web", 1, version), 180, "web.1 on the big slug", every=0.05
        )
        first_boot = time.monotonic() - start
        say(
            f"  first boot: {first_boot:.2f} s from POST /releases to web.1 up (the slug checked"
            f" and unpacked into the tree cache; upload before it"
            f" {start - upload:.2f} s)"
        )
        served.settle(app, "web", 1)

        steps: list[tuple[str, Callable[[], tuple[float, float]]]] = [
            ("tar", lambda: tar_loop(tarball, work / "tar", parallel=False)),
            ("dynod", lambda: scale_up(served, app, disk)),
            ("tar-par", lambda: tar_loop(tarball, work / "tar", parallel=True)),
            ("cp", lambda: cp_loop(tree, work / "cp")),
        ]
        headers = ("dynod", f"tar x{SCALE_TO}", f"{SCALE_TO} tars at once", f"cp -a x{SCALE_TO}")
        say(
            f"  {'seconds (CPU seconds)':<22}" + "".join(f"{h:<17}" for h in headers) + "load after"
        )

        def row(label: str, pick: Callable[[list[float]], float]) -> str:
            return f"  {label:<22}" + "".join(
                f"{pick(wall[name]):6.2f} ({pick(cpu[name]):6.2f})  " for name in names
            )

        for i in range(runs):
            for name, step in steps[i % len(steps) :] + steps[: i % len(steps)]:  # a new order
                quiesce()
                took, used = step()
                wall[name].append(took)
                cpu[name].append(used)
            say(row(f"run {i + 1}", lambda values: values[-1]) + f"  {loadavg()}")
        say(row("median", median))
        say(row("best", min))
        m = {name: median(values) for name, values in wall.items()}
        ratio = m["dynod"] / m["tar"]
        best = min(wall["dynod"]) / min(wall["tar"])
        cpu_ratio = median(cpu["dynod"]) / median(cpu["tar"])
        say(
            f"  dynod / tar loop = {ratio:.2f}x wall, {cpu_ratio:.2f}x CPU (target at most"
            f" {TARGET}x each: {'met' if max(ratio, cpu_ratio) <= TARGET else 'missed'});"
            f" best against best {best:.2f}x; dynod / tars at once"
            f" {m['dynod'] / m['tar-par']:.2f}x"
        )
        trees = du(served.data / "slugs" / "trees")
        say(
            f"  disk: {SCALE_TO} running dynos take {median([float(d) for d in disk]) / 1e6:.1f}"
            f" MB beside the slug's one unpacked tree ({trees / 1e6:.1f} MB); {SCALE_TO} tars"
            f" {SCALE_TO * du(tree) / 1e6:.0f} MB"
        )

        # A new slug while at web=20: all 20 restart on a slug not yet in the tree cache.
        served.scale(app, web=SCALE_TO)
        wait_for(lambda: served.all_up(app, "web", SCALE_TO), 300, f"web={SCALE_TO} up")
        (big / "web.py").write_text(WEB_PY + "# a new slug\n")
        tarball = work / "big2.tgz"
        pack(big, tarball)
        slug_id = served.upload_slug(app, tarball, types)
        quiesce()
        start = time.monotonic()
        version = served.release(app, slug_id)
        wait_for(
            lambda: served.all_up(app, "web", SCALE_TO, version),
            600,
            f"web={SCALE_TO} up on the new slug",
        )
        new_slug = time.monotonic() - start
        say(
            f"  new slug at web={SCALE_TO}: {new_slug:.2f} s from POST /releases to"
            f" {SCALE_TO} web dynos up on it"
        )
    say()
    return {
        "scale": m["dynod"],
        "tar": m["tar"],
        "tar-par": m["tar-par"],
        "ratio": ratio,
        "cpu ratio": cpu_ratio,
        "check": check,
        "disk": median([float(d) for d in disk]),
        "first boot": first_boot,
        "new slug": new_slug,
    }


# --- (c) idle with 60 dynos -----------------------------------------------------------------------


def part_c(work: Path, window: float) -> dict[str, Any]:
    total = IDLE_APPS * IDLE_DYNOS
    say(f"(c) dynod idle with {IDLE_APPS} apps x {IDLE_DYNOS} dynos up (load {loadavg()})")
    idle = work / "idle-app"
    idle.mkdir()
    types = {"web": "python3 web.py", "worker": "sleep 100000"}
    (idle / "Procfile").write_text("".join(f"{k}: {v}\n" for k, v in types.items()))
    (idle / "web.py").write_text(WEB_PY)
    tarball = work / "idle.tgz"
    pack(idle, tarball)
    with running_dynod(work, "c") as served:
        time.sleep(2)
        reaper = served.reaper()
        if reaper is None:
            raise BenchError("found no reaper sidecar among dynod's children")
        empty = status_kb(served.pid, "VmRSS") + status_kb(reaper, "VmRSS")
        start = time.monotonic()
        plan = []
        for n in range(1, IDLE_APPS + 1):
            app = f"bench-idle-{n}"
            served.create_app(app)
            served.release(app, served.upload_slug(app, tarball, types))
            counts = {"web": IDLE_DYNOS} if n == 1 else {"web": 0, "worker": IDLE_DYNOS}
            served.scale(app, **counts)
            plan.append((app, "web" if n == 1 else "worker"))
        for app, kind in plan:
            wait_for(
                lambda app=app, kind=kind: served.all_up(app, kind, IDLE_DYNOS),
                300,
                f"{app} {kind}={IDLE_DYNOS} up",
            )
        up = time.monotonic() - start
        time.sleep(3)  # let the start-up's threads and buffers settle
        pids = {"dynod": served.pid, "reaper": reaper}
        before = {name: cpu_ticks(pid) for name, pid in pids.items()}
        time.sleep(window)
        cpu = {
            name: (cpu_ticks(pid) - before[name]) / TICKS / window * 100
            for name, pid in pids.items()
        }
        rss = {name: status_kb(pid, "VmRSS") / 1024 for name, pid in pids.items()}
        peak = status_kb(served.pid, "VmHWM") / 1024
        threads = status_kb(served.pid, "Threads")
        listed = sum(len(served.dynos(app)) for app, _ in plan)
        processes = len(served.dyno_processes())
    if listed != total:
        raise BenchError(f"{listed} dynos listed after the window instead of {total}")
    say(
        f"  {total} dynos up {up:.1f} s after the first app was created (one app after another);"
        f" {processes} processes in their directories"
    )
    say(
        f"  memory (VmRSS): dynod {rss['dynod']:.1f} MB + reaper {rss['reaper']:.1f} MB ="
        f" {rss['dynod'] + rss['reaper']:.1f} MB   (with no app: {empty / 1024:.1f} MB;"
        f" dynod's peak {peak:.1f} MB; {threads} threads)"
    )
    say(
        f"  idle CPU over {window:g} s: dynod {cpu['dynod']:.2f}% + reaper {cpu['reaper']:.2f}%"
        " of one core"
    )
    say()
    return {
        "rss": rss["dynod"] + rss["reaper"],
        "rss dynod": rss["dynod"],
        "rss reaper": rss["reaper"],
        "cpu": cpu["dynod"] + cpu["reaper"],
    }


# --- the machine ----------------------------------------------------------------------------------


def machine() -> None:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "?"
    )
    memory = int(Path("/proc/meminfo").read_text().split()[1]) / 1048576
    head = first_line(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = first_line(
        ["git", "-C", str(REPO), "status", "--porcelain", "--", "dynod", "router", "shell"]
    )
    versions = first_line(
        [
            str(VENV / "python"),
            "-c",
            "import sys, importlib.metadata as m; "
            'print(f\'dynod {m.version("dynod")}, trio {m.version("trio")},'
            ' h11 {m.version("h11")}, Python {sys.version.split()[0]}\')',
        ]
    )

    def filesystem(path: str) -> str:
        return first_line(["findmnt", "-n", "-o", "FSTYPE", "-T", path]) or "?"

    user = (
        "root (each app's dynos run as a uid of its own)"
        if os.geteuid() == 0
        else f"uid {os.geteuid()}"
    )
    say(
        f"machine: {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable), {model},"
        f" {memory:.1f} GB RAM, Linux {os.uname().release}"
    )
    say(
        f"versions: {versions}; working tree at {head}"
        f"{' with uncommitted changes in dynod/router/shell' if dirty not in ('', '?') else ''};"
        f" {first_line(['tar', '--version'])}; {first_line(['cp', '--version'])}"
    )
    say(
        f"files: bench/.work on {filesystem(str(HERE))}, dyno directories in"
        f" {tempfile.gettempdir()} on {filesystem(tempfile.gettempdir())}; running as {user}"
    )
    say(f"uptime at start: {first_line(['uptime'])}")
    say()


# --- main -----------------------------------------------------------------------------------------


def summary(results: dict[str, dict[str, Any]]) -> None:
    say("summary")
    if "a" in results:
        a = results["a"]
        say(
            f"  (a) deploy to first 200, warm cache: {a['deploy']:.2f} s median (build"
            f" {a['phases']['build']:.2f}, release {a['phases']['release']:.2f}, boot"
            f" {a['phases']['boot']:.2f}); cold cache {a['cold']:.2f} s"
        )
    if "b" in results:
        b = results["b"]
        say(
            f"  (b) scale to {SCALE_TO} web dynos: {b['scale']:.2f} s vs tar -xzf x{SCALE_TO}"
            f" {b['tar']:.2f} s = {b['ratio']:.2f}x wall, {b['cpu ratio']:.2f}x CPU (target <="
            f" {TARGET}x); slug check {b['check']:.2f}x tar's; disk of {SCALE_TO} dynos"
            f" {b['disk'] / 1e6:.1f} MB; {SCALE_TO} tars at"
            f" once {b['tar-par']:.2f} s; first boot {b['first boot']:.2f} s; new slug at"
            f" web={SCALE_TO} {b['new slug']:.2f} s"
        )
    if "c" in results:
        c = results["c"]
        say(
            f"  (c) idle with {IDLE_APPS * IDLE_DYNOS} dynos: {c['rss']:.1f} MB resident (dynod"
            f" {c['rss dynod']:.1f} + reaper {c['rss reaper']:.1f}), {c['cpu']:.2f}% of one core"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--only", default="a,b,c", help="which parts, e.g. a,c (default a,b,c)")
    parser.add_argument("--runs", type=int, default=0, help="timed runs of (a) and (b) (default 5)")
    parser.add_argument("--quick", action="store_true", help="fewer runs, a shorter idle window")
    parser.add_argument("--keep", action="store_true", help="keep the scratch files afterwards")
    args = parser.parse_args()
    parts = {p.strip() for p in args.only.split(",") if p.strip()}
    if not parts or not parts <= {"a", "b", "c"}:
        parser.error(f"--only takes a, b and c, not {args.only!r}")
    for tool in ("dynod", "dyno", "python"):
        if not (VENV / tool).exists():
            parser.error(f"{VENV / tool} is missing: run the README's set-up first")
    runs_a = args.runs or (2 if args.quick else 5)
    runs_b = args.runs or (1 if args.quick else 5)
    window = 5.0 if args.quick else IDLE_WINDOW

    def interrupted(signum: int, frame: Any) -> None:
        for other in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(other, signal.SIG_IGN)  # the clean-up is bounded: let it finish
        raise KeyboardInterrupt

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGINT too: `cmd &` ignores it
        signal.signal(signum, interrupted)
    WORK.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="run-", dir=WORK))
    results: dict[str, dict[str, Any]] = {}
    status = 0
    try:
        machine()
        steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            ("a", lambda: part_a(work, runs_a)),
            ("b", lambda: part_b(work, runs_b)),
            ("c", lambda: part_c(work, window)),
        ]
        for name, part in steps:
            if name in parts:
                try:
                    results[name] = part()
                except (BenchError, subprocess.SubprocessError, OSError) as err:
                    say(f"\n({name}) failed: {err}\n")
                    status = 1
    except KeyboardInterrupt:
        say("\ninterrupted: dynod is stopped; deleting the scratch files")
        status = 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if results:
        summary(results)
    say(f"uptime at end: {first_line(['uptime'])}")
    return status


if __name__ == "__main__":
    sys.exit(main())
