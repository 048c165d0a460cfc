"""Ports owned by their dyno: who listens on a port, read from /proc/net (proc/ports.py), and the
manager with real processes: a web dyno whose PORT another process holds is never up and the
squatter never gets a connection; with a port source, the dyno comes up on a fresh port."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio

from dynod.core.lifecycle import DynoState
from dynod.errors import DynodError
from dynod.proc.manager import Manager
from dynod.proc.ports import (
    Listener,
    Listening,
    judge,
    listening,
    parse_listeners,
    session_members,
    socket_inodes,
)
from dynod.proc.reaper import Reaper
from dynod.proc.seams import DynoPlan, InPlace, ManagerSettings, Processes
from tests.helpers import PY, Collector, cgroups_used

TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:4E20 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0
   1: 0100007F:4E20 0100007F:9C40 01 00000000:00000000 00:00000000 00000000  1000        0 4343 1 0
   2: 00000000:4E21 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77 1 0
"""
TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue
   0: 00000000000000000000000001000000:4E22 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1001        0 99 1 0
"""  # noqa: E501 - /proc's own line

# Binds $PORT after DELAY seconds (crashing when it is taken), then serves until stopped.
WEB = (
    f'{PY} -c "import os, socket, time; s = socket.socket(); '
    "time.sleep(float(os.environ.get('DELAY', '0'))); "
    "s.bind(('127.0.0.1', int(os.environ['PORT']))); s.listen(); print('bound', flush=True); "
    'time.sleep(60)"'
)


def test_listeners_are_read_from_the_tables_in_listen_state_only() -> None:
    assert parse_listeners(TCP) == [Listener(20000, 1000, 4242), Listener(20001, 0, 77)]
    assert parse_listeners(TCP6) == [Listener(20002, 1001, 99)]
    assert parse_listeners("") == []


def test_a_port_is_the_dyno_s_only_when_every_listener_is_its_own() -> None:
    mine, squatter = Listener(20000, 1000, 1), Listener(20000, 1000, 2)
    assert judge([], {1}) is Listening.NOTHING
    assert judge([mine], {1, 5}) is Listening.OWN
    assert judge([squatter], {1}) is Listening.FOREIGN
    assert judge([mine, squatter], {1}) is Listening.FOREIGN  # SO_REUSEPORT shares a port


@contextmanager
def squatting() -> Iterator[socket.socket]:
    """A listening socket on a free port: a squatter, here in the test's own process."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        sock.setblocking(False)
        yield sock


def never_connected(sock: socket.socket) -> bool:
    try:
        sock.accept()[0].close()
    except BlockingIOError:
        return True
    return False


def test_the_real_tables_name_the_socket_and_its_process() -> None:
    with squatting() as sock:
        port = sock.getsockname()[1]
        assert listening(port, lambda: [os.getpid()]) is Listening.OWN
        assert listening(port, lambda: []) is Listening.FOREIGN
        assert os.fstat(sock.fileno()).st_ino in socket_inodes([os.getpid()])
    assert listening(port, lambda: [os.getpid()]) is Listening.NOTHING


def test_a_dyno_s_processes_are_its_session_s() -> None:
    child = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        assert session_members(child.pid) == [child.pid]
        assert os.getpid() not in session_members(child.pid)
    finally:
        child.kill()
        child.wait()


class Scripted:
    """A port source handing out the given ports in order (the test knows which comes next)."""

    def __init__(self, *ports: int) -> None:
        self.ports = list(ports)
        self.given_back: list[int] = []

    async def take(self) -> int:
        if not self.ports:
            raise DynodError("no port left")
        return self.ports.pop(0)

    async def give_back(self, port: int) -> None:
        self.given_back.append(port)


def test_a_squatted_port_never_makes_the_dyno_up(tmp_path: Path) -> None:
    settings = ManagerSettings(ladder=(60.0,), stop_timeout=2, boot_timeout=1, cycle_after=None)
    with squatting() as squatter:
        taken = squatter.getsockname()[1]
        sink = Collector()

        async def main() -> None:
            with trio.fail_after(20):
                launcher = Processes(members=session_members)
                manager = Manager(sink, InPlace(tmp_path), settings, launcher=launcher)
                plan = DynoPlan("web.1", "exec sleep 60", {}, port=taken)  # it never binds
                async with trio.open_nursery() as nursery:
                    await nursery.start(manager.run, [plan])
                    await sink.wait_text("Error R10 (Boot timeout)")
                    manager.stop_all()

        trio.run(main)
        heroku = sink.texts("web.1", "heroku")
        assert f"Port {taken} is held by a process outside this dyno" in heroku
        assert "State changed from starting to up" not in heroku
        assert never_connected(squatter)  # not even a probe: ownership is read from /proc


def test_a_squatted_dyno_crashes_and_comes_up_on_a_fresh_port(tmp_path: Path) -> None:
    settings = ManagerSettings(ladder=(0.0, 60.0), stop_timeout=2, cycle_after=None)
    with squatting() as squatter, squatting() as spare:
        taken, fresh = squatter.getsockname()[1], spare.getsockname()[1]
        spare.close()  # free again: the port source's next one
        source, sink = Scripted(taken, fresh), Collector()
        launcher = Processes(members=session_members)
        manager = Manager(sink, InPlace(tmp_path), settings, launcher=launcher, ports=source)

        async def main() -> None:
            with trio.fail_after(20):
                async with trio.open_nursery() as nursery:
                    await nursery.start(manager.run, [DynoPlan("web.1", WEB, {})])
                    await sink.wait_text("State changed from starting to up")
                    slot = manager.slots["web.1"]
                    assert (slot.state, slot.port) == (DynoState.UP, fresh)
                    manager.stop_all()

        trio.run(main)
        heroku = sink.texts("web.1", "heroku")
        assert heroku.index("Process exited with status 1") < heroku.index(
            "State changed from starting to up"
        )
        assert "OSError: [Errno 98] Address already in use" in sink.texts("web.1", "app")
        assert source.given_back == [taken, fresh]  # each process's port, once it ended
        assert never_connected(squatter)


@pytest.mark.skipif(not cgroups_used(), reason="needs root and cgroup v2 (README, Processes)")
def test_a_dyno_in_a_cgroup_owns_what_any_of_its_processes_listens_on(tmp_path: Path) -> None:
    """A listener started in a session of its own (`setsid`) is still the dyno's: its cgroup
    holds it, so the dyno is up (the session rule alone would call it foreign)."""
    settings = ManagerSettings(ladder=(60.0,), stop_timeout=2, boot_timeout=10, cycle_after=None)
    with squatting() as spare:
        port = spare.getsockname()[1]
        spare.close()
        sink = Collector()

        async def main() -> None:
            with trio.fail_after(20), Reaper() as reaper:
                launcher = Processes(reaper, members=session_members)
                manager = Manager(sink, InPlace(tmp_path), settings, launcher=launcher)
                plan = DynoPlan("web.1", f"setsid {WEB} & exec sleep 60", {}, port=port)
                async with trio.open_nursery() as nursery:
                    await nursery.start(manager.run, [plan])
                    await sink.wait_text("State changed from starting to up")
                    manager.stop_all()

        trio.run(main)
        assert "bound" in sink.texts("web.1", "app")
