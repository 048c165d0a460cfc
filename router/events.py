"""The one private h11 hook the router relies on: the (raw name, lowercased name, value)
triples h11 keeps a parsed request's headers in, read without copying them into pairs.
tests/router/test_events.py pins it, so an h11 release that changes it fails there first.
"""

from __future__ import annotations

import h11

from .headers import Headers


def items(event: h11.Request) -> Headers:
    """The request's headers as h11 parsed them; read-only."""
    return event.headers._full_items
