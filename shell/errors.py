"""The two ways a `dyno` command ends badly, each with its exit status: the platform refused or
failed (1), or the command was called wrongly (2). Their text is the one line shown on stderr."""

from __future__ import annotations


class Failure(Exception):
    """The platform refused or failed, or the client could not do what was asked: exit 1."""

    exit_status = 1


class ApiError(Failure):
    """An answer from the API that is not a success (or no answer at all). `id` is the API's
    error id (`not_found`, `invalid_params`, …) or ours (`unreachable`, `timeout`,
    `bad_response`)."""

    def __init__(self, message: str, *, id: str = "error", status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.id = id
        self.status = status


class UsageError(Exception):
    """An unknown command or flag, a missing or malformed argument: exit 2."""

    exit_status = 2
