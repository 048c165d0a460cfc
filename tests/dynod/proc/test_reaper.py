"""The record of running dyno groups that lets a restarted dynod end what a killed one left."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from dynod.proc.reaper import Reaper, end_leftovers, read_record, start_time
from tests.helpers import pid_alive


def test_the_record_drops_a_torn_last_line_and_forgotten_groups(tmp_path: Path) -> None:
    record = tmp_path / "dynos.running"
    record.write_bytes(b"+100 5\n+200 6\n-100\n+300 7\n+40")
    assert read_record(record) == {200: 6, 300: 7}
    assert read_record(tmp_path / "missing") == {}


def test_a_group_is_ended_only_when_it_is_still_the_one_recorded(tmp_path: Path) -> None:
    child = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        started = start_time(child.pid)
        assert started is not None
        assert end_leftovers({child.pid: started + 1}) == []  # a reused pid: someone else's
        assert pid_alive(child.pid)
        assert end_leftovers({child.pid: started}) == [child.pid]
        child.wait(timeout=5)
    finally:
        child.kill()
        child.wait()


def test_a_new_reaper_ends_the_groups_of_the_record_and_starts_it_afresh(tmp_path: Path) -> None:
    record = tmp_path / "dynos.running"
    child = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        with Reaper(record=record) as first:
            first.watch(child.pid)
            os.kill(first._process.pid, 9)  # the reaper dies with its dynod: the record remains
            first._process.wait()
        assert read_record(record) == {child.pid: start_time(child.pid)}
        with Reaper(record=record) as second:
            assert second.leftovers == [child.pid]
            assert child.wait(timeout=5) != 0
            assert read_record(record) == {}
        assert not record.exists()  # a clean exit with nothing running leaves no record
    finally:
        child.kill()
        child.wait()
