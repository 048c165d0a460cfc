"""The house style is a test, as mypy is: `ruff format` and `ruff check` (rules E, F, I, UP, B;
settings in pyproject.toml) over dynod, router, shell, tests and bench."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import ROOT


def ruff(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args, "--no-cache", "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(autouse=True)
def _needs_ruff() -> None:
    pytest.importorskip("ruff", reason="ruff is a test extra: pip install -e '.[test]'")


def test_the_code_is_formatted() -> None:
    done = ruff("format", "--check")
    assert done.returncode == 0, "run `ruff format .`:\n" + done.stdout + done.stderr


def test_the_code_passes_the_linter() -> None:
    done = ruff("check", "--output-format", "concise")
    assert done.returncode == 0, "run `ruff check .`:\n" + done.stdout + done.stderr
