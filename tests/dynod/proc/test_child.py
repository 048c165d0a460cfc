"""A dyno's main process comes out the same whichever way it is spawned (os.posix_spawn or
Popen): its own session, stdin on /dev/null, default signal dispositions, only fds 0-2, the
environment as given; and dynos never inherit the descriptors dynod was started with."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import trio

from dynod.proc.child import Child
from dynod.proc.dyno import PROFILE_PRELUDE, bash_argv
from tests.helpers import PY

# What the dyno's shell sees of itself.
PROBE = (
    'read -r _ _ _ _ _ sid _ < /proc/$$/stat; [ "$sid" = "$$" ] && echo session-leader; '
    'echo "stdin $(readlink /proc/$$/fd/0)"; '
    "ls /proc/$$/fd; "  # bash's own descriptors, one number a line
    'echo "pwd $(pwd -P)"; env | grep ^PROBE_; '
    # the signal state a program started from the dyno's shell gets
    "exec grep -E '^Sig(Ign|Blk)' /proc/self/status"
)


def spawned(tmp_path: Path, *, popen: bool) -> tuple[list[str], Child]:
    """PROBE's lines from a child spawned by one route (Popen, forced by a preexec_fn)."""

    async def main() -> tuple[list[str], Child]:
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        try:
            child = Child.spawn(
                ["bash", "-c", PROBE],
                stdin=subprocess.DEVNULL,
                stdout=out_w,
                stderr=out_w,
                cwd=str(tmp_path),
                env={"PATH": "/usr/bin:/bin", "PROBE_X": "1 2"},
                preexec_fn=(lambda: None) if popen else None,
            )
        finally:
            os.close(out_w)
        chunks = []
        async with trio.lowlevel.FdStream(out_r) as stream:
            while chunk := await stream.receive_some():
                chunks.append(chunk)
        with trio.fail_after(10):
            assert await child.wait() == 0
        return b"".join(chunks).decode().splitlines(), child

    return trio.run(main)


def test_both_spawn_routes_make_the_same_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # posix_spawn is taken only in our own working directory
    leaked = os.open(os.devnull, os.O_RDONLY)
    os.set_inheritable(leaked, True)  # as a descriptor dynod was started with would be
    try:
        fast, fast_child = spawned(tmp_path, popen=False)
        slow, slow_child = spawned(tmp_path, popen=True)
    finally:
        os.close(leaked)
    assert fast_child._popen is None and slow_child._popen is not None  # both routes ran
    # glibc's posix_spawn leaves its two internal signals (32, 33) ignored, as in every program
    # it spawns (Rust's Command, Python's own subprocess at times); glibc re-arms them when used.
    internal = (1 << 31) | (1 << 32)
    assert [_without(line, internal) for line in fast] == slow
    assert "session-leader" in fast
    assert "stdin /dev/null" in fast
    assert [line for line in fast if line.isdigit()] == ["0", "1", "2"]
    assert f"pwd {tmp_path.resolve()}" in fast
    assert "PROBE_X=1 2" in fast
    ignored = int(next(line for line in fast if line.startswith("SigIgn")).split()[1], 16)
    assert not ignored & (1 << (13 - 1)), "SIGPIPE must be back at its default"
    blocked = int(next(line for line in fast if line.startswith("SigBlk")).split()[1], 16)
    assert blocked == 0


def _without(line: str, bits: int) -> str:
    if not line.startswith("SigIgn:"):
        return line
    return f"SigIgn:\t{int(line.split()[1], 16) & ~bits:016x}"


def test_a_missing_program_fails_alike_on_both_routes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    async def spawn(popen: bool) -> None:
        Child.spawn(
            ["bash", "-c", "true"],
            stdin=subprocess.DEVNULL,
            stdout=1,
            stderr=2,
            cwd=str(tmp_path),
            env={"PATH": str(tmp_path / "nowhere")},
            preexec_fn=(lambda: None) if popen else None,
        )

    for popen in (False, True):
        with pytest.raises(FileNotFoundError):
            trio.run(spawn, popen)


def test_the_profile_prelude_is_left_out_only_when_it_would_source_nothing(tmp_path: Path) -> None:
    assert bash_argv("echo hi", tmp_path) == ["bash", "-c", "echo hi"]
    (tmp_path / ".profile").write_text("export A=1\n")
    assert bash_argv("echo hi", tmp_path) == ["bash", "-c", PROFILE_PRELUDE + "echo hi"]
    (tmp_path / ".profile").unlink()
    (tmp_path / ".profile.d").mkdir()
    assert bash_argv("echo hi", tmp_path) == ["bash", "-c", PROFILE_PRELUDE + "echo hi"]
    assert bash_argv("echo hi") == ["bash", "-c", PROFILE_PRELUDE + "echo hi"]


def test_dynos_do_not_inherit_descriptors_dynod_was_started_with(tmp_path: Path) -> None:
    (tmp_path / "Procfile").write_text("w: ls -l /proc/$$/fd; echo listed; exec sleep 30\n")
    marker = tmp_path / "leaked-descriptor"
    marker.write_text("")
    leaked = os.open(marker, os.O_RDONLY)
    try:
        process = subprocess.Popen(
            [PY, "-m", "dynod.cli", "start"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            pass_fds=[leaked],
        )
    finally:
        os.close(leaked)
    try:
        assert process.stdout is not None
        listing = []
        for line in process.stdout:
            listing.append(line)
            if "| listed" in line:
                break
        assert any("/dev/null" in line for line in listing), listing  # the listing is there
        assert not any("leaked-descriptor" in line for line in listing), listing
    finally:
        process.terminate()
        process.communicate(timeout=20)
