"""What the `dynod smoke` tests share: a private TMPDIR that must end empty, a mark to find every
process of a run in /proc, a digest of an app directory's whole tree, and a run of the command."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import attrs

from tests.helpers import ROOT, dynod, pid_alive

APPS = ROOT / "fixtures"
HOSTILE = ROOT / "fixtures" / "smoke"


@attrs.frozen
class Scene:
    """One run's surroundings: its TMPDIR (every user passes through it, as dynos running as
    uids of their own need) and the mark its processes carry (in their environment through
    the run's own and `--env SMOKE_MARK`, or on their command line)."""

    tmpdir: Path
    mark: str

    def env(self) -> dict[str, str]:
        return {**os.environ, "TMPDIR": str(self.tmpdir), "SMOKE_MARK": self.mark}

    def run(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return dynod(
            "smoke", *args, "--env", f"SMOKE_MARK={self.mark}", env=self.env(), timeout=timeout
        )

    def left_behind(self) -> list[str]:
        """What the run left: files in its TMPDIR, processes carrying its mark."""
        found = [f"file {p}" for p in self.tmpdir.iterdir()]
        found += [f"process {pid}: {cmd}" for pid, cmd in marked(self.mark)]
        return found


def scene() -> Iterator[Scene]:
    tmpdir = Path(tempfile.mkdtemp(prefix="smoke-test-", dir="/tmp"))
    tmpdir.chmod(0o755)
    try:
        yield Scene(tmpdir, f"smoke-{uuid.uuid4().hex}")
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def marked(mark: str) -> list[tuple[int, str]]:
    """Live processes with `mark` in their environment or on their command line."""
    found = []
    needle = mark.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                command = f.read()
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue
        if (needle in command or needle in environ) and pid_alive(int(entry)):
            found.append((int(entry), command.replace(b"\0", b" ").decode(errors="replace")))
    return found


def tree_digest(root: Path) -> str:
    """Every name, kind, mode, size, mtime and content under `root`: equal only if untouched."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        digest.update(f"{path.relative_to(root)} {info.st_mode} {info.st_mtime_ns}\n".encode())
        if path.is_file() and not path.is_symlink():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def junit_cases(path: Path) -> dict[str, ET.Element]:
    """The report's testcases by name (the file must parse as JUnit XML)."""
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    return {case.attrib["name"]: case for case in suite.findall("testcase")}
