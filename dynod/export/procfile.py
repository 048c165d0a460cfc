"""The Procfile export: the slug's app with a Procfile and a `.env` that foreman, honcho and
`dynod start` all read the same way, and `.dyno`, the wrapper that runs each command as a dyno
does (HOME the app's directory, the buildpacks' .profile.d sourced, DYNO set)."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping

from dynod.core.formation import render_formation
from dynod.core.procfile import ProcessType, Procfile, render_procfile
from dynod.errors import DynodError
from dynod.export.plan import PROFILE_PRELUDE, ExportPlan, File, Files

WRAPPER = ".dyno"
_WRAPPER_TEXT = f"""#!/usr/bin/env bash
# Runs one Procfile command as a dyno would (written by `dynod export procfile`): from the app's
# directory, which is HOME, with the buildpacks' .profile.d sourced, and DYNO named as foreman
# (PS) or honcho (HONCHO_PROCESS_NAME) call the process when the runner does not set it.
cd "$(dirname "${{BASH_SOURCE[0]}}")" || exit 1
export HOME="$PWD" DYNO="${{DYNO:-${{PS:-${{HONCHO_PROCESS_NAME:-}}}}}}"
{PROFILE_PRELUDE.rstrip()}
exec bash -c "$1"
"""

# Written bare: what every reader takes verbatim (honcho's shlex splits on the rest).
_BARE = re.compile(r"[A-Za-z0-9_./:@%+,=~-]+")
# Line breaks for honcho (str.splitlines) other than "\n", which double quotes carry.
_BREAKS = set("\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


def render_procfile_export(plan: ExportPlan) -> Files:
    """Procfile (every type, `release` included, each through `.dyno`), `.env` (mode 0600),
    `.dyno`, and `.foreman` (the formation, which foreman reads; `release` at 0 because foreman
    would otherwise run it as a process)."""
    types = tuple(
        ProcessType(name, f"./{WRAPPER} {shlex.quote(command)}")
        for name, command in plan.process_types.items()
    )
    formation = {name: plan.count(name) for name in plan.types}
    if plan.release_command is not None:
        formation["release"] = 0
    return {
        "Procfile": File(render_procfile(Procfile(types))),
        ".env": File(render_portable_dotenv(plan.config_vars), 0o600),
        WRAPPER: File(_WRAPPER_TEXT, 0o755),
        ".foreman": File(f"formation: {render_formation(formation)}\n"),
    }


def render_portable_dotenv(env: Mapping[str, str]) -> str:
    """A .env that foreman, honcho and dynod (dynod/core/dotenv.py) read back as `env`: no
    spaces around `=`, values bare when made of safe characters, else in single quotes, else
    (a `'` or a newline) in double quotes escaping only `\\`, `"` and newlines. A value none of
    these carry for all three is refused naming its key: a backslash before `n` or `t` (honcho
    turns it into a newline or tab), another line break (honcho splits lines at it)."""
    lines = []
    for key, value in env.items():
        lines.append(f"{key}={_portable(key, value)}\n")
    return "".join(lines)


def _portable(key: str, value: str) -> str:
    if "\\n" in value or "\\t" in value:
        raise DynodError(
            f"{key} holds a backslash before n or t, which honcho reads as a newline or tab: "
            "change the value, or export to systemd or kubernetes"
        )
    if _BREAKS & set(value) or "\0" in value:
        raise DynodError(
            f"{key} holds a carriage return or other line break that a .env cannot carry: "
            "change the value, or export to systemd or kubernetes"
        )
    if _BARE.fullmatch(value):
        return value
    if "'" not in value and "\n" not in value:
        return f"'{value}'"
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'
