"""Drain delivery (README, Drains): a syslog listener, a TLS one and an HTTP listener on
127.0.0.1 receive well-formed frames (parsed back here), a target that comes back later gets what
was buffered, a drain that accepts nothing costs the producer nothing and reports L10, and
retries back off with jitter on a mock clock."""

from __future__ import annotations

import re
import ssl
import subprocess
import time
from pathlib import Path

import attrs
import h11
import pytest
import trio
import trio.testing

from dynod.core.drains import (
    DRAIN_BUFFER,
    L10,
    PRI_APP,
    PRI_PLATFORM,
    PRI_ROUTER,
    backoff,
    frames,
    parse_drain_url,
)
from dynod.core.logline import iso_timestamp
from dynod.errors import Invalid
from dynod.logs.drains import DeliveryFailed, DrainSender, transport_for
from dynod.logs.logplex import LogRing

WHEN = 1795706350.123456  # 2026-11-26T15:19:10.123456+00:00
TOKEN = "d.0b4ed1b8-5d1e-4c61-9d39-7d0c0e0b4a11"
MESSAGE = re.compile(rb"<(\d+)>1 (\S+) host (\S+) (\S+) - (.*)", re.DOTALL)


@attrs.frozen
class Frame:
    pri: int
    timestamp: str
    source: str
    dyno: str
    text: str


def parse_frames(data: bytes) -> tuple[list[Frame], bytes]:
    """Octet-counted messages (RFC 6587) back to RFC 5424 fields; the unfinished rest."""
    found = []
    while data:
        count, space, rest = data.partition(b" ")
        if not space:
            break
        assert count.isdigit(), data[:40]
        if len(rest) < int(count):
            break
        message, data = rest[: int(count)], rest[int(count) :]
        parsed = MESSAGE.fullmatch(message)
        assert parsed is not None, message
        pri, stamp, source, dyno, text = parsed.groups()
        found.append(Frame(int(pri), stamp.decode(), source.decode(), dyno.decode(), text.decode()))
    return found, data


