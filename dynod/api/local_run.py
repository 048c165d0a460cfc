"""The values a local run's API (dynod/api/local.py) answers with, as `dynod start`'s LocalControl
(dynod/local_control.py) makes them. Apart from the API so as to be cheap: `dynod start` loads
this at launch, and the API only at its first request."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from dynod.proc.memory import MemorySample


@attrs.frozen
class LocalDyno:
    name: str  # web.1, run.4821
    type: str
    command: str
    state: str  # starting, up, crashed, down (dynod/core/lifecycle.py)
    updated_at: float  # wall clock
    memory: MemorySample | None = None  # its last sample (proc/memory.py)
    exit_status: int | None = None  # its last exit
    next_start_at: float | None = None  # crashed: when the ladder starts it again (wall clock)


@attrs.frozen
class LocalType:
    """A Procfile process type and how many of it run now."""

    type: str
    quantity: int
    command: str
