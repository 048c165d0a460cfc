"""dynod's scratch directory (runtime.scratch_dir, sweep_scratch; pipeline.scratch): made fresh,
private and checked, never a planted one; the sweep deletes only what dynod made (README,
"`dynod serve`"). Real directories; the cases that give a directory to another user need root."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dynod.builds.pipeline import scratch
from dynod.errors import DynodError
from dynod.platform.runtime import scratch_dir, sweep_scratch

NOBODY = pwd.getpwnam("nobody")
ROOT = os.geteuid() == 0


def mode_and_owner(path: Path) -> tuple[int, int]:
    info = path.lstat()
    return stat.S_IMODE(info.st_mode), info.st_uid


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir(mode=0o700)
    return path


@pytest.fixture
def shared_tmp(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A temporary directory like /tmp (1777) that is this test's alone, as the system's."""
    path = Path(tempfile.mkdtemp(prefix="dynod-test-tmp-"))
    path.chmod(0o1777)
    monkeypatch.setattr(tempfile, "tempdir", str(path))
    try:
        yield path
    finally:
        shutil.rmtree(path)


def plant(path: Path, attacker: Path) -> None:
    """What another user leaves at a name it can guess: a symlink to a directory of its own."""
    attacker.mkdir(mode=0o777, exist_ok=True)
    path.symlink_to(attacker)


def test_a_scratch_directory_is_fresh_private_and_in_the_data_directory(data: Path) -> None:
    first = scratch_dir(data, passable=False)
    assert first.parent == data / "scratch" and first.name.startswith(f"{os.getpid()}-")
    assert mode_and_owner(first) == (0o700, os.geteuid())
    assert mode_and_owner(data / "scratch") == (0o700, os.geteuid())
    assert (data / "scratch.path").read_text() == f"{first}\n"
    second = scratch_dir(data, passable=False)  # the next run's: another fresh one
    assert second != first and (data / "scratch.path").read_text() == f"{second}\n"
    assert sorted(sweep_scratch(data)) == sorted([first, second])  # no stop recorded the first
    assert not second.exists() and not (data / "scratch.path").exists()


def test_a_passable_scratch_directory_is_new_and_takes_no_planted_name(
    data: Path, shared_tmp: Path
) -> None:
    # The name the old dynod used, planted both ways: neither is taken.
    plant(shared_tmp / f"dynod-dynos-{os.getpid()}", shared_tmp / "attacker")
    (shared_tmp / "dynod-dynos-1").mkdir(mode=0o777)
    made = scratch_dir(data, passable=True)
    assert made.parent == shared_tmp and made.name.startswith("dynod-")
    assert not made.name.startswith("dynod-dynos-")
    assert mode_and_owner(made) == (0o711, os.geteuid())  # dynos pass; nobody lists or makes
    assert not any((shared_tmp / "attacker").iterdir())


def test_a_temporary_directory_others_could_change_or_not_pass_is_refused(
    data: Path, shared_tmp: Path
) -> None:
    shared_tmp.chmod(0o777)  # no sticky bit: anyone could rename dynod's directory away
    with pytest.raises(DynodError, match=r"is writable by other users \(mode 0777\); set TMPDIR"):
        scratch_dir(data, passable=True)
    shared_tmp.chmod(0o700)  # the dynos' uids could not reach their directories
    with pytest.raises(DynodError, match=r"is closed to other users \(mode 0700\); set TMPDIR"):
        scratch_dir(data, passable=True)
    assert list(shared_tmp.iterdir()) == [] and not (data / "scratch.path").exists()


def test_a_planted_scratch_container_is_refused(data: Path, tmp_path: Path) -> None:
    plant(data / "scratch", tmp_path / "attacker")
    with pytest.raises(DynodError, match=r"scratch: is a symlink; remove .*/data/scratch"):
        scratch_dir(data, passable=False)
    assert not any((tmp_path / "attacker").iterdir())
    (data / "scratch").unlink()
    (data / "scratch").mkdir(mode=0o777)
    (data / "scratch").chmod(0o777)
    with pytest.raises(DynodError, match="is mode 0777, not 0700"):
        scratch_dir(data, passable=False)


def test_a_build_work_directory_is_fresh_and_private(data: Path) -> None:
    root = scratch_dir(data, passable=False)
    work = scratch(root, "build-")
    assert work.parent == root and work.name.startswith("build-")
    assert mode_and_owner(work) == (0o700, os.geteuid())
    assert scratch(root, "build-") != work


def test_the_sweep_deletes_what_an_earlier_dynod_made_and_nothing_else(
    data: Path, tmp_path: Path
) -> None:
    earlier = scratch_dir(data, passable=False)
    (earlier / "web.1-0123456789ab").mkdir()
    (earlier / "web.1-0123456789ab" / "link").symlink_to(tmp_path)  # never followed
    stray = Path(tempfile.mkdtemp(dir=data / "scratch"))  # made, but never recorded
    plant(data / "scratch" / "planted", tmp_path / "attacker")
    (tmp_path / "attacker" / "keep").write_text("the attacker's\n")
    assert sorted(sweep_scratch(data)) == sorted([earlier, stray])
    assert not earlier.exists() and not stray.exists()
    assert (data / "scratch" / "planted").is_symlink()
    assert (tmp_path / "attacker" / "keep").exists() and tmp_path.is_dir()
    assert not (data / "scratch.path").exists()


def test_the_sweep_leaves_a_recorded_name_someone_else_took(data: Path, tmp_path: Path) -> None:
    """After a reboot emptied /tmp, another user may make a directory at the recorded name (the
    dynos saw it in their HOME): a symlink, or (as root can show) a directory of its own."""
    taken = tmp_path / "dynod-abcdefgh"
    plant(taken, tmp_path / "attacker")
    (data / "scratch.path").write_text(f"{taken}\n")
    assert sweep_scratch(data) == []
    assert taken.is_symlink() and (tmp_path / "attacker").is_dir()
    if ROOT:
        taken.unlink()
        taken.mkdir()
        os.chown(taken, NOBODY.pw_uid, NOBODY.pw_gid)
        (data / "scratch.path").write_text(f"{taken}\n")
        assert sweep_scratch(data) == [] and taken.is_dir()


@pytest.mark.skipif(not ROOT, reason="only root can give a directory to another user")
def test_a_container_another_user_owns_is_refused(data: Path) -> None:
    (data / "scratch").mkdir(mode=0o700)
    os.chown(data / "scratch", NOBODY.pw_uid, NOBODY.pw_gid)
    with pytest.raises(DynodError, match=f"is owned by uid {NOBODY.pw_uid}, not by dynod's uid 0"):
        scratch_dir(data, passable=False)
    assert list((data / "scratch").iterdir()) == []
    assert sweep_scratch(data) == []  # not dynod's: nothing in it is touched
