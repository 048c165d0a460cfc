"""A dyno's own mount namespace: its directory an overlay of the slug's shared, read-only tree
and an upper directory of its own, a private /tmp and /dev/shm, all gone with its last process
(README, "How a dyno runs"). libc's unshare, mount and mkdir are looked up here, in dynod, once:
the child calls `Mounts.enter` between fork and exec and does little more there than syscalls.
"""

from __future__ import annotations

import ctypes
import functools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from attrs import frozen

CLONE_NEWNS = 0x00020000
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18

TARGETS = (b"/tmp", b"/dev/shm")  # each a fresh tmpfs per dyno
TMPFS_OPTIONS = b"mode=1777"  # the kernel's size: half the memory, charged to the dyno's cgroup

_libc = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
if _libc is not None:
    _unshare = _libc.unshare
    _unshare.argtypes = [ctypes.c_int]
    _mount = _libc.mount
    _mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
    _mkdir = _libc.mkdir
    _mkdir.argtypes = [ctypes.c_char_p, ctypes.c_uint]


@frozen
class Overlay:
    """A dyno's directory as an overlay: `lower` (the slug's unpacked tree, shared by every
    dyno of the app and never changed), `upper` (this dyno's writes, deletes and renames) and
    `work` (the kernel's, on upper's filesystem), mounted on `target` (the dyno's directory)."""

    lower: bytes
    upper: bytes
    work: bytes
    target: bytes

    def options(self) -> bytes:
        # redirect_dir: a directory of the slug can be renamed (without it, rename(2) gives
        # EXDEV and programs that do not fall back to copying fail).
        return b"lowerdir=%s,upperdir=%s,workdir=%s,redirect_dir=on" % (
            self.lower,
            self.upper,
            self.work,
        )


def mountable(path: str | os.PathLike[str]) -> bool:
    """Whether `path` can be named in overlayfs's options (which ',' ':' and '\\' break)."""
    return not any(c in os.fspath(path) for c in ",:\\")


@frozen
class Mounts:
    """What one dyno's child does, still root, before it becomes the dyno user: a mount
    namespace of its own in which nothing propagates back to the host, a fresh tmpfs on each
    of TARGETS, and, where one of them hides the dyno's own directory (dynod's scratch is in
    /tmp when dynos run as uids of their own), that directory bound back at its path."""

    make: tuple[bytes, ...] = ()  # directories to make in the fresh tmpfs, parents first
    keep: bytes | None = None  # where the dyno's directory (the child's cwd) is bound back
    overlay: Overlay | None = None  # the dyno's directory, first of all
    tmp: bool = True  # a fresh tmpfs on each of TARGETS

    def enter(self) -> None:
        """In the child (its cwd the dyno's directory): raises OSError if a step fails."""
        assert _libc is not None
        _check(_unshare(CLONE_NEWNS), "unshare the mount namespace")
        _check(_mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
        if self.overlay is not None:
            target = self.overlay.target
            options = self.overlay.options()
            _check(_mount(b"overlay", target, b"overlay", MS_NOSUID | MS_NODEV, options), "overlay")
            os.chdir(target)  # into the overlay: `.` below is the dyno's merged directory
        if not self.tmp:
            return
        for target in TARGETS:
            _check(
                _mount(b"tmpfs", target, b"tmpfs", MS_NOSUID | MS_NODEV, TMPFS_OPTIONS),
                "mount a tmpfs",
            )
        for path in self.make:
            _check(_mkdir(path, 0o711), "mkdir")
        if self.keep is not None:
            _check(_mount(b".", self.keep, None, MS_BIND | MS_REC, None), "bind the directory")


def plan(cwd: str, *, tmp: bool = True, overlay: Overlay | None = None) -> Mounts:
    """The mounts for a dyno whose directory is `cwd`: its overlay, if any, and with `tmp` a
    private /tmp and /dev/shm."""
    real = os.path.realpath(cwd)
    if tmp:
        for target in TARGETS:
            top = os.path.realpath(os.fsdecode(target))
            if real != top and real.startswith(top.rstrip("/") + "/"):
                parts = real[len(top) :].strip("/").split("/")
                make = tuple(
                    os.fsencode(os.path.join(top, *parts[: i + 1])) for i in range(len(parts))
                )
                return Mounts(make, os.fsencode(real), overlay)
    return Mounts(overlay=overlay, tmp=tmp)


@functools.cache
def available() -> bool:
    """Whether dynod can give dynos mounts of their own: root on Linux, and the kernel lets it
    (a container may refuse unshare). Tried once, in a child of its own."""
    if _libc is None or os.geteuid() != 0:
        return False
    try:
        subprocess.run(
            ["true"],
            preexec_fn=Mounts().enter,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return True


@functools.cache
def overlays_work(lower_parent: Path, upper_parent: Path) -> bool:
    """Whether a dyno's directory can be an overlay of a tree in `lower_parent` with its upper
    directory in `upper_parent`: mounts of its own (`available`), and the kernel's overlayfs
    takes these filesystems with the options dynos need. Tried once, in a child of its own."""
    if not available() or not (mountable(lower_parent) and mountable(upper_parent)):
        return False
    lower = Path(tempfile.mkdtemp(prefix=".overlay-check-", dir=lower_parent))
    upper = Path(tempfile.mkdtemp(prefix=".overlay-check-", dir=upper_parent))
    try:
        (lower / "dir").mkdir()
        for name in ("upper", "work", "merged"):
            (upper / name).mkdir()
        merged = upper / "merged"
        overlay = Overlay(
            os.fsencode(lower),
            os.fsencode(upper / "upper"),
            os.fsencode(upper / "work"),
            os.fsencode(merged),
        )
        # In the overlay, a directory of the lower tree must take a rename.
        subprocess.run(
            ["mv", "dir", "moved"],
            cwd=merged,
            preexec_fn=Mounts(overlay=overlay, tmp=False).enter,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        shutil.rmtree(lower, ignore_errors=True)
        shutil.rmtree(upper, ignore_errors=True)
    return True


def _check(result: int, what: str) -> None:
    if result != 0:
        number = ctypes.get_errno()
        raise OSError(number, f"{what}: {os.strerror(number)}")
