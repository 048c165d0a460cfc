"""Dyno sizes as Heroku names them, and which of them sleep: an app of `eco` (or the older
`free`) dynos goes idle after `[dynos] idle_after` without a request (README, "Sleeping").

Pure: `size_of` refuses an unknown size with a one-line error, `sleeps` says whether an app's
formation sleeps.
"""

from __future__ import annotations

from collections.abc import Mapping

from dynod.errors import Invalid

DEFAULT_SIZE = "standard-1X"
SIZES = (
    "eco",
    "basic",
    "standard-1X",
    "standard-2X",
    "performance-M",
    "performance-L",
    "free",
    "hobby",
)
SLEEPING = frozenset({"eco", "free"})
_BY_LOWER = {size.lower(): size for size in SIZES}


def size_of(text: object) -> str:
    """A size in Heroku's spelling (`standard-1X`), whatever case it came in."""
    found = _BY_LOWER.get(text.lower()) if isinstance(text, str) else None
    if found is None:
        raise Invalid(f"Unknown dyno size {text!r}: use one of {', '.join(SIZES)}.")
    return found


def shown(size: str) -> str:
    """As log lines show it: `Standard-1X`, `Eco`."""
    return size[:1].upper() + size[1:]


def sleeps(quantities: Mapping[str, int], sizes: Mapping[str, str]) -> bool:
    """An app sleeps when it runs web dynos and every type it runs is of a sleeping size."""
    running = [kind for kind, count in quantities.items() if count > 0]
    return "web" in running and all(sizes.get(kind, DEFAULT_SIZE) in SLEEPING for kind in running)
