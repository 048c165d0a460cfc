"""`heroku-postgresql`: a private PostgreSQL cluster per add-on (`initdb`, then `postgres` on
127.0.0.1 with its socket directory beside the cluster), a generated role, password and
database; `DATABASE_URL`. Debian keeps the programs in /usr/lib/postgresql/<version>/bin."""

from __future__ import annotations

import os
import shlex
import struct

import trio

from dynod.addons.provider import Instance, Setup, not_found, program

SEARCH = ("/usr/lib/postgresql/*/bin",)
PROTOCOL = 196608  # 3.0


class PostgresProvider:
    service = "heroku-postgresql"
    aliases: tuple[str, ...] = ("postgres", "postgresql")
    prefix = "postgresql"
    var = "DATABASE_URL"
    package = "postgresql"
    plans: tuple[str, ...] = ("essential-0",)

    def __init__(self, path: str | None = None, search: tuple[str, ...] = SEARCH) -> None:
        self.path = path  # None: dynod's PATH when asked
        self.search = search

    def programs(self) -> tuple[str, str] | str:
        """(initdb, postgres) from one directory, or why they are not there."""
        initdb, where = program("initdb", self.search, self.path)
        if initdb is None:
            return not_found("initdb", where, self.package, self.service)
        server = os.path.join(os.path.dirname(initdb), "postgres")
        if not os.access(server, os.X_OK):
            return not_found("postgres", [os.path.dirname(initdb)], self.package, self.service)
        return initdb, server

    def missing(self) -> str | None:
        found = self.programs()
        return found if isinstance(found, str) else None

    def provision(self, instance: Instance, setup: Setup) -> None:
        found = self.programs()
        if isinstance(found, str):
            raise RuntimeError(found)  # checked before provisioning began
        initdb, server = found
        home = setup.home(instance.directory)
        secret = instance.directory / ".pw"
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, f"{instance.password}\n".encode())
            if setup.owner is not None:
                os.fchown(fd, *setup.owner)
        finally:
            os.close(fd)
        try:
            setup.run(
                instance.directory,
                [
                    initdb,
                    "--pgdata",
                    f"{home}/pgdata",
                    "--username",
                    instance.role,
                    f"--pwfile={home}/.pw",
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C",
                ],
            )
        finally:
            secret.unlink()
        create = f'CREATE DATABASE "{instance.database}" OWNER "{instance.role}";\n'
        setup.run(
            instance.directory, [server, "--single", "-D", f"{home}/pgdata", "postgres"], create
        )
        (instance.directory / "sockets").mkdir(mode=0o700)

    def command(self, instance: Instance, home: str) -> str:
        """SIGTERM asks PostgreSQL for a smart shutdown (waiting for every client); the trap
        turns it into a fast one (clients disconnected, a checkpoint, then exit)."""
        found = self.programs()
        server = found[1] if isinstance(found, tuple) else "postgres"
        run = shlex.join(
            [
                server,
                "-D",
                f"{home}/pgdata",
                "-p",
                str(instance.port),
                "-k",
                f"{home}/sockets",
                "-c",
                "listen_addresses=127.0.0.1",
            ]
        )
        return (
            f"cd {shlex.quote(home)} && trap 'kill -INT $p; wait $p; exit $?' TERM && "
            f"{{ {run} & p=$!; wait $p; }}"
        )

    async def healthy(self, instance: Instance) -> bool:
        """Whether it accepts connections: it asks a new one to authenticate ('R')."""
        return await first_reply(instance.port, instance.role, instance.database) == b"R"

    def config_vars(self, instance: Instance) -> dict[str, str]:
        return {
            self.var: f"postgres://{instance.role}:{instance.password}@127.0.0.1:"
            f"{instance.port}/{instance.database}"
        }


def startup_message(role: str, database: str) -> bytes:
    body = struct.pack("!I", PROTOCOL)
    for key, value in (("user", role), ("database", database)):
        body += key.encode() + b"\0" + value.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


async def first_reply(port: int, role: str, database: str, timeout: float = 2.0) -> bytes:
    """The type of the first message the server sends a new connection (b"" for none)."""
    with trio.move_on_after(timeout):
        try:
            async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
                await stream.send_all(startup_message(role, database))
                return bytes(await stream.receive_some(1))[:1]
        except (OSError, trio.BrokenResourceError):
            pass
    return b""
