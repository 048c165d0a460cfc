"""The app store's own damage: an app record that does not parse is Damaged, not a crash."""

from __future__ import annotations

from pathlib import Path

import pytest

from dynod.errors import Damaged
from dynod.state.apps import AppStore


def test_an_unreadable_app_record_is_damaged_state(tmp_path: Path) -> None:
    app = AppStore(tmp_path).create("shop")
    record = AppStore(tmp_path).dir(app) / "app.json"
    record.write_text("{not json")
    with pytest.raises(Damaged, match=r"app record .*app.json is damaged"):
        AppStore(tmp_path)
    record.write_text("{}")  # JSON, but not an app
    with pytest.raises(Damaged, match=r"app record .*app.json is damaged"):
        AppStore(tmp_path)
