"""`dynod start` samples memory too (README, "Dynos, router, logs"): R14 is only a warning
unless a quota is set in a dynod.toml beside the Procfile; with one, R15 kills and the process
is restarted on the local ladder."""

from __future__ import annotations

import os
from pathlib import Path

from tests.dynod.test_local import app, read_until, stop
from tests.helpers import PY, spawn_dynod


def greedy(mb: int) -> str:
    """A worker that holds `mb` MB resident (plus the interpreter's own)."""
    return (
        f"worker: {PY} -c \"import time; a = b'1' * ({mb} << 20); print('full'); time.sleep(30)\"\n"
    )


def run(tmp_path: Path, toml: str, needle: str, count: int, mb: int) -> list[str]:
    app(tmp_path, greedy(mb))
    (tmp_path / "dynod.toml").write_text(toml)
    env = {**os.environ, "DYNOD_DATA": str(tmp_path / "data"), "PYTHONUNBUFFERED": "1"}
    process = spawn_dynod("start", "--no-color", cwd=tmp_path, env=env)
    try:
        return read_until(process, needle, count=count)
    finally:
        stop(process)


def test_without_a_quota_set_locally_it_only_warns(tmp_path: Path) -> None:
    """Past twice the default 512 MB, and still only R14: no kill."""
    seen = run(tmp_path, "[dynos]\nmemory_sample = 0.2\n", "Error R14", 3, 1100)
    assert any("heroku[worker.1] | Process running mem=" in line for line in seen)
    assert not any("R15" in line or "status 137" in line for line in seen)


def test_with_a_quota_set_r15_kills_and_restarts(tmp_path: Path) -> None:
    # ~110 MB resident: above twice 50 MB.
    seen = run(tmp_path, "[dynos]\nmemory_sample = 0.2\nmemory_quota_mb = 50\n", "| full", 2, 100)
    texts = [line.split("| ", 1)[1] for line in seen if "heroku[worker.1]" in line]
    r15 = texts.index("Error R15 (Memory quota vastly exceeded)")
    assert texts[r15 + 1 : r15 + 4] == [
        "Stopping all processes with SIGKILL",
        "Process exited with status 137",
        "State changed from up to crashed",
    ]
