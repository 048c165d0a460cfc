"""The API's own events in an app's log, in Heroku's words: what a person did through the API,
then who did it (`app[api]: Set FOO config vars by user me@localhost`). Releases, the formation,
drains and add-ons log their events through one ApiEvents, called as `events(app, text)`."""

from __future__ import annotations

from collections.abc import Callable

from dynod.state.apps import App

# Publishes one `app[api]` line in the app's log (the Platform's `log`).
Log = Callable[[App, str], None]


def by_user(text: str, user: str) -> str:
    """Heroku's form of an API event: `Deploy 1a2b3c4d by user me@localhost`."""
    return f"{text} by user {user}"


class ApiEvents:
    """`events(app, "Rollback to v3")` logs `app[api]: Rollback to v3 by user USER`. The user is
    the account's email, the one `GET /account` shows (docs/platform.md, Log lines)."""

    def __init__(self, log: Log, user: str) -> None:
        self.log = log
        self.user = user

    def __call__(self, app: App, text: str) -> None:
        self.log(app, by_user(text, self.user))
