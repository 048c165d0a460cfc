"""Handing a build's trees to the unprivileged user its buildpacks run as, and taking them back
after: chowned entry by entry over os.fwalk, never through a symlink, and what came from outside
the build removed."""

from __future__ import annotations

import os
import stat
from pathlib import Path


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
