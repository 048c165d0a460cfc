"""Dyno sizes through the API as the Heroku CLI's `ps:type eco` sends them (a PATCH of the
formation's `size`), and what `ps --json` shows of them and of memory (docs/api.md)."""

from __future__ import annotations

from pathlib import Path

from dynod.platform.root import Platform
from tests.dynod.api.test_api import Client, sample_slug, until, upload_slug, with_api


def test_ps_type_sets_sizes_and_ps_shows_them(tmp_path: Path) -> None:
    tarball, types = sample_slug(tmp_path)

    async def scenario(client: Client, platform: Platform) -> None:
        await client.request("POST", "/apps", {"name": "sizes"})
        slug_id, _ = await upload_slug(client, "sizes", tarball, types)
        await client.request("POST", "/apps/sizes/releases", {"slug": slug_id})

        async def web_up() -> bool:
            dynos = await client.get("/apps/sizes/dynos")
            return [(d["name"], d["state"]) for d in dynos] == [("web.1", "up")]

        await until(web_up)
        body = {"updates": [{"type": "web", "size": "Eco"}, {"type": "worker", "size": "eco"}]}
        changed = await client.request("PATCH", "/apps/sizes/formation", body)
        assert changed.status == 200, changed
        assert sorted((f["type"], f["quantity"], f["size"]) for f in changed.json()) == [
            ("web", 1, "eco"),
            ("worker", 0, "eco"),
        ]
        dyno = (await client.get("/apps/sizes/dynos"))[0]
        assert (dyno["size"], dyno["state"], dyno["exit_status"], dyno["next_start_at"]) == (
            "eco",
            "up",
            None,
            None,
        )
        assert "memory" in dyno  # null until the first sample, 20 s in
        texts = [line.text for line in platform.ring(platform.apps.find("sizes")).recent(100)]
        assert "Scaled to web@1:Eco worker@0:Eco by user " in "\n".join(texts)

        bad = await client.request(
            "PATCH", "/apps/sizes/formation", {"updates": [{"type": "web", "size": "huge"}]}
        )
        assert bad.status == 422 and "Unknown dyno size 'huge'" in bad.json()["message"]
        assert (await client.get("/apps/sizes/formation/web"))["size"] == "eco"  # unchanged
        both = await client.request(
            "PATCH", "/apps/sizes/formation/web", {"quantity": 2, "size": "standard-1X"}
        )
        assert (both.json()["quantity"], both.json()["size"]) == (2, "standard-1X")
        neither = await client.request("PATCH", "/apps/sizes/formation/web", {})
        assert neither.status == 422

    with_api(tmp_path, scenario)
