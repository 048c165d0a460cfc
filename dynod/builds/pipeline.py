"""Builds as the platform runs them: fetch the source, run the buildpacks, pack and store the
slug, and release it, with every line of output kept and streamed to whoever follows it.

Build records live in `<app dir>/builds/<id>.json` and their output in `<id>.log`, so builds and
their output survive a restart of dynod (a build that was running then is marked failed).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any

import attrs
import trio

from dynod.builds.source import TARBALL_SUFFIXES
from dynod.errors import DynodError, NotFound
from dynod.proc.child import as_user
from dynod.state.dirs import fresh_dir
from dynod.state.files import atomic_write, heroku_time

SOURCE_DOWNLOAD_TIMEOUT = 300


def _names(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(names)


@attrs.frozen
class Build:
    id: str
    app_id: str
    status: str  # pending, succeeded, failed
    source_url: str
    version: str | None
    buildpacks: tuple[str, ...] = attrs.field(converter=_names)
    slug_id: str | None = None
    release_version: int | None = None
    created_at: str = attrs.field(factory=heroku_time)
    updated_at: str = attrs.field(factory=heroku_time)

    def to_json(self) -> dict[str, Any]:
        return {**attrs.asdict(self), "buildpacks": list(self.buildpacks)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Build:
        return cls(**{f.name: data[f.name] for f in attrs.fields(cls) if f.name in data})


class BuildOutput:
    """A build's lines: kept in memory while it runs (and on disk), followed live by readers."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: list[str] = []
        self.done = False
        self._changed = trio.Event()
        self._file = path.open("a", encoding="utf-8")

    def write(self, line: str) -> None:
        self.lines.append(line)
        self._file.write(line + "\n")
        self._file.flush()
        self._changed.set()
        self._changed = trio.Event()

    def close(self) -> None:
        self.done = True
        self._file.close()
        self._changed.set()

    async def follow(self) -> AsyncIterator[str]:
        sent = 0
        while True:
            while sent < len(self.lines):
                yield self.lines[sent]
                sent += 1
            if self.done:
                return
            await self._changed.wait()


class BuildStore:
    """One app's builds on disk; a build's record is replaced (fsync'd) in a worker thread."""

    def __init__(self, app_dir: Path) -> None:
        self.dir = app_dir / "builds"
        self.dir.mkdir(exist_ok=True)
        self.running: dict[str, BuildOutput] = {}

    def all(self) -> list[Build]:
        builds = [Build.from_json(json.loads(p.read_text())) for p in self.dir.glob("*.json")]
        return sorted(builds, key=lambda b: (b.created_at, b.id))

    def get(self, build_id: str) -> Build:
        path = self.dir / f"{build_id}.json"
        if not _is_uuid(build_id) or not path.exists():
            raise NotFound(f"Couldn't find build {build_id}: list them with `dyno builds`.")
        return Build.from_json(json.loads(path.read_text()))

    async def save(self, build: Build) -> Build:
        data = json.dumps(build.to_json()).encode()
        await trio.to_thread.run_sync(atomic_write, self.dir / f"{build.id}.json", data)
        return build

    async def start(
        self, app_id: str, source_url: str, version: str | None, buildpacks: list[str]
    ) -> tuple[Build, BuildOutput]:
        build = await self.save(
            Build(str(uuid.uuid4()), app_id, "pending", source_url, version, buildpacks)
        )
        output = self.running[build.id] = BuildOutput(self.dir / f"{build.id}.log")
        return build, output

    async def finish(self, build: Build, **changes: Any) -> Build:
        build = await self.save(attrs.evolve(build, updated_at=heroku_time(), **changes))
        output = self.running.pop(build.id, None)
        if output is not None:
            output.close()
        return build

    async def interrupted(self) -> None:
        """Builds that were running when dynod stopped can never finish: mark them failed."""
        for build in self.all():
            if build.status == "pending":
                await self.finish(build, status="failed")

    async def output(self, build_id: str) -> AsyncIterator[str]:
        self.get(build_id)
        running = self.running.get(build_id)
        if running is not None:
            async for line in running.follow():
                yield line
            return
        log = self.dir / f"{build_id}.log"
        if log.exists():
            for line in log.read_text(encoding="utf-8").splitlines():
                yield line


def _is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text.lower()
    except ValueError:
        return False


