"""A dyno's own mount namespace: a private /tmp and /dev/shm, gone with its last process
(README, "How a dyno runs"). libc's unshare, mount and mkdir are looked up here, in dynod, once:
the child calls `Mounts.enter` between fork and exec and does little more there than syscalls.
"""

from __future__ import annotations

import ctypes
import functools
import os
import subprocess
import sys

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
class Mounts:
    """What one dyno's child does, still root, before it becomes the dyno user: a mount
    namespace of its own in which nothing propagates back to the host, a fresh tmpfs on each
    of TARGETS, and, where one of them hides the dyno's own directory (dynod's scratch is in
    /tmp when dynos run as uids of their own), that directory bound back at its path."""

    make: tuple[bytes, ...] = ()  # directories to make in the fresh tmpfs, parents first
    keep: bytes | None = None  # where the dyno's directory (the child's cwd) is bound back

    def enter(self) -> None:
        """In the child (its cwd the dyno's directory): raises OSError if a step fails."""
        assert _libc is not None
        _check(_unshare(CLONE_NEWNS), "unshare the mount namespace")
        _check(_mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
        for target in TARGETS:
            _check(
                _mount(b"tmpfs", target, b"tmpfs", MS_NOSUID | MS_NODEV, TMPFS_OPTIONS),
                "mount a tmpfs",
            )
        for path in self.make:
            _check(_mkdir(path, 0o711), "mkdir")
        if self.keep is not None:
            _check(_mount(b".", self.keep, None, MS_BIND | MS_REC, None), "bind the directory")


def plan(cwd: str, bind_at: str | None = None) -> Mounts:
    """The mounts for a dyno whose directory is `cwd`; with `bind_at` (a path in /tmp), that
    directory is bound there too, where a uid that cannot pass through the directories above it
    reaches it (an add-on server's data directory, inside dynod's private data directory)."""
    if bind_at is not None:
        return Mounts((os.fsencode(bind_at),), os.fsencode(bind_at))
    real = os.path.realpath(cwd)
    for target in TARGETS:
        top = os.path.realpath(os.fsdecode(target))
        if real != top and real.startswith(top.rstrip("/") + "/"):
            parts = real[len(top) :].strip("/").split("/")
            make = tuple(os.fsencode(os.path.join(top, *parts[: i + 1])) for i in range(len(parts)))
            return Mounts(make, os.fsencode(real))
    return Mounts()


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


def _check(result: int, what: str) -> None:
    if result != 0:
        number = ctypes.get_errno()
        raise OSError(number, f"{what}: {os.strerror(number)}")
