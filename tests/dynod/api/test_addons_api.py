"""The add-on resources over real HTTP (docs/api.md, "Add-ons"): both ways of naming a plan,
the listings and attachments, the resolve actions the Heroku CLI asks, and refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from dynod.addons.provider import program
from dynod.platform.root import Platform
from tests.dynod.api.test_api import Client, with_api


@pytest.mark.skipif(program("redis-server")[0] is None, reason="apt-get install redis-server")
def test_addons_are_created_listed_resolved_and_destroyed(tmp_path: Path) -> None:
    async def scenario(client: Client, platform: Platform) -> None:
        await client.request("POST", "/apps", {"name": "kvs"})
        made = await client.request("POST", "/apps/kvs/addons", {"plan": "redis"})
        assert made.status == 201
        first = made.json()
        assert (first["name"], first["plan"]["name"], first["state"]) == (
            "redis-1",
            "heroku-redis:mini",
            "provisioned",
        )
        assert (first["config_vars"], first["app"]["name"]) == (["REDIS_URL"], "kvs")
        assert first["addon_service"]["name"] == "heroku-redis"
        second = await client.request(
            "POST",
            "/apps/kvs/addons",
            {
                "plan": {"name": "heroku-redis:mini"},
                "name": "sessions",
                "attachment": {"name": "s"},
            },
        )
        assert (second.status, second.json()["config_vars"]) == (201, ["S_URL"])

        assert [a["name"] for a in await client.get("/apps/kvs/addons")] == ["redis-1", "sessions"]
        assert [a["name"] for a in await client.get("/addons")] == ["redis-1", "sessions"]
        attachments = await client.get("/addon-attachments")
        assert [(a["name"], a["addon"]["name"], a["app"]["name"]) for a in attachments] == [
            ("REDIS", "redis-1", "kvs"),
            ("S", "sessions", "kvs"),
        ]
        resolved = await client.request(
            "POST", "/actions/addons/resolve", {"addon": "sessions", "app": "kvs"}
        )
        assert [a["id"] for a in resolved.json()] == [second.json()["id"]]
        assert (await client.get(f"/addons/{first['id']}"))["name"] == "redis-1"

        for body, status, words in (
            ({"plan": "memcached"}, 404, "dynod has heroku-redis, heroku-postgresql"),
            ({"plan": "heroku-redis:premium-9"}, 422, "use mini"),
            ({"plan": "redis", "name": "sessions"}, 409, "already has an add-on named"),
            ({"plan": "redis", "name": "Bad Name"}, 422, "lowercase"),
            ({}, 422, "Give the service and plan"),
        ):
            refused = await client.request("POST", "/apps/kvs/addons", body)
            assert refused.status == status and words in refused.json()["message"], refused

        gone = await client.request("DELETE", "/apps/kvs/addons/sessions")
        assert (gone.status, gone.json()["state"]) == (200, "deprovisioned")
        missing = await client.request("GET", "/apps/kvs/addons/sessions")
        assert missing.status == 404
        nothing = await client.request("POST", "/actions/addons/resolve", {"addon": "sessions"})
        assert nothing.status == 404
        assert list(await client.get("/apps/kvs/config-vars")) == ["REDIS_URL"]
        assert (await client.request("DELETE", "/apps/kvs")).status == 200
        assert await client.get("/addons") == []
        assert list((platform.data_dir / "addons").iterdir()) == []

    with_api(tmp_path, scenario)
