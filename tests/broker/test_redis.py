"""What only the Redis broker has: its keys and their TTLs, nothing written for runs nobody
watches or keeps, a reader whose position was trimmed away, wake-ups reaching every worker,
a start that fails in one line, a stop that never hangs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from agentd.broker.base import BrokerStartupError, SubscriberDropped
from agentd.broker.redis import BLOCK_MS, RedisBroker
from tests import redisd
from tests.broker.helpers import (
    eventually,
    new_id,
    nothing_more,
    numbered,
    run_events,
    take,
    until_done,
)
from tests.server import free_port

MakeBroker = Callable[..., Awaitable[RedisBroker]]


@pytest.fixture
async def make_broker(redis_url: str, prefix: str) -> AsyncIterator[MakeBroker]:
    started: list[RedisBroker] = []

    async def make(**options: Any) -> RedisBroker:
        broker = RedisBroker(redis_url, prefix=prefix, **options)
        await broker.start()
        started.append(broker)
        return broker

    yield make
    for broker in started:
        await asyncio.wait_for(broker.stop(), 10)


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    conn = aioredis.Redis.from_url(redis_url)
    yield conn
    await conn.aclose()


async def test_keys_and_ttls(
    make_broker: MakeBroker, client: aioredis.Redis, prefix: str, redis_url: str
) -> None:
    pub = await make_broker(resumable_ttl=120)
    sub_broker = await make_broker()
    run, thread = new_id(), new_id()
    thread_sub = await sub_broker.subscribe_thread(thread)
    await run_events(pub, run, thread, numbered(3), resumable=True, status=None)
    await take(thread_sub, 3)
    meta = await client.hgetall(f"{prefix}run:{run}")
    assert meta[b"thread"] == thread.encode() and meta[b"resumable"] == b"1"
    assert meta[b"ended"] == b"0" and meta[b"shown"] == b"updates,values"
    assert int(meta[b"bytes"]) == 18
    assert await client.xlen(f"{prefix}run:{run}:events") == 3
    assert await client.xlen(f"{prefix}thread:{thread}:events") == 3
    assert await client.ttl(f"{prefix}run:{run}:events") > 3600  # open: long
    await pub.end(run, "success", thread)
    assert 100 < await client.ttl(f"{prefix}run:{run}:events") <= 120  # ended: the TTL
    assert 100 < await client.ttl(f"{prefix}run:{run}") <= 120
    assert 100 < await client.ttl(f"{prefix}thread:{thread}:events") <= 120
    assert await client.hget(f"{prefix}run:{run}", "ended") == b"1"
    entries = await client.xrange(f"{prefix}run:{run}:events")
    assert entries[-1][1][b"e"] == b"__done__" and entries[-1][1][b"k"] == b"1"
    assert [e[1][b"p"] for e in entries[1:]] == [e[0] for e in entries[:-1]]
    assert 0 < await client.pttl(f"{prefix}thread:{thread}:subs") <= 30_000
    # Every key agentd wrote has a TTL: nothing outlives what it is for.
    for key in redisd.keys(redis_url, prefix):
        assert await client.ttl(key) > 0, key


async def test_nothing_written_for_a_run_nobody_watches_or_keeps(
    make_broker: MakeBroker, client: aioredis.Redis, prefix: str
) -> None:
    pub = await make_broker()
    run, thread = new_id(), new_id()
    await run_events(pub, run, thread, numbered(50))
    assert not await client.exists(f"{prefix}run:{run}:events")
    assert not await client.exists(f"{prefix}thread:{thread}:events")
    assert await client.hget(f"{prefix}run:{run}", "ended") == b"1"
    assert 0 < await client.ttl(f"{prefix}run:{run}") <= 60


async def test_a_reader_trimmed_past_drops_its_live_subscribers(
    make_broker: MakeBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    pub = await make_broker(resumable_max_events=20)
    sub_broker = await make_broker()
    run, thread = new_id(), new_id()
    sub = await sub_broker.subscribe(run)
    await run_events(pub, run, thread, numbered(2), resumable=True, status=None)
    await take(sub, 2)
    # The subscribing process stalls while the run publishes past the stream's cap.
    resume = asyncio.Event()
    xread = sub_broker._reader.xread

    async def stalled(*args: Any, **kwargs: Any) -> Any:
        await resume.wait()
        return await xread(*args, **kwargs)

    monkeypatch.setattr(sub_broker._reader, "xread", stalled)
    await asyncio.sleep(BLOCK_MS / 1000 + 0.2)  # the XREAD under way returns first
    for name, data in numbered(100, start=2):
        await pub.publish(run, name, data)
    await pub.end(run, "success", thread)
    resume.set()
    await eventually(lambda: sub.dropped)
    with pytest.raises(SubscriberDropped):
        await sub.get(0.1)
    # A replay reads what is left: the newest events and the end.
    replay = await sub_broker.subscribe(run, "-1")
    got = await until_done(replay)
    assert 15 <= len(got) <= 20


async def test_a_replay_joins_live_delivery_with_no_gap_and_no_duplicate(
    make_broker: MakeBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reader delivers entries while a replay's page is on its way back, entries that the
    page does not hold: the replay must read again (no gap), and must not also queue them
    (no duplicate)."""
    pub = await make_broker()
    sub_broker = await make_broker()
    run, thread = new_id(), new_id()
    live = await sub_broker.subscribe(run)
    await run_events(pub, run, thread, numbered(5), resumable=True, status=None)
    await take(live, 5)
    xrange = sub_broker._redis.xrange
    raced = 0

    async def racing_xrange(*args: Any, **kwargs: Any) -> Any:
        nonlocal raced
        page = await xrange(*args, **kwargs)
        if raced < 2:  # the first pages: more is published, and delivered live, meanwhile
            raced += 1
            for name, data in numbered(5, start=5 * raced):
                await pub.publish(run, name, data)
            if raced == 2:
                await pub.end(run, "success", thread)
            await take(live, 5)  # the reader has delivered them (to the replay too)
        return page

    monkeypatch.setattr(sub_broker._redis, "xrange", racing_xrange)
    sub = await sub_broker.subscribe(run, "-1")
    got = await until_done(sub)
    assert raced == 2
    assert [e[2] for e in got[:-1]] == [d for _, d in numbered(15)]
    await nothing_more(sub)


