"""Output for people, in the Heroku CLI's style: `=== ` headers, aligned columns, `Key: value`
blocks, times as `2026/11/26 15:19:10 +0000 (~ 1m ago)`, `ps` grouped by process type; and the
API's JSON for machines. Pure functions of their inputs (the clock is a parameter)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, tzinfo
from typing import Any


def header(text: str) -> str:
    return f"=== {text}"


def columns(rows: Iterable[Sequence[str]]) -> list[str]:
    """Rows aligned in columns two spaces apart, without trailing blanks."""
    table = [list(row) for row in rows]
    if not table:
        return []
    widths = [
        max(len(row[i]) for row in table if i < len(row)) for i in range(max(map(len, table)))
    ]
    return [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in table
    ]


def styled(pairs: Iterable[tuple[str, str]]) -> list[str]:
    """`Key: value` lines with the values aligned (Heroku's styled object)."""
    items = list(pairs)
    if not items:
        return []
    width = max(len(key) for key, _ in items) + 1
    return [f"{(key + ':').ljust(width)} {value}".rstrip() for key, value in items]


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False)


def parse_time(text: object) -> datetime | None:
    """An API timestamp (`2026-11-26T15:19:10Z`, with or without fraction or offset)."""
    if not isinstance(text, str) or not text:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def format_time(text: object, now: float, tz: tzinfo | None = None) -> str:
    """Heroku's `YYYY/MM/DD HH:MM:SS +ZZZZ (~ 5m ago)`; the `ago` part only within 25 hours.
    `tz` None means the local time zone, as the Heroku CLI shows it."""
    when = parse_time(text)
    if when is None:
        return str(text) if text else ""
    shown = when.astimezone(tz).strftime("%Y/%m/%d %H:%M:%S %z")
    elapsed = max(0, int(now - when.timestamp()))
    if elapsed <= 60:
        return f"{shown} (~ {elapsed}s ago)"
    if elapsed <= 3600:
        return f"{shown} (~ {elapsed // 60}m ago)"
    if elapsed <= 25 * 3600:
        return f"{shown} (~ {elapsed // 3600}h ago)"
    return shown


def size_name(size: object) -> str:
    """A dyno size as Heroku shows it (`Standard-1X`), whatever case the API used."""
    text = str(size or "Standard-1X")
    return text[:1].upper() + text[1:]


def byte_size(count: object) -> str:
    if not isinstance(count, int):
        return ""
    if count < 1024:
        return f"{count} B"
    value = count / 1024
    for unit in ("KB", "MB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def ps_lines(dynos: Sequence[Mapping[str, Any]], now: float, tz: tzinfo | None = None) -> list[str]:
    """`dyno ps`: one-off dynos first, then one block per process type, in Heroku's layout."""
    one_offs = [d for d in dynos if d.get("type") == "run"]
    by_type: dict[str, list[Mapping[str, Any]]] = {}
    for dyno in dynos:
        if dyno.get("type") != "run":
            by_type.setdefault(str(dyno.get("type")), []).append(dyno)
    blocks: list[list[str]] = []
    if one_offs:
        block = [header(f"run: one-off processes ({len(one_offs)})")]
        block += [
            f"{d.get('name')} ({size_name(d.get('size'))}): {d.get('state')} "
            f"{format_time(d.get('updated_at'), now, tz)}: {d.get('command')}"
            for d in sorted(one_offs, key=_dyno_order)
        ]
        blocks.append(block)
    for kind in sorted(by_type):
        group = sorted(by_type[kind], key=_dyno_order)
        first = group[0]
        block = [
            header(
                f"{kind} ({size_name(first.get('size'))}): {first.get('command')} ({len(group)})"
            )
        ]
        block += [
            f"{d.get('name')}: {d.get('state')} {format_time(d.get('updated_at'), now, tz)}"
            f"{crash_note(d, now)}"
            for d in group
        ]
        blocks.append(block)
    lines: list[str] = []
    for block in blocks:
        if lines:
            lines.append("")
        lines += block
    return lines


def crash_note(dyno: Mapping[str, Any], now: float) -> str:
    """What `ps` adds to a crashed dyno: its exit status and when the ladder starts it again."""
    if dyno.get("state") != "crashed":
        return ""
    status = dyno.get("exit_status")
    note = f": exit status {status}" if isinstance(status, int) else ""
    when = parse_time(dyno.get("next_start_at"))
    if when is None:
        return note
    left = int(when.timestamp() - now)
    if left <= 0:
        due = "now"
    elif left < 60:
        due = f"in ~ {left}s"
    elif left < 3600:
        due = f"in ~ {left // 60}m"
    else:
        due = f"in ~ {left // 3600}h {left % 3600 // 60}m"
    return f"{note}, next start {due}" if note else f": next start {due}"


def _dyno_order(dyno: Mapping[str, Any]) -> tuple[str, int]:
    kind, _, number = str(dyno.get("name", "")).rpartition(".")
    return (kind, int(number) if number.isdigit() else 0)


def release_status_note(release: Mapping[str, Any]) -> str:
    """What Heroku appends to a release that is not simply done."""
    status = release.get("status")
    if status == "failed":
        return "release command failed"
    if status == "pending":
        return "release command executing"
    return ""


def release_rows(
    releases: Sequence[Mapping[str, Any]], now: float, tz: tzinfo | None = None
) -> list[str]:
    rows = []
    for release in releases:
        description = str(release.get("description") or "")
        note = release_status_note(release)
        user = release.get("user") or {}
        rows.append(
            [
                f"v{release.get('version')}",
                f"{description} ({note})" if note else description,
                str(user.get("email", "")) if isinstance(user, Mapping) else "",
                format_time(release.get("created_at"), now, tz),
            ]
        )
    return columns(rows)
