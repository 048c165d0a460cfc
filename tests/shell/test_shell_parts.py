"""The interactive shell's parts on their own, against a scripted HTTP server: the cache and
what it says when dynod goes and comes back, completion from the command table, the toolbar's
text, and output held while a command has the terminal."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document

from shell.api import Api
from shell.commands import TABLE
from shell.completion import ShellCompleter, split_line
from shell.interactive import BUILTINS
from shell.live import Live
from shell.tail import Above, Tail
from shell.toolbar import formation_text, toolbar_text
from tests.helpers import wait_until
from tests.shell.conftest import FakeApi, Seen

FORMATION = [{"type": "web", "quantity": 2}, {"type": "worker", "quantity": 1}]
DYNOS = [
    {"name": "web.1", "type": "web", "state": "up"},
    {"name": "web.2", "type": "web", "state": "up"},
    {"name": "worker.1", "type": "worker", "state": "up"},
]
RELEASES = [{"version": 12, "current": True}, {"version": 11, "current": False}]


def script(fake: FakeApi) -> None:
    fake.json("GET", "/apps", [{"name": "shop"}, {"name": "blog"}])
    fake.json("GET", "/apps/shop/formation", FORMATION)
    fake.json("GET", "/apps/shop/dynos", DYNOS)
    fake.json("GET", "/apps/shop/config-vars", {"GREETING": "hi", "DATABASE_URL": "x"})
    fake.json("GET", "/apps/shop/releases", RELEASES)


@pytest.fixture
def live(fake_api: FakeApi) -> Iterator[Live]:
    script(fake_api)
    notes: list[str] = []
    cache = Live(lambda: Api(fake_api.url, None), notes.append, lambda: None)
    cache.start()
    yield cache
    cache.close()


def complete(live: Live, text: str, app: str | None = "shop") -> list[str]:
    completer = ShellCompleter(TABLE, BUILTINS, live, lambda: app)
    found = completer.get_completions(Document(text, len(text)), CompleteEvent(True))
    return [c.text for c in found]


def test_formation_text() -> None:
    assert formation_text(FORMATION, DYNOS, RELEASES) == "web 2/2 up · worker 1/1 up · v12"
    starting = [
        {"type": "web", "state": "up"},
        {"type": "web", "state": "starting"},
        {"type": "clock", "state": "crashed"},
        {"type": "run", "state": "up"},
    ]
    assert formation_text([*FORMATION, {"type": "clock", "quantity": 1}], starting, []) == (
        "web 1/2 up, 1 starting · clock 0/1 up, 1 crashed · worker 0/1 up · 1 one-off"
    )
    assert formation_text([{"type": "web", "quantity": 0}], [], []) == "nothing deployed yet"


def test_completion_from_the_table_and_the_cache(live: Live) -> None:
    assert complete(live, "ps:sc") == ["ps:scale"]
    assert complete(live, "us") == ["use"]
    assert complete(live, "use ") == ["blog", "shop"]
    assert complete(live, "ps -a s") == ["shop"]
    assert complete(live, "ps:restart w") == ["web", "worker", "web.1", "web.2", "worker.1"]
    assert complete(live, "ps:scale web=2 wo") == ["worker="]
    assert complete(live, "logs -d web.") == ["web.1", "web.2"]
    assert complete(live, "logs -p ") == ["web", "worker"]
    assert complete(live, "logs -s ") == ["app", "heroku"]
    assert complete(live, "logs --t") == ["--tail"]
    assert complete(live, "config:get ") == ["DATABASE_URL", "GREETING"]
    assert complete(live, "config:set G") == ["GREETING="]
    assert complete(live, "releases:rollback ") == ["v12", "v11"]
    assert complete(live, "help ps:") == ["ps:scale", "ps:type", "ps:restart", "ps:stop"]
    assert complete(live, "run:detached w") == ["web", "worker"]  # a type's command
    assert complete(live, "run:detached echo w") == []  # the dyno's own words
    assert complete(live, "config:get ", app=None) == []
    assert complete(live, "dyno ps:st") == ["ps:stop"]  # `dyno` typed out of habit
    assert split_line("config:set 'A B") == ["config:set", "'A", "B"]


def test_toolbar_text(live: Live) -> None:
    shown = "shop: web 2/2 up · worker 1/1 up · v12"
    assert wait_until(lambda: toolbar_text(live, "shop") == shown)
    refused = "nope: no route /apps/nope/formation"  # the API's refusal, as it said it
    assert wait_until(lambda: toolbar_text(live, "nope") == refused)
    picked = "no app: `use APP` picks one of 2 (`apps` lists them)"
    assert wait_until(lambda: toolbar_text(live, None) == picked)


def test_an_answer_of_another_shape_leaves_the_cache_working(fake_api: FakeApi) -> None:
    fake_api.json("GET", "/apps", ["not an app"])
    fake_api.json("GET", "/apps/odd/formation", ["not an entry", {"type": "web", "quantity": 1}])
    fake_api.json("GET", "/apps/odd/dynos", [])
    fake_api.json("GET", "/apps/odd/releases", [7])
    cache = Live(lambda: Api(fake_api.url, None), lambda _note: None, lambda: None)
    cache.start()
    try:
        assert cache.get(("apps",), wait=5) is None
        assert cache.error(("apps",)) == "dynod's answer is not one this client reads"
        assert wait_until(lambda: toolbar_text(cache, "odd") == "odd: web 0/1 up")
        fake_api.json("GET", "/apps/odd/formation", [{"type": "web", "quantity": "lots"}])
        cache.expire("odd")
        unread = "odd: dynod's formation is not one this client reads"
        assert wait_until(lambda: toolbar_text(cache, "odd") == unread)
        script(fake_api)
        cache.expire(None)
        assert wait_until(lambda: cache.get(("apps",)) == ["blog", "shop"]), "it goes on"
    finally:
        cache.close()


def test_dynod_away_is_said_once_and_back_once(fake_api: FakeApi) -> None:
    script(fake_api)
    notes: list[str] = []
    address = ["http://127.0.0.1:9"]  # nothing listens on the discard port
    cache = Live(lambda: Api(address[0], None), notes.append, lambda: None)
    cache.start()
    try:
        for _ in range(3):
            cache.expire(None)
            cache.get(("apps",), wait=5)
        assert wait_until(lambda: cache.up is False)
        cache.expire(None)
        cache.get(("apps",), wait=5)
        assert notes == [
            "dyno: dynod is not answering at http://127.0.0.1:9: the shell goes on, and says "
            "when it is back"
        ]
        address[0] = fake_api.url  # dynod is back, on another port
        cache.expire(None)
        assert wait_until(lambda: cache.get(("apps",)) == ["blog", "shop"])
        assert notes[1:] == [f"dyno: dynod is back at {fake_api.url}"]
    finally:
        cache.close()


def test_lines_are_held_while_a_command_runs() -> None:
    above = Above(limit=3)
    above.line("before any prompt")
    prompt = io.StringIO()
    above.show(prompt)
    above.line("at the prompt")
    above.hold()
    for n in range(5):
        above.line(f"held {n}")
    assert prompt.getvalue() == "before any prompt\nat the prompt\n"
    again = io.StringIO()
    above.show(again)
    assert again.getvalue() == (
        "dyno: 2 log lines dropped while a command ran\nheld 2\nheld 3\nheld 4\n"
    )


def test_a_stopped_tail_closes_its_connection(fake_api: FakeApi) -> None:
    closed = threading.Event()

    def endless(handler: BaseHTTPRequestHandler, _seen: Seen) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/plain")
        handler.end_headers()
        handler.wfile.write(b"first line\nsecond ")
        handler.wfile.flush()
        handler.rfile.read(1)  # until the client goes away
        closed.set()

    fake_api.on("GET", "/stream", endless)
    above = Above()
    shown = io.StringIO()
    above.show(shown)
    tail = Tail(Api(fake_api.url, None), fake_api.url + "/stream", above)
    tail.start()
    assert wait_until(lambda: shown.getvalue() == "first line\n")
    tail.stop()
    assert tail.join(10), "the tail's thread ended"
    assert closed.wait(10), "the server saw the connection close"
    assert shown.getvalue() == "first line\n"
