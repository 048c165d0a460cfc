"""The one error type users can cause, and its parse-error flavour.

Everything a user can get wrong (a Procfile line, a .env line, a formation string, a config key,
a slug) raises a DynodError whose message is one line saying what is wrong and what to do. The
command-line edges print it once, without a traceback.
"""

from __future__ import annotations


class DynodError(Exception):
    """A refusal caused by the user's input; str(err) is the one-line message to show."""


class ParseError(DynodError):
    """A file or string that does not parse; names the source and the line when there is one."""

    def __init__(self, message: str, *, source: str = "", line: int | None = None) -> None:
        self.source = source
        self.line = line
        self.reason = message
        where = source
        if line is not None:
            where = f"{source} line {line}" if source else f"line {line}"
        super().__init__(f"{where}: {message}" if where else message)


class UsageError(DynodError):
    """The command was called wrongly (a missing Procfile, a bad flag value): exit status 2."""


class NotFound(DynodError):
    """The named app, release, build or dyno does not exist (HTTP 404, `not_found`)."""


class Conflict(DynodError):
    """The request clashes with what exists (a taken app name: HTTP 409, `conflict`)."""


class Invalid(DynodError):
    """Well-formed but unacceptable parameters (HTTP 422, `invalid_params`)."""
