"""A cgroup per dyno, one-off, release dyno and build: every process they start stays in it,
whatever it does with sessions, so stopping one leaves nothing behind (README "How a dyno
runs").

dynod's cgroups hang under one node of its own (a `Tree`) made under dynod's cgroup in each
hierarchy: cgroup v2 for membership and `cgroup.kill`, and the v1 `pids` and `memory`
hierarchies where those controllers sit there (else v2's own, when enabled) for `pids.max` and
memory use. Without a writable v2 hierarchy (a user's `dynod start`) `Tree.open` gives None and
dynod keeps process groups, its subreaper and the reaper (dynod/proc/orphans.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import re
import signal
import time
from pathlib import Path

import attrs
import trio

from dynod.core.policy import PIDS_MAX

_made = itertools.count(1)


@attrs.frozen
class Hierarchies:
    """Where dynod's own cgroup sits in each hierarchy it uses; v1 ones may be missing."""

    unified: Path
    pids: Path | None = None
    memory: Path | None = None
    own: str = "/"  # dynod's cgroup v2 path, as /proc/PID/cgroup shows it


def detect() -> Hierarchies | None:
    """The cgroup v2 mount and the v1 `pids` and `memory` ones, each at this process's own
    cgroup (/proc/self/cgroup, relative to what each mount shows); None without cgroup v2."""
    try:
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
        own = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    paths: dict[str, str] = {}
    for line in own:
        number, controllers, path = line.split(":", 2)
        if number == "0" and not controllers:
            paths["unified"] = path
        for name in controllers.split(","):
            paths[name] = path
    found: dict[str, Path] = {}
    for line in mounts:
        mount, _, fs = line.partition(" - ")
        fields, kind = mount.split(), fs.split()
        if len(fields) < 5 or len(kind) < 3:
            continue
        root, point = fields[3], fields[4]
        names = ["unified"] if kind[0] == "cgroup2" else []
        if kind[0] == "cgroup":
            names = [n for n in ("pids", "memory") if n in kind[2].split(",")]
        for name in names:
            if name in paths and name not in found:
                found[name] = _under(point, root, paths[name])
    if "unified" not in found:
        return None
    return Hierarchies(found["unified"], found.get("pids"), found.get("memory"), paths["unified"])


def _under(point: str, root: str, path: str) -> Path:
    """Where cgroup `path` is below a mount at `point` of the hierarchy's `root`."""
    if root != "/" and (path + "/").startswith(root + "/"):
        path = path[len(root) :]
    return Path(point.replace("\\040", " ")) / path.lstrip("/")


def tree_base(data_dir: Path) -> str:
    """The node a data directory's dynods make their trees under: the next `dynod serve` there
    empties the trees a killed one left."""
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:12]
    return f"dynod-{digest}"


