"""`dyno run`: a one-off dyno attached to this terminal. The API starts it and answers its
`attach_url`; the client claims it at dynod's rendezvous over TLS (trusting `rendezvous-ca.pem`
from dynod's data directory) and relays, in framed messages (README, "Attached one-offs"): with
stdin a terminal, in raw mode on a terminal in the dyno sized like this one (again on SIGWINCH),
so Ctrl-C and Ctrl-D reach the dyno; otherwise stdin piped, its end the dyno's end of input. The
exit status is the dyno's own."""

from __future__ import annotations

import os
import select
import signal
import socket
import ssl
import struct
import termios
import threading
import tty
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import SplitResult, urlsplit

from shell.api import data_dir
from shell.apps import app_path
from shell.context import Context
from shell.dynos import command_line
from shell.errors import Failure, UsageError
from shell.grammar import Parsed
from shell.local import LocalApi, connect

CA_FILE = "rendezvous-ca.pem"
CONNECT_TIMEOUT = 10.0
GREETING = b"rendezvous\r\n"
# dynod/proc/attached.py's framed messages (tests/shell/test_attach.py holds the two together)
HEADER = struct.Struct(">cI")
INPUT, WINDOW, OUTPUT, STDERR, EXIT = b"I", b"W", b"O", b"E", b"X"
CHUNK = 1 << 16


def run(ctx: Context, parsed: Parsed) -> int:
    app = ctx.app(parsed)
    command = command_line(parsed.args("COMMAND"))
    terminal = os.isatty(0) and not parsed.on("no-tty")
    env = environment(parsed.values("env"))
    if ctx.env.get("TERM"):
        env["TERM"] = ctx.env["TERM"]
    if terminal:
        size = os.get_terminal_size(0)
        env["COLUMNS"], env["LINES"] = str(size.columns), str(size.lines)
    body: dict[str, object] = {
        "attach": True,
        "command": command,
        "env": env,
        "force_no_tty": not terminal,
    }
    if parsed.value("size"):
        body["size"] = parsed.value("size")
    dyno = ctx.api.post(app_path(app, "/dynos"), body)
    url = dyno.get("attach_url") if isinstance(dyno, dict) else None
    if not isinstance(url, str):
        raise Failure("the API started no attached dyno (no attach_url in its answer)")
    local = ctx.api.run.socket if isinstance(ctx.api, LocalApi) else None
    with claim(url, data_dir(ctx.env) / CA_FILE, local) as (sock, early):
        return relay(sock, early, terminal)


def environment(pairs: list[str]) -> dict[str, str]:
    """`-e K=V` (repeatable; `;` splits several in one, as the Heroku CLI's does)."""
    env = {}
    for pair in pairs:
        for item in pair.split(";"):
            key, eq, value = item.partition("=")
            if not eq or not key.strip():
                raise UsageError(f"-e takes KEY=VALUE, not `{item}`")
            env[key.strip()] = value
    return env


@contextmanager
def claim(url: str, ca: Path, local: Path | None = None) -> Iterator[tuple[socket.socket, bytes]]:
    """A connection to the rendezvous that has claimed the session: the socket and what came
    after the greeting. Over TLS to dynod serve's; over `local`, a running `dynod start`'s
    private socket, when the URL says so (`rendezvous://localhost/SECRET`)."""
    parts = urlsplit(url)
    if parts.scheme == "rendezvous" and parts.netloc == "localhost" and local is not None:
        sock = _connect_local(local)
    else:
        sock = _connect_tls(parts, ca, url)
    with sock:
        received = b""
        try:
            sock.sendall(parts.path.lstrip("/").encode() + b" framed\r\n")
            while len(received) < len(GREETING):
                data = sock.recv(CHUNK)
                if not data:
                    break
                received += data
        except (OSError, ssl.SSLError) as err:
            raise Failure(f"the rendezvous at {parts.netloc} broke off: {err}") from None
        if not received.startswith(GREETING):
            raise Failure(
                "the rendezvous refused the session: its secret was used already or expired "
                "(60 s); run the command again"
            )
        sock.settimeout(None)
        yield sock, received[len(GREETING) :]


