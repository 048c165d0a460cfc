"""`git push dynod main`: one bare repository per app in the data directory, whose pre-receive
hook (dynod/builds/githook.py) builds the pushed commit through the API and rejects the push
when the build fails."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

HOOK = """#!/bin/sh
# Installed by dynod: builds what is pushed to main or master (see dynod/builds/githook.py).
DYNOD_DATA={data} exec {python} -m dynod.builds.githook
"""


def repo_path(data_dir: Path, app_name: str) -> Path:
    return data_dir / "repos" / f"{app_name}.git"


def ensure_repo(data_dir: Path, app_name: str) -> Path:
    """The app's bare repository with dynod's hook; made on first use, hook refreshed always
    (so it follows the Python dynod runs under)."""
    repo = repo_path(data_dir, app_name)
    if not (repo / "HEAD").exists():
        repo.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["git", "init", "--bare", "--quiet", "--initial-branch=main", str(repo)],
            check=True,
            capture_output=True,
        )
    hook = repo / "hooks" / "pre-receive"
    hook.write_text(
        HOOK.format(data=shlex.quote(str(data_dir)), python=shlex.quote(sys.executable))
    )
    hook.chmod(0o755)
    return repo


def remove_repo(data_dir: Path, app_name: str) -> None:
    shutil.rmtree(repo_path(data_dir, app_name), ignore_errors=True)