async def test_from_now_on_means_after_what_redis_has(
    make_broker: MakeBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A subscription starts after the stream's newest entry, even when this process's reader
    has not delivered it yet: what was published before does not reach it live."""
    pub = await make_broker()
    sub_broker = await make_broker()
    run, thread = new_id(), new_id()
    early = await sub_broker.subscribe(run)
    resume = asyncio.Event()
    xread = sub_broker._reader.xread

    async def stalled(*args: Any, **kwargs: Any) -> Any:
        await resume.wait()
        return await xread(*args, **kwargs)

    monkeypatch.setattr(sub_broker._reader, "xread", stalled)
    await asyncio.sleep(BLOCK_MS / 1000 + 0.2)  # the XREAD under way returns first
    await run_events(pub, run, thread, numbered(3))
    late = await sub_broker.subscribe(run)
    resume.set()
    assert len(await until_done(early)) == 4
    await nothing_more(late)


async def test_wake_and_cancel_reach_every_worker(make_broker: MakeBroker) -> None:
    sender = await make_broker()
    workers = [await make_broker() for _ in range(3)]
    wakes: list[list[float | None]] = [[] for _ in workers]
    cancels: list[list[tuple[str, str]]] = [[] for _ in workers]
    for broker, w, c in zip(workers, wakes, cancels, strict=True):
        broker.attach_worker(w.append, lambda r, a, c=c: c.append((r, a)) or False)
    deadline = time.monotonic() + 5
    while not all(wakes):
        assert time.monotonic() < deadline
        await sender.wake()
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)
    for w in wakes:
        w.clear()
    started = time.monotonic()
    await sender.wake(12.5)
    await sender.cancel("r1", "interrupt")
    await eventually(lambda: all(w == [12.5] for w in wakes))
    await eventually(lambda: all(c == [("r1", "interrupt")] for c in cancels))
    assert time.monotonic() - started < 1.0  # milliseconds, not a poll interval


async def test_start_fails_in_one_line_when_redis_is_unreachable() -> None:
    broker = RedisBroker(f"redis://:secret@127.0.0.1:{free_port()}/0")
    started = time.monotonic()
    with pytest.raises(BrokerStartupError) as caught:
        await broker.start()
    message = str(caught.value)
    assert "\n" not in message and "unreachable" in message
    assert "secret" not in message
    assert time.monotonic() - started < 10


async def test_stop_is_prompt_with_subscribers_waiting(make_broker: MakeBroker) -> None:
    broker = await make_broker()
    broker.attach_worker(lambda _: None, lambda *_: False)
    subs = [await broker.subscribe(new_id()) for _ in range(5)]
    subs.append(await broker.subscribe_thread(new_id(), "-1"))
    await asyncio.sleep(0.1)
    started = time.monotonic()
    await broker.stop()
    assert time.monotonic() - started < 2
    for sub in subs:
        sub.close()


async def test_keys_are_gone_once_their_ttl_passes(
    make_broker: MakeBroker, redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("agentd.broker.redis.LIVE_TTL_SECONDS", 0.3)
    pub = await make_broker(resumable_ttl=0.3)
    sub_broker = await make_broker(registry_ttl=0.3)
    run, thread = new_id(), new_id()
    sub = await sub_broker.subscribe(run)
    thread_sub = await sub_broker.subscribe_thread(thread)
    await run_events(pub, run, thread, numbered(5), resumable=True)
    await until_done(sub)
    sub.close()
    thread_sub.close()
    await pub.stop()
    await sub_broker.stop()
    await asyncio.sleep(1.0)
    left = [k for k in redisd.keys(redis_url, prefix) if b":poke:" not in k]
    assert left == []