class SyslogListener:
    """Accepts connections on 127.0.0.1 and parses every frame they carry, in order."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.connections = 0
        self.changed = trio.Event()

    async def serve(
        self, nursery: trio.Nursery, port: int = 0, tls: ssl.SSLContext | None = None
    ) -> int:
        listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
        if tls is not None:
            listeners = [trio.SSLListener(listener, tls) for listener in listeners]  # type: ignore[misc]
        nursery.start_soon(trio.serve_listeners, self.handle, listeners)
        socket = listeners[0].transport_listener.socket if tls else listeners[0].socket  # type: ignore[attr-defined]
        return int(socket.getsockname()[1])

    async def handle(self, stream: trio.abc.Stream) -> None:
        self.connections += 1
        pending = b""
        async with stream:
            while chunk := await stream.receive_some(65536):
                got, pending = parse_frames(pending + bytes(chunk))
                self.frames.extend(got)
                self.changed.set()
                self.changed = trio.Event()

    def texts(self) -> list[str]:
        return [frame.text for frame in self.frames]

    async def wait_for(self, count: int, timeout: float = 10) -> None:
        with trio.fail_after(timeout):
            while len(self.frames) < count:
                await self.changed.wait()


@attrs.define
class Post:
    target: str
    headers: dict[str, str]
    frames: list[Frame]


class HttpListener:
    """An HTTP/1.1 server (h11) on 127.0.0.1 keeping every POST; answers `status` (204)."""

    def __init__(self) -> None:
        self.posts: list[Post] = []
        self.status = 204
        self.changed = trio.Event()

    async def serve(self, nursery: trio.Nursery) -> int:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        nursery.start_soon(trio.serve_listeners, self.handle, listeners)
        return int(listeners[0].socket.getsockname()[1])

    async def handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        async with stream:
            while True:
                request, body = None, b""
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(bytes(await stream.receive_some(65536)))
                    elif isinstance(event, h11.Request):
                        request = event
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    elif isinstance(event, h11.ConnectionClosed):
                        return
                assert request is not None
                got, rest = parse_frames(body)
                assert rest == b""
                headers = {k.decode().lower(): v.decode() for k, v in request.headers}
                self.posts.append(Post(request.target.decode(), headers, got))
                reply = h11.Response(status_code=self.status, headers=[("Content-Length", "0")])
                await stream.send_all(conn.send(reply) + conn.send(h11.EndOfMessage()))
                conn.start_next_cycle()
                self.changed.set()
                self.changed = trio.Event()

    def frames(self) -> list[Frame]:
        return [frame for post in self.posts for frame in post.frames]

    async def wait_for(self, count: int, timeout: float = 10) -> None:
        with trio.fail_after(timeout):
            while len(self.frames()) < count:
                await self.changed.wait()


def publish_mix(ring: LogRing) -> None:
    ring.publish("app", "web.1", ['Started GET "/"', "héllo ünïcode"], WHEN)
    ring.publish("heroku", "router", ['at=info method=GET path="/" status=200'], WHEN + 1)
    ring.publish("heroku", "web.1", ["State changed from starting to up"], WHEN + 2)
    ring.publish("app", "api", ["Release v2 created by user me@localhost"], WHEN + 3)


MIX = [
    Frame(PRI_APP, iso_timestamp(WHEN), "app", "web.1", 'Started GET "/"'),
    Frame(PRI_APP, iso_timestamp(WHEN), "app", "web.1", "héllo ünïcode"),
    Frame(
        PRI_ROUTER,
        iso_timestamp(WHEN + 1),
        "heroku",
        "router",
        'at=info method=GET path="/" status=200',
    ),
    Frame(
        PRI_PLATFORM,
        iso_timestamp(WHEN + 2),
        "heroku",
        "web.1",
        "State changed from starting to up",
    ),
    Frame(
        PRI_APP, iso_timestamp(WHEN + 3), "app", "api", "Release v2 created by user me@localhost"
    ),
]


def sender(
    ring: LogRing, url: str, tls: ssl.SSLContext | None = None, buffer: int = DRAIN_BUFFER
) -> DrainSender:
    tail = ring.tail(buffer=buffer, overflow=L10)
    transport = transport_for(parse_drain_url(url), TOKEN, tls)
    return DrainSender(tail, transport, name="test", draw=lambda: 0.0)


def test_frames_count_octets_and_carry_herokus_fields() -> None:
    long = "y" * 9000  # past the table of usual lengths
    body = frames(
        [(WHEN, "app", "web.1", ["ü", "plain"]), (WHEN, "heroku", "router", ["x y", long])]
    )
    stamp = iso_timestamp(WHEN)
    first = f"<190>1 {stamp} host app web.1 - ü".encode()
    assert body.startswith(b"%d " % len(first) + first)
    got, rest = parse_frames(body)
    assert rest == b"" and [(f.pri, f.source, f.dyno, f.text) for f in got] == [
        (190, "app", "web.1", "ü"),
        (190, "app", "web.1", "plain"),
        (158, "heroku", "router", "x y"),
        (158, "heroku", "router", long),
    ]


def test_drain_urls_accepted_and_refused() -> None:
    assert parse_drain_url("syslog://logs.example.com").port == 514
    tls = parse_drain_url("syslog+tls://127.0.0.1:6514")
    assert (tls.tls, tls.syslog, tls.port) == (True, True, 6514)
    http = parse_drain_url("https://user:p%40ss@[::1]:8443/logs?app=1")
    assert (http.host, http.port, http.target, http.userinfo) == (
        "::1",
        8443,
        "/logs?app=1",
        "user:p%40ss",
    )
    assert http.authority == "[::1]:8443"
    for bad, says in [
        ("", "needs a URL"),
        ("ftp://x", "scheme ftp:// is not supported"),
        ("syslog://x:99999", "outside 1-65535"),
        ("syslog://x:514/path", "HOST:PORT only"),
        ("not a url", "not a URL"),
    ]:
        with pytest.raises(Invalid, match=re.escape(says)):
            parse_drain_url(bad)


def test_backoff_doubles_to_its_cap_with_jitter() -> None:
    assert [backoff(n, 0.0) for n in (1, 2, 3)] == [0.25, 0.5, 1.0]
    assert [backoff(n, 0.999999) for n in (1, 2)] == pytest.approx([0.5, 1.0])
    assert backoff(40, 0.0) == 30.0 and backoff(40, 0.999999) == pytest.approx(60.0)


@pytest.mark.trio
async def test_a_syslog_listener_receives_rfc5424_frames_with_octet_counts() -> None:
    ring = LogRing()
    listener = SyslogListener()
    async with trio.open_nursery() as nursery:
        port = await listener.serve(nursery)
        drain = sender(ring, f"syslog://127.0.0.1:{port}")
        nursery.start_soon(drain.run)
        publish_mix(ring)
        await listener.wait_for(5)
        assert listener.frames == MIX
        ring.publish("app", "web.1", [f"n={i}" for i in range(1000)], WHEN + 4)  # 2 writes
        await listener.wait_for(1005)
        assert listener.texts()[5:] == [f"n={i}" for i in range(1000)]
        assert listener.connections == 1 and drain.statistics.failures == 0
        nursery.cancel_scope.cancel()


def make_certificate(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.mark.trio
async def test_a_tls_syslog_listener_receives_the_same_frames(tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))
    ring = LogRing()
    listener = SyslogListener()
    async with trio.open_nursery() as nursery:
        port = await listener.serve(nursery, tls=server)
        nursery.start_soon(sender(ring, f"syslog+tls://127.0.0.1:{port}", client).run)
        publish_mix(ring)
        await listener.wait_for(5)
        assert listener.frames == MIX
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_an_http_listener_receives_logplex_posts() -> None:
    ring = LogRing()
    listener = HttpListener()
    async with trio.open_nursery() as nursery:
        port = await listener.serve(nursery)
        drain = sender(ring, f"http://user:secret@127.0.0.1:{port}/logs?app=shop")
        nursery.start_soon(drain.run)
        publish_mix(ring)
        await listener.wait_for(5)
        ring.publish("app", "web.1", [f"n={i}" for i in range(1000)], WHEN + 4)
        await listener.wait_for(1005)
        assert listener.frames()[:5] == MIX
        assert [f.text for f in listener.frames()[5:]] == [f"n={i}" for i in range(1000)]
        frame_ids = set()
        for post in listener.posts:
            assert post.target == "/logs?app=shop"
            headers = post.headers
            assert headers["content-type"] == "application/logplex-1"
            assert headers["logplex-msg-count"] == str(len(post.frames)) != "0"
            assert headers["logplex-drain-token"] == TOKEN
            assert headers["authorization"] == "Basic dXNlcjpzZWNyZXQ="  # user:secret
            assert re.fullmatch(r"[0-9A-F]{32}", headers["logplex-frame-id"])
            frame_ids.add(headers["logplex-frame-id"])
        assert (
            len(frame_ids) == len(listener.posts)
            and max(len(p.frames) for p in listener.posts) <= 500
        )
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_a_target_that_comes_back_later_receives_what_was_buffered() -> None:
    with trio.socket.socket() as probe:  # a port with nothing listening (yet)
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ring = LogRing()
    listener = SyslogListener()
    async with trio.open_nursery() as nursery:
        drain = sender(ring, f"syslog://127.0.0.1:{port}")
        nursery.start_soon(drain.run)
        ring.publish("app", "web.1", ["before the drain is up"], WHEN)
        with trio.fail_after(10):
            while drain.statistics.failures < 2:  # refused, and retried after a backoff
                await trio.sleep(0.01)
        ring.publish("app", "web.1", ["while it is down"], WHEN + 1)
        await listener.serve(nursery, port)
        await listener.wait_for(2)
        assert listener.texts() == ["before the drain is up", "while it is down"]
        ring.publish("app", "web.1", ["after"], WHEN + 2)
        await listener.wait_for(3)
        assert drain.statistics.delivered == 3
        nursery.cancel_scope.cancel()


async def publish_storm(ring: LogRing, total: int) -> float:
    """A dyno's reads: batches of 200 lines, each followed by a checkpoint; seconds taken."""
    texts = [f"storm line {i} " + "x" * 60 for i in range(200)]
    started = time.perf_counter()
    for _ in range(total // 200):
        ring.publish("app", "web.1", texts, time.time())
        await trio.lowlevel.checkpoint()
    return time.perf_counter() - started


@pytest.mark.trio
async def test_a_drain_that_accepts_nothing_costs_the_producer_nothing_and_reports_l10() -> None:
    quiet = LogRing()
    baseline = min([await publish_storm(quiet, 100_000) for _ in range(3)])

    listener = trio.socket.socket()  # listens, but nobody accepts or reads
    await listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    ring = LogRing()
    async with trio.open_nursery() as nursery:
        drain = sender(ring, f"syslog://127.0.0.1:{port}")
        nursery.start_soon(drain.run)
        stuck = min([await publish_storm(ring, 100_000) for _ in range(3)])
        # Generous (the machine is shared): the drain's tail costs a deque extend per batch.
        assert stuck < baseline * 2 + 0.2, (stuck, baseline)
        assert ring.statistics().lines_dropped > 100_000

        # The drain recovers: it gets the lines it had, then L10 for the rest, then new ones.
        ring.publish("app", "web.1", ["the last line"], time.time())
        reader = SyslogListener()
        accepted, _ = await listener.accept()
        nursery.start_soon(reader.handle, trio.SocketStream(accepted))
        with trio.fail_after(20):
            while "the last line" not in reader.texts():
                await reader.changed.wait()
        notices = [f for f in reader.frames if f.text.startswith("Error L10")]
        assert notices and all(
            (f.source, f.dyno, f.pri) == ("heroku", "logplex", PRI_PLATFORM) for f in notices
        )
        assert re.fullmatch(
            r"Error L10 \(output buffer overflow\): \d+ messages dropped since \S+\.",
            notices[0].text,
        )
        nursery.cancel_scope.cancel()
    listener.close()


class FailingTransport:
    """Fails `failures` tries, recording each try's time and Frame-Id."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.tries: list[tuple[float, str]] = []
        self.bodies: list[bytes] = []

    async def send(self, body: bytes, count: int, frame_id: str) -> None:
        self.tries.append((trio.current_time(), frame_id))
        if len(self.tries) <= self.failures:
            raise DeliveryFailed("the drain answered HTTP 503")
        self.bodies.append(body)

    async def close(self) -> None:
        pass


def test_retries_back_off_exponentially_with_jitter_on_a_mock_clock() -> None:
    async def main() -> None:
        ring = LogRing()
        transport = FailingTransport(failures=8)
        draws = iter([0.0, 1.0 - 1e-9] * 10)
        drain = DrainSender(
            ring.tail(buffer=10, overflow=L10), transport, name="t", draw=lambda: next(draws)
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain.run)
            ring.publish("app", "web.1", ["one"], WHEN)
            with trio.fail_after(1000):
                while not transport.bodies:
                    await trio.sleep(0.5)
            nursery.cancel_scope.cancel()
        times = [when for when, _ in transport.tries]
        gaps = [round(b - a, 6) for a, b in zip(times, times[1:], strict=False)]
        # Ceilings 0.5, 1, 2, 4, …; the draws alternate the bottom (half) and the top of each.
        assert gaps == pytest.approx([0.25, 1.0, 1.0, 4.0, 4.0, 16.0, 16.0, 60.0], rel=1e-6)
        assert len({frame_id for _, frame_id in transport.tries}) == 1  # a retry is the same frame
        assert drain.statistics.failures == 8 and drain.statistics.delivered == 1

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


class BusyTransport:
    """Takes `work` seconds of CPU per delivery, recording when each began."""

    def __init__(self, work: float) -> None:
        self.work = work
        self.began: list[float] = []

    async def send(self, body: bytes, count: int, frame_id: str) -> None:
        self.began.append(trio.current_time())
        end = time.thread_time() + self.work
        while time.thread_time() < end:
            pass

    async def close(self) -> None:
        pass


def test_a_drain_rests_so_its_work_stays_within_its_share() -> None:
    async def main() -> None:
        ring = LogRing()
        transport = BusyTransport(work=0.005)
        drain = DrainSender(ring.tail(buffer=2000, overflow=L10), transport, name="t", share=0.1)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain.run)
            ring.publish("app", "web.1", [f"n={i}" for i in range(1500)], WHEN)  # 3 deliveries
            with trio.fail_after(100):
                while drain.statistics.deliveries < 3:
                    await trio.sleep(0.001)
            nursery.cancel_scope.cancel()
        gaps = [b - a for a, b in zip(transport.began, transport.began[1:], strict=False)]
        # 5 ms of work at a 10% share: 45 ms of rest (at least) before the next delivery.
        assert len(gaps) == 2 and all(gap >= 0.045 for gap in gaps), gaps

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
