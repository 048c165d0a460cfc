"""The rendezvous and the attached dyno without the platform (dynod/proc/rendezvous.py,
dynod/proc/attached.py): a real process on a Terminal, claimed over real TLS with the secret
(with or without a line ending), raw and framed; a secret works once, and one nobody claims
expires after 60 s (trio's MockClock), its dyno never started."""

from __future__ import annotations

import ssl
import struct
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing

from dynod.errors import DynodError
from dynod.proc.attached import Terminal
from dynod.proc.dyno import DynoSpec, dyno_env, run_dyno
from dynod.proc.rendezvous import SECRET_TTL, Rendezvous
from dynod.state.ca import CA_FILE, server_context
from tests.helpers import Collector

HEADER = struct.Struct(">cI")


@asynccontextmanager
async def rendezvous(tmp_path: Path) -> AsyncIterator[tuple[Rendezvous, ssl.SSLContext]]:
    place = Rendezvous(server_context(tmp_path, time.time()))
    client = ssl.create_default_context(cafile=str(tmp_path / CA_FILE))
    async with trio.open_nursery() as nursery:
        await nursery.start(place.serve)
        yield place, client
        nursery.cancel_scope.cancel()


async def connect(place: Rendezvous, client: ssl.SSLContext) -> trio.SSLStream[trio.SocketStream]:
    tcp = await trio.open_tcp_stream("127.0.0.1", place.port)
    return trio.SSLStream(tcp, client, server_hostname="127.0.0.1")


async def read_until(stream: trio.abc.Stream, wanted: bytes, have: bytes = b"") -> bytes:
    with trio.fail_after(10):
        while wanted not in have:
            data = await stream.receive_some(65536)
            if not data:
                break
            have += data
    return have


async def read_all(stream: trio.abc.Stream) -> bytes:
    have = b""
    with trio.fail_after(10):
        while data := await stream.receive_some(65536):
            have += data
    return have


def spec(tmp_path: Path, command: str, terminal: Terminal) -> DynoSpec:
    env = dyno_env({}, name="run.1", port=None, home=tmp_path)
    return DynoSpec("run.1", command, tmp_path, env, terminal=terminal)


@pytest.mark.trio
async def test_raw_a_secret_without_line_ending_then_the_pty_both_ways(tmp_path: Path) -> None:
    sink = Collector()
    terminal = Terminal(rows=33, cols=101)
    status: list[int] = []
    async with rendezvous(tmp_path) as (place, client), trio.open_nursery() as nursery:

        async def dyno() -> None:
            command = "stty size; read line; echo got:$line; exit 3"
            status.append(await run_dyno(spec(tmp_path, command, terminal), sink))

        nursery.start_soon(dyno)
        secret = place.offer(terminal)
        assert place.url(secret) == f"rendezvous://127.0.0.1:{place.port}/{secret}"
        stream = await connect(place, client)
        await stream.send_all(secret.encode())  # as heroku3 sends it
        seen = await read_until(stream, b"33 101")
        assert seen.startswith(b"rendezvous\r\n")
        await stream.send_all(b"hello\r")
        seen = await read_until(stream, b"got:hello", seen)
        seen += await read_all(stream)  # closed when the dyno has exited
        await stream.aclose()
    assert status == [3]
    assert "got:hello" not in " ".join(sink.texts())  # an attached dyno's output is the client's
    assert "Process exited with status 3" in sink.texts()


@pytest.mark.trio
async def test_framed_without_a_terminal_stdin_stdout_stderr_and_status(tmp_path: Path) -> None:
    terminal = Terminal(tty=False)
    status: list[int] = []
    async with rendezvous(tmp_path) as (place, client), trio.open_nursery() as nursery:

        async def dyno() -> None:
            command = "cat; echo oops >&2; exit 4"
            status.append(await run_dyno(spec(tmp_path, command, terminal), Collector()))

        nursery.start_soon(dyno)
        secret = place.offer(terminal)
        stream = await connect(place, client)
        await stream.send_all(f"{secret} framed\r\n".encode())
        await stream.send_all(HEADER.pack(b"I", 3) + b"abc" + HEADER.pack(b"I", 0))
        raw = await read_all(stream)
        await stream.aclose()
    assert raw.startswith(b"rendezvous\r\n")
    messages, raw = [], raw[len(b"rendezvous\r\n") :]
    while raw:
        kind, size = HEADER.unpack_from(raw)
        messages.append((kind, raw[HEADER.size : HEADER.size + size]))
        raw = raw[HEADER.size + size :]
    assert sorted(messages[:-1]) == [(b"E", b"oops\n"), (b"O", b"abc")]  # two pipes, any order
    assert messages[-1] == (b"X", b"4")
    assert status == [4]


@pytest.mark.trio
async def test_a_secret_works_once(tmp_path: Path) -> None:
    terminal = Terminal()
    async with rendezvous(tmp_path) as (place, client), trio.open_nursery() as nursery:
        nursery.start_soon(run_dyno, spec(tmp_path, "exit 0", terminal), Collector())
        secret = place.offer(terminal)
        first = await connect(place, client)
        await first.send_all(f"{secret}\r\n".encode())
        assert (await read_all(first)).startswith(b"rendezvous\r\n")
        second = await connect(place, client)
        await second.send_all(f"{secret}\r\n".encode())
        assert await read_all(second) == b""  # refused: closed with nothing said
        await first.aclose()
        await second.aclose()


@pytest.mark.trio
async def test_an_unclaimed_secret_expires_and_its_dyno_never_starts(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    terminal = Terminal()
    marker = tmp_path / "started"
    failed: list[str] = []
    async with rendezvous(tmp_path) as (place, client), trio.open_nursery() as nursery:

        async def dyno() -> None:
            try:
                await run_dyno(spec(tmp_path, f"touch {marker}", terminal), Collector())
            except DynodError as err:
                failed.append(str(err))

        nursery.start_soon(dyno)
        secret = place.offer(terminal)
        await trio.testing.wait_all_tasks_blocked()  # its expiry timer is running
        mock_clock.jump(SECRET_TTL - 1)
        await trio.testing.wait_all_tasks_blocked()
        assert not terminal.claimed
        mock_clock.jump(2)
        await trio.testing.wait_all_tasks_blocked()
        assert terminal.claimed and failed == [
            "No client attached in time: the process was not started"
        ]
        stream = await connect(place, client)
        await stream.send_all(f"{secret}\r\n".encode())
        assert await read_all(stream) == b""
        await stream.aclose()
    assert not marker.exists()
