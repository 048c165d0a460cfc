"""The logplex ring: cap, filters, rendering, tails (in order, L11 when slow), subscribers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from dynod.core.logline import LogLine
from dynod.errors import DynodError
from dynod.logs.logplex import LogFilter, Logplex, LogRing

WHEN = 1795706350.123456  # 2026-11-26T15:19:10.123456+00:00


def texts(start: int, count: int) -> list[str]:
    return [f"line {i}" for i in range(start, start + count)]


def run(test: Callable[[], Awaitable[None]]) -> None:
    trio.run(test, clock=trio.testing.MockClock(autojump_threshold=0))


def mixed_ring(history: int = 1500) -> LogRing:
    ring = LogRing(history=history)
    ring.publish("app", "web.1", ["w1 a", "w1 b"], WHEN)
    ring.publish("app", "webby.1", ["webby"], WHEN + 1)
    ring.publish("heroku", "web.2", ["State changed from starting to up"], WHEN + 2)
    ring.publish("app", "web.2", ["w2 a"], WHEN + 3)
    ring.publish("app", "worker.1", ["job"], WHEN + 4)
    ring.publish("heroku", "router", ["at=info method=GET"], WHEN + 5)
    return ring


def test_ring_keeps_only_the_configured_history() -> None:
    ring = LogRing(history=5)
    ring.publish("app", "web.1", texts(0, 3), WHEN)
    ring.publish("app", "web.1", texts(3, 4), WHEN + 1)
    assert [line.text for line in ring.recent(100)] == texts(2, 5)
    ring.publish("app", "web.1", texts(7, 10_000), WHEN + 2)  # one batch far above the cap
    assert [line.text for line in ring.recent(100)] == texts(10_002, 5)
    stats = ring.statistics()
    assert (stats.lines_published, stats.lines_held) == (10_007, 5)


def test_recent_defaults_and_limits() -> None:
    ring = LogRing()
    ring.publish("app", "web.1", texts(0, 300), WHEN)
    assert [line.text for line in ring.recent()] == texts(200, 100)
    assert [line.text for line in ring.recent(3)] == texts(297, 3)
    assert ring.recent(0) == [] and ring.recent(-1) == []
    ring.publish("app", "web.1", [], WHEN)
    assert ring.statistics().lines_published == 300


def test_recent_filters_by_dyno_process_type_and_source() -> None:
    ring = mixed_ring()

    def shown(n: int, **filters: str) -> list[str]:
        lines = ring.recent(n, LogFilter(**filters))
        return [f"{line.source}[{line.dyno}] {line.text}" for line in lines]

    assert shown(100, dyno="web.1") == ["app[web.1] w1 a", "app[web.1] w1 b"]
    assert shown(100, ps="web") == [
        "app[web.1] w1 a",
        "app[web.1] w1 b",
        "heroku[web.2] State changed from starting to up",
        "app[web.2] w2 a",
    ]
    assert shown(2, ps="web") == [
        "heroku[web.2] State changed from starting to up",
        "app[web.2] w2 a",
    ]
    assert shown(100, ps="router") == ["heroku[router] at=info method=GET"]
    assert shown(100, source="heroku") == [
        "heroku[web.2] State changed from starting to up",
        "heroku[router] at=info method=GET",
    ]
    assert shown(100, ps="web", source="app") == [
        "app[web.1] w1 a",
        "app[web.1] w1 b",
        "app[web.2] w2 a",
    ]
    assert shown(100, dyno="web.3") == []
    assert len(ring.recent(10_000, LogFilter())) == 7


def test_filtered_recent_looks_past_other_dynos_but_not_past_the_ring() -> None:
    ring = mixed_ring(history=4)  # web.1's lines have left the ring
    assert ring.recent(100, LogFilter(dyno="web.1")) == []
    assert [line.text for line in ring.recent(100, LogFilter(ps="web"))] == [
        "State changed from starting to up",
        "w2 a",
    ]


def test_unknown_source_and_bad_sizes_are_refused() -> None:
    with pytest.raises(DynodError, match="unknown log source 'apps': use app or heroku"):
        LogFilter(source="apps")
    with pytest.raises(DynodError, match=r"\[logplex\] history must be a positive"):
        LogRing(history=0)
    with pytest.raises(DynodError, match=r"\[logplex\] tail_buffer must be a positive"):
        Logplex(tail_buffer=0)


def test_lines_render_as_heroku_does() -> None:
    ring = LogRing()
    ring.publish("app", "web.1", ['Started GET "/"'], WHEN)
    ring.publish("heroku", "router", ["at=info"], 1795706350.0)
    assert [line.render() for line in ring.recent()] == [
        '2026-11-26T15:19:10.123456+00:00 app[web.1]: Started GET "/"',
        "2026-11-26T15:19:10.000000+00:00 heroku[router]: at=info",
    ]
    assert ring.recent(1)[0] == LogLine(1795706350.0, "heroku", "router", "at=info")


@given(
    st.lists(st.lists(st.text(max_size=5), max_size=40), max_size=30),
    st.integers(min_value=1, max_value=60),
    st.integers(min_value=0, max_value=200),
)
def test_recent_is_the_tail_of_everything_published(
    batches: list[list[str]], history: int, n: int
) -> None:
    ring = LogRing(history=history)
    published: list[LogLine] = []
    for index, batch in enumerate(batches):
        dyno = f"web.{index % 3}"
        ring.publish("app", dyno, batch, WHEN + index)
        published += [LogLine(WHEN + index, "app", dyno, text) for text in batch]
    held = published[-history:]
    assert ring.recent(n) == (held[-n:] if n else [])
    web1 = [line for line in held if line.dyno == "web.1"]
    assert ring.recent(n, LogFilter(dyno="web.1")) == (web1[-n:] if n else [])


def test_subscribers_see_every_line_in_order_until_they_unsubscribe() -> None:
    ring = LogRing(history=10)
    seen: list[tuple[str, str, Sequence[str], float]] = []
    unsubscribe = ring.subscribe(lambda *batch: seen.append(batch))
    ring.publish("app", "web.1", texts(0, 5000), WHEN)  # far more than the ring keeps
    ring.publish("heroku", "web.1", ["Restarting"], WHEN + 1)
    assert seen == [
        ("app", "web.1", texts(0, 5000), WHEN),
        ("heroku", "web.1", ["Restarting"], WHEN + 1),
    ]
    assert ring.statistics().subscribers == 1
    unsubscribe()
    ring.publish("app", "web.1", ["late"], WHEN + 2)
    assert len(seen) == 2 and ring.statistics().subscribers == 0


def test_tail_follows_new_lines_in_order_across_batches() -> None:
    async def main() -> None:
        ring = LogRing()
        ring.publish("app", "web.1", ["before"], WHEN)
        received: list[str] = []
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:

                async def read() -> None:
                    with ring.tail() as tail:
                        async for line in tail:
                            received.append(line.text)
                            if len(received) == 2500:
                                return

                nursery.start_soon(read)
                await trio.testing.wait_all_tasks_blocked()
                for batch in range(50):
                    ring.publish("app", "web.1", texts(batch * 50, 50), WHEN + batch)
                    if batch % 7 == 0:
                        await trio.sleep(0.01)  # the reader drains some batches one by one
        assert received == texts(0, 2500)
        assert ring.statistics().tails == 0  # leaving `with` unregistered it

    run(main)


def test_tail_filters_and_starts_from_the_last_lines() -> None:
    async def main() -> None:
        ring = mixed_ring()
        with trio.fail_after(5), ring.tail(LogFilter(ps="web"), last=2) as tail:
            ring.publish("app", "worker.1", ["not for this tail"], WHEN + 6)
            ring.publish("app", "web.3", ["new"], WHEN + 7)
            batch = await tail.receive_batch()
        assert [f"{line.dyno} {line.text}" for line in batch] == [
            "web.2 State changed from starting to up",
            "web.2 w2 a",
            "web.3 new",
        ]

    run(main)


def test_slow_tail_gets_l11_then_the_newest_lines() -> None:
    async def main() -> None:
        ring = LogRing()
        with trio.fail_after(5), ring.tail() as tail:
            for batch in range(30):  # 3,000 lines, 100 per read, while the reader is away
                ring.publish("app", "web.1", texts(batch * 100, 100), 1000.0 + batch)
            received = [await tail.__anext__() for _ in range(1025)]
            ring.publish("app", "web.1", ["after"], 2000.0)
            assert (await tail.__anext__()).text == "after"
        notice, lines = received[0], received[1:]
        assert (notice.source, notice.dyno) == ("heroku", "logplex")
        # The buffer (1024) first overflowed with the 11th batch, sent at 1010.0.
        assert notice.text == (
            "Error L11 (Tail buffer overflow) -> This tail session dropped 1976 messages"
            " since 1970-01-01T00:16:50.000000+00:00."
        )
        assert [line.text for line in lines] == texts(1976, 1024)
        assert ring.statistics().lines_dropped == 1976

    run(main)


def test_a_filtered_tail_counts_only_its_own_lines_and_takes_another_overflow_notice() -> None:
    async def main() -> None:
        ring = LogRing()
        drain = ring.tail(LogFilter(dyno="web.1"), buffer=10, overflow="L10: {n} since {since}")
        ring.publish("app", "web.2", texts(0, 100), 0.0)
        ring.publish("app", "web.1", texts(0, 15), 1.0)
        with trio.fail_after(5):
            batch = await drain.receive_batch()
        notice = "L10: 5 since 1970-01-01T00:00:01.000000+00:00"
        assert [line.text for line in batch] == [notice, *texts(5, 10)]
        drain.close()

    run(main)


def test_publish_never_waits_for_a_stuck_tail() -> None:
    async def main() -> None:
        ring = LogRing()
        stuck = ring.tail()

        async def stuck_reader() -> None:
            async for _ in stuck:
                await trio.sleep_forever()  # takes one batch, then never reads again

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(stuck_reader)
                ring.publish("app", "web.1", ["first"], WHEN)
                await trio.testing.wait_all_tasks_blocked()
                for batch in range(200):
                    ring.publish("app", "web.1", texts(batch * 1000, 1000), WHEN)
                    await trio.lowlevel.checkpoint()
                stats = ring.statistics()
                assert (stats.lines_published, stats.lines_dropped) == (200_001, 200_000 - 1024)
                assert [line.text for line in ring.recent(1)] == ["line 199999"]
                nursery.cancel_scope.cancel()
        stuck.close()

    run(main)


def test_closing_a_tail_ends_its_reader_and_stops_delivery() -> None:
    async def main() -> None:
        ring = LogRing()
        tail = ring.tail()
        received: list[str] = []

        async def read() -> None:
            async for line in tail:
                received.append(line.text)

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                ring.publish("app", "web.1", ["one"], WHEN)
                await trio.testing.wait_all_tasks_blocked()
                tail.close()  # the parked reader wakes and its loop ends
            ring.publish("app", "web.1", ["two"], WHEN)
            assert await tail.receive_batch() == []
        assert received == ["one"]
        assert ring.statistics().tails == 0

    run(main)


def test_logplex_keeps_one_ring_per_app_and_removing_one_ends_its_tails() -> None:
    async def main() -> None:
        logplex = Logplex(history=3)
        logplex.ring("shop").publish("app", "web.1", texts(0, 5), WHEN)
        logplex.ring("blog").publish("app", "web.1", ["hello"], WHEN)
        assert [line.text for line in logplex.ring("shop").recent()] == texts(2, 3)
        assert logplex.ring("blog").history == 3
        tail = logplex.ring("shop").tail()
        logplex.remove("shop")
        with trio.fail_after(5):
            assert [line async for line in tail] == []
        assert logplex.ring("shop").recent() == []

    run(main)


def test_l11_counts_the_lines_of_a_batch_bigger_than_the_ring() -> None:
    async def main() -> None:
        ring = LogRing()  # keeps 1500; a tail buffers 1024
        with trio.fail_after(5), ring.tail() as tail:
            ring.publish("app", "web.1", texts(0, 5000), 7.0)  # one read of 5,000 lines
            batch = await tail.receive_batch()
        assert batch[0].text == (
            "Error L11 (Tail buffer overflow) -> This tail session dropped 3976 messages"
            " since 1970-01-01T00:00:07.000000+00:00."
        )
        assert [line.text for line in batch[1:]] == texts(3976, 1024)
        assert ring.statistics().lines_dropped == 3976

    run(main)


def test_a_tail_starts_with_all_the_held_lines_it_asked_for() -> None:
    async def main() -> None:
        ring = LogRing()
        ring.publish("app", "web.1", texts(0, 1500), WHEN)
        with trio.fail_after(5), ring.tail(last=1500) as tail:  # `logs -n 1500 -t`
            ring.publish("app", "web.1", ["new"], WHEN + 1)
            batch = await tail.receive_batch()
        assert [line.text for line in batch] == [*texts(0, 1500), "new"]
        assert ring.statistics().lines_dropped == 0

    run(main)
