"""Heroku's classic buildpack API run over a prepared build directory: each buildpack copied for
the build, detected, compiled with the earlier ones' exports sourced, and the last one's release
read, every step in its own process group with its output streamed line by line."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import trio
from attrs import field, frozen

from dynod.builds.buildpacks import (
    BUILDPACKS_DIR,
    BUILTIN_BUILDPACKS,
    Buildpack,
    app_buildpacks,
    parse_release_yaml,
    resolve_buildpack,
)
from dynod.builds.handover import hand_over, take_back
from dynod.core.names import CONFIG_KEY, STACK
from dynod.core.procfile import decode_utf8, parse_procfile
from dynod.errors import DynodError, ParseError
from dynod.proc.cgroups import Cgroup
from dynod.proc.child import as_user, joining
from dynod.proc.dyno import LineSplitter
from dynod.proc.reaper import Reaper, group_alive

DEFAULT_BUILD_TIMEOUT = 15 * 60.0

Output = Callable[[str], None]

_STEP = "-----> "
_DETAIL = "       "
_STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL for a cancelled step
_DRAIN_GRACE = 1.0  # how long output may trail a step's exit (a daemon may hold the pipe)
_READ_SIZE = 1 << 16
# Sources the earlier buildpacks' `export` files, then execs the compile. `set --` hides our
# arguments from the export files; the names are odd so that an export cannot clobber them.
_WITH_EXPORTS = (
    '__dynod_n=$1; shift; __dynod_exports=("${@:1:__dynod_n}"); shift "$__dynod_n"; '
    '__dynod_cmd=("$@"); set --; '
    'for __dynod_e in "${__dynod_exports[@]}"; do . "$__dynod_e"; done; '
    'exec "${__dynod_cmd[@]}"'
)


class BuildFailed(DynodError):
    """A build step failed; the message names the step (`compile of python failed ...`)."""


@frozen
class BuildResult:
    build_dir: Path
    process_types: dict[str, str] = field(hash=False)
    buildpacks: tuple[str, ...]
    stack: str


async def run_build(
    build_dir: str | os.PathLike[str],
    *,
    cache_dir: str | os.PathLike[str],
    config_vars: Mapping[str, str],
    buildpacks: Sequence[str] = (),
    source_version: str = "",
    output: Output,
    timeout: float = DEFAULT_BUILD_TIMEOUT,
    reaper: Reaper | None = None,
    path: str | None = None,
    owner: tuple[int, int] | None = None,
) -> BuildResult:
    """Run buildpacks over a prepared build directory, in place, as Heroku does.

    Buildpacks come from `buildpacks` (built-in names or local directories), else the app's
    `.buildpacks` file, else the first built-in whose detect applies. Each is copied to a
    scratch directory for this build (its `export` file lands there), detected, and compiled
    with the earlier ones' exports sourced; the last one's bin/release gives default process
    types, which the Procfile overrides. Raises BuildFailed naming the failed step; its
    message is not streamed, so that the caller shows it once (as a ` !     ` line, as Heroku
    does). Cancelling kills the running step's process group. `path` is the PATH buildpacks see
    (dynod's own by default; the platform gives the dynos' PATH when dynos run as another user,
    so that what a build links to, such as Python, is what those dynos can read).

    `owner` (uid, gid): the user the buildpacks run as (a root dynod's app user). The build
    directory, the cache and the build's env/ and tmp/ are handed to it first, and the build
    directory and cache taken back after (see hand_over, take_back); the caller makes sure
    that user can pass through their parents.
    """
    build = Path(build_dir).resolve()
    if not build.is_dir():
        raise DynodError(f"cannot build in {build}: not a directory; prepare_source makes one")
    cache = Path(cache_dir).resolve()
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dynod-build-") as scratch_name:
        scratch = Path(scratch_name)
        runner = _Runner(build, cache, scratch, source_version, output, reaper, path, owner)
        runner.write_env_dir(config_vars)
        handed: list[Path] = []
        try:
            # Every process of the build runs in one cgroup, emptied when the build ends.
            runner.cgroup = reaper.cgroup("build", dyno=False) if reaper is not None else None
            if owner is not None:
                # The scratch directory stays dynod's (a build user could plant a symlink in
                # it where dynod then creates a directory): only what the build writes or
                # reads is handed over, and buildpacks/ is dynod's, made before anything runs.
                scratch.chmod(0o711)
                (scratch / "buildpacks").mkdir(mode=0o711)
                for tree in (build, cache, runner.env_dir, scratch / "tmp"):
                    handed.append(tree)
                    await trio.to_thread.run_sync(hand_over, tree, owner)
            with trio.move_on_after(timeout) as limit:
                return await runner.run(list(buildpacks))
        finally:
            if runner.cgroup is not None:
                with trio.CancelScope(shield=True):
                    await _empty(runner.cgroup)
            if owner is not None:
                with trio.CancelScope(shield=True):
                    for tree in (t for t in (build, cache) if t in handed):
                        removed = await trio.to_thread.run_sync(take_back, tree, owner)
                        if removed:
                            output(
                                f" !     Removed {len(removed)} files the build linked from "
                                f"outside it, e.g. {removed[0]}"
                            )
    assert limit.cancelled_caught
    minutes = f"{timeout / 60:g} minutes" if timeout >= 60 else f"{timeout:g} seconds"
    raise BuildFailed(f"build timed out after {minutes}: make the build faster or retry")


class _Runner:
    """One build's state: its directories, its explicit environment and the exports so far."""

    def __init__(
        self,
        build: Path,
        cache: Path,
        scratch: Path,
        source_version: str,
        output: Output,
        reaper: Reaper | None,
        path: str | None = None,
        owner: tuple[int, int] | None = None,
    ) -> None:
        self.build, self.cache, self.scratch = build, cache, scratch
        self.output, self.reaper, self.owner = output, reaper, owner
        self.cgroup: Cgroup | None = None  # where the build's processes run
        self.env_dir = scratch / "env"
        self.exports: list[str] = []
        tmp = scratch / "tmp"
        tmp.mkdir()
        # Built from nothing: only what a build needs, never dynod's own environment.
        self.env = {
            "PATH": path or os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            # Another user cannot use dynod's home (root's): the build's own tmp serves.
            "HOME": os.environ.get("HOME", str(tmp)) if owner is None else str(tmp),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "STACK": STACK,
            "SOURCE_VERSION": source_version,
            "TMPDIR": str(tmp),
        }

    def write_env_dir(self, config_vars: Mapping[str, str]) -> None:
        self.env_dir.mkdir(mode=0o700)
        for key, value in config_vars.items():
            if not CONFIG_KEY.fullmatch(key):
                raise DynodError(f"bad config var name {key!r}: use letters, digits and '_'")
            (self.env_dir / key).write_text(value, encoding="utf-8")

    async def run(self, names: list[str]) -> BuildResult:
        self.output(f"{_STEP}Building on the {STACK.capitalize()} stack")
        try:
            named = [resolve_buildpack(name) for name in names] or app_buildpacks(self.build)
        except DynodError as err:
            raise BuildFailed(str(err)) from None
        if len(named) == 1:
            self.output(f"{_STEP}Using buildpack: {named[0].name}")
        elif named:
            self.output(f"{_STEP}Using buildpacks:")
            for number, pack in enumerate(named, start=1):
                self.output(f"{_DETAIL}{number}. {pack.name}")
        used = named or [await self.detect_default()]
        copies = [
            await trio.to_thread.run_sync(self.copy_buildpack, pack, str(n))
            for n, pack in enumerate(used, start=1)
        ]
        for pack, copy_dir in zip(used, copies, strict=True):
            if named:  # a named buildpack that does not apply is an error, as on Heroku
                await self.detect(pack, copy_dir, required=True)
            await self.compile(pack, copy_dir)
        # Heroku takes default process types from the last buildpack only.
        defaults = await self.release(used[-1], copies[-1])
        process_types = self.discover_process_types(defaults)
        return BuildResult(self.build, process_types, tuple(p.name for p in used), STACK)

    def copy_buildpack(self, pack: Buildpack, key: str) -> Path:
        """A private copy for this build: its `export` file must not reach other builds, and
        a buildpack unpacked from a zip or an sdist may have lost its execute bits. When the
        build runs as the app's user, a local buildpack is copied by that user too: a
        directory it may change (one of its dynos' own) must not make dynod read for it what
        it cannot read itself. The built-ins are dynod's, copied by dynod and handed over."""
        dest = self.scratch / "buildpacks" / key  # buildpacks/ is dynod's: see run_build
        if self.owner is not None and pack.path.parent != BUILDPACKS_DIR:
            _copy_as(self.owner, pack, dest)
            return dest
        shutil.copytree(pack.path, dest, symlinks=True, ignore=shutil.ignore_patterns(".git"))
        for script in (dest / "bin").iterdir():
            if script.is_file() and not script.is_symlink():  # never chmod a link's target
                script.chmod(script.stat().st_mode | 0o111)
        if self.owner is not None:
            hand_over(dest, self.owner)
        return dest

    async def detect_default(self) -> Buildpack:
        for name in BUILTIN_BUILDPACKS:
            pack = resolve_buildpack(name)
            copy = await trio.to_thread.run_sync(self.copy_buildpack, pack, f"detect-{name}")
            if await self.detect(pack, copy, required=False):
                return pack
        raise BuildFailed(
            "No default language could be detected for this app: add requirements.txt,"
            " pyproject.toml, package.json or a Procfile, or name a buildpack"
        )

    async def detect(self, pack: Buildpack, copy_dir: Path, *, required: bool) -> bool:
        argv = [str(copy_dir / "bin" / "detect"), str(self.build)]
        status, stdout = await self.step(f"detect of {pack.label}", argv, capture=True)
        if status != 0:
            if required:
                raise BuildFailed(
                    f"detect of {pack.label} failed with status {status}:"
                    f" this app is not compatible with buildpack {pack.name}"
                )
            return False
        detected = stdout.strip().splitlines()
        self.output(f"{_STEP}{detected[0] if detected else pack.label} app detected")
        return True

    async def compile(self, pack: Buildpack, copy_dir: Path) -> None:
        script = copy_dir / "bin" / "compile"
        argv = ["bash", "-c", _WITH_EXPORTS, "bash", str(len(self.exports)), *self.exports]
        argv += [str(script), str(self.build), str(self.cache), str(self.env_dir)]
        status, _ = await self.step(f"compile of {pack.label}", argv, capture=False)
        if status != 0:
            raise BuildFailed(f"compile of {pack.label} failed with status {status}")
        if (copy_dir / "export").is_file():
            self.exports.append(str(copy_dir / "export"))

    async def release(self, pack: Buildpack, copy_dir: Path) -> dict[str, str]:
        script = copy_dir / "bin" / "release"
        if not script.is_file():
            return {}
        argv = [str(script), str(self.build)]
        status, stdout = await self.step(f"release of {pack.label}", argv, capture=True)
        if status != 0:
            raise BuildFailed(f"release of {pack.label} failed with status {status}")
        try:
            types = parse_release_yaml(stdout)
            if types:  # the Procfile parser's rules for names and commands apply here too
                lines = "".join(f"{name}: {command}\n" for name, command in types.items())
                parse_procfile(lines, f"bin/release of {pack.label}")
        except (ValueError, ParseError) as err:
            raise BuildFailed(
                f"release of {pack.label} printed YAML dynod cannot read ({err}):"
                " print default_process_types with one `type: command` line each"
            ) from None
        return types

    def discover_process_types(self, defaults: dict[str, str]) -> dict[str, str]:
        self.output(f"{_STEP}Discovering process types")
        declared: dict[str, str] = {}
        procfile = self.build / "Procfile"
        if procfile.is_file():
            try:
                parsed = parse_procfile(decode_utf8(procfile.read_bytes(), "Procfile"))
            except ParseError as err:
                raise BuildFailed(str(err)) from None
            declared = {t.name: t.command for t in parsed.types}
            self.output(f"{_DETAIL}Procfile declares types     -> {', '.join(declared)}")
        if defaults:
            self.output(f"{_DETAIL}Default types for buildpack -> {', '.join(defaults)}")
        if not declared and not defaults:
            self.output(f"{_DETAIL}Procfile declares types     -> (none)")
        return {**declared, **{k: v for k, v in defaults.items() if k not in declared}}

    def _as_owner(self) -> dict[str, Any]:
        """Popen's arguments to run as the build's user, in the build's cgroup if it has one."""
        if self.cgroup is None:
            return as_user(self.owner)
        return {"preexec_fn": joining(self.cgroup, self.owner)}

    async def step(self, what: str, argv: list[str], *, capture: bool) -> tuple[int, str]:
        """Run one buildpack script in its own process group; stream its output (stderr only,
        when stdout is captured); return its status (128+N for signal N) and captured stdout."""
        try:
            process = await trio.lowlevel.open_process(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE if capture else subprocess.STDOUT,
                cwd=str(self.build),
                env=self.env,
                start_new_session=True,
                **self._as_owner(),
            )
        except OSError as err:  # not executable, no #! line, a bad interpreter
            raise BuildFailed(f"{what} cannot run ({err.strerror}): check its #! line") from None
        if self.reaper is not None:
            self.reaper.watch(process.pid)
        captured = bytearray()
        assert process.stdout is not None
        try:
            async with trio.open_nursery() as readers:
                if capture:
                    assert process.stderr is not None
                    readers.start_soon(_collect, process.stdout, captured)
                    readers.start_soon(_stream, process.stderr, self.output)
                else:
                    readers.start_soon(_stream, process.stdout, self.output)
                try:
                    await process.wait()
                finally:
                    with trio.CancelScope(shield=True):
                        await _end_group(process)
                readers.cancel_scope.deadline = trio.current_time() + _DRAIN_GRACE
        finally:
            if self.reaper is not None:
                self.reaper.forget(process.pid)
        code = process.returncode
        assert code is not None
        return (128 - code if code < 0 else code), captured.decode("utf-8", "replace")


# Run as the build's user: copy a local buildpack ($1) to $2, .git left out, scripts executable.
_COPY_BUILDPACK = (
    'cp -R -p -P -- "$1/." "$2/" && rm -rf -- "$2/.git" && '
    'for f in "$2"/bin/*; do if [ -f "$f" ] && [ ! -L "$f" ]; then chmod +x "$f"; fi; done'
)


def _copy_as(owner: tuple[int, int], pack: Buildpack, dest: Path) -> None:
    dest.mkdir()
    os.chown(dest, *owner)
    done = subprocess.run(
        ["sh", "-c", _COPY_BUILDPACK, "sh", str(pack.path), str(dest)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "LC_ALL": "C"},
        **as_user(owner),
    )
    if done.returncode != 0:
        said = (done.stderr.strip().splitlines() or ["no reason given"])[-1]
        raise BuildFailed(
            f"buildpack {pack.name} cannot be copied by the app's user ({said}):"
            " make it readable by every user, or use a built-in"
        )


async def _empty(cgroup: Cgroup) -> None:
    """Nothing a build started may outlive it, whatever session it is in."""
    cgroup.kill()
    await cgroup.wait_empty(2.0)
    cgroup.remove()


async def _end_group(process: trio.Process) -> None:
    """Nothing of a step may outlive it: a cancelled step gets SIGTERM, then SIGKILL after a
    grace period; whatever the step left behind in its group is killed."""
    if process.returncode is None:
        _signal_group(process.pid, signal.SIGTERM)
        with trio.move_on_after(_STOP_GRACE):
            await process.wait()
    if process.returncode is None or group_alive(process.pid):
        _signal_group(process.pid, signal.SIGKILL)
        await process.wait()


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass


async def _stream(pipe: trio.abc.ReceiveStream, output: Output) -> None:
    splitter = LineSplitter()
    async with pipe:
        while data := await pipe.receive_some(_READ_SIZE):
            for line in splitter.feed(bytes(data)):
                output(line)
    for line in splitter.flush():
        output(line)


async def _collect(pipe: trio.abc.ReceiveStream, into: bytearray) -> None:
    async with pipe:
        while data := await pipe.receive_some(_READ_SIZE):
            into += data
