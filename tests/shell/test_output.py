"""Human output: Heroku's time format, columns, `Key: value` blocks, `ps` grouping, release rows;
and the pure argument readers behind ps:scale, config:set, releases and run:detached."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shell.dynos import command_line, parse_scale
from shell.errors import UsageError
from shell.output import (
    byte_size,
    columns,
    format_time,
    ps_lines,
    release_rows,
    size_name,
    styled,
    to_json,
)
from shell.releases import parse_assignments, parse_version

UTC = UTC
T0 = datetime(2026, 11, 26, 15, 19, 10, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("elapsed", "suffix"),
    [
        (0, " (~ 0s ago)"),
        (60, " (~ 60s ago)"),
        (61, " (~ 1m ago)"),
        (3600, " (~ 60m ago)"),
        (3601, " (~ 1h ago)"),
        (25 * 3600, " (~ 25h ago)"),
        (25 * 3600 + 1, ""),
    ],
)
def test_format_time_with_ago(elapsed: int, suffix: str) -> None:
    shown = format_time("2026-11-26T15:19:10Z", T0 + elapsed, UTC)
    assert shown == "2026/11/26 15:19:10 +0000" + suffix


def test_format_time_accepts_fractions_offsets_and_nonsense() -> None:
    assert format_time("2026-11-26T16:19:10.5+01:00", T0, UTC).startswith(
        "2026/11/26 15:19:10 +0000"
    )
    assert format_time("2026-11-26T15:19:10", T0, UTC).startswith("2026/11/26 15:19:10 +0000")
    assert format_time("yesterday", T0, UTC) == "yesterday"
    assert format_time(None, T0, UTC) == ""


def test_columns_align_and_trim() -> None:
    assert columns([["v10", "Deploy abc", "me"], ["v9", "Set A config vars", ""]]) == [
        "v10  Deploy abc         me",
        "v9   Set A config vars",
    ]
    assert columns([]) == []


def test_styled_aligns_values() -> None:
    assert styled([("A", "1"), ("LONGER", "two"), ("E", "")]) == ["A:      1", "LONGER: two", "E:"]


def test_sizes() -> None:
    assert size_name("standard-1X") == "Standard-1X"
    assert size_name(None) == "Standard-1X"
    assert [byte_size(n) for n in (0, 1023, 2048, 5 * 1024**2, 3 * 1024**3)] == [
        "0 B",
        "1023 B",
        "2.0 KB",
        "5.0 MB",
        "3.0 GB",
    ]
    assert byte_size(None) == ""


def test_json_is_the_data_indented() -> None:
    assert to_json({"KEY": "välue"}) == '{\n  "KEY": "välue"\n}'


def dyno(name: str, state: str = "up", command: str = "python web.py") -> dict[str, object]:
    return {
        "name": name,
        "type": name.split(".")[0],
        "state": state,
        "command": command,
        "size": "standard-1X",
        "updated_at": "2026-11-26T15:19:10Z",
    }


def test_ps_groups_by_type_in_herokus_layout() -> None:
    dynos = [
        dyno("worker.1", command="python worker.py"),
        dyno("web.10"),
        dyno("web.2"),
        dyno("run.4821", "up", "bash"),
        dyno("web.1", "crashed"),
    ]
    assert ps_lines(dynos, T0 + 70, UTC) == [
        "=== run: one-off processes (1)",
        "run.4821 (Standard-1X): up 2026/11/26 15:19:10 +0000 (~ 1m ago): bash",
        "",
        "=== web (Standard-1X): python web.py (3)",
        "web.1: crashed 2026/11/26 15:19:10 +0000 (~ 1m ago)",
        "web.2: up 2026/11/26 15:19:10 +0000 (~ 1m ago)",
        "web.10: up 2026/11/26 15:19:10 +0000 (~ 1m ago)",
        "",
        "=== worker (Standard-1X): python worker.py (1)",
        "worker.1: up 2026/11/26 15:19:10 +0000 (~ 1m ago)",
    ]


def test_release_rows_note_failed_and_pending() -> None:
    releases = [
        {
            "version": 3,
            "description": "Deploy 1234abcd",
            "status": "failed",
            "user": {"email": "me@localhost"},
            "created_at": "2026-11-26T15:19:10Z",
        },
        {
            "version": 2,
            "description": "Set A config vars",
            "status": "pending",
            "user": {"email": "me@localhost"},
            "created_at": "2026-11-26T15:19:10Z",
        },
        {
            "version": 1,
            "description": "Initial release",
            "status": "succeeded",
            "user": None,
            "created_at": "2026-11-26T15:19:10Z",
        },
    ]
    rows = release_rows(releases, T0 + 5, UTC)
    assert rows[0].startswith(
        "v3  Deploy 1234abcd (release command failed)       me@localhost  2026/11/26"
    )
    assert "Set A config vars (release command executing)" in rows[1]
    assert rows[2].startswith("v1  Initial release  ")


@pytest.mark.parametrize(
    ("typed", "updates"),
    [
        (
            ["web=2", "worker=1"],
            [{"type": "web", "quantity": "2"}, {"type": "worker", "quantity": "1"}],
        ),
        (["web+1"], [{"type": "web", "quantity": "+1"}]),
        (["web-1"], [{"type": "web", "quantity": "-1"}]),
        (["my-worker-2"], [{"type": "my-worker", "quantity": "-2"}]),
        (
            ["web=2,worker=0"],
            [{"type": "web", "quantity": "2"}, {"type": "worker", "quantity": "0"}],
        ),
        (["web=2:standard-2X"], [{"type": "web", "quantity": "2", "size": "standard-2X"}]),
        ([], []),
    ],
)
def test_parse_scale(typed: list[str], updates: list[dict[str, str]]) -> None:
    assert parse_scale(typed) == updates


@pytest.mark.parametrize("bad", ["web", "web=", "web=two", "=2", "web=2=3", "web 2"])
def test_parse_scale_refuses(bad: str) -> None:
    with pytest.raises(UsageError, match="scale with TYPE=N, TYPE\\+N or TYPE-N"):
        parse_scale([bad])


def test_assignments_and_versions() -> None:
    assert parse_assignments(["A=1", "B=x=y", "C="]) == {"A": "1", "B": "x=y", "C": ""}
    for bad in ("A", "=1"):
        with pytest.raises(UsageError, match="is not KEY=value"):
            parse_assignments([bad])
    assert parse_version("v7") == parse_version("7") == 7
    with pytest.raises(UsageError, match="is not a release version"):
        parse_version("seven")


def test_command_line_quotes_only_several_words() -> None:
    assert command_line(["echo $PORT && env"]) == "echo $PORT && env"
    assert (
        command_line(["python", "-c", "print('hi there')"])
        == "python -c 'print('\"'\"'hi there'\"'\"')'"
    )
