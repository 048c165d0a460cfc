"""Add-ons on the platform in-process, with real servers (docs/platform.md, "Add-ons"): Redis
reached by a dyno through REDIS_URL, its data through deploys, rollbacks, config changes,
restarts and a `kill -9` of the server; destroy in one release; what a crash interrupted; a
missing server program refused with nothing made."""

from __future__ import annotations

import itertools
import os
import shutil
import signal
from pathlib import Path

import attrs
import pytest
import trio

from dynod.addons.postgres import PostgresProvider
from dynod.addons.provider import program
from dynod.addons.redis import RedisProvider, ask, auth, command
from dynod.errors import Invalid
from dynod.platform.root import Platform
from tests.dynod.platform.test_firewall import OTHER_UID, connects
from tests.dynod.platform.test_platform import http_get, slug_of, until, up, web_port, with_platform
from tests.helpers import ROOT

ADDON_APP = ROOT / "fixtures" / "addons"
needs_redis = pytest.mark.skipif(
    program("redis-server")[0] is None,
    reason="redis-server is not installed (apt-get install redis-server)",
)


async def visits(platform: Platform, app_name: str) -> str:
    """What the app's web dyno answers: its visit count from Redis (retried while the server
    or the dyno restarts)."""
    app = platform.apps.find(app_name)
    with trio.fail_after(20):
        while True:
            await until(platform, up(platform, app, 1))
            try:
                answer = await http_get(web_port(platform, app))
            except (OSError, trio.BrokenResourceError, IndexError, StopIteration):
                answer = ""
            if answer.startswith(":"):
                return answer[1:]
            await trio.sleep(0.05)


async def server_pid(port: int, password: str) -> int:
    reply = await ask(port, auth(password) + command("INFO", "server"), lines=6)
    for line in reply.decode().splitlines():
        if line.startswith("process_id:"):
            return int(line.partition(":")[2])
    raise AssertionError(f"no process_id in {reply!r}")


async def next_server(port: int, password: str, before: int) -> int:
    """The pid of the server that answers once the one with pid `before` is gone."""
    with trio.fail_after(20):
        while True:
            try:
                pid = await server_pid(port, password)
            except AssertionError:
                pid = before
            if pid != before:
                return pid
            await trio.sleep(0.05)


