"""A build's source: an app directory (`.git` left out) or a tarball (held to the slug member
rules) copied into a fresh build directory, its `.slugignore` applied, and the source id a build
records (the git commit, or a digest)."""

from __future__ import annotations

import copy
import hashlib
import os
import re
import shutil
import stat
import subprocess
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path

from dynod.errors import DynodError
from dynod.slugs.unpack import UnsafeSlug, unpack_slug

TARBALL_SUFFIXES = (".tar.gz", ".tgz", ".tar")


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
    stripped) and let dynod.slugs.unpack check and extract it: one set of member rules.
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
