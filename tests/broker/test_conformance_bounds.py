"""Conformance: what is kept of a run is capped (events and bytes, newest kept), and a
subscriber that does not read is dropped once more than its byte limit waits for it."""

from __future__ import annotations

import asyncio

import pytest

from agentd.broker.base import DONE, SubscriberDropped
from tests.broker.conftest import MakePair
from tests.broker.helpers import (
    assert_increasing,
    datas,
    eventually,
    new_id,
    numbered,
    run_events,
    until_done,
)


async def _replayed_suffix(make_pair: MakePair, n: int, size: int, **caps: int) -> list[bytes]:
    pair = await make_pair(**caps)
    run, thread = new_id(), new_id()
    await run_events(pair.pub, run, thread, numbered(n, size=size), resumable=True)
    # The memory broker caps what it has written behind (a few milliseconds later).
    await asyncio.sleep(0.2)
    sub = await pair.sub.subscribe(run, "-1")
    got = await until_done(sub, within=15)
    assert_increasing(got)
    published = [d for _, d in numbered(n, size=size)]
    kept = datas(got)
    assert kept, "the newest event is always kept"
    assert kept == published[-len(kept) :], "the newest events, contiguous"
    return kept


async def test_kept_events_are_capped_by_count(make_pair: MakePair) -> None:
    kept = await _replayed_suffix(make_pair, 300, 0, resumable_max_events=40)
    assert 40 * 7 // 8 - 1 <= len(kept) <= 40  # an eighth below the cap once over it


async def test_kept_events_are_capped_by_bytes(make_pair: MakePair) -> None:
    kept = await _replayed_suffix(make_pair, 200, 1000, resumable_max_bytes=16_000)
    assert sum(len(d) for d in kept) <= 16_000
    assert len(kept) >= 16_000 * 7 // 8 // 1006 - 1


async def test_a_subscriber_that_does_not_read_is_dropped(make_pair: MakePair) -> None:
    limit = 64 * 1024
    pair = await make_pair(subscriber_max_bytes=limit)
    run, thread = new_id(), new_id()
    slow = await pair.sub.subscribe(run)
    reader = await pair.sub.subscribe(run)
    calls: list[int] = []
    slow.on_drop(lambda: calls.append(1))
    high = 0
    pair.pub.open_run(run, thread, resumable=False, shown=frozenset({"values"}))
    for _, data in numbered(200, size=4096):
        await pair.pub.publish(run, "values", data)
        high = max(high, getattr(slow, "queued", 0))
        assert await reader.get(5) is not None  # one that keeps up is never dropped
    await eventually(lambda: slow.dropped)
    assert calls == [1]
    assert high <= limit + 4096 + 1024
    with pytest.raises(SubscriberDropped):
        await slow.get(0.1)
    await pair.pub.end(run, "success", thread)
    assert (await until_done(reader))[-1][1] == DONE
    assert not reader.dropped


async def test_a_dropped_subscriber_does_not_stop_the_run_or_others(make_pair: MakePair) -> None:
    pair = await make_pair(subscriber_max_bytes=8 * 1024)
    run, thread = new_id(), new_id()
    slow = await pair.sub.subscribe(run)
    await run_events(pair.pub, run, thread, numbered(50, size=1024))
    await eventually(lambda: slow.dropped)
    after = await pair.sub.subscribe(new_id())
    after.close()
