"""The release ledger: durable appends, torn last records dropped, earlier damage refused.

Writes are async (their fsync runs in a worker thread): each one here runs in its own trio.run."""

from __future__ import annotations

import os
import resource
import signal
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynod.errors import Damaged, DynodError
from dynod.state.files import atomic_write
from dynod.state.ledger import Ledger, Release, Status


def release(ledger: Ledger, status: str = "succeeded", **changes: object) -> Release:
    fields: dict[str, object] = {
        "version": ledger.next_version(),
        "description": f"Set FOO{ledger.next_version()} config vars",
        "user": "alice",
        "status": status,
        "slug_id": "0a3f9c3e-0a57-4b6f-9a4e-1f2f0f6b2f10",
        "config_vars": {"FOO": "bar\nbaz", "UNICODE": "héllo ☃"},
        "addons": ("redis-1",),
    }
    fields.update(changes)
    made = Release(**fields)  # type: ignore[arg-type]
    trio.run(ledger.append, made)
    return made


def set_status(ledger: Ledger, version: int, status: Status, when: str | None = None) -> Release:
    async def change() -> Release:
        return await ledger.set_status(version, status, when=when)

    return trio.run(change)


def test_append_and_reload(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "app.ledger")
    assert (ledger.latest(), ledger.current(), ledger.next_version()) == (None, None, 1)
    v1 = release(ledger, description="Initial release", slug_id=None, config_vars={}, addons=())
    v2 = release(ledger)
    v3 = release(ledger, status="pending")
    assert os.stat(tmp_path / "app.ledger").st_mode & 0o777 == 0o600  # config vars are secrets
    again = Ledger(tmp_path / "app.ledger")
    assert again.releases() == [v1, v2, v3]
    assert again.get(2) == v2 and again.get(4) is None and again.get(0) is None
    assert again.latest() == v3 and again.current() == v2 and again.next_version() == 4
    assert len(again) == 3


def test_status_updates_are_appended_records(tmp_path: Path) -> None:
    path = tmp_path / "app.ledger"
    ledger = Ledger(path)
    release(ledger)
    pending = release(ledger, status="pending")
    before = path.read_bytes()
    done = set_status(ledger, 2, "succeeded", when="2026-11-26T15:19:10Z")
    assert path.read_bytes().startswith(before)  # earlier bytes are never rewritten
    assert done.status == "succeeded" and done.updated_at == "2026-11-26T15:19:10Z"
    assert done.created_at == pending.created_at
    assert ledger.current() == done and Ledger(path).current() == done
    release(ledger, status="pending")
    set_status(ledger, 3, "failed")
    assert Ledger(path).current() == done  # a failed release never becomes current
    with pytest.raises(DynodError, match="cannot go from failed to succeeded"):
        set_status(ledger, 3, "succeeded")
    with pytest.raises(DynodError, match="no release v9"):
        set_status(ledger, 9, "failed")
    assert [r.status for r in Ledger(path).releases()] == ["succeeded", "succeeded", "failed"]


def test_append_refuses_wrong_versions_and_reused_ids(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "app.ledger")
    first = release(ledger)
    with pytest.raises(DynodError, match="release v5 must be v2"):
        release(ledger, version=5)
    with pytest.raises(DynodError, match="already in the ledger"):
        release(ledger, id=first.id)
    assert Ledger(tmp_path / "app.ledger").releases() == [first]
    with pytest.raises(ValueError):
        Release(version=0, description="", user="", status="succeeded")
    with pytest.raises(ValueError):
        Release(version=1, description="", user="", status="done")  # type: ignore[arg-type]


def three_releases(path: Path) -> tuple[list[Release], int]:
    """A ledger of three releases; returns them and where the last record starts."""
    ledger = Ledger(path)
    made = [release(ledger), release(ledger)]
    start = path.stat().st_size
    made.append(release(ledger))
    return made, start


def test_torn_last_record_at_every_offset_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "app.ledger"
    made, start = three_releases(path)
    whole = path.read_bytes()
    for cut in range(start, len(whole)):
        path.write_bytes(whole[:cut])
        ledger = Ledger(path)
        assert ledger.releases() == made[:2], cut
        assert path.read_bytes() == whole[:cut]  # loading alone changes nothing
        added = release(ledger, description="after the crash")
        assert path.read_bytes()[:start] == whole[:start]
        assert Ledger(path).releases() == [*made[:2], added], cut


