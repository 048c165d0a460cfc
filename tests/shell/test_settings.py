"""Where the client finds dynod (URL and token) and which app a command acts on."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest

from shell.api import api_token, api_url
from shell.commands import TABLE
from shell.context import Context
from shell.errors import UsageError
from shell.git import app_from_url, head_commit
from shell.grammar import find, parse


def test_url_and_token_from_env_then_files_then_default(tmp_path: Path) -> None:
    env = {"DYNOD_DATA": str(tmp_path)}
    assert api_url(env) == "http://127.0.0.1:5050"
    assert api_token(env) is None
    (tmp_path / "api-url").write_text("http://127.0.0.1:6000/\n")
    (tmp_path / "api-token").write_text("secret\n")
    assert (api_url(env), api_token(env)) == ("http://127.0.0.1:6000", "secret")
    (tmp_path / "api-url").write_text("127.0.0.1:7000")
    assert api_url(env) == "http://127.0.0.1:7000"
    env |= {"DYNOD_API_URL": "http://localhost:9", "DYNOD_API_TOKEN": "other"}
    assert (api_url(env), api_token(env)) == ("http://localhost:9", "other")


@pytest.mark.parametrize(
    ("url", "app"),
    [
        ("http://127.0.0.1:5050/git/shiny-river.git", "shiny-river"),
        ("http://127.0.0.1:5050/git/shiny-river.git/", "shiny-river"),
        ("/home/me/.local/share/dynod/git/myapp.git", "myapp"),
        ("git@localhost:myapp.git", "myapp"),
        ("ssh://host/srv/myapp", "myapp"),
    ],
)
def test_app_from_git_url(url: str, app: str) -> None:
    assert app_from_url(url) == app


def git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@localhost", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        timeout=30,
    )


def context(cwd: Path, env: dict[str, str]) -> Context:
    return Context(env=env, cwd=cwd, out=io.StringIO(), err=io.StringIO())


def test_app_resolution_order(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    ps = find(TABLE, "ps")
    ctx = context(tmp_path, {})
    with pytest.raises(
        UsageError, match="pass -a APP, set DYNO_APP, or add the git remote `dynod`"
    ):
        ctx.app(parse(ps, []))
    git(tmp_path, "remote", "add", "dynod", "http://127.0.0.1:5050/git/from-remote.git")
    assert ctx.app(parse(ps, [])) == "from-remote"
    ctx = context(tmp_path, {"DYNO_APP": "from-env"})
    assert ctx.app(parse(ps, [])) == "from-env"
    ctx.current_app = "from-shell"
    assert ctx.app(parse(ps, [])) == "from-shell"
    assert ctx.app(parse(ps, ["-a", "from-flag"])) == "from-flag"


def test_head_commit(tmp_path: Path) -> None:
    assert head_commit(tmp_path) is None
    git(tmp_path, "init", "-q")
    assert head_commit(tmp_path) is None  # no commits yet
    (tmp_path / "Procfile").write_text("web: true\n")
    git(tmp_path, "add", "Procfile")
    git(tmp_path, "commit", "-qm", "first")
    commit = head_commit(tmp_path)
    assert commit is not None and len(commit) == 40
    (tmp_path / "sub").mkdir()
    assert head_commit(tmp_path / "sub") == commit
