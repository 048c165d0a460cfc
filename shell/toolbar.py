"""The interactive shell's bottom toolbar: the current app's formation as it runs
(`web 2/2 up · worker 1/1 up · v12`), made from what shell/live.py last fetched; and the one
line shown instead when there is no app or dynod does not answer."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from shell.live import Live

NOTED = ("starting", "crashed")  # states worth a word beside the up count


def formation_text(
    formation: Sequence[Mapping[str, Any]],
    dynos: Sequence[Mapping[str, Any]],
    releases: Sequence[Mapping[str, Any]],
) -> str:
    """`web 2/2 up · worker 1/2 up, 1 crashed · 1 one-off · v12`: for each process type that is
    scaled up or still has dynos, its dynos up of those wanted; one-offs; the current release."""
    by_type: dict[str, list[str]] = {}
    for dyno in dynos:
        by_type.setdefault(str(dyno.get("type")), []).append(str(dyno.get("state")))
    wanted = {str(e.get("type")): int(e.get("quantity") or 0) for e in formation}
    kinds = sorted(
        {k for k, n in wanted.items() if n} | (set(by_type) - {"run"}),
        key=lambda k: (k != "web", k),
    )
    parts = []
    for kind in kinds:
        states = by_type.get(kind, [])
        text = f"{kind} {states.count('up')}/{wanted.get(kind, 0)} up"
        extra = [f"{states.count(s)} {s}" for s in NOTED if s in states]
        parts.append(", ".join([text, *extra]))
    one_offs = [s for s in by_type.get("run", []) if s not in ("complete", "down")]
    if one_offs:
        parts.append(f"{len(one_offs)} one-off" + ("s" if len(one_offs) > 1 else ""))
    current = next((r for r in releases if r.get("current")), releases[0] if releases else None)
    if current is not None:
        parts.append(f"v{current.get('version')}")
    return " · ".join(parts) or "nothing deployed yet"


def toolbar_text(live: Live, app: str | None) -> str:
    """What the toolbar says now, from the cache alone (asking it to fetch what is old)."""
    if live.up is False:
        live.get(("apps",))  # keeps asking: the shell says when dynod is back
        return f"dynod is not answering at {live.url}"
    if app is None:
        apps = live.get(("apps",))  # keeps asking, so dynod going away is noticed here too
        known = f" of {len(apps)}" if isinstance(apps, list) else ""
        return f"no app: `use APP` picks one{known} (`apps` lists them)"
    formation = live.get(("formation", app))
    dynos = live.get(("dynos", app))
    releases = live.get(("releases", app))
    error = live.error(("formation", app))
    if formation is None and error is not None:
        return f"{app}: {error}"
    if formation is None or dynos is None or releases is None:
        return f"{app}: …"
    try:
        return f"{app}: {formation_text(formation, dynos, releases)}"
    except (TypeError, ValueError):  # a quantity that is not a number: say so, never crash
        return f"{app}: dynod's formation is not one this client reads"


def toolbar(live: Live, app: Callable[[], str | None]) -> Callable[[], str]:
    """The `bottom_toolbar` of the prompt: redrawn each second and after each fetch."""
    return lambda: " " + toolbar_text(live, app())