def test_garbled_last_record_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "app.ledger"
    made, start = three_releases(path)
    whole = bytearray(path.read_bytes())
    whole[start + 30] ^= 0x01  # one flipped bit inside the last record's JSON
    path.write_bytes(bytes(whole))
    assert Ledger(path).releases() == made[:2]
    path.write_bytes(bytes(whole[:start]) + b"\0" * 300)  # a crash that left zeros behind
    ledger = Ledger(path)
    assert ledger.releases() == made[:2]
    release(ledger)
    assert len(Ledger(path)) == 3


def test_damage_before_the_last_record_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "app.ledger"
    three_releases(path)
    whole = bytearray(path.read_bytes())
    whole[40] ^= 0x01  # inside the first record
    path.write_bytes(bytes(whole))
    with pytest.raises(Damaged, match=r"app.ledger is damaged at byte 0 \(checksum mismatch\)"):
        Ledger(path)


def test_well_formed_but_contradictory_records_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "app.ledger"
    made, start = three_releases(path)
    lines = path.read_bytes().splitlines(keepends=True)
    atomic_write(path, lines[0] + lines[0])  # v1 twice: intact records, impossible history
    with pytest.raises(Damaged, match="damaged at byte .* must be v2"):
        Ledger(path)


def test_a_failed_append_is_cut_off_before_the_next(tmp_path: Path) -> None:
    path = tmp_path / "app.ledger"
    ledger = Ledger(path)
    first = release(ledger)
    size = path.stat().st_size
    # A file size limit makes the next write stop part-way, as a full disk would.
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + 50, limits[1]))
    try:
        with pytest.raises(OSError):
            release(ledger)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, old_handler)
    assert path.stat().st_size == size + 50  # a torn record is on disk
    assert ledger.releases() == [first] and ledger.next_version() == 2
    assert Ledger(path).releases() == [first]
    second = release(ledger)
    assert Ledger(path).releases() == [first, second]


# An operation is either a new release (with its status) or a status change of the latest one.
operations = st.lists(
    st.one_of(
        st.tuples(st.just("release"), st.sampled_from(["pending", "succeeded", "failed"])),
        st.tuples(st.just("status"), st.sampled_from(["succeeded", "failed"])),
    ),
    min_size=1,
    max_size=8,
)


# tmp_path is shared by the examples: each one starts by removing the file.
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=operations, where=st.floats(min_value=0, max_value=1))
def test_random_histories_survive_a_random_cut(
    tmp_path: Path, ops: list[tuple[str, str]], where: float
) -> None:
    path = tmp_path / "fuzz.ledger"
    path.unlink(missing_ok=True)
    ledger = Ledger(path)
    states: list[tuple[int, list[Release]]] = [(0, [])]  # (file size, releases) after each op
    for op, status in ops:
        latest = ledger.latest()
        if op == "release":
            release(ledger, status=status)
        elif latest is not None and latest.status == "pending":
            set_status(ledger, latest.version, status)  # type: ignore[arg-type]
        else:
            continue
        states.append((path.stat().st_size, ledger.releases()))
    whole = path.read_bytes() if path.exists() else b""
    cut = int(where * len(whole))
    path.write_bytes(whole[:cut])
    survivors = [state for size, state in states if size <= cut][-1]
    reloaded = Ledger(path)
    assert reloaded.releases() == survivors
    added = release(reloaded, status="succeeded")
    assert Ledger(path).releases() == [*survivors, added]


@pytest.mark.trio
async def test_concurrent_writes_land_one_at_a_time_in_order(tmp_path: Path) -> None:
    path = tmp_path / "app.ledger"
    ledger = Ledger(path)
    first = Release(version=1, description="Initial", user="alice", status="pending")
    second = Release(version=2, description="Next", user="alice", status="pending")
    async with trio.open_nursery() as nursery:
        # Each waits for the write before it: v2 is checked once v1 is durable, and the status
        # change of v1 once v1 exists.
        nursery.start_soon(ledger.append, first)
        await trio.testing.wait_all_tasks_blocked()  # v1 holds the writer's lock, or is done
        nursery.start_soon(ledger.append, second)
        nursery.start_soon(lambda: ledger.set_status(1, "succeeded"))
    assert [(r.version, r.status) for r in Ledger(path).releases()] == [
        (1, "succeeded"),
        (2, "pending"),
    ]
