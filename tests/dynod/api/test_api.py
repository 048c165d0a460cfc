"""The API in-process over real HTTP: the platform and the API server on port 0 with a throwaway
data directory, spoken to with a small h11 client, as the Heroku CLI, heroku3 and `dyno` do."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import h11
import pytest
import trio

from dynod.api.routes import Api
from dynod.api.server import serve_http
from dynod.core.procfile import load_procfile
from dynod.platform.root import Platform
from dynod.platform.runtime import sweep_scratch
from dynod.proc.reaper import Reaper
from dynod.slugs.pack import pack_slug
from dynod.state.config import Address, Config
from tests.helpers import ROOT

SAMPLE = ROOT / "fixtures" / "sample"
TOKEN = "test-token-0123456789"
Headers = Iterable[tuple[str, str]]


@attrs.frozen
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        assert self.headers["content-type"] == "application/json"
        return json.loads(self.body)


class Client:
    """HTTP/1.1 with h11, one connection per request; `target` may be a full URL on the API."""

    def __init__(self, port: int) -> None:
        self.port = port

    @asynccontextmanager
    async def exchange(
        self, method: str, target: str, data: bytes = b"", headers: Headers = ()
    ) -> AsyncIterator[tuple[h11.Response, AsyncIterator[bytes]]]:
        target = target.split(f":{self.port}", 1)[-1]
        stream = await trio.open_tcp_stream("127.0.0.1", self.port)
        async with stream:
            conn = h11.Connection(h11.CLIENT)
            sent = [
                ("Host", f"127.0.0.1:{self.port}"),
                ("Content-Length", str(len(data))),
                *headers,
            ]
            await stream.send_all(
                conn.send(h11.Request(method=method, target=target, headers=sent))
            )
            await stream.send_all(conn.send(h11.Data(data=data)) + conn.send(h11.EndOfMessage()))

            async def next_event() -> Any:
                while (event := conn.next_event()) is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                return event

            async def chunks() -> AsyncIterator[bytes]:
                while isinstance(event := await next_event(), h11.Data):
                    yield bytes(event.data)

            head = await next_event()
            while isinstance(head, h11.InformationalResponse):
                head = await next_event()
            yield head, chunks()

    async def request(
        self,
        method: str,
        target: str,
        body: object = None,
        *,
        data: bytes | None = None,
        headers: Headers = (),
        auth: str | None = "bearer",
    ) -> Reply:
        sent = list(headers)
        if auth == "bearer":
            sent.append(("Authorization", f"Bearer {TOKEN}"))
        elif auth == "basic":  # heroku3's way: empty user, the token as password
            sent.append(
                ("Authorization", "Basic " + base64.b64encode(f":{TOKEN}".encode()).decode())
            )
        if body is not None:
            data = json.dumps(body).encode()
            sent.append(("Content-Type", "application/json"))
        with trio.fail_after(30):
            async with self.exchange(method, target, data or b"", sent) as (head, chunks):
                payload = b"".join([chunk async for chunk in chunks])
        names = {name.decode().lower(): value.decode() for name, value in head.headers}
        return Reply(head.status_code, names, payload)

    async def get(self, target: str, **kwargs: Any) -> Any:
        reply = await self.request("GET", target, **kwargs)
        assert reply.status in (200, 206), reply
        return reply.json()


Scenario = Callable[[Client, Platform], Awaitable[None]]


def with_api(tmp_path: Path, scenario: Scenario) -> None:
    config = Config().replace(dynos={"stop_timeout": 3, "restart_ladder": [0, 1]})

    async def main() -> None:
        with trio.fail_after(150), Reaper() as reaper:
            platform = Platform(config, tmp_path / "data", reaper=reaper)
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(platform.run)
                    api = Api(platform, TOKEN, "http://127.0.0.1:0")
                    _, port = await nursery.start(serve_http, Address("127.0.0.1", 0), api.handle)
                    api.state.base_url = f"http://127.0.0.1:{port}"
                    await scenario(Client(port), platform)
                    nursery.cancel_scope.cancel()
            finally:  # the scratch directory `dynod serve` removes when it stops
                sweep_scratch(platform.data_dir)

    trio.run(main)


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 30) -> None:
    with trio.fail_after(timeout):
        while not await check():
            await trio.sleep(0.1)


def sample_slug(tmp_path: Path) -> tuple[bytes, dict[str, str]]:
    app_dir = tmp_path / "sample"
    shutil.copytree(SAMPLE, app_dir)
    info = pack_slug(app_dir, tmp_path / "sample.tgz")
    types = {t.name: t.command for t in load_procfile(app_dir / "Procfile").types}
    return info.path.read_bytes(), types


async def upload_slug(
    client: Client, app: str, tarball: bytes, types: dict[str, str]
) -> tuple[str, Reply]:
    created = await client.request(
        "POST", f"/apps/{app}/slugs", {"process_types": types, "commit": "c0ffee00"}
    )
    assert created.status == 201, created
    slug = created.json()
    assert slug["blob"]["method"] == "put"
    put = await client.request(
        "PUT",
        slug["blob"]["url"],
        data=tarball,
        auth=None,  # a presigned URL
        headers=[("Expect", "100-continue")],
    )  # as curl sends it
    return slug["id"], put


# ----- authentication, routing and errors


def test_the_token_is_required_and_reveals_nothing(tmp_path: Path) -> None:
    async def scenario(client: Client, platform: Platform) -> None:
        await platform.create_app("secret-app")
        for auth_header in (
            [],
            [("Authorization", "Bearer wrong")],
            [("Authorization", "Basic Ojp4")],
        ):
            for target in ("/apps", "/apps/secret-app", "/no/such/path"):
                reply = await client.request("GET", target, headers=auth_header, auth=None)
                assert reply.status == 401
                assert reply.json()["id"] == "unauthorized"
                assert b"secret-app" not in reply.body
        assert (await client.request("GET", "/account", auth="bearer")).json()[
            "email"
        ] == platform.user
        assert (await client.request("GET", "/account", auth="basic")).status == 200
        missing = await client.request("GET", "/no/such/path")
        assert (missing.status, missing.json()["id"]) == (404, "not_found")
        wrong = await client.request("PUT", "/apps")
        assert (wrong.status, wrong.json()["id"], wrong.headers["allow"]) == (
            405,
            "method_not_allowed",
            "GET, POST",
        )
        bad_json = await client.request(
            "POST", "/apps", data=b"{not json", headers=[("Content-Type", "application/json")]
        )
        assert (bad_json.status, bad_json.json()["id"]) == (400, "bad_request")

    with_api(tmp_path, scenario)


def test_malformed_requests_oversized_bodies_and_keep_alive(tmp_path: Path) -> None:
    async def scenario(client: Client, platform: Platform) -> None:
        with trio.fail_after(20):
            stream = await trio.open_tcp_stream("127.0.0.1", client.port)
            async with stream:
                await stream.send_all(b"GET /apps HTTP/1.1\r\nHost x\r\n\r\n")
                answer = b""
                while chunk := await stream.receive_some(65536):  # then the server closes
                    answer += chunk
            assert answer.startswith(b"HTTP/1.1 400 ")

            stream = await trio.open_tcp_stream("127.0.0.1", client.port)
            async with stream:  # two requests on one connection
                request = (
                    f"GET /account HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
                ).encode()
                await stream.send_all(request + request)
                answer = b""
                while answer.count(b"HTTP/1.1 200 OK") < 2:
                    chunk = await stream.receive_some(65536)
                    assert chunk, answer
                    answer += chunk

        for size in (2 << 20, (64 << 10) + 1):  # docs/api.md: JSON bodies are at most 64 kB
            huge = await client.request("POST", "/apps", data=b" " * size)
            assert (huge.status, huge.json()["id"]) == (413, "request_entity_too_large")

        def nested(levels: int) -> bytes:  # an object holding arrays: `levels` deep in all
            return b'{"x": ' + b"[" * (levels - 1) + b"]" * (levels - 1) + b"}"

        assert (await client.request("POST", "/apps", data=nested(64))).status == 201
        for levels in (65, 30_000):  # 30,000: past the interpreter's recursion limit
            deep = await client.request("POST", "/apps", data=nested(levels))
            assert (deep.status, deep.json()["id"]) == (400, "bad_request"), deep
            assert "64 levels" in deep.json()["message"]

    with_api(tmp_path, scenario)


# ----- apps, config vars, releases


def test_apps_are_created_listed_shown_and_destroyed_by_name_or_id(tmp_path: Path) -> None:
    async def scenario(client: Client, platform: Platform) -> None:
        created = await client.request("POST", "/apps", {"name": "shop", "stack": "cedar"})
        assert created.status == 201
        shop = created.json()
        assert shop["name"] == "shop" and shop["web_url"] == "http://shop.localhost:8080/"
        assert shop["owner"]["email"] == platform.user
        assert (shop["region"]["name"], shop["generation"]["name"]) == ("local", "cedar")
        assert shop["stack"]["name"] == shop["build_stack"]["name"]
        assert shop["repo_size"] is None and shop["slug_size"] is None
        invented = (await client.request("POST", "/apps", {})).json()["name"]
        assert invented and invented != "shop"

        taken = await client.request("POST", "/apps", {"name": "shop"})
        assert (taken.status, taken.json()["id"]) == (409, "conflict")
        bad = await client.request("POST", "/apps", {"name": "Bad_Name"})
        assert (bad.status, bad.json()["id"]) == (422, "invalid_params")
        assert "lowercase" in bad.json()["message"]

        for listing in ("/apps", "/users/~/apps", "/users/%7E/apps"):
            assert sorted(a["name"] for a in await client.get(listing)) == sorted(
                ["shop", invented]
            )
        assert (await client.get(f"/apps/{shop['id']}"))["name"] == "shop"
        for part in ("addons", "collaborators", "addon-attachments"):
            assert await client.get(f"/apps/shop/{part}") == []
        assert (await client.request("GET", "/apps/shop/pipeline-couplings")).status == 404

        gone = await client.request("DELETE", f"/apps/{shop['id']}")
        assert (gone.status, gone.json()["name"]) == (200, "shop")
        missing = await client.request("GET", "/apps/shop")
        assert (missing.status, missing.json()["id"]) == (404, "not_found")
        assert "dyno apps" in missing.json()["message"]

    with_api(tmp_path, scenario)


def test_config_vars_make_releases_and_ranges_page_them(tmp_path: Path) -> None:
    async def scenario(client: Client, platform: Platform) -> None:
        app_id = (await client.request("POST", "/apps", {"name": "conf"})).json()["id"]
        assert await client.get("/apps/conf/config-vars") == {}
        first = await client.request(
            "PATCH", f"/apps/{app_id}/config-vars", {"FOO": "1", "BAR": "two"}
        )
        assert (first.status, first.json()) == (200, {"FOO": "1", "BAR": "two"})
        second = await client.request("PATCH", "/apps/conf/config-vars", {"FOO": None})
        assert second.json() == {"BAR": "two"}
        refused = await client.request(
            "PATCH", "/apps/conf/config-vars", {"GOOD": "1", "1BAD": "x"}
        )
        assert (refused.status, refused.json()["id"]) == (422, "invalid_params")
        assert "1BAD" in refused.json()["message"]
        assert await client.get("/apps/conf/config-vars") == {"BAR": "two"}

        # What `heroku config:set` reads to print the new version.
        latest = await client.request(
            "GET", "/apps/conf/releases", headers=[("Range", "version ..; order=desc,max=1")]
        )
        assert latest.status == 206
        [v3] = latest.json()
        assert (v3["version"], v3["description"], v3["current"]) == (
            3,
            "Remove FOO config vars",
            True,
        )
        assert v3["user"]["email"] == platform.user and v3["slug"] is None
        following = await client.request(
            "GET", "/apps/conf/releases", headers=[("Range", latest.headers["next-range"])]
        )
        assert [r["version"] for r in following.json()] == [2]
        assert following.json()[0]["description"] == "Set FOO, BAR config vars"
        last = await client.request(
            "GET", "/apps/conf/releases", headers=[("Range", following.headers["next-range"])]
        )
        assert (last.status, [r["version"] for r in last.json()]) == (200, [1])

        # heroku3's loose Range, and no Range at all: v1 first.
        for headers in ([("Range", "id ..; ;")], []):
            assert [
                r["version"] for r in await client.get("/apps/conf/releases", headers=headers)
            ] == [1, 2, 3]
        assert [
            r["version"]
            for r in await client.get(
                "/apps/conf/releases", headers=[("Range", "version ..; max=15, order=desc")]
            )
        ] == [3, 2, 1]

        for ref in ("2", "v2", v3["id"]):
            shown = await client.get(f"/apps/conf/releases/{ref}")
            assert shown["version"] == (3 if ref == v3["id"] else 2)
        assert await client.get("/apps/conf/releases/2/config-vars") == {"FOO": "1", "BAR": "two"}
        assert (await client.request("GET", "/apps/conf/releases/9")).status == 404
        no_slug = await client.request("POST", "/apps/conf/releases", {"release": "1"})
        assert (no_slug.status, no_slug.json()["id"]) == (422, "invalid_params")

    with_api(tmp_path, scenario)


# ----- slugs, formation, dynos


def test_a_released_slug_runs_scales_restarts_and_rolls_back(tmp_path: Path) -> None:
    tarball, types = sample_slug(tmp_path)

    async def scenario(client: Client, platform: Platform) -> None:
        await client.request("POST", "/apps", {"name": "web-app"})
        slug_id, put = await upload_slug(client, "web-app", tarball, types)
        assert put.status == 200
        assert (await client.get(f"/apps/web-app/slugs/{slug_id}"))["process_types"] == types
        created = await client.request("POST", "/apps/web-app/releases", {"slug": slug_id})
        assert created.status == 201
        v2 = created.json()
        assert (v2["version"], v2["description"], v2["slug"]) == (
            2,
            "Deploy c0ffee00",
            {"id": slug_id},
        )
        assert (v2["status"], v2["eligible_for_rollback"]) == (
            "pending",
            True,
        )  # its release phase runs

        async with client.exchange("GET", v2["output_stream_url"]) as (
            head,
            chunks,
        ):  # no token needed
            output = b"".join([chunk async for chunk in chunks]).decode()
        assert head.status_code == 200 and "release phase: nothing to migrate" in output

        async def released() -> bool:
            return bool((await client.get("/apps/web-app/releases/2"))["current"])

        await until(released)
        assert (await client.get("/apps/web-app"))["slug_size"] == len(tarball)
        scaled = await client.request(
            "PATCH",
            "/apps/web-app/formation",
            {"updates": [{"type": "web", "quantity": "1"}, {"type": "worker", "quantity": "+1"}]},
        )
        assert sorted((f["type"], f["quantity"], f["size"]) for f in scaled.json()) == [
            ("web", 1, "standard-1X"),
            ("worker", 1, "standard-1X"),
        ]
        down = await client.request("PATCH", "/apps/web-app/formation/worker", {"quantity": "-1"})
        assert (down.json()["type"], down.json()["quantity"]) == ("worker", 0)
        assert (await client.get("/apps/web-app/formation/web"))["command"] == "python3 web.py"
        unknown = await client.request(
            "PATCH", "/apps/web-app/formation", {"updates": [{"type": "nope", "quantity": 1}]}
        )
        assert unknown.status == 404
        silly = await client.request("PATCH", "/apps/web-app/formation/web", {"quantity": "lots"})
        assert silly.status == 422
        bodies: list[dict[str, object]] = [{"updates": []}, {"updates": {"type": "web"}}, {}]
        for body in bodies:
            assert (await client.request("PATCH", "/apps/web-app/formation", body)).status == 422, (
                body
            )

        async def web_up() -> bool:
            dynos = await client.get("/apps/web-app/dynos")
            return [(d["name"], d["state"]) for d in dynos] == [("web.1", "up")]

        await until(web_up)
        dyno = await client.get("/apps/web-app/dynos/web.1")
        assert (dyno["type"], dyno["size"], dyno["release"]["version"]) == ("web", "standard-1X", 2)
        assert "Hello from web.1" in await get_web(platform, "web-app")

        assert (await client.request("DELETE", "/apps/web-app/dynos/web.1")).status == 202
        assert (
            await client.request("POST", "/apps/web-app/dynos/web.1/actions/stop")
        ).status == 202
        assert (await client.request("DELETE", "/apps/web-app/formations/web")).status == 202
        assert (
            await client.request("POST", "/apps/web-app/formations/web/actions/stop")
        ).status == 202
        assert (await client.request("DELETE", "/apps/web-app/dynos")).status == 202
        assert (await client.request("DELETE", "/apps/web-app/dynos/web.9")).status == 404
        await until(web_up)

        attached = await client.request(
            "POST", "/apps/web-app/dynos", {"command": "bash", "attach": True}
        )
        # an Api without a rendezvous (`dynod serve` always starts one) says what to use instead
        assert attached.status == 503 and "run:detached" in attached.json()["message"]
        one_off = await client.request(
            "POST",
            "/apps/web-app/dynos",  # the Heroku CLI's -e
            {
                "command": "echo one-off says $WORD",
                "attach": False,
                "size": None,
                "env": {"WORD": "hi", "TERM": "xterm"},
            },
        )
        assert one_off.status == 201 and one_off.json()["name"].startswith("run.")
        bad_env = await client.request(
            "POST", "/apps/web-app/dynos", {"command": "true", "attach": False, "env": {"1X": "y"}}
        )
        assert bad_env.status == 422 and "1X" in bad_env.json()["message"]

        async def said_hi() -> bool:
            return any(
                line.text == "one-off says hi"
                for line in platform.ring(platform.apps.find("web-app")).recent(200)
            )

        await until(said_hi)

        sleeper = await client.request(
            "POST", "/apps/web-app/dynos", {"command": "sleep 600", "attach": False}
        )
        name = sleeper.json()["name"]

        async def listed(state: str | None = None) -> bool:
            return any(
                d["name"] == name and state in (None, d["state"])
                for d in await client.get("/apps/web-app/dynos")
            )

        await until(lambda: listed("up"))  # running: stopped with the stop sequence below
        stopped = await client.request("POST", f"/apps/web-app/dynos/{name}/actions/stop")
        assert stopped.status == 202, stopped.body

        async def gone() -> bool:
            return not await listed()

        await until(gone)
        app_ring = platform.ring(platform.apps.find("web-app"))
        assert any(  # the stop sequence, as for any dyno
            line.dyno == name and line.text == "Stopping all processes with SIGTERM"
            for line in app_ring.recent(200)
        )
        assert (
            await client.request("POST", f"/apps/web-app/dynos/{name}/actions/stop")
        ).status == 404

        await client.request("PATCH", "/apps/web-app/config-vars", {"GREETING": "yo"})
        rollback = await client.request("POST", "/apps/web-app/releases", {"release": v2["id"]})
        assert rollback.status == 201
        assert (rollback.json()["version"], rollback.json()["description"]) == (4, "Rollback to v2")

        async def rolled_back() -> bool:
            return bool((await client.get("/apps/web-app/releases/4"))["current"])

        await until(rolled_back)
        assert await client.get("/apps/web-app/config-vars") == {}

    with_api(tmp_path, scenario)


async def get_web(platform: Platform, name: str) -> str:
    port = next(
        port
        for dyno, port, _ in platform.formation.web_targets(platform.apps.find(name))
        if dyno == "web.1"
    )
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            data = b""
            while chunk := await stream.receive_some(65536):
                data += chunk
    return data.decode()


def test_a_hostile_slug_is_refused_whole(tmp_path: Path) -> None:
    hostile = io.BytesIO()
    with tarfile.open(fileobj=hostile, mode="w:gz") as tar:
        for name in ("./app/Procfile", "/etc/dynod-was-here"):
            content = b"web: sleep 60\n"
            member = tarfile.TarInfo(name)
            member.size = len(content)
            tar.addfile(member, io.BytesIO(content))

    async def scenario(client: Client, platform: Platform) -> None:
        await client.request("POST", "/apps", {"name": "victim"})
        slug_id, put = await upload_slug(client, "victim", hostile.getvalue(), {"web": "sleep 60"})
        assert (put.status, put.json()["id"]) == (422, "invalid_params")
        assert "absolute path" in put.json()["message"]
        release = await client.request("POST", "/apps/victim/releases", {"slug": slug_id})
        assert release.status == 404
        assert not Path("/etc/dynod-was-here").exists()
        no_types = await client.request("POST", "/apps/victim/slugs", {})
        assert no_types.status == 422 and "process_types" in no_types.json()["message"]
        # Type names become dyno names and their directories: the Procfile's rule holds here too.
        for types in (
            {"../../x": "sleep 60"},
            {"web.1": "sleep 60"},
            {"": "sleep 60"},
            {"web": " "},
        ):
            bad = await client.request("POST", "/apps/victim/slugs", {"process_types": types})
            assert (bad.status, bad.json()["id"]) == (422, "invalid_params"), types

    with_api(tmp_path, scenario)


# ----- logs


def test_log_sessions_plain_and_event_stream_with_tail_and_resume(tmp_path: Path) -> None:
    async def scenario(client: Client, platform: Platform) -> None:
        await client.request("POST", "/apps", {"name": "chatty"})
        app = platform.apps.find("chatty")
        for n in range(5):
            platform.log(app, f"line {n}", dyno="web.1")
        platform.log(app, "from the router", dyno="router", source="heroku")

        session = (
            await client.request("POST", "/apps/chatty/log-sessions", {"lines": 3, "tail": False})
        ).json()
        plain = await client.request("GET", session["logplex_url"], auth=None)
        lines = plain.body.decode().splitlines()
        assert plain.headers["content-type"].startswith("text/plain")
        assert [line.split(": ", 1)[1] for line in lines] == ["line 3", "line 4", "from the router"]
        assert " app[web.1]: line 3" in lines[0] and " heroku[router]: " in lines[2]
        again = await client.request("GET", session["logplex_url"], auth=None)
        assert again.status == 404  # single use

        for body, expected in (
            ({"dyno": "web"}, "line 4"),
            ({"dyno": "router"}, "from the router"),
            ({"dyno": "web.1", "source": "app"}, "line 4"),
            ({"source": "heroku"}, "from the router"),
        ):
            url = (
                await client.request("POST", "/apps/chatty/log-sessions", {"lines": 1, **body})
            ).json()["logplex_url"]
            assert (
                (await client.request("GET", url, auth=None))
                .body.decode()
                .endswith(f": {expected}\n")
            )
        bad = await client.request("POST", "/apps/chatty/log-sessions", {"source": "kernel"})
        assert bad.status == 422

        tail_url = (
            await client.request(
                "POST", "/apps/chatty/log-sessions", {"lines": 2, "tail": True, "dyno": "web.1"}
            )
        ).json()["logplex_url"]
        sse = [("Accept", "text/event-stream")]
        with trio.fail_after(20):
            async with client.exchange("GET", tail_url, headers=sse) as (head, chunks):
                assert dict(head.headers)[b"content-type"] == b"text/event-stream"
                text, logged = "", False
                async for chunk in chunks:
                    text += chunk.decode()
                    if text.count("data: ") == 2 and not logged:
                        platform.log(app, "tailed line", dyno="web.1")
                        logged = True
                    if "tailed line" in text:
                        break
        assert text.startswith("retry: 50\n\n")
        events = [block.splitlines() for block in text.strip().split("\n\n")[1:]]
        assert [event[1].rsplit(": ", 1)[1] for event in events] == [
            "line 3",
            "line 4",
            "tailed line",
        ]
        assert all(event[0].startswith("id: ") for event in events)

        ring = platform.ring(app)

        async def tails_closed() -> bool:
            return ring.statistics().tails == 0

        await until(tails_closed)  # the client went away: the tail ended with it
        assert (
            await client.request("GET", tail_url, auth=None, headers=sse)
        ).status == 404  # no replay
        platform.log(app, "while away", dyno="web.1")
        resume = [*sse, ("Last-Event-ID", events[1][0].removeprefix("id: "))]
        with trio.fail_after(20):
            async with client.exchange("GET", tail_url, headers=resume) as (head, chunks):
                text = ""
                async for chunk in chunks:
                    text += chunk.decode()
                    if "while away" in text:
                        break
        assert [  # what the first connection sent is not sent again, whatever the id says
            line.rsplit(": ", 1)[1] for line in text.splitlines() if line.startswith("data: ")
        ] == ["while away"]
        for replay in ("0-0", events[0][0].removeprefix("id: ")):  # a used URL replays nothing
            platform.log(app, f"after {replay}", dyno="web.1")
            with trio.fail_after(20):
                resume = [*sse, ("Last-Event-ID", replay)]
                async with client.exchange("GET", tail_url, headers=resume) as (head, chunks):
                    text = ""
                    async for chunk in chunks:
                        text += chunk.decode()
                        if f"after {replay}" in text:
                            break
            assert [
                line.rsplit(": ", 1)[1] for line in text.splitlines() if line.startswith("data: ")
            ] == [f"after {replay}"]
            await until(tails_closed)

    with_api(tmp_path, scenario)


# ----- builds and uploaded sources


async def built(client: Client, app: str, url: str) -> tuple[str, str]:
    """A build of `url` with the procfile buildpack: its final status and its output."""
    body = {"source_blob": {"url": url}, "buildpacks": [{"url": "procfile"}]}
    created = await client.request("POST", f"/apps/{app}/builds", body)
    assert created.status == 201, created.body
    build = created.json()
    with trio.fail_after(120):
        async with client.exchange("GET", build["output_stream_url"]) as (_, chunks):
            output = b"".join([chunk async for chunk in chunks]).decode()
    return (await client.get(f"/apps/{app}/builds/{build['id']}"))["status"], output


@pytest.mark.skipif(os.geteuid() != 0, reason="sources are read as the app's user under root")
def test_the_data_directory_is_refused_as_a_source() -> None:
    """The leak of issue 11: a build of the data directory put the API token in a slug."""
    shared = Path(tempfile.mkdtemp(prefix="dynod-test-api-"))  # /tmp: every user passes
    shared.chmod(0o755)
    app_dir = shared / "app"
    app_dir.mkdir()
    (app_dir / "Procfile").write_text("worker: sleep 600\n")

    async def scenario(client: Client, platform: Platform) -> None:
        data = platform.data_dir
        data.chmod(0o700)  # as `dynod serve` makes it
        (data / "api-token").write_text(TOKEN)
        (data / "Procfile").write_text("worker: cat api-token\n")  # a build would succeed
        await client.request("POST", "/apps", {"name": "thief"})
        for url in (str(data), f"file://{data}/apps", f"{data}/api-token"):
            status, output = await built(client, "thief", url)
            assert status == "failed", output
            assert "cannot be read by the app's user" in output or "tarball" in output, output
        assert [r["version"] for r in await client.get("/apps/thief/releases")] == [1]
        status, output = await built(client, "thief", str(app_dir))  # readable by everyone
        assert status == "succeeded", output

    try:
        with_api(shared, scenario)
    finally:
        shutil.rmtree(shared)


def test_a_build_from_an_uploaded_source_streams_its_output_and_releases(tmp_path: Path) -> None:
    source = io.BytesIO()
    with tarfile.open(fileobj=source, mode="w:gz") as tar:
        tar.add(SAMPLE, arcname="sample")  # one top-level directory, as GitHub tarballs have

    async def scenario(client: Client, platform: Platform) -> None:
        await client.request("POST", "/apps", {"name": "built"})
        blob = (await client.request("POST", "/apps/built/sources")).json()["source_blob"]
        assert (
            await client.request("PUT", blob["put_url"], data=source.getvalue(), auth=None)
        ).status == 200
        created = await client.request(
            "POST",
            "/apps/built/builds",
            {"source_blob": {"url": blob["get_url"], "version": "abc1234567"}},
        )
        assert created.status == 201, created.body
        build = created.json()
        assert build["status"] == "pending" and build["source_blob"]["version"] == "abc1234567"
        with trio.fail_after(120):
            async with client.exchange("GET", build["output_stream_url"]) as (head, chunks):
                output = b"".join([chunk async for chunk in chunks]).decode()
        assert head.status_code == 200 and "-----> " in output
        done = await client.get(f"/apps/built/builds/{build['id']}")
        assert done["status"] == "succeeded", output
        assert done["release"]["version"] == 2 and done["slug"]["id"]
        assert [b["id"] for b in await client.get("/apps/built/builds")] == [build["id"]]
        assert (await client.get("/apps/built/releases/2"))["description"] == "Deploy abc12345"
        refused = await client.request("POST", "/apps/built/builds", {"source_blob": {}})
        assert refused.status == 422 and "source_blob.url" in refused.json()["message"]
        forged = build["output_stream_url"][:-4] + "0000"
        assert (await client.request("GET", forged, auth=None)).status == 404

        # Uploaded sources are kept a day, then dropped when someone asks for a new source URL.
        uploaded = next((platform.data_dir / "sources").iterdir())
        os.utime(uploaded, (time.time() - 2 * 86400,) * 2)
        await client.request("POST", "/sources")
        assert not uploaded.exists()

    with_api(tmp_path, scenario)
