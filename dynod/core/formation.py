"""Formation strings (`web=2,worker=1`, `all=N`) and foreman's port numbering for local dynos.

A formation maps process types to dyno counts, ordered as the Procfile lists its types. `all` is a
keyword for every type, even in a Procfile that defines a type named `all`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from dynod.core.names import PROCESS_TYPE_CHARS
from dynod.errors import Invalid, ParseError

ALL = "all"
MAX_PER_TYPE = 100  # also the port stride of local_port, so instances never collide

_SOURCE = "formation"
_ENTRY = re.compile(f"(?P<name>[{PROCESS_TYPE_CHARS}]+)=(?P<count>[0-9]+)")
_SEPARATORS = re.compile(r"[\s,]+")


def parse_formation(text: str, types: Sequence[str]) -> dict[str, int]:
    """Counts for the types `text` mentions, in `types` order; later entries override earlier."""
    entries = [e for e in _SEPARATORS.split(text) if e]
    if not entries:
        raise ParseError("empty formation: write TYPE=N, e.g. web=2,worker=1", source=_SOURCE)
    counts: dict[str, int] = {}
    for entry in entries:
        m = _ENTRY.fullmatch(entry)
        if not m:
            raise ParseError(f"bad entry {entry!r}: write TYPE=N, e.g. web=2", source=_SOURCE)
        name = m["name"]
        # Compare digits before int(): a thousand-digit count must not hit int()'s size limit.
        digits = m["count"].lstrip("0") or "0"
        if len(digits) > len(str(MAX_PER_TYPE)) or int(digits) > MAX_PER_TYPE:
            raise ParseError(
                f"{name}={m['count']} is too many: at most {MAX_PER_TYPE} dynos per type",
                source=_SOURCE,
            )
        if name == ALL:
            counts.update(dict.fromkeys(types, int(digits)))
        elif name in types:
            counts[name] = int(digits)
        else:
            known = ", ".join(types) if types else "none"
            raise ParseError(
                f"unknown process type {name!r}: the Procfile's types are {known}",
                source=_SOURCE,
            )
    return {t: counts[t] for t in types if t in counts}


def render_formation(f: Mapping[str, int]) -> str:
    return ",".join(f"{name}={count}" for name, count in f.items())


def local_port(base: int, types: Sequence[str], name: str, instance: int) -> int:
    """foreman's scheme: `base` + 100 per type (Procfile order) + instance - 1 (1-based)."""
    if not 1 <= instance <= MAX_PER_TYPE:
        raise ValueError(f"instance {instance} is outside 1..{MAX_PER_TYPE}")
    return base + MAX_PER_TYPE * types.index(name) + instance - 1


def quantity(value: object, current: int, kind: str) -> int:
    """A scaling request's quantity for `kind`, now at `current`: a JSON number is the new
    quantity; a string may also be relative ("+1", "-1"). The platform's and a local run's."""
    text = value.strip() if isinstance(value, str) else ""
    try:
        if isinstance(value, int) and not isinstance(value, bool):
            count = value
        elif text[:1] in "+-" and text[1:].isdigit():
            count = current + int(text)
        else:
            count = int(text)
    except ValueError:
        import json  # only to show a refused value

        shown = json.dumps(value, default=repr)
        raise Invalid(
            f'Quantity for {kind} must be a number such as 2, "+1" or "-1", not {shown}.'
        ) from None
    if not 0 <= count <= MAX_PER_TYPE:
        raise Invalid(f"Quantity for {kind} must be between 0 and {MAX_PER_TYPE}, not {count}.")
    return count
