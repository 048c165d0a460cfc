"""What the interactive shell knows of dynod, fetched in the background: the apps, and an app's
dynos, formation, config keys and releases, each kept a few seconds; and whether dynod answers.
The completer and the toolbar only read what is here; one thread does every fetch, with a short
timeout, so no keystroke waits on the network and a dynod that hangs hangs nothing."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import attrs

from shell.api import Api, range_header
from shell.apps import app_path
from shell.errors import ApiError

FRESH = 3.0  # seconds an answer is used before it is asked again
TIMEOUT = 2.0  # seconds a background request may take
RELEASES = 20  # the newest releases kept for completion and the toolbar
GONE = ("unreachable", "timeout")  # the ApiError ids that mean "dynod does not answer"

Key = tuple[str, ...]  # ("apps",) or (kind, app): kind in KINDS


@attrs.frozen
class Entry:
    value: Any  # None: never answered (an error, or dynod away)
    at: float
    error: str | None = None  # the API's refusal (`no app named x`), shown by the toolbar


def _fetch(api: Api, key: Key) -> Any:
    kind = key[0]
    if kind == "apps":
        return sorted(str(app.get("name")) for app in api.list("/apps"))
    path = app_path(key[1])
    if kind == "dynos":
        return _objects(api.list(path + "/dynos"))
    if kind == "formation":
        return _objects(api.list(path + "/formation"))
    if kind == "config":
        values = api.get(path + "/config-vars")
        if not isinstance(values, dict):
            raise ValueError("config vars are not an object")
        return sorted(values)
    if kind == "releases":
        listed = api.list(path + "/releases", range=range_header(limit=RELEASES), follow=False)
        return sorted(_objects(listed), key=lambda r: int(r.get("version") or 0), reverse=True)
    raise ValueError(f"no such key {key}")


def _objects(items: list[Any]) -> list[dict[str, Any]]:
    """The JSON objects of a listing (the toolbar and completion read no other shape)."""
    return [item for item in items if isinstance(item, dict)]


KINDS = ("dynos", "formation", "config", "releases")


class Live:
    """The cache and its fetching thread. `api` makes a client for each fetch (so a dynod that
    came back on another address is found); `notify` gets the one line said when dynod goes
    away or comes back; `changed` is called after each fetch (the prompt redraws)."""

    def __init__(
        self,
        api: Callable[[], Api],
        notify: Callable[[str], None],
        changed: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api = api
        self._notify = notify
        self._changed = changed
        self._clock = clock
        self._entries: dict[Key, Entry] = {}
        self._wanted: dict[Key, None] = {}  # in the order asked, without repeats
        self._busy: Key | None = None
        self._closed = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._work, name="dyno-live", daemon=True)
        self.up: bool | None = None  # None until dynod first answers or fails to
        self.url = ""

    def start(self) -> None:
        self._thread.start()

    def get(self, key: Key, wait: float = 0.0) -> Any:
        """What is known (None if nothing yet), asking again when it is older than FRESH.
        `wait` > 0 waits that long for a first answer (completion, in its own thread)."""
        with self._cond:
            entry = self._entries.get(key)
            if entry is None or self._clock() - entry.at >= FRESH:
                self._want(key)
            if entry is None and wait > 0:
                self._cond.wait_for(lambda: key in self._entries, timeout=wait)
                entry = self._entries.get(key)
        return None if entry is None else entry.value

    def error(self, key: Key) -> str | None:
        with self._cond:
            entry = self._entries.get(key)
        return None if entry is None else entry.error

    def expire(self, app: str | None) -> None:
        """After a command: what it may have changed is asked again at the next look."""
        with self._cond:
            for key in [("apps",), *((kind, app) for kind in KINDS if app)]:
                entry = self._entries.get(key)
                if entry is not None:
                    self._entries[key] = attrs.evolve(entry, at=-FRESH)

    def _want(self, key: Key) -> None:
        if key != self._busy and key not in self._wanted:
            self._wanted[key] = None
            self._cond.notify_all()

    def close(self) -> None:
        """The thread ends after the fetch it is doing, if any."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _work(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._wanted) or self._closed)
                if self._closed:
                    return
                key = next(iter(self._wanted))
                del self._wanted[key]
                self._busy = key
            entry = self._answer(key)
            with self._cond:
                self._busy = None
                self._entries[key] = entry
                self._cond.notify_all()
            self._changed()

    def _answer(self, key: Key) -> Entry:
        api = self._api()
        api.timeout = TIMEOUT
        try:
            value = _fetch(api, key)
        except ApiError as error:
            if error.id in GONE:
                self._health(False, api.base_url)
                with self._cond:
                    old = self._entries.get(key)
                return Entry(old.value if old else None, self._clock(), old.error if old else None)
            self._health(True, api.base_url)
            return Entry(None, self._clock(), error.message)
        except (AttributeError, TypeError, ValueError):  # a shape this client does not know
            self._health(True, api.base_url)
            return Entry(None, self._clock(), "dynod's answer is not one this client reads")
        self._health(True, api.base_url)
        return Entry(value, self._clock())

    def _health(self, up: bool, url: str) -> None:
        """Say it once when dynod goes away, and once when it is back."""
        was, self.up, self.url = self.up, up, url
        if was is not False and not up:
            self._notify(
                f"dyno: dynod is not answering at {url}: the shell goes on, and says when "
                "it is back"
            )
        elif was is False and up:
            self._notify(f"dyno: dynod is back at {url}")
