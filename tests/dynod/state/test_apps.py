"""The app registry: creating, reloading and destroying apps, their formations, a name that
two creates ask for at once (its writes run in worker threads, so they can overlap), and an app
record that does not parse (Damaged, not a crash)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from dynod.errors import Conflict, Damaged, Invalid
from dynod.state.apps import AppStore


@pytest.mark.trio
async def test_apps_are_created_kept_and_destroyed(tmp_path: Path) -> None:
    store = AppStore(tmp_path)
    shop = await store.create("shop")
    invented = await store.create()
    await store.save_formation(shop, {"web": 2})
    again = AppStore(tmp_path)
    assert {app.name for app in again.all()} == {"shop", invented.name}
    assert again.find("shop") == shop and again.formation(shop) == {"web": 2}
    with pytest.raises(Invalid, match="is not valid"):
        await store.create("Not A Name")
    await store.destroy(shop)
    assert store.by_name("shop") is None and not store.dir(shop).exists()
    assert [app.name for app in AppStore(tmp_path).all()] == [invented.name]
    assert not [p for p in (tmp_path / "apps").iterdir() if p.name.startswith(".")]


@pytest.mark.trio
async def test_a_name_asked_for_twice_at_once_is_taken_once(tmp_path: Path) -> None:
    store = AppStore(tmp_path)
    outcomes: list[str] = []

    async def create() -> None:
        try:
            await store.create("twin")
            outcomes.append("created")
        except Conflict:
            outcomes.append("taken")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(create)
        nursery.start_soon(create)
    assert sorted(outcomes) == ["created", "taken"]
    assert [app.name for app in AppStore(tmp_path).all()] == ["twin"]


@pytest.mark.trio
async def test_an_unreadable_app_record_is_damaged_state(tmp_path: Path) -> None:
    app = await AppStore(tmp_path).create("shop")
    record = AppStore(tmp_path).dir(app) / "app.json"
    record.write_text("{not json")
    with pytest.raises(Damaged, match=r"app record .*app.json is damaged"):
        AppStore(tmp_path)
    record.write_text("{}")  # JSON, but not an app
    with pytest.raises(Damaged, match=r"app record .*app.json is damaged"):
        AppStore(tmp_path)