class Cgroup:
    """One dyno's (or build's) cgroup: the same name in each hierarchy dynod uses."""

    def __init__(self, unified: Path, limits: list[Path]) -> None:
        self.path = unified
        self.limits = limits  # its directories in the v1 pids and memory hierarchies
        self._procs = [os.fsencode(d / "cgroup.procs") for d in (unified, *limits)]

    def join(self) -> None:
        """Move the calling process in: run in the child before exec (a Popen preexec_fn), so
        that nothing it starts can be outside."""
        for path in self._procs:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)

    def procs(self) -> list[int]:
        """The live processes in it."""
        try:
            return [int(pid) for pid in (self.path / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def populated(self) -> bool:
        """Whether any live process is in it (zombies are not)."""
        try:
            return "populated 1" in (self.path / "cgroup.events").read_text()
        except OSError:
            return False

    def signal_all(self, signum: int) -> list[int]:
        """Send `signum` to every process in it, reading the list again until it holds no one
        new (bounded: `kill` ends forking for good); the processes signalled."""
        sent: set[int] = set()
        for _ in range(100):
            fresh = [pid for pid in self.procs() if pid not in sent]
            if not fresh:
                break
            for pid in fresh:
                with contextlib.suppress(OSError):
                    os.kill(pid, signum)
            sent.update(fresh)
        return sorted(sent)

    def kill(self) -> None:
        """SIGKILL every process in it and in its descendants, atomically (a forking process
        cannot slip out)."""
        with contextlib.suppress(FileNotFoundError):
            (self.path / "cgroup.kill").write_text("1")

    async def wait_empty(self, timeout: float | None = None) -> bool:
        """Wait until no process is left in it; False if `timeout` passed first."""
        with trio.move_on_after(float("inf") if timeout is None else timeout):
            while self.populated():
                await trio.sleep(0.01)
            return True
        return False

    def memory_usage(self) -> int | None:
        """Bytes of memory its processes use (v1 memory.usage_in_bytes, or v2 memory.current);
        None where no memory controller counts it."""
        for path in (*self.limits, self.path):
            for name in ("memory.usage_in_bytes", "memory.current"):
                with contextlib.suppress(OSError, ValueError):
                    return int((path / name).read_text())
        return None

    def limit_pids(self, most: int) -> None:
        for path in (*self.limits, self.path):
            with contextlib.suppress(OSError):
                (path / "pids.max").write_text(str(most))
                return

    def remove(self) -> None:
        """Remove it once empty (a populated cgroup stays: the tree's removal retries)."""
        for path in (self.path, *self.limits):
            with contextlib.suppress(OSError):
                path.rmdir()


class Tree:
    """dynod's node in each hierarchy, with a child cgroup per dyno or build."""

    def __init__(
        self, roots: list[Path], pids_max: int = PIDS_MAX, based: bool = False, own: str = ""
    ) -> None:
        self.roots = roots  # [v2 node, v1 pids node?, v1 memory node?]
        self.pids_max = pids_max
        self.based = based  # under a data directory's node, removed with the last tree in it
        self.own = own  # the v2 node's path, as /proc/PID/cgroup shows it

    @classmethod
    def open(
        cls, base: str | None = None, pids_max: int = PIDS_MAX, found: Hierarchies | None = None
    ) -> Tree | None:
        """Make this process's node, under node `base` (one per data directory) when given, at
        dynod's own cgroup otherwise; None where dynod cannot make cgroups with `cgroup.kill`
        (not root, cgroup v2 missing or read-only, Linux < 5.14)."""
        found = found if found is not None else detect()
        if found is None:
            return None
        name = f"dynod-{os.getpid()}-{next(_made)}"
        roots: list[Path] = []
        for parent in (found.unified, found.pids, found.memory):
            if parent is None:
                continue
            node = parent / base / name if base is not None else parent / name
            for _ in range(3):  # an earlier dynod's reaper may remove the base meanwhile
                try:
                    node.parent.mkdir(exist_ok=True)
                    node.mkdir()
                    roots.append(node)
                    break
                except FileNotFoundError:
                    continue
                except OSError:
                    break
            if not roots:
                return None
        if not (roots[0] / "cgroup.kill").exists():
            roots[0].rmdir()
            return None
        # Where v2 has the controllers itself, the dynos' cgroups get them.
        for controller in ("+pids", "+memory"):
            with contextlib.suppress(OSError):
                (roots[0] / "cgroup.subtree_control").write_text(controller)
        own = "/".join(part for part in (found.own.rstrip("/"), base, name) if part is not None)
        return cls(roots, pids_max, based=base is not None, own=own)

    @property
    def path(self) -> Path:
        return self.roots[0]

    def cgroup(self, label: str, *, pids_max: int | None = None) -> Cgroup:
        """A new cgroup for dyno or build `label` ("web.1", "build"), with `pids_max` (None: no
        limit of its own)."""
        name = f"{re.sub(r'[^A-Za-z0-9_.-]', '_', label)}-{next(_made)}"
        made: list[Path] = []
        for root in self.roots:
            path = root / name
            path.mkdir()
            made.append(path)
        cgroup = Cgroup(made[0], made[1:])
        if pids_max is not None:
            cgroup.limit_pids(pids_max)
        return cgroup

    def holds(self, pid: int) -> bool:
        """Whether process `pid` is in one of the tree's cgroups."""
        try:
            lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        except OSError:
            return False
        path = next((line[3:] for line in lines if line.startswith("0::")), "")
        return bool(self.own) and (path + "/").startswith(self.own + "/")

    def children(self) -> list[Cgroup]:
        found = []
        try:
            names = sorted(p.name for p in self.path.iterdir() if p.is_dir())
        except OSError:
            return []
        for name in names:
            found.append(Cgroup(self.path / name, [r / name for r in self.roots[1:]]))
        return found

    def empty(self, grace: float = 0.5) -> int:
        """End every process in the tree (SIGTERM, `grace`, then `cgroup.kill`) and remove its
        cgroups; how many processes there were. Blocking: for start-up and the last exit."""
        signalled: set[int] = set()
        for cgroup in self.children():
            signalled.update(cgroup.signal_all(signal.SIGTERM))
        whole = Cgroup(self.path, [])
        deadline = time.monotonic() + grace
        while signalled and whole.populated() and time.monotonic() < deadline:
            time.sleep(0.01)
        whole.kill()
        deadline = time.monotonic() + 2.0
        while whole.populated() and time.monotonic() < deadline:
            time.sleep(0.01)
        self._remove_cgroups()
        return len(signalled)

    def empty_others(self) -> int:
        """Empty and remove the trees under the same base that earlier dynods left (killed
        with their reaper); how many processes they held."""
        ended = 0
        with contextlib.suppress(OSError):
            for node in self.path.parent.iterdir():
                if node.is_dir() and node.name.startswith("dynod-") and node != self.path:
                    other = Tree([root.parent / node.name for root in self.roots])
                    ended += other.empty()
                    other.remove()
        return ended

    def remove(self) -> None:
        """Remove the emptied tree: its cgroups, then its nodes."""
        self._remove_cgroups()
        for root in self.roots:
            with contextlib.suppress(OSError):
                root.rmdir()
            if self.based:
                with contextlib.suppress(OSError):
                    root.parent.rmdir()  # unless another tree is in it

    def _remove_cgroups(self) -> None:
        for root in self.roots:
            with contextlib.suppress(OSError):
                for path in root.iterdir():
                    if path.is_dir():
                        with contextlib.suppress(OSError):
                            path.rmdir()
