"""Builds (docs/platform.md): a source tree copied to a new build directory (`.slugignore` applied),
then Heroku's classic buildpack API run over it — detect, compile, release — with the output
streamed line by line. Packing the result into a slug is dynod.slugs.slug's job.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import trio
from attrs import field, frozen

from dynod.core.names import CONFIG_KEY, STACK
from dynod.core.procfile import decode_utf8, parse_procfile
from dynod.errors import DynodError, ParseError
from dynod.proc.child import as_user
from dynod.proc.dyno import LineSplitter
from dynod.proc.reaper import Reaper, group_alive
from dynod.slugs.slug import UnsafeSlug, unpack_slug

BUILTIN_BUILDPACKS = ("python", "nodejs", "procfile")  # also the order of default detection
BUILDPACKS_DIR = Path(__file__).resolve().parent.parent / "buildpacks"
DEFAULT_BUILD_TIMEOUT = 15 * 60.0
TARBALL_SUFFIXES = (".tar.gz", ".tgz", ".tar")

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
class Buildpack:
    """A buildpack as named by the app or user: a built-in name or a local directory."""

    name: str  # "python", or the directory's absolute path
    path: Path

    @property
    def label(self) -> str:
        """The short name used in output and error messages."""
        return self.path.name


@frozen
class BuildResult:
    build_dir: Path
    process_types: dict[str, str] = field(hash=False)
    buildpacks: tuple[str, ...]
    stack: str


# ---------------------------------------------------------------------------------------------
# Source


def prepare_source(source: str | os.PathLike[str], build_dir: str | os.PathLike[str]) -> Path:
    """Copy `source` (a directory, `.git` left out, or a tarball) into `build_dir` (which must
    not exist or be empty), then delete what its `.slugignore` names. Returns `build_dir`."""
    src, dest = Path(source), Path(build_dir)
    if dest.exists() and (dest.is_symlink() or not dest.is_dir() or any(dest.iterdir())):
        raise DynodError(f"cannot build in {dest}: it exists and is not an empty directory")
    if src.is_dir():
        _copy_source_dir(src, dest)
    elif src.is_file() and src.name.endswith(TARBALL_SUFFIXES):
        _unpack_source_tarball(src, dest)
    else:
        raise DynodError(
            f"cannot build {src}: name an app directory or a .tar.gz, .tgz or .tar tarball"
        )
    apply_slugignore(dest)
    return dest


def _copy_source_dir(src: Path, dest: Path) -> None:
    def copy_regular(from_path: str, to_path: str) -> None:
        # Fifos would block a copy and devices have no place in an app: refuse them.
        if not stat.S_ISREG(os.lstat(from_path).st_mode):
            raise OSError(f"{from_path} is not a regular file, directory or symlink")
        shutil.copy2(from_path, to_path)

    created = not dest.exists()
    try:
        shutil.copytree(
            src,
            dest,
            symlinks=True,
            ignore=shutil.ignore_patterns(".git"),
            copy_function=copy_regular,
            dirs_exist_ok=True,
        )
    except (shutil.Error, OSError) as err:
        # shutil.Error carries a list of (src, dst, reason); the first one says enough.
        reason = err.args[0][0][2] if isinstance(err, shutil.Error) and err.args[0] else err
        _clear(dest, remove=created)  # left as it was found, like a refused tarball's
        raise DynodError(f"cannot copy the app from {src}: {reason}") from None


def _clear(directory: Path, *, remove: bool) -> None:
    if remove:
        shutil.rmtree(directory, ignore_errors=True)
        return
    for child in directory.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _unpack_source_tarball(tarball: Path, dest: Path) -> None:
    """Rewrite the tarball as a slug (members under ./app/, the one top-level directory, if any,
    stripped) and let dynod.slugs.slug's unpacking check and extract it: one set of member rules.
    Hostile names are kept as they are, so that those rules refuse them."""
    names: dict[str, str] = {}  # member name as the slug checks report it -> name in the tarball
    with tempfile.TemporaryDirectory(prefix="dynod-source-") as scratch:
        as_slug = Path(scratch) / "source.tar.gz"
        try:
            with tarfile.open(tarball, "r:*") as tar:
                members = tar.getmembers()
                top = _single_top_dir(members)
                with tarfile.open(as_slug, "w:gz", compresslevel=1) as out:
                    for info in members:
                        moved = copy.copy(info)
                        moved.name = _rehome(info.name, top)
                        if info.islnk():  # hard links name their target from the archive root
                            moved.linkname = _rehome(info.linkname, top)
                        if moved.name == "app/":
                            continue  # the app's root directory: unpacking makes it
                        names[moved.name] = names["./" + moved.name] = info.name
                        out.addfile(moved, tar.extractfile(info) if info.isreg() else None)
        except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
            raise DynodError(f"cannot read {tarball}: not a tarball ({err})") from None
        try:
            unpack_slug(as_slug, dest)
        except UnsafeSlug as err:
            member = names.get(err.member, err.member)
            raise DynodError(
                f"unsafe source tarball {tarball.name}: member {member!r} {err.rule};"
                " nothing was built"
            ) from None


def _name_parts(name: str) -> list[str]:
    return [part for part in name.split("/") if part not in ("", ".")]


def _single_top_dir(members: list[tarfile.TarInfo]) -> str | None:
    """The one top-level directory holding the whole app, or None when the app is at the root."""
    tops: set[str] = set()
    top_is_dir = False
    for info in members:
        parts = _name_parts(info.name)
        if info.name.startswith("/") or not parts:
            continue
        tops.add(parts[0])
        top_is_dir |= len(parts) > 1 or info.isdir()
    if len(tops) != 1 or not top_is_dir:
        return None
    (top,) = tops
    return None if top == ".." else top


def _rehome(name: str, top: str | None) -> str:
    if name.startswith("/"):
        return name  # refused as absolute by the slug rules; prefixing would hide that
    parts = _name_parts(name)
    if top is not None and parts[:1] == [top]:
        parts = parts[1:]
    return "app/" + "/".join(parts)


def apply_slugignore(build_dir: str | os.PathLike[str]) -> list[str]:
    """Delete what the top-level `.slugignore` names (gitignore-like patterns, no negation, as
    on Heroku); returns the deleted paths. Only paths found by walking the build directory,
    without following links, are deleted, so no pattern reaches outside it."""
    root = Path(build_dir)
    ignore_file = root / ".slugignore"
    if ignore_file.is_symlink() or not ignore_file.is_file():
        return []
    patterns = [
        _pattern(line.strip())
        for line in ignore_file.read_text(encoding="utf-8", errors="replace").splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    deleted: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath).relative_to(root)
        for name in [*dirnames, *filenames]:
            rel = (base / name).as_posix()
            path = Path(dirpath, name)
            is_dir = path.is_dir() and not path.is_symlink()
            if any(p.fullmatch(rel) and (is_dir or not dir_only) for p, dir_only in patterns):
                if is_dir:
                    shutil.rmtree(path)
                    dirnames.remove(name)  # do not walk into what is gone
                else:
                    path.unlink()
                deleted.append(rel)
    return deleted


def _pattern(text: str) -> tuple[re.Pattern[str], bool]:
    """A gitignore-style pattern as a regex over a path relative to the app root, and whether
    it only matches directories (a trailing `/`)."""
    dir_only = text.endswith("/")
    text = text.rstrip("/")
    anchored = "/" in text  # gitignore: a slash anywhere but the end anchors to the root
    text = text.lstrip("/")
    regex = ""
    for token in re.findall(r"\*\*/|/\*\*$|\*\*|\*|\?|\[[^\]]*\]|.", text, flags=re.S):
        if token == "**/":
            regex += "(?:.*/)?"
        elif token in ("/**", "**"):
            regex += "/.*" if token == "/**" else ".*"
        elif token == "*":
            regex += "[^/]*"
        elif token == "?":
            regex += "[^/]"
        elif token.startswith("[") and len(token) > 2:
            regex += "[" + ("^" + token[2:-1] if token[1] == "!" else token[1:-1]) + "]"
        else:
            regex += re.escape(token)
    return re.compile(regex if anchored else "(?:.*/)?" + regex, re.S), dir_only


def source_id(path: str | os.PathLike[str]) -> str:
    """The git commit when `path` is the top of a git work tree with a commit; otherwise the
    first 8 hex digits of the sha256 of the tarball, or of the tree (`.git` left out)."""
    source = Path(path)
    if source.is_dir():
        return _git_commit(source) or _tree_digest(source)[:8]
    return _file_digest(source).hex()[:8]


def _file_digest(path: Path) -> bytes:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").digest()


def _git_commit(directory: Path) -> str | None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C"}
    if "HOME" in os.environ:
        env["HOME"] = os.environ["HOME"]
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--show-toplevel", "HEAD"],
            cwd=directory,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None  # no git on this machine: the tree's digest is the id
    lines = done.stdout.splitlines()
    # An app directory inside some other repository is not a work tree of its own.
    if done.returncode != 0 or len(lines) != 2 or Path(lines[0]) != directory.resolve():
        return None
    return lines[1]


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in _tree(root):
        rel = path.relative_to(root).as_posix().encode("utf-8", "surrogateescape")
        if path.is_symlink():
            digest.update(b"L\0" + rel + b"\0" + os.fsencode(os.readlink(path)) + b"\0")
        elif path.is_file():
            executable = b"x" if os.access(path, os.X_OK) else b"-"
            digest.update(b"F\0" + rel + b"\0" + executable)
            digest.update(_file_digest(path))
        else:
            digest.update(b"D\0" + rel + b"\0")
    return digest.hexdigest()


def _tree(root: Path) -> Iterator[Path]:
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.name == ".git":
            continue
        yield Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            yield from _tree(Path(entry.path))


# ---------------------------------------------------------------------------------------------
# Buildpacks


def resolve_buildpack(name: str, *, base: Path | None = None) -> Buildpack:
    """A built-in (`python`, or Heroku's `heroku/python`) or a local buildpack directory;
    a relative path is taken from `base` when given."""
    builtin = name.removeprefix("heroku/")
    if builtin in BUILTIN_BUILDPACKS:
        return Buildpack(builtin, BUILDPACKS_DIR / builtin)
    if "://" in name or name.startswith("git@"):
        raise DynodError(
            f"buildpack {name}: dynod runs local buildpacks only; clone it and name its directory"
        )
    path = Path(name).expanduser()
    if base is not None and not path.is_absolute():
        path = base / path
    path = path.resolve()
    if not ((path / "bin" / "detect").is_file() and (path / "bin" / "compile").is_file()):
        raise DynodError(
            f"buildpack {name} not found: name a built-in ({', '.join(BUILTIN_BUILDPACKS)})"
            " or a directory holding bin/detect and bin/compile"
        )
    return Buildpack(str(path), path)


def app_buildpacks(build_dir: Path) -> list[Buildpack]:
    """The buildpacks the app names in `.buildpacks` (one per line, `#` comments), if any."""
    listing = build_dir / ".buildpacks"
    if not listing.is_file():
        return []
    lines = listing.read_text(encoding="utf-8", errors="replace").splitlines()
    names = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    return [resolve_buildpack(name, base=build_dir) for name in names]


def parse_release_yaml(text: str) -> dict[str, str]:
    """`default_process_types` from bin/release's YAML: the small subset buildpacks print
    (a block mapping of `type: command`, plain or quoted scalars). ValueError otherwise."""
    types: dict[str, str] = {}
    inside = False
    indent: int | None = None
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip()
        body = line.lstrip()
        if not body or body.startswith("#") or body in ("---", "..."):
            continue
        depth = len(line) - len(body)
        key, colon, value = body.partition(":")
        if depth == 0:
            inside = key.strip() == "default_process_types"
            if inside and _scalar(value, number) not in ("", "{}", "~", "null"):
                raise ValueError(f"line {number}: write default_process_types as a block mapping")
            indent = None
            continue
        if not inside:
            continue  # the nested content of other keys (addons, config_vars)
        indent = depth if indent is None else indent
        if depth != indent or not colon:
            raise ValueError(f"line {number}: expected `  type: command`")
        types[_scalar(key, number)] = _scalar(value, number)
    return types


def _scalar(text: str, number: int) -> str:
    text = text.strip()
    if text[:1] == "'" and text[-1:] == "'" and len(text) > 1:
        return text[1:-1].replace("''", "'")
    if text[:1] == '"' and text[-1:] == '"' and len(text) > 1:
        try:
            value = json.loads(text)  # JSON's escapes are the ones buildpacks use
        except json.JSONDecodeError:
            raise ValueError(f"line {number}: unsupported escape in {text}") from None
        return str(value)
    if text[:1] in ("|", ">", "&", "*", "!", "[", "'", '"') or text.startswith("{ "):
        raise ValueError(f"line {number}: unsupported YAML {text[:20]!r}")
    return re.split(r"\s#", text, maxsplit=1)[0].rstrip()  # a plain scalar ends at " #"


# ---------------------------------------------------------------------------------------------
# The runner


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
                **as_user(self.owner),
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


def hand_over(root: Path, owner: tuple[int, int]) -> None:
    """Make a tree the build user's before its processes start: every entry chowned, a symlink
    itself and never what it points at (an app's source may hold `secrets -> /etc/shadow`).
    os.fwalk opens each directory without following a symlink put in its place meanwhile."""
    uid, gid = owner
    os.chown(root, uid, gid, follow_symlinks=False)
    os.chmod(root, 0o700)  # its parent is passable: other apps' users must not read it
    for _, dirs, files, fd in os.fwalk(root, follow_symlinks=False):
        for name in dirs + files:
            os.chown(name, uid, gid, dir_fd=fd, follow_symlinks=False)


def take_back(root: Path, owner: tuple[int, int]) -> list[str]:
    """After a build, make the tree dynod's again, top down, so that nothing the build user
    left running can change it while dynod packs or copies it: owned by dynod, writable by
    dynod alone, no set-id bits. What the build user does not own came from outside the
    build (a hard link to another user's file) and is removed; returns those paths."""
    mine = os.geteuid(), os.getegid()
    os.chown(root, *mine, follow_symlinks=False)
    os.chmod(root, stat.S_IMODE(os.lstat(root).st_mode) & ~0o6022)
    removed = []
    for where, dirs, files, fd in os.fwalk(root, follow_symlinks=False):
        for name in dirs + files:
            info = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if info.st_uid != owner[0] and not stat.S_ISDIR(info.st_mode):
                os.unlink(name, dir_fd=fd)
                removed.append(os.path.join(where, name))
                continue
            os.chown(name, *mine, dir_fd=fd, follow_symlinks=False)
            if not stat.S_ISLNK(info.st_mode):  # the directory it is in is dynod's by now
                os.chmod(name, stat.S_IMODE(info.st_mode) & ~0o6022, dir_fd=fd)
    return removed


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
