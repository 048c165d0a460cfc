"""The one place that formats log lines for people: `HH:MM:SS web.1 | text`, foreman style.

Names are padded to one column; each process type gets a colour when the output is a terminal.
Lines from the dyno manager carry Heroku's source in the name: `heroku[web.1]`.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, BinaryIO

from dynod.core.logline import HEROKU

if TYPE_CHECKING:
    import trio

# foreman's palette, in its order.
COLOURS = ("36", "33", "32", "35", "34", "31", "96", "93", "92", "95", "94", "91")
RESET = "\x1b[0m"


def process_type(dyno: str) -> str:
    return dyno.rsplit(".", 1)[0]


class TerminalPrinter:
    """A LogSink that writes each batch with one write call (the local runner's terminal)."""

    def __init__(
        self,
        out: BinaryIO,
        *,
        colour: bool,
        types: Iterable[str] = (),
        names: Iterable[str] = (),
        on_broken_pipe: Callable[[], None] | None = None,
    ) -> None:
        self._out = out
        self._colour = colour
        self._palette = {name: COLOURS[i % len(COLOURS)] for i, name in enumerate(types)}
        self._width = max((len(f"{HEROKU}[{n}]") for n in names), default=0)
        self._on_broken_pipe = on_broken_pipe
        self._broken = False
        self._second = -1
        self._clock = ""
        self._pending: list[str] = []
        self._ready: trio.Event | None = None  # while `run` writes for us

    def publish(self, source: str, dyno: str, texts: Sequence[str], when: float) -> None:
        if self._broken:
            return
        name = f"{HEROKU}[{dyno}]" if source == HEROKU else dyno
        prefix = f"{self._stamp(when)} {name.ljust(self._width)} | "
        if self._colour:
            colour = self._palette.get(process_type(dyno), "37")
            prefix = f"\x1b[{colour}m{prefix}{RESET}"
        block = prefix + ("\n" + prefix).join(texts) + "\n"
        if self._ready is None:
            self._write(block.encode("utf-8", "replace"))
            return
        self._pending.append(block)
        self._ready.set()

    async def run(self, *, task_status: trio.TaskStatus[None] | None = None) -> None:
        """Write what was published, once per pass of the event loop: a burst of lines from
        many dynos at once (a formation starting) costs one write, not one each, and wakes the
        reader once. Start it with `nursery.start`; until then, and after it ends, every
        publish is written at once."""
        import trio

        self._ready = trio.Event()
        (task_status or trio.TASK_STATUS_IGNORED).started()
        try:
            while True:
                await self._ready.wait()
                self._ready = trio.Event()
                self.flush()
        finally:
            self._ready = None
            self.flush()

    def flush(self) -> None:
        if self._pending:
            data = "".join(self._pending).encode("utf-8", "replace")
            self._pending.clear()
            self._write(data)

    def _write(self, data: bytes) -> None:
        if self._broken:
            return
        try:
            self._out.write(data)
            self._out.flush()
        except OSError as err:
            # `dynod start | head`: the reader left (EPIPE); a closed terminal (EIO, with the
            # SIGHUP that stops us). Either way the run should end, quietly.
            if err.errno not in (errno.EPIPE, errno.EIO):
                raise
            self._broken = True
            self._pending.clear()
            if self._on_broken_pipe is not None:
                self._on_broken_pipe()

    def _stamp(self, when: float) -> str:
        second = int(when)
        if second != self._second:
            self._second = second
            self._clock = time.strftime("%H:%M:%S", time.localtime(second))
        return self._clock
