"""`dyno ps` tells the truth about a crashed dyno: since when, its exit status, and when the
restart ladder starts it again (README, "Dynos, router, logs")."""

from __future__ import annotations

from datetime import UTC, datetime

from shell.output import crash_note, ps_lines

T0 = datetime(2026, 11, 26, 15, 19, 10, tzinfo=UTC).timestamp()


def crashed(next_start: str | None, status: int | None = 1) -> dict[str, object]:
    return {
        "name": "web.1",
        "type": "web",
        "state": "crashed",
        "command": "python web.py",
        "size": "standard-1X",
        "updated_at": "2026-11-26T15:19:10Z",
        "exit_status": status,
        "next_start_at": next_start,
    }


def test_a_crashed_dyno_shows_its_status_and_next_start() -> None:
    assert ps_lines([crashed("2026-11-26T15:39:10Z")], T0 + 70, UTC)[1:] == [
        "web.1: crashed 2026/11/26 15:19:10 +0000 (~ 1m ago): exit status 1, next start in ~ 18m",
    ]


def test_next_start_wording() -> None:
    assert crash_note(crashed("2026-11-26T15:19:40Z"), T0) == ": exit status 1, next start in ~ 30s"
    assert crash_note(crashed("2026-11-26T18:39:10Z"), T0) == (
        ": exit status 1, next start in ~ 3h 20m"
    )
    assert crash_note(crashed("2026-11-26T15:19:10Z"), T0 + 5) == ": exit status 1, next start now"
    assert crash_note(crashed(None, 137), T0) == ": exit status 137"
    assert crash_note(crashed("2026-11-26T15:19:40Z", None), T0) == ": next start in ~ 30s"
    assert crash_note({**crashed(None), "state": "up"}, T0) == ""
