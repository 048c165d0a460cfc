"""Directories dynod trusts: made fresh by dynod (mkdtemp: a new random name, never one that
existed) and checked before use (a directory, not a symlink, dynod's uid, exactly the mode
asked), with every directory above them closed to other users (README, "`dynod serve`")."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from dynod.errors import DynodError


def problem_with(path: Path, mode: int) -> str | None:
    """Why `path` is not a directory of dynod's own of exactly `mode` (lstat: a symlink never
    passes), or None when it is."""
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        return "is a symlink"
    if not stat.S_ISDIR(info.st_mode):
        return "is not a directory"
    if info.st_uid != os.geteuid():
        return f"is owned by uid {info.st_uid}, not by dynod's uid {os.geteuid()}"
    if stat.S_IMODE(info.st_mode) != mode:
        return f"is mode {stat.S_IMODE(info.st_mode):04o}, not {mode:04o}"
    return None


def ours(path: Path) -> bool:
    """`path` is a directory dynod's uid made (not a symlink), whatever its mode."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid()


def exposed(directory: Path, *, passable: bool = False) -> str | None:
    """Why `directory` or one above it (an absolute path without symlinks) would let another
    user swap what is below: owned by neither root nor dynod's uid, or writable by others
    without the sticky bit /tmp has (the rule of ssh's StrictModes); or None. `passable`:
    every user must also pass through each one (the dynos' uids, to their directories)."""
    for each in (directory, *directory.parents):
        info = os.lstat(each)
        mode = stat.S_IMODE(info.st_mode)
        if info.st_uid not in (0, os.geteuid()):
            return f"{each} is owned by uid {info.st_uid}"
        if mode & 0o022 and not mode & stat.S_ISVTX:
            return f"{each} is writable by other users (mode {mode:04o})"
        if passable and not mode & 0o001:
            return f"{each} is closed to other users (mode {mode:04o})"
    return None


def fresh_dir(parent: Path, prefix: str, mode: int) -> Path:
    """A new directory in `parent` (mkdtemp: a random name, made by this call, so nothing
    planted is ever taken), set to `mode` and checked."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(path, mode)  # mkdtemp's 0700, narrowed by the umask, or widened to 0711
    problem = problem_with(path, mode)
    if problem is not None:  # only another root could have done this meanwhile
        raise DynodError(f"dynod's new directory {path} {problem}: nothing was started there")
    return path
