"""Output from the interactive shell's background: `Above` prints lines above the prompt while
it shows (`above_prompt`) and holds them while a command has the terminal (so `run bash` is
never written into); `Tail` follows a log session in a thread of its own, into `Above`, until
it is stopped (Ctrl-C at the prompt), which shuts its socket so no connection is left behind."""

from __future__ import annotations

import codecs
import http.client
import os
import socket
import sys
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO, cast

from prompt_toolkit.patch_stdout import StdoutProxy

from shell.api import Api
from shell.errors import ApiError

HELD = 10_000  # lines kept while a command runs; older ones are dropped (and counted)
FLUSH_PAUSE = 0.05  # seconds between two batches printed above the prompt (a command waits
# for the last batch's pause before it runs: prompt_toolkit's own 0.2 s was felt)


class Above:
    def __init__(self, limit: int = HELD) -> None:
        self._lock = threading.Lock()
        self._out: TextIO | None = None
        self._held: deque[str] = deque(maxlen=limit)
        self._dropped = 0

    def show(self, out: TextIO) -> None:
        """The prompt is up (`out` prints above it): what was held comes out first."""
        with self._lock:
            self._out = out
            if self._dropped:
                out.write(f"dyno: {self._dropped} log lines dropped while a command ran\n")
                self._dropped = 0
            while self._held:
                out.write(self._held.popleft() + "\n")
            out.flush()

    def hold(self) -> None:
        """A command has the terminal: keep lines until the prompt is back."""
        with self._lock:
            self._out = None

    def line(self, text: str) -> None:
        with self._lock:
            if self._out is not None:
                self._out.write(text + "\n")
                self._out.flush()
                return
            if len(self._held) == self._held.maxlen:
                self._dropped += 1
            self._held.append(text)


@contextmanager
def above_prompt(above: Above) -> Iterator[None]:
    """While the prompt shows, stdout, stderr and `above`'s lines print above it (as
    prompt_toolkit's patch_stdout, with a shorter pause between batches)."""
    with StdoutProxy(sleep_between_writes=FLUSH_PAUSE) as proxy:
        saved = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = cast(TextIO, proxy)
        above.show(sys.stdout)
        try:
            yield
        finally:
            above.hold()
            sys.stdout, sys.stderr = saved


class Tail:
    """One followed log session (`logs --tail` typed at the prompt)."""

    def __init__(self, api: Api, url: str, above: Above) -> None:
        self._api = api
        self._url = url
        self._above = above
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self._stopped = False
        self._thread = threading.Thread(target=self._follow, name="dyno-tail", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """End it now: no more lines are shown, and its connection closes at once."""
        with self._lock:
            self._stopped = True
            if self._socket is not None:
                _shut(self._socket)

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _opened(self, response: http.client.HTTPResponse) -> None:
        with self._lock:
            # Our own descriptor of the stream's socket: shutting it down from another thread
            # ends the blocked read, whatever the stream's own descriptor has become by then.
            self._socket = socket.socket(fileno=os.dup(response.fileno()))
            if self._stopped:
                _shut(self._socket)

    def _follow(self) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        partial = ""
        try:
            for chunk in self._api.stream(self._url, opened=self._opened):
                lines = (partial + decoder.decode(chunk)).split("\n")
                partial = lines.pop()
                for line in lines:
                    if self._stopped:
                        return
                    self._above.line(line)
            if partial and not self._stopped:
                self._above.line(partial)
            if not self._stopped:
                self._above.line("dyno: the log stream ended (dynod closed it)")
        except ApiError as error:
            if not self._stopped:
                self._above.line(f"dyno: the log tail stopped: {error}")
        finally:
            with self._lock:
                self._stopped = True
                if self._socket is not None:
                    self._socket.close()
                    self._socket = None


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already closed by dynod: nothing to end
        pass