def fetch_source(
    url: str,
    dest_dir: Path,
    *,
    max_bytes: int,
    owner: tuple[int, int] | None = None,
    local: bool = True,
) -> Path:
    """The source named by a build's `source_blob.url`: a local path (directory or tarball) or
    a `file://` URL, unless `local` is off; or an http(s) URL (such as an upload's get_url),
    downloaded into dest_dir, at most `max_bytes` (the upload cap). With `owner` (a root
    dynod), a local path is read by the app's user, packed into dest_dir: what that user
    cannot read (the data directory, root-only files) is refused (docs/platform.md, "Builds")."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme in ("", "file"):
        if not local:
            raise DynodError(
                f"source {url}: paths on dynod's machine are switched off ([build] "
                "local_sources in dynod.toml): upload it with POST /sources, or give an http(s) URL"
            )
        path = Path(urllib.parse.unquote(parsed.path) if parsed.scheme else url)
        if owner is not None:
            return _read_as(owner, url, path, dest_dir, max_bytes)
        if not path.exists():
            raise DynodError(f"source {url} does not exist: give a directory or a tarball")
        return path
    if parsed.scheme not in ("http", "https"):
        raise DynodError(f"source {url}: use a path, a file:// URL or an http(s) URL")
    target = dest_dir / "source.tar.gz"
    try:
        with (
            urllib.request.urlopen(url, timeout=SOURCE_DOWNLOAD_TIMEOUT) as response,
            target.open("wb") as out,
        ):
            _copy_capped(response, out, max_bytes, url)
    except urllib.error.HTTPError as err:  # before OSError: it is one, and has a status
        raise DynodError(f"cannot download source {url}: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError) as err:
        reason = err.reason if isinstance(err, urllib.error.URLError) else err
        raise DynodError(f"cannot download source {url}: {reason}: check the URL") from None
    return target


def _too_big(url: str, max_bytes: int) -> DynodError:
    return DynodError(
        f"source {url} is over the limit of {max_bytes >> 20} MB: make it smaller, or raise"
        " [build] slug_max_mb in dynod.toml"
    )


def _copy_capped(source: IO[bytes], out: IO[bytes], max_bytes: int, url: str) -> None:
    copied = 0
    while chunk := source.read(1 << 20):
        copied += len(chunk)
        if copied > max_bytes:
            raise _too_big(url, max_bytes)
        out.write(chunk)


# Run as the app's user: $1 packed (.git left out, every member under app/), or copied as is.
_PACK_SOURCE = (
    'if [ "$2" = dir ]; then exec tar -C "$1" --exclude=.git --transform="s,^\\.,app," '
    '-czf - .; else exec cat -- "$1"; fi'
)


def _read_as(owner: tuple[int, int], url: str, path: Path, dest_dir: Path, max_bytes: int) -> Path:
    """A local source as the app's user reads it, through a pipe into dest_dir (dynod's): a
    directory as a gzip tarball, a tarball as it is."""
    if not path.exists():
        raise DynodError(f"source {url} does not exist: give a directory or a tarball")
    is_dir = path.is_dir()
    name = "source.tar.gz" if is_dir else path.name
    if not is_dir and not name.endswith(TARBALL_SUFFIXES):
        raise DynodError(f"source {url}: name an app directory or a .tar.gz, .tgz or .tar tarball")
    target = dest_dir / name
    with tempfile.TemporaryFile() as errors:  # a file: a pipe left unread could fill and block
        process = subprocess.Popen(
            ["sh", "-c", _PACK_SOURCE, "sh", str(path), "dir" if is_dir else "file"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=errors,
            cwd="/",
            env={"PATH": "/usr/local/bin:/usr/bin:/bin", "LC_ALL": "C"},
            **as_user(owner),
        )
        assert process.stdout is not None
        timer = threading.Timer(SOURCE_DOWNLOAD_TIMEOUT, process.kill)
        timer.start()
        try:
            with process.stdout, target.open("wb") as out:
                _copy_capped(process.stdout, out, max_bytes, url)
        except BaseException:
            process.kill()
            raise
        finally:
            timer.cancel()
            process.wait()
        errors.seek(0)
        said = errors.read().decode("utf-8", "replace").strip().splitlines()
    if process.returncode != 0:
        reason = said[0] if said else f"status {process.returncode}"
        raise DynodError(
            f"source {url} cannot be read by the app's user ({reason}): make it readable by"
            " every user, or upload it (`dyno deploy`)"
        )
    return target


def scratch(root: Path, prefix: str) -> Path:
    """One build's fresh private work directory (0700) in dynod's scratch directory `root`
    (README, "`dynod serve`")."""
    return fresh_dir(root, prefix, 0o700)


@asynccontextmanager
async def lent_cache(cache: Path, work: Path, owner: tuple[int, int] | None) -> AsyncIterator[Path]:
    """The app's build cache where the build can use it. When buildpacks run as the app's user,
    that user cannot reach the data directory (0700, dynod's): the cache moves into the build's
    own directory (made passable) for the build, and back after it, whatever happened. A dynod
    killed meanwhile loses that cache, which the next build rebuilds."""
    if owner is None:
        yield cache
        return
    lent = work / "cache"
    await trio.to_thread.run_sync(_move_tree, cache, lent)  # work is still 0700: no one looks on
    # The build user passes through work/ to build/ and cache/ (each then its own, 0700) and
    # lists nothing; what else is there (the source) is closed to everyone but dynod first.
    for entry in work.iterdir():
        if not entry.is_symlink():
            entry.chmod(stat.S_IMODE(entry.lstat().st_mode) & ~0o077)
    work.chmod(0o711)
    try:
        yield lent
    finally:
        work.chmod(0o700)  # before the slug is packed in it
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(_return_cache, lent, cache, owner)


def _owns_any(root: Path, uid: int) -> bool:
    if os.lstat(root).st_uid == uid:
        return True
    for _, dirs, files, fd in os.fwalk(root, follow_symlinks=False):
        for name in dirs + files:
            if os.stat(name, dir_fd=fd, follow_symlinks=False).st_uid == uid:
                return True
    return False


def _move_tree(source: Path, dest: Path) -> None:
    try:
        os.rename(source, dest)
    except OSError:  # another filesystem (a tmpfs /tmp)
        shutil.copytree(source, dest, symlinks=True)
        shutil.rmtree(source)


def _return_cache(lent: Path, cache: Path, owner: tuple[int, int]) -> None:
    """Only a cache run_build took back (dynod's again, nothing the build user can change)
    goes back into the data directory; one it could not take back whole is dropped."""
    if not lent.is_dir():
        return
    try:
        kept = not _owns_any(lent, owner[0])
    except OSError:  # entries vanishing under the walk: not taken back
        kept = False
    if not kept:
        shutil.rmtree(lent, ignore_errors=True)
        return
    try:
        if cache.exists():  # another build of the app put its cache back first: it wins
            if any(cache.iterdir()):
                return
            cache.rmdir()
        _move_tree(lent, cache)
    except OSError:  # the app was destroyed meanwhile, or its directory is gone
        shutil.rmtree(lent, ignore_errors=True)


Output = Callable[[str], None]
