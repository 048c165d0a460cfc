"""The data directory, found alike by the daemon (dynod/state/config.py) and by the `dyno` client
(shell/api.py, which may not import dynod): one table of environments, one answer each
(docs/platform.md, "The data directory")."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dynod.state.config import resolve_data_dir
from shell.api import data_dir

CASES = [
    # (environment, the data directory; relative answers are under the working directory)
    ({"HOME": "/h"}, "/h/.local/share/dynod"),
    ({"HOME": "/h", "XDG_DATA_HOME": "/x"}, "/x/dynod"),
    ({"HOME": "/h", "XDG_DATA_HOME": "relative/x"}, "/h/.local/share/dynod"),  # XDG: ignored
    ({"HOME": "/h", "XDG_DATA_HOME": ""}, "/h/.local/share/dynod"),
    ({"HOME": "/h", "XDG_DATA_HOME": "/x", "DYNOD_DATA": "/d"}, "/d"),
    ({"HOME": "/h", "DYNOD_DATA": "~"}, "/h"),
    ({"HOME": "/h", "DYNOD_DATA": "~/state"}, "/h/state"),
    ({"HOME": "/h", "DYNOD_DATA": "rel/state"}, "rel/state"),
    ({"HOME": "/h", "DYNOD_DATA": "", "XDG_DATA_HOME": "/x"}, "/x/dynod"),
    ({"HOME": "/h", "DYNOD_DATA": "/d/../e"}, "/d/../e"),
]


@pytest.mark.parametrize(("env", "expected"), CASES)
def test_daemon_and_client_find_the_same_directory(env: dict[str, str], expected: str) -> None:
    want = Path(os.getcwd(), expected)  # an absolute `expected` stays as it is
    assert resolve_data_dir(environ=env) == want
    assert data_dir(env) == want


def test_the_daemons_data_flag_wins(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "DYNOD_DATA": "/d"}
    assert resolve_data_dir(tmp_path / "flag", environ=env) == tmp_path / "flag"
    assert resolve_data_dir("~/flag", environ=env) == tmp_path / "flag"
    assert resolve_data_dir("", environ=env) == Path("/d")