@needs_redis
def test_a_dyno_keeps_its_redis_data_through_releases_restarts_and_a_kill(
    tmp_path: Path,
) -> None:
    async def scenario(platform: Platform) -> None:
        app = await platform.create_app("counter")
        slug = slug_of(platform, ADDON_APP, tmp_path)
        await platform.releases.create(
            app, slug_id=slug, config_vars={}, description="Deploy", wait=True
        )
        record = await platform.addons.create(app, "redis")
        assert (record.name, record.service, record.plan, record.state) == (
            "redis-1",
            "heroku-redis",
            "mini",
            "provisioned",
        )
        v3 = platform.releases.all(app)[-1]
        assert (v3.version, v3.description, v3.addons) == (
            3,
            "Attach REDIS (redis-1)",
            ("redis-1",),
        )
        url = f"redis://:{record.password}@127.0.0.1:{record.port}"
        assert v3.config_vars == {"REDIS_URL": url}
        assert await visits(platform, "counter") == "1"
        assert platform.releases.output(app, 3) == "release with redis\n"  # its release phase
        assert await visits(platform, "counter") == "2"

        # The password is required, and a wrong one refused.
        assert (await ask(record.port, command("GET", "visits"), lines=1)).startswith(b"-NOAUTH")
        wrong = await ask(record.port, auth("guess") + command("GET", "visits"), lines=2)
        assert wrong.startswith(b"-WRONGPASS")

        await platform.releases.set_config(app, {"GREETING": "hi"})
        assert await visits(platform, "counter") == "3"
        await platform.releases.create(
            app,
            slug_id=slug,
            config_vars=platform.releases.config_vars(app),
            description="D2",
            wait=True,
        )
        assert await visits(platform, "counter") == "4"
        # A rollback to before the add-on was attached keeps it, and its URL.
        v6 = await platform.releases.rollback(app, 2)
        assert v6.config_vars == {"REDIS_URL": url} and v6.addons == ("redis-1",)
        assert await visits(platform, "counter") == "5"

        first = await server_pid(record.port, record.password)
        if platform.reaper is not None and platform.reaper.cgroups is not None:  # a cgroup each
            assert "/redis-1-" in Path(f"/proc/{first}/cgroup").read_text()
        owner = platform.users.owner(app.id)
        if owner is not None:  # dynod is root: the server runs as the app's uid
            assert os.stat(f"/proc/{first}").st_uid == owner[0]
        platform.addons.restart(app, record)
        second = await next_server(record.port, record.password, first)
        assert await visits(platform, "counter") == "6"
        os.kill(second, signal.SIGKILL)  # a crash: the supervisor starts it again
        await next_server(record.port, record.password, second)
        assert await visits(platform, "counter") == "7"
        said = [line.text for line in platform.ring(app).recent(500) if line.dyno == "redis-1"]
        assert any("ready to exit" in text for text in said)  # the restart saved and exited
        assert "Process exited with status 137" in said

        data = platform.addons.store.data(record)
        assert data.exists()
        gone = await platform.addons.destroy(app, "redis-1")
        last = platform.releases.all(app)[-1]
        assert (last.description, last.addons) == ("Detach REDIS (redis-1)", ())
        assert "REDIS_URL" not in last.config_vars
        assert not data.exists() and platform.addons.of(app) == []
        assert b"" == await ask(gone.port, command("PING"), lines=1)
        texts = [line.text for line in platform.ring(app).recent(500) if line.dyno == "api"]
        assert any(t.startswith("Attach REDIS (redis-1) by user") for t in texts)
        assert any(t.startswith("Detach REDIS (redis-1) by user") for t in texts)

    with_platform(tmp_path, scenario)


@needs_redis
def test_provisioning_without_the_server_program_fails_with_nothing_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario(platform: Platform) -> None:
        app = await platform.create_app("bare")
        monkeypatch.setenv("PATH", str(tmp_path))  # dynod's PATH without redis-server
        platform.addons.kinds = (RedisProvider(), PostgresProvider(search=()))
        for service, package in (("redis", "redis-server"), ("postgres", "postgresql")):
            with pytest.raises(Invalid, match=f"apt-get install {package}"):
                await platform.addons.create(app, service)
        assert platform.addons.of(app) == []
        assert list((platform.data_dir / "addons").iterdir()) == []
        assert len(platform.releases.all(app)) == 1

    with_platform(tmp_path, scenario)


RUNS = itertools.count(1)
PSQL = program("psql", ("/usr/lib/postgresql/*/bin",))[0]
needs_postgres = pytest.mark.skipif(
    PostgresProvider().missing() is not None or PSQL is None,
    reason="PostgreSQL is not installed (apt-get install postgresql)",
)


async def psql(platform: Platform, app_name: str, sql: str, url: str = "$DATABASE_URL") -> str:
    """Run psql in a one-off dyno of the app; its exit status and output."""
    app = platform.apps.find(app_name)
    release = platform.releases.current(app)
    assert release is not None
    name = f"run.{next(RUNS)}"
    status = await platform.formation.run_command(
        app, release, f'{PSQL} "{url}" -v ON_ERROR_STOP=1 -tAc "{sql}" 2>&1', name
    )
    ring = platform.ring(app).recent(1000)
    return f"{status} " + "\n".join(x.text for x in ring if x.dyno == name and x.source == "app")


