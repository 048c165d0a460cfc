"""`heroku-redis`: one `redis-server` per add-on on 127.0.0.1, its password required, its
snapshot and append-only file in the add-on's data directory; `REDIS_URL`."""

from __future__ import annotations

import shlex

import trio

from dynod.addons.provider import Instance, Setup, not_found, program

# Redis's own shutdown on SIGTERM saves the snapshot and syncs the append-only file; every write
# reaches the append-only file before it is acknowledged (a `kill -9` of the server loses none:
# only a crash of the machine can lose the last second, `appendfsync everysec`).
CONFIG = """\
bind 127.0.0.1
port {port}
protected-mode yes
requirepass {password}
dir ./
appendonly yes
appendfsync everysec
save 3600 1 300 100 60 10000
daemonize no
logfile ""
"""


class RedisProvider:
    service = "heroku-redis"
    aliases: tuple[str, ...] = ("redis",)
    prefix = "redis"
    var = "REDIS_URL"
    package = "redis-server"
    plans: tuple[str, ...] = ("mini",)

    def __init__(self, path: str | None = None) -> None:
        self.path = path  # None: dynod's PATH when asked

    def server(self) -> str | None:
        return program("redis-server", path=self.path)[0]

    def missing(self) -> str | None:
        found, where = program("redis-server", path=self.path)
        return None if found else not_found("redis-server", where, self.package, self.service)

    def provision(self, instance: Instance, setup: Setup) -> None:
        text = CONFIG.format(port=instance.port, password=instance.password)
        path = instance.directory / "redis.conf"
        path.write_text(text)
        path.chmod(0o600)

    def command(self, instance: Instance, home: str) -> str:
        server = self.server() or "redis-server"
        return f"cd {shlex.quote(home)} && exec {shlex.quote(server)} ./redis.conf"

    async def healthy(self, instance: Instance) -> bool:
        reply = await ask(instance.port, auth(instance.password) + command("PING"), lines=2)
        return reply.endswith(b"+PONG\r\n")

    def config_vars(self, instance: Instance) -> dict[str, str]:
        return {self.var: f"redis://:{instance.password}@127.0.0.1:{instance.port}"}


def command(*words: str) -> bytes:
    """One RESP command."""
    parts = [b"*%d\r\n" % len(words)]
    for word in words:
        raw = word.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(parts)


def auth(password: str) -> bytes:
    return command("AUTH", password)


async def ask(port: int, request: bytes, *, lines: int, timeout: float = 2.0) -> bytes:
    """Send `request` and read what comes back until `lines` lines came (or the server closed,
    or `timeout`); b"" when nothing listens."""
    received = b""
    with trio.move_on_after(timeout):
        try:
            async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
                await stream.send_all(request)
                while received.count(b"\r\n") < lines:
                    data = await stream.receive_some(65536)
                    if not data:
                        break
                    received += data
        except (OSError, trio.BrokenResourceError):
            pass
    return received
