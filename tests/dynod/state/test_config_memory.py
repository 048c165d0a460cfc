"""`[dynos]` memory and sleeping keys (README, "Memory" and "Sleeping"): their defaults, both
shapes of `memory_quota_mb`, and the one-line refusals."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dynod.errors import DynodError
from dynod.local import local_memory
from dynod.proc.memory import memory_settings
from dynod.state.config import Config, MemoryQuota


def test_defaults() -> None:
    dynos = Config().dynos
    assert dynos.memory_sample == 20.0
    assert dynos.memory_quota_mb is None  # 512 each; the local runner only warns
    assert dynos.idle_after == 1800.0
    assert memory_settings(dynos, kill=True) == {
        "memory_sample": 20.0,
        "memory_quota_mb": 512.0,
        "memory_quotas": {},
        "memory_kill": True,
    }
    assert memory_settings(dynos, kill=False)["memory_kill"] is False


def test_one_quota_for_all_or_a_table_by_type() -> None:
    one = Config.from_mapping({"dynos": {"memory_quota_mb": 1024, "memory_sample": 5}}).dynos
    assert one.memory_quota_mb == MemoryQuota(1024.0)
    assert one.memory_sample == 5.0
    table = Config.from_mapping({"dynos": {"memory_quota_mb": {"web": 256, "worker": 1024}}})
    settings = memory_settings(table.dynos, kill=False)
    assert settings["memory_quotas"] == {"web": 256.0, "worker": 1024.0}
    assert settings["memory_quota_mb"] == 512.0
    assert settings["memory_kill"] is True  # a quota set in dynod.toml kills, even locally


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"memory_quota_mb": 0}, "[dynos] memory_quota_mb must be a positive number of MB"),
        ({"memory_quota_mb": {"web": "big"}}, "or a table of MB by process type (web = 256)"),
        ({"memory_sample": -1}, "[dynos] memory_sample must be a positive number of seconds"),
        ({"idle_after": 0}, "[dynos] idle_after must be a positive number of seconds"),
    ],
)
def test_refusals(table: dict[str, object], message: str) -> None:
    with pytest.raises(DynodError, match=re.escape(message)):
        Config.from_mapping({"dynos": table})


def test_the_local_runner_reads_the_apps_dynod_toml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DYNOD_DATA", str(tmp_path / "data"))
    assert local_memory(tmp_path) == {"memory_kill": False}
    (tmp_path / "dynod.toml").write_text("[dynos.memory_quota_mb]\nweb = 128\n")
    assert local_memory(tmp_path)["memory_quotas"] == {"web": 128.0}
    assert local_memory(tmp_path)["memory_kill"] is True
