"""The code and the tests type-check under `mypy --strict` (the files pyproject.toml names)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import ROOT


def test_mypy_strict_is_clean(tmp_path_factory: pytest.TempPathFactory) -> None:
    pytest.importorskip("mypy", reason="mypy is a test extra: pip install -e '.[test]'")
    cache = tmp_path_factory.mktemp("mypy-cache")
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(cache)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
