"""What the client asks of git, through the `git` command: the `dynod` remote (which app a
directory belongs to, and setting it), and the commit a deployed directory is at."""

from __future__ import annotations

import subprocess
from pathlib import Path

from shell.errors import Failure

REMOTE = "dynod"
GIT_TIMEOUT = 30.0


def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess[str] | None:
    """Run git; None when git is not installed (then there is no remote and no commit)."""
    try:
        return subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        return None
    except subprocess.TimeoutExpired:
        raise Failure(f"`git {' '.join(args)}` took over {GIT_TIMEOUT:g} s in {cwd}") from None


def remote_url(cwd: Path, name: str = REMOTE) -> str | None:
    done = _git(cwd, "remote", "get-url", name)
    if done is None or done.returncode != 0:
        return None
    return done.stdout.strip() or None


def app_from_url(url: str) -> str | None:
    """The app a git URL names: its last path component without `.git` (README, git push), whether
    the URL is `http://host/app.git`, `/srv/git/app.git` or `user@host:app.git`."""
    last = url.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    name = last.removesuffix(".git")
    return name or None


def remote_app(cwd: Path) -> str | None:
    url = remote_url(cwd)
    return app_from_url(url) if url else None


def set_remote(cwd: Path, url: str, name: str = REMOTE) -> str:
    """Add the remote, or point the existing one at `url`; returns "added" or "updated"."""
    inside = _git(cwd, "rev-parse", "--is-inside-work-tree")
    if inside is None:
        raise Failure("git is not installed: install git to push apps to dynod")
    if inside.returncode != 0:
        raise Failure(f"{cwd} is not in a git repository: run `git init` first")
    action = "updated" if remote_url(cwd, name) is not None else "added"
    done = _git(cwd, "remote", "set-url" if action == "updated" else "add", name, url)
    if done is None or done.returncode != 0:
        reason = (
            done.stderr.strip().splitlines()[-1] if done and done.stderr.strip() else "git failed"
        )
        raise Failure(f"could not set the git remote {name}: {reason}")
    return action


def head_commit(directory: Path) -> str | None:
    """The commit checked out in `directory` when it is a git work tree with commits, else None."""
    inside = _git(directory, "rev-parse", "--is-inside-work-tree")
    if inside is None or inside.returncode != 0 or inside.stdout.strip() != "true":
        return None
    head = _git(directory, "rev-parse", "HEAD")
    if head is None or head.returncode != 0:
        return None
    return head.stdout.strip() or None
