"""The dyno's side of an attached one-off (`dyno run`, `heroku run`): its pseudo-terminal (or,
when no terminal is wanted, pipes) wired to the client's connection, which the rendezvous hands
over (proc/rendezvous.py). A dyno with a Terminal starts once its client has come, and its output
goes to the client, never to the logs.

Two ways to talk, chosen by the client at the rendezvous (README, "Attached one-offs"):
- raw, the Heroku CLI's: bytes both ways. Without a terminal, a `\\x04` ending a chunk closes
  the dyno's stdin. The CLI's `--exit-code` suffix is taken off the command and answered by a
  marker line with the exit status once the dyno has exited.
- framed, `dyno run`'s: each message is a kind byte, a 4-byte big-endian length and the bytes.
  Client to dyno: `I` input (empty: end of input), `W` "ROWS COLS" (a resize, SIGWINCH in the
  dyno). Dyno to client: `O` output, `E` stderr (without a terminal), `X` the exit status, last.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import termios

import trio

from dynod.errors import DynodError

HEADER = struct.Struct(">cI")
MAX_FRAME = 1 << 16
READ_SIZE = 1 << 16
INPUT, WINDOW, OUTPUT, STDERR, EXIT = b"I", b"W", b"O", b"E", b"X"
EXIT_CODE_SUFFIX = ' ; echo "\uffff heroku-command-exit-status: $?"'  # the Heroku CLI's -x
EXIT_MARKER = "\uffff heroku-command-exit-status: {}\n"
EOT = b"\x04"


def window(rows: int, cols: int) -> bytes:
    return struct.pack("HHHH", rows, cols, 0, 0)


class Terminal:
    """One attached session. The rendezvous calls `serve_client` with the client's stream; the
    dyno's process (proc/dyno.py) waits in `wait_client`, takes its stdio from `open`, runs
    `relay_output` beside it and calls `finish` with its exit status."""

    def __init__(self, *, tty: bool = True, rows: int = 24, cols: int = 80) -> None:
        self.tty = tty
        self.rows, self.cols = rows, cols
        self.exit_marker = False
        self.hangup = trio.Event()  # the client left before the dyno ended
        self._client: trio.abc.Stream | None = None
        self._framed = False
        self._claimed = trio.Event()  # a client came, or the offer expired (no client)
        self._opened = trio.Event()  # the dyno's ends exist
        self._done = trio.Event()  # the session is over: the connection may close
        self._send_lock = trio.Lock()
        self._last_byte = b"\n"
        self._master: trio.lowlevel.FdStream | None = None  # the pty's master
        self._stdin: trio.lowlevel.FdStream | None = None  # pipes, without a terminal
        self._outputs: list[tuple[bytes, trio.lowlevel.FdStream]] = []

    def take_exit_code_suffix(self, command: str) -> str:
        """The command without the Heroku CLI's `--exit-code` echo, which dynod answers itself
        (an `exit 3` in the command would skip the echo)."""
        if command.endswith(EXIT_CODE_SUFFIX):
            self.exit_marker = True
            return command.removesuffix(EXIT_CODE_SUFFIX)
        return command

    # ----- the rendezvous' side

    @property
    def claimed(self) -> bool:
        return self._claimed.is_set()

    def abandon(self) -> None:
        """No client came in time: the dyno never starts."""
        self._claimed.set()
        self._done.set()

    async def serve_client(self, stream: trio.abc.Stream, pending: bytes, framed: bool) -> None:
        """Relay the client's input to the dyno until the session is over; returns when the
        connection may close."""
        self._client, self._framed = stream, framed
        self._claimed.set()
        async with trio.open_nursery() as nursery:

            async def over() -> None:
                await self._done.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(over)
            await self._opened.wait()
            try:
                await self._relay_input(stream, pending)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, ValueError):
                pass  # the client broke the protocol or the dyno's input closed: a hangup
            self.hangup.set()

    async def _relay_input(self, stream: trio.abc.Stream, pending: bytes) -> None:
        buffer = bytearray(pending)
        while True:
            if self._framed:
                while len(buffer) >= HEADER.size:
                    kind, size = HEADER.unpack_from(buffer)
                    if size > MAX_FRAME:
                        raise ValueError("frame too large")
                    if len(buffer) < HEADER.size + size:
                        break
                    body = bytes(buffer[HEADER.size : HEADER.size + size])
                    del buffer[: HEADER.size + size]
                    await self._message(kind, body)
            elif buffer:
                data = bytes(buffer)
                buffer.clear()
                if not self.tty and data.endswith(EOT):
                    await self._input(data[:-1])
                    await self._input(b"")
                else:
                    await self._input(data)
            received = await stream.receive_some(READ_SIZE)
            if not received:
                return
            buffer += received

    async def _message(self, kind: bytes, body: bytes) -> None:
        if kind == INPUT:
            await self._input(body)
        elif kind == WINDOW:
            rows, cols = (int(n) for n in body.split())
            self.resize(rows, cols)

    async def _input(self, data: bytes) -> None:
        if self._master is not None:
            if data:
                await self._master.send_all(data)
            else:  # end of input on a terminal: what Ctrl-D at a line's start says
                await self._master.send_all(EOT)
        elif self._stdin is not None:
            if data:
                await self._stdin.send_all(data)
            else:
                await self._stdin.aclose()
                self._stdin = None

    def resize(self, rows: int, cols: int) -> None:
        """The terminal's new size; the kernel sends SIGWINCH to the dyno's foreground job."""
        if 0 < rows < 65536 and 0 < cols < 65536:
            self.rows, self.cols = rows, cols
            if self._master is not None:
                fcntl.ioctl(self._master.fileno(), termios.TIOCSWINSZ, window(rows, cols))

    # ----- the dyno's side

    async def wait_client(self) -> None:
        """Until the client comes; raises DynodError when the offer expired without one."""
        await self._claimed.wait()
        if self._client is None:
            raise DynodError("No client attached in time: the process was not started")

    def open(self) -> tuple[int, int, int]:
        """The dyno's stdin, stdout and stderr (the caller closes them once it has started)."""
        if self.tty:
            master, slave = os.openpty()
            os.set_inheritable(master, False)
            fcntl.ioctl(slave, termios.TIOCSWINSZ, window(self.rows, self.cols))
            self._master = trio.lowlevel.FdStream(master)
            self._outputs = [(OUTPUT, self._master)]
            return slave, slave, slave
        in_r, in_w = os.pipe2(os.O_CLOEXEC)
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        self._stdin = trio.lowlevel.FdStream(in_w)
        self._outputs = [
            (OUTPUT, trio.lowlevel.FdStream(out_r)),
            (STDERR, trio.lowlevel.FdStream(err_r)),
        ]
        return in_r, out_w, err_w

    async def relay_output(self) -> None:
        """The dyno's output to the client, until every writer has closed it; once the client
        is gone it is still read (and dropped), so the dyno never blocks on it."""
        self._opened.set()
        async with trio.open_nursery() as nursery:
            for kind, stream in self._outputs:
                nursery.start_soon(self._pump, kind, stream)

    async def _pump(self, kind: bytes, stream: trio.lowlevel.FdStream) -> None:
        while True:
            try:
                data = await stream.receive_some(READ_SIZE)
            except (trio.BrokenResourceError, OSError) as exc:
                # A pty master reads EIO once the last slave fd is closed: that is EOF.
                cause = exc.__cause__ if isinstance(exc, trio.BrokenResourceError) else exc
                if isinstance(cause, OSError) and cause.errno == errno.EIO:
                    return
                raise
            except trio.ClosedResourceError:
                return
            if not data:
                return
            await self._send(kind, data)

    async def _send(self, kind: bytes, data: bytes) -> None:
        client = self._client
        if client is None or self.hangup.is_set():
            return
        message = HEADER.pack(kind, len(data)) + data if self._framed else data
        async with self._send_lock:
            try:
                await client.send_all(message)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.hangup.set()
                return
        if kind != EXIT:
            self._last_byte = data[-1:]

    async def finish(self, status: int | None) -> None:
        """The dyno has ended (status None: it never started): tell the client, close the
        dyno's ends, and let the connection go."""
        try:
            if status is not None and self._framed:
                await self._send(EXIT, str(status).encode())
            elif status is not None and self.exit_marker:
                start = "" if self._last_byte == b"\n" else "\r\n"
                await self._send(OUTPUT, (start + EXIT_MARKER.format(status)).encode())
        finally:
            self._done.set()
            for stream in [self._stdin, *(s for _, s in self._outputs)]:
                if stream is not None:
                    stream.close()
            self._stdin = self._master = None
            self._outputs = []
