"""The Redis broker when Redis fails, on a throwaway redis-server of the test's own: killed
with -9 and restarted while runs publish and clients subscribe (publishing never raises nor
piles up, subscribing is a 503 meanwhile, everything resumes by itself), and flushed mid-run
(nothing wedges)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agentd.broker.base import DONE, BrokerUnavailable, SubscriberDropped, Subscription
from agentd.broker.redis import MAX_QUEUED_BYTES, RedisBroker
from tests.broker.helpers import eventually, new_id, numbered, run_events, take, until_done
from tests.redisd import RedisServer, new_prefix

SHOWN = frozenset({"values"})


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    with RedisServer(tmp_path).start() as srv:
        yield srv


async def _pair(server: RedisServer, **options: float) -> tuple[RedisBroker, RedisBroker]:
    prefix = new_prefix()
    pub = RedisBroker(server.url, prefix=prefix, **options)  # type: ignore[arg-type]
    sub = RedisBroker(server.url, prefix=prefix, **options)  # type: ignore[arg-type]
    await pub.start()
    await sub.start()
    return pub, sub


async def _ends(sub: Subscription, within: float = 10) -> str:
    """Wait until the subscription ends: "done" or "dropped"; fails if it just hangs."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            item = await sub.get(0.1)
        except SubscriberDropped:
            return "dropped"
        if item is not None and item[1] in (DONE, "metadata"):
            return "done"
    raise AssertionError("the subscriber neither ended nor was dropped")


async def _subscribe_when_back(
    broker: RedisBroker, run_id: str, within: float = 15
) -> Subscription:
    deadline = time.monotonic() + within
    while True:
        try:
            return await broker.subscribe(run_id)
        except BrokerUnavailable:
            assert time.monotonic() < deadline, "Redis came back, the broker did not"
            await asyncio.sleep(0.05)


async def _wake_reaches(pub: RedisBroker, wakes: list[float | None]) -> None:
    deadline = time.monotonic() + 15
    wakes.clear()
    while not wakes:
        assert time.monotonic() < deadline, "no wake-up reached the worker"
        await pub.wake(7.0)
        await asyncio.sleep(0.05)


async def test_killed_and_restarted_while_publishing_and_subscribing(
    server: RedisServer,
) -> None:
    pub, sub = await _pair(server, registry_ttl=1.5)
    wakes: list[float | None] = []
    sub.attach_worker(wakes.append, lambda *_: False)
    await _wake_reaches(pub, wakes)
    run, thread = new_id(), new_id()
    live = await sub.subscribe(run)
    await run_events(pub, run, thread, numbered(3), resumable=True, status=None)
    assert len(await take(live, 3)) == 3

    # Runs keep publishing and clients keep subscribing through the crash and the restart.
    stop = asyncio.Event()
    published = 0
    refused = 0

    async def publisher() -> None:
        nonlocal published
        while not stop.is_set():
            started = time.monotonic()
            await pub.publish(run, "values", b"x" * 500)
            assert time.monotonic() - started < 1.5, "a publish waited on a dead Redis"
            assert pub._ops_bytes <= MAX_QUEUED_BYTES + 4096  # bounded while Redis is gone
            published += 1
            await asyncio.sleep(0.002)

    async def subscriber() -> None:
        nonlocal refused
        while not stop.is_set():
            try:
                s = await sub.subscribe(new_id())
                s.close()
            except BrokerUnavailable as exc:
                assert exc.status_code == 503 and "unavailable" in exc.detail
                refused += 1
            await asyncio.sleep(0.02)

    tasks = [asyncio.ensure_future(publisher()), asyncio.ensure_future(subscriber())]
    await asyncio.sleep(0.2)
    server.kill()
    await asyncio.sleep(0.5)
    # Down: subscribing is a 503, publishing and ending go on, an attached subscriber's wait
    # ends at its timeout as usual (the API then asks storage whether the run ended).
    with pytest.raises(BrokerUnavailable):
        await sub.subscribe_thread(thread)
    with pytest.raises(BrokerUnavailable):
        await sub.subscribe(run, "-1")
    started = time.monotonic()
    item = await live.get(0.3)
    assert item is None or item[2] == b"x" * 500
    assert time.monotonic() - started < 1.0
    await pub.wake()  # a nudge: lost, never raised
    await pub.cancel(run, "interrupt")
    server.start()
    for broker in (sub, pub):
        back = await _subscribe_when_back(broker, new_id())
        back.close()
    await asyncio.sleep(0.3)
    stop.set()
    await asyncio.gather(*tasks)
    assert refused > 0 and published > 0

    # The subscriber that was attached through the crash may have missed events: dropped.
    await eventually(lambda: live.dropped, within=10)
    await asyncio.wait_for(pub.end(run, "success", thread), 6)

    # Back to normal without a manual step: runs, replays, threads, wake-ups.
    run2 = new_id()
    s2 = await sub.subscribe(run2)
    t2 = await sub.subscribe_thread(thread)
    await run_events(pub, run2, thread, numbered(5), resumable=True, shown=SHOWN)
    assert len(await until_done(s2)) == 6
    assert len(await take(t2, 6)) == 6  # five values, then run_done
    replay = await sub.subscribe(run2, "-1")
    assert len(await until_done(replay)) == 6
    await _wake_reaches(pub, wakes)
    await pub.stop()
    await sub.stop()


async def test_flushed_mid_run(server: RedisServer) -> None:
    pub, sub = await _pair(server, registry_ttl=0.6)
    wakes: list[float | None] = []
    sub.attach_worker(wakes.append, lambda *_: False)
    kept_run, live_run, thread = new_id(), new_id(), new_id()
    kept_sub = await sub.subscribe(kept_run)
    live_sub = await sub.subscribe(live_run)
    thread_sub = await sub.subscribe_thread(thread)
    await run_events(pub, kept_run, thread, numbered(5), resumable=True, shown=SHOWN, status=None)
    await run_events(pub, live_run, new_id(), numbered(5), status=None)
    await take(kept_sub, 5)
    await take(live_sub, 5)
    await take(thread_sub, 5)

    server.flushall()
    for name, data in numbered(5, start=5):
        await pub.publish(kept_run, name, data)
        await pub.publish(live_run, name, data)
        await asyncio.sleep(0.05)
    await pub.end(kept_run, "success", thread)
    await pub.end(live_run, "success")

    # Nothing waits forever: each gets its run's end, or is dropped (events were lost).
    for s in (kept_sub, live_sub, thread_sub):
        assert await _ends(s) in ("done", "dropped")
    # What was written since the flush is replayed, and ends.
    replay = await sub.subscribe(kept_run, "-1")
    assert replay.kept
    got = await until_done(replay)
    assert [e[2] for e in got[:-1]] == [d for _, d in numbered(5, start=5)]
    # New runs, threads and wake-ups work as before.
    run = new_id()
    fresh = await sub.subscribe(run)
    await run_events(pub, run, thread, numbered(3))
    assert len(await until_done(fresh)) == 4
    await _wake_reaches(pub, wakes)
    await pub.stop()
    await sub.stop()
