"""The platform's shared names, patterns and limits, each stated once (docs/platform.md).

Parsers, the build runner, the dyno supervisor and dynod.toml's defaults all take them from here,
so a process type, a config var key or a log line limit means the same thing everywhere.
"""

from __future__ import annotations

import re

# Process types: what a Procfile line may be called and what a formation entry may name.
PROCESS_TYPE_CHARS = "A-Za-z0-9_-"
PROCESS_TYPE = re.compile(f"[{PROCESS_TYPE_CHARS}]{{1,63}}")

# Config var keys, in .env files, `config:set` and the build's env directory alike.
CONFIG_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
RESERVED_PREFIX = "DYNOD_"  # keys starting so belong to dynod

STACK = "heroku-24"  # what buildpacks written for Heroku check $STACK against

MAX_LINE_BYTES = 10_000  # a longer log line from a dyno is split into lines of at most this
LOG_HISTORY = 1500  # lines an app's log ring keeps, as Heroku's logplex does
LOG_TAIL_BUFFER = 1024  # lines a tailing reader may fall behind before lines are dropped