@needs_postgres
def test_a_one_off_reaches_its_postgres_and_the_data_stays(tmp_path: Path) -> None:
    """One cluster for every PostgreSQL check (initdb takes a second or two)."""

    async def scenario(platform: Platform) -> None:
        app = await platform.create_app("ledger")
        slug = slug_of(platform, ADDON_APP, tmp_path)
        await platform.releases.create(
            app, slug_id=slug, config_vars={}, description="Deploy", wait=True
        )
        record = await platform.addons.create(app, "heroku-postgresql", name="books")
        last = platform.releases.all(app)[-1]
        assert last.description == "Attach DATABASE (books)"
        url = last.config_vars["DATABASE_URL"]
        assert url == (
            f"postgres://{record.role}:{record.password}@127.0.0.1:{record.port}/{record.database}"
        )
        data = platform.addons.store.data(record)
        owner = platform.users.owner(app.id)
        if owner is not None:  # dynod is root: the cluster is the app's uid's, not root's
            assert (data / "pgdata").stat().st_uid == owner[0]
        # The Attach release is current once its release phase is done.
        await until(platform, lambda: getattr(platform.releases.current(app), "id", "") == last.id)
        made = await psql(platform, "ledger", "CREATE TABLE t (x int); INSERT INTO t VALUES (42)")
        assert made.startswith("0 "), made
        assert (await psql(platform, "ledger", "SELECT x FROM t")).startswith("0 42")
        refused = await psql(platform, "ledger", "SELECT 1", url.replace(record.password, "no"))
        assert refused.startswith("2 ") and "password authentication failed" in refused

        platform.addons.restart(app, record)
        with trio.fail_after(20):  # as an app reconnects while its database restarts
            while not (await psql(platform, "ledger", "SELECT x FROM t")).startswith("0 42"):
                await trio.sleep(0.1)
        said = [line.text for line in platform.ring(app).recent(1000) if line.dyno == "books"]
        assert any("received fast shutdown request" in text for text in said)

        await platform.addons.destroy(app, "books")
        assert "DATABASE_URL" not in platform.releases.config_vars(app)
        assert not data.exists()

    with_platform(tmp_path, scenario)


@needs_redis
def test_a_crash_mid_provision_or_destroy_is_rolled_back_or_finished(tmp_path: Path) -> None:
    async def crashed(platform: Platform) -> None:
        app = await platform.create_app("crashy")
        kept = await platform.addons.create(app, "heroku-redis")
        destroyed = await platform.addons.create(app, "heroku-redis", attachment="cache")
        assert (kept.var, destroyed.var) == ("REDIS_URL", "CACHE_URL")
        # As dynod's records would be had it died mid-way: a destroy begun, and a provisioning
        # begun (its server made, no release yet), the other with its release made.
        store = platform.addons.store
        await store.save(attrs.evolve(destroyed, state="deprovisioning"))
        await store.save(attrs.evolve(kept, state="provisioning"))
        half = attrs.evolve(kept, id="half-made", name="redis-9", port=kept.port + 1)
        await store.save(attrs.evolve(half, state="provisioning"))

    async def restarted(platform: Platform) -> None:
        app = platform.apps.find("crashy")
        assert [(r.name, r.state) for r in platform.addons.of(app)] == [("redis-1", "provisioned")]
        assert sorted(p.name for p in (platform.data_dir / "addons").iterdir()) == [
            platform.addons.of(app)[0].id
        ]
        last = platform.releases.all(app)[-1]
        assert (last.description, last.addons) == ("Detach CACHE (redis-2)", ("redis-1",))
        assert set(last.config_vars) == {"REDIS_URL"}
        record = platform.addons.of(app)[0]
        assert await ask(record.port, auth(record.password) + command("PING"), lines=2)

    with_platform(tmp_path, crashed)
    with_platform(tmp_path, restarted)


@needs_redis
@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("nft") is None,
    reason="needs root and nftables (`apt-get install nftables`) to load rules",
)
def test_a_servers_port_is_closed_to_other_apps_uids(tmp_path: Path) -> None:
    async def scenario(platform: Platform) -> None:
        assert platform.firewall is not None
        app = await platform.create_app("guarded")
        record = await platform.addons.create(app, "redis")
        owner = platform.users.owner(app.id)
        assert owner is not None
        checks = [(owner[0], True), (OTHER_UID, False), (None, True)]
        for uid, allowed in checks:
            assert await trio.to_thread.run_sync(connects, record.port, uid) is allowed, uid
        await platform.addons.destroy(app, record.name)
        assert not platform.addons._guarded

    with_platform(tmp_path, scenario)
