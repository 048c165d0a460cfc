"""dynod's errors as domain values: what went wrong, in dynod's words, and how grave it is.

Everything a user can get wrong (a Procfile line, a .env line, a formation string, a config key,
a slug) raises a DynodError whose message is one line saying what is wrong and what to do. The
command-line edges print it once, without a traceback. Each kind also carries `status_hint` and
`id`, which the API edge (dynod/api/routes.py) alone turns into an answer, as h11's
`error_status_hint` does; nothing below the API speaks HTTP.
"""

from __future__ import annotations


class DynodError(Exception):
    """A refusal caused by the user's input; str(err) is the one-line message to show.
    By default a request that cannot be carried out as asked."""

    status_hint = 422
    id = "invalid_params"


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
    """The named app, release, build, slug, dyno or session does not exist."""

    status_hint = 404
    id = "not_found"


class Conflict(DynodError):
    """What was asked clashes with what exists, such as a name another app has taken."""

    status_hint = 409
    id = "conflict"


class Invalid(DynodError):
    """Well-formed but unacceptable parameters: a bad config var, quantity or process type."""


class Damaged(DynodError):
    """dynod's own durable state is unreadable (a release ledger damaged before its last record,
    an app's record or formation file that does not parse). Not the user's request: the message
    names the file and how to recover; the API answers an internal error and logs it with its
    traceback, the command line prints it as one line."""

    status_hint = 500
    id = "internal_error"
