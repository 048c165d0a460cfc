"""The Procfile: process types and their commands, parsed, rendered and loaded.

`web` alone receives HTTP; `release` is the release-phase command and never part of the formation.
Commands are kept verbatim (bash expands them inside the dyno), only trimmed at both ends.
"""

from __future__ import annotations

import os

from attrs import frozen

from dynod.core.names import PROCESS_TYPE
from dynod.errors import DynodError, ParseError

RELEASE = "release"


@frozen
class ProcessType:
    name: str
    command: str


@frozen
class Procfile:
    types: tuple[ProcessType, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.types)

    @property
    def formation_names(self) -> tuple[str, ...]:
        """The types a formation can scale: every type but `release`."""
        return tuple(t.name for t in self.types if t.name != RELEASE)

    @property
    def release(self) -> str | None:
        return self.command(RELEASE) if RELEASE in self else None

    def command(self, name: str) -> str:
        for t in self.types:
            if t.name == name:
                return t.command
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        return any(t.name == name for t in self.types)


def parse_procfile(text: str, source: str = "Procfile") -> Procfile:
    types: list[ProcessType] = []
    first_seen: dict[str, int] = {}
    # Split on "\n" only: str.splitlines() would also break commands at \v, \f or U+2028.
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.removesuffix("\r")
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        name, colon, command = line.partition(":")
        if not colon:
            raise ParseError(
                f"expected `type: command`, got {_shown(stripped)}: "
                "write the process type, a colon, then its command",
                source=source,
                line=number,
            )
        name, command = name.strip(), command.strip()
        problem = _problem(name, command)
        if problem:
            raise ParseError(problem, source=source, line=number)
        if name in first_seen:
            raise ParseError(
                f"process type {name!r} is already defined on line {first_seen[name]}: "
                "keep only one of them",
                source=source,
                line=number,
            )
        first_seen[name] = number
        types.append(ProcessType(name, command))
    if not types:
        raise ParseError("no process types: add a line like `web: python app.py`", source=source)
    return Procfile(tuple(types))


def render_procfile(p: Procfile) -> str:
    """The Procfile's text, one `type: command` line per type; refuses what would not parse back."""
    if not p.types:
        raise DynodError("no process types: add one before writing the Procfile")
    seen: set[str] = set()
    for t in p.types:
        problem = _problem(t.name, t.command)
        if problem is None and t.command != t.command.strip():
            problem = f"the command of {t.name!r} starts or ends with whitespace: trim it"
        if problem is None and t.name in seen:
            problem = f"process type {t.name!r} appears twice: keep only one"
        if problem:
            raise DynodError(f"cannot write Procfile: {problem}")
        seen.add(t.name)
    return "".join(f"{t.name}: {t.command}\n" for t in p.types)


def load_procfile(path: str | os.PathLike[str]) -> Procfile:
    source = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise DynodError(f"no Procfile at {source}: create one or pass -f PATH") from None
    except OSError as err:
        raise DynodError(f"cannot read Procfile {source}: {err.strerror}") from None
    return parse_procfile(decode_utf8(data, source), source)


def decode_utf8(data: bytes, source: str) -> str:
    """Text of a user's file; a leading BOM (Windows editors) is dropped, bad bytes name
    the line."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise ParseError(
            "not UTF-8 text: save the file as UTF-8", source=source, line=line
        ) from None


def _problem(name: str, command: str) -> str | None:
    """What is wrong with one process type, as a user-facing message; None when it is fine."""
    if not PROCESS_TYPE.fullmatch(name):
        return f"bad process type {_shown(name)}: use 1-63 letters, digits, '_' or '-'"
    if not command:
        return f"process type {name!r} has no command: write one after the colon"
    if "\r" in command or "\n" in command:
        # A bare CR mid-line means old Mac line endings: several types would merge into one.
        return f"process type {name!r} has a line break in its command: save with LF line endings"
    if "\0" in command:
        return f"process type {name!r} has a NUL character in its command: remove it"
    return None


def _shown(text: str, limit: int = 40) -> str:
    """A quoted excerpt that keeps error messages on one short line."""
    return repr(text if len(text) <= limit else text[:limit] + "...")
