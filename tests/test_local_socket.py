"""A local run's socket as both sides see it: `dynod start` claims it (dynod/api/unix.py) and the
`dyno` client finds it and speaks over it (shell/local.py, which may not import dynod): the same
place, the same app name, and the rules for what each side trusts (README, "Steering a running
`dynod start`")."""

from __future__ import annotations

import io
import os
import socket
from pathlib import Path

import pytest

from dynod.api import local as local_api
from dynod.api.unix import RUN_DIR, SOCKET_NAME, Unsteerable, claim_socket
from dynod.errors import Conflict, DynodError
from dynod.local import LOCAL_APP
from shell import local
from shell.commands import TABLE
from shell.context import Context
from shell.errors import UsageError
from shell.grammar import find, parse


def test_both_sides_agree_on_the_place_the_name_and_the_urls() -> None:
    assert (local.RUN_DIR, local.SOCKET_NAME) == (RUN_DIR, SOCKET_NAME)
    assert local.LOCAL_APP == LOCAL_APP
    assert local.BASE_URL == local_api.BASE_URL
    assert local.LocalRun(Path("/w/shop/.dynod/api.sock")).app == "shop"
    assert local.LocalRun(Path("/.dynod/api.sock")).app == LOCAL_APP  # as `dynod start` names it


def test_a_claimed_socket_is_found_from_below_and_answers_even_on_a_long_path(
    tmp_path: Path,
) -> None:
    root = tmp_path / ("a-long-directory-name-" * 5) / "shop"
    below = root / "src" / "deep"
    below.mkdir(parents=True)
    assert len(str(root / RUN_DIR / SOCKET_NAME)) > 108  # past what a socket address holds
    assert local.find_local_run(below) is None
    with claim_socket(root) as listener:
        assert oct(os.lstat(root / RUN_DIR).st_mode & 0o777) == oct(0o700)
        assert oct(os.lstat(root / RUN_DIR / SOCKET_NAME).st_mode & 0o777) == oct(0o600)
        found = local.find_local_run(below)
        assert found == local.LocalRun(root / RUN_DIR / SOCKET_NAME)
        with socket.socket(socket.AF_UNIX) as client:
            local.connect(client, found.socket)
            accepted, _ = listener.accept()
            accepted.close()
        with pytest.raises(Conflict, match="another dynod start is running in"):
            with claim_socket(root):
                pass
    assert not (root / RUN_DIR).exists()
    assert local.find_local_run(below) is None


def test_a_stale_socket_is_replaced_and_a_stranger_refused(tmp_path: Path) -> None:
    run_dir = tmp_path / RUN_DIR
    run_dir.mkdir(mode=0o755)
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(run_dir / SOCKET_NAME))  # bound, never listening: connecting is refused
    assert local.find_local_run(tmp_path) is None  # its directory is open to others
    with claim_socket(tmp_path) as listener:
        assert oct(os.lstat(run_dir).st_mode & 0o777) == oct(0o700)  # narrowed
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(run_dir / SOCKET_NAME))
            listener.accept()[0].close()
    (run_dir).mkdir()
    (run_dir / SOCKET_NAME).write_text("not a socket")
    with pytest.raises(DynodError, match="api.sock is not a socket: remove it"):
        with claim_socket(tmp_path):
            pass
    assert local.find_local_run(tmp_path) is None
    (run_dir / "notes").write_text("the user's")
    (run_dir / SOCKET_NAME).unlink()
    with claim_socket(tmp_path):
        pass
    assert (run_dir / "notes").exists()  # the directory stays with what is not dynod's


def test_an_app_directory_that_cannot_hold_the_socket_is_unsteerable(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(Unsteerable, match="cannot make"):
        with claim_socket(tmp_path / "file"):
            pass


@pytest.mark.parametrize(
    ("env", "words", "current", "local_run"),
    [
        ({}, [], None, True),
        ({}, ["-a", "shop"], None, False),
        ({}, [], "shop", False),  # the shell's `use shop`
        ({"DYNO_APP": "shop"}, [], None, False),
        ({"DYNOD_API_URL": "http://127.0.0.1:5050"}, [], None, False),
    ],
)
def test_naming_an_app_or_an_api_goes_past_the_local_run(
    tmp_path: Path, env: dict[str, str], words: list[str], current: str | None, local_run: bool
) -> None:
    root = tmp_path / "shop"
    root.mkdir()
    ctx = Context(env=env, cwd=root, out=io.StringIO(), err=io.StringIO(), current_app=current)
    with claim_socket(root):
        parsed = parse(find(TABLE, "ps"), words)
        ctx.aim(parsed)
        assert isinstance(ctx.api, local.LocalApi) is local_run
        if "DYNOD_API_URL" in env:  # an API named, no app: dynod serve asks for one
            with pytest.raises(UsageError, match="no app given"):
                ctx.app(parsed)
        else:
            assert ctx.app(parsed) == "shop"
        ctx.aim()  # between commands (the shell's toolbar): the same, without a command's -a
        assert isinstance(ctx.api, local.LocalApi) is (local_run or words != [])
    ctx.aim()
    assert ctx.local is None


def test_a_symlinked_run_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    (tmp_path / RUN_DIR).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(DynodError, match=r"\.dynod is not a directory: remove it"):
        with claim_socket(tmp_path):
            pass
    assert list((tmp_path / "elsewhere").iterdir()) == []