def _connect_tls(parts: SplitResult, ca: Path, url: str) -> ssl.SSLSocket:
    if parts.scheme != "rendezvous" or not parts.hostname or not parts.port:
        raise Failure(f"the API answered an attach_url dyno cannot use: {url}")
    if not ca.is_file():
        raise Failure(
            f"no rendezvous CA at {ca}: set DYNOD_DATA to the data directory of the dynod "
            "that serves the API"
        )
    context = ssl.create_default_context(cafile=str(ca))
    try:
        raw = socket.create_connection((parts.hostname, parts.port), timeout=CONNECT_TIMEOUT)
    except OSError as err:
        raise Failure(f"cannot reach the rendezvous at {parts.netloc}: {err}") from None
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        return context.wrap_socket(raw, server_hostname=parts.hostname)
    except (OSError, ssl.SSLError) as err:
        raw.close()
        raise Failure(f"the rendezvous at {parts.netloc} failed TLS: {err}") from None


def _connect_local(path: Path) -> socket.socket:
    """The local run's socket (found as shell/local.py finds it: the user's own): no TLS, its
    mode is the credential."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(CONNECT_TIMEOUT)
    try:
        connect(sock, path)
    except OSError as err:
        sock.close()
        raise Failure(f"cannot reach the dynod start in {path.parent.parent}: {err}") from None
    return sock


def relay(sock: socket.socket, early: bytes, terminal: bool) -> int:
    """Stdin to the dyno and its output here, until its exit status comes."""
    with _raw(terminal), _winch(terminal) as wake:
        sock.setblocking(False)
        outgoing = bytearray()
        incoming = bytearray(early)
        stdin_open = True
        if terminal:
            outgoing += _window()
        try:
            while True:
                status = _deliver(incoming)
                if status is not None:
                    return status
                readable = [sock.fileno(), *([wake] if wake >= 0 else [])]
                if stdin_open and len(outgoing) < CHUNK * 16:
                    readable.append(0)
                ready = [sock.fileno()]
                if not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                    writable = [sock.fileno()] if outgoing else []
                    ready, _, _ = select.select(readable, writable, [])
                if wake in ready:
                    os.read(wake, 64)
                    outgoing += _window()
                if 0 in ready:
                    data = os.read(0, CHUNK)
                    stdin_open = bool(data)
                    outgoing += HEADER.pack(INPUT, len(data)) + data
                if sock.fileno() in ready and not _receive(sock, incoming):
                    status = _deliver(incoming)
                    if status is not None:  # the exit status came with the connection's end
                        return status
                    raise Failure("the connection to the dyno closed before its exit status came")
                if outgoing:
                    _send(sock, outgoing)
        except KeyboardInterrupt:  # Ctrl-C with stdin not a terminal: the dyno hangs up
            return 130


def _receive(sock: socket.socket, incoming: bytearray) -> bool:
    """What the socket holds now; False at its end."""
    while True:
        try:
            data = sock.recv(CHUNK)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            return True
        except OSError:
            return False
        if not data:
            return False
        incoming += data


def _send(sock: socket.socket, outgoing: bytearray) -> None:
    try:
        sent = sock.send(outgoing[:CHUNK])
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
        return
    except OSError as err:
        raise Failure(f"the connection to the dyno broke: {err}") from None
    del outgoing[:sent]


def _deliver(incoming: bytearray) -> int | None:
    """Write out the whole messages received; the exit status once it has come."""
    while len(incoming) >= HEADER.size:
        kind, size = HEADER.unpack_from(incoming)
        if len(incoming) < HEADER.size + size:
            return None
        body = bytes(incoming[HEADER.size : HEADER.size + size])
        del incoming[: HEADER.size + size]
        if kind == EXIT:
            return int(body)
        _write_all(2 if kind == STDERR else 1, body)
    return None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _window() -> bytes:
    size = os.get_terminal_size(0)
    body = f"{size.lines} {size.columns}".encode()
    return HEADER.pack(WINDOW, len(body)) + body


@contextmanager
def _raw(terminal: bool) -> Iterator[None]:
    """Raw mode on stdin's terminal for the session; restored however it ends."""
    if not terminal:
        yield
        return
    saved = termios.tcgetattr(0)
    tty.setraw(0, termios.TCSANOW)  # keys typed ahead are kept: they are the dyno's
    try:
        yield
    finally:
        termios.tcsetattr(0, termios.TCSADRAIN, saved)


@contextmanager
def _winch(terminal: bool) -> Iterator[int]:
    """A descriptor readable after each SIGWINCH (-1 when there is none to watch)."""
    if not terminal or threading.current_thread() is not threading.main_thread():
        yield -1
        return
    read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    previous = signal.signal(signal.SIGWINCH, lambda _signum, _frame: None)
    old_fd = signal.set_wakeup_fd(write_end)
    try:
        yield read_end
    finally:
        signal.set_wakeup_fd(old_fd)
        signal.signal(signal.SIGWINCH, previous)
        os.close(read_end)
        os.close(write_end)
