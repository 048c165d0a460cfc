"""The keep-alive pool: newest first, a cap per dyno, stale and old connections swept."""

from __future__ import annotations

import trio

from router.codec import END, NEED_DATA
from router.net import Timeouts
from router.pool import Pool, Upstream
from tests.router.support import DynoRequest, FakeDyno, run


async def _exchange(pool: Pool, dyno: FakeDyno) -> Upstream:
    """A new connection that carried one exchange to its end, as the proxy leaves it."""
    upstream = await pool.connect(dyno.address, 5.0)
    head = upstream.codec.request(
        b"GET", b"/", [(b"Host", b"host", b"a")], body=False, chunked=False
    )
    await upstream.stream.send_all(head)
    while (event := upstream.codec.next_event()) is not END:
        if event is NEED_DATA:
            upstream.codec.receive_data(await upstream.stream.receive())
    return upstream


def test_newest_first_within_the_cap() -> None:
    async def scenario() -> None:
        dyno = FakeDyno()
        async with trio.open_nursery() as nursery:
            await dyno.start(nursery)
            pool = Pool(Timeouts(1.0), max_idle=2)
            first, second, third = [await _exchange(pool, dyno) for _ in range(3)]
            for upstream in (first, second, third):
                pool.release(upstream, now=0.0)
            assert first.stream.closed  # over the cap: the oldest goes
            assert pool.take(dyno.address) is third and third.reused
            assert pool.take(dyno.address) is second
            assert pool.take(dyno.address) is None
            nursery.cancel_scope.cancel()

    run(scenario)


def test_sweep_closes_old_and_stale_connections() -> None:
    async def hang_up_after(req: DynoRequest) -> None:
        await req.respond(200, b"ok")
        await req.stream.aclose()

    async def scenario() -> None:
        keeps, drops = FakeDyno(), FakeDyno(handler=hang_up_after)
        async with trio.open_nursery() as nursery:
            await keeps.start(nursery)
            await drops.start(nursery)
            pool = Pool(Timeouts(1.0), idle_timeout=10.0)
            old, fresh, dropped = (
                await _exchange(pool, keeps),
                await _exchange(pool, keeps),
                await _exchange(pool, drops),
            )
            pool.release(old, now=0.0)
            pool.release(fresh, now=95.0)
            pool.release(dropped, now=95.0)
            while not dropped.stale():  # the dyno's close reaches us
                await trio.sleep(0.01)
            pool.sweep(now=100.0)
            assert old.stream.closed and dropped.stream.closed and not fresh.stream.closed
            assert pool.take(keeps.address) is fresh and pool.take(drops.address) is None
            nursery.cancel_scope.cancel()

    run(scenario)


def test_an_unfinished_exchange_is_not_kept() -> None:
    async def scenario() -> None:
        dyno = FakeDyno()
        async with trio.open_nursery() as nursery:
            await dyno.start(nursery)
            pool = Pool(Timeouts(1.0))
            upstream = await pool.connect(dyno.address, 5.0)
            pool.release(upstream, now=0.0)
            assert upstream.stream.closed and pool.take(dyno.address) is None
            nursery.cancel_scope.cancel()

    run(scenario)
