"""Conformance: a thread's subscribers get the events each run's stream modes show, each
run's end as a ``run_done`` metadata event and the thread's own events; with a Last-Event-ID,
first the kept events of its resumable runs (until their TTL)."""

from __future__ import annotations

import asyncio

import orjson

from agentd.broker.base import DONE
from tests.broker.conftest import MakePair, Pair
from tests.broker.helpers import (
    assert_increasing,
    names,
    new_id,
    nothing_more,
    numbered,
    run_events,
    take,
    until_done,
)

SHOWN = frozenset({"values"})


async def test_thread_subscriber_sees_what_each_run_shows(pair: Pair) -> None:
    run, thread = new_id(), new_id()
    sub = await pair.sub.subscribe_thread(thread)
    events = [("values", b"v0"), ("updates", b"u0"), ("values|sub:1", b"v1")]
    await run_events(pair.pub, run, thread, events, shown=SHOWN, status="error")
    got = await take(sub, 3)
    assert [(e[1], e[2]) for e in got] == [
        ("values", b"v0"),
        ("values|sub:1", b"v1"),
        ("metadata", orjson.dumps({"status": "run_done", "run_id": run})),
    ]
    await pair.pub.publish_thread(thread, "state_update", b'{"state":1}')
    assert [e[1] for e in await take(sub, 1)] == ["state_update"]
    await nothing_more(sub)
    assert_increasing(got)
    sub.close()


async def test_thread_subscribers_see_only_their_thread(pair: Pair) -> None:
    thread, other = new_id(), new_id()
    sub = await pair.sub.subscribe_thread(other)
    await run_events(pair.pub, new_id(), thread, numbered(2), shown=SHOWN)
    await pair.pub.publish_thread(thread, "state_update", b"{}")
    await nothing_more(sub)
    sub.close()


async def test_run_done_of_a_run_that_never_ran_here(pair: Pair) -> None:
    run, thread = new_id(), new_id()
    sub = await pair.sub.subscribe_thread(thread)
    await pair.pub.end(run, "interrupted", thread)
    got = await take(sub, 1)
    assert orjson.loads(got[0][2]) == {"status": "run_done", "run_id": run}
    sub.close()


async def test_thread_replay_of_kept_events_then_live(pair: Pair) -> None:
    thread = new_id()
    kept_run, other_run = new_id(), new_id()
    live = await pair.sub.subscribe_thread(thread)
    events = [("values", b"k0"), ("updates", b"hidden"), ("values", b"k1"), ("values", b"k2")]
    await run_events(pair.pub, kept_run, thread, events, resumable=True, shown=SHOWN)
    await run_events(pair.pub, other_run, thread, [("values", b"not kept")], shown=SHOWN)
    await pair.pub.publish_thread(thread, "state_update", b"{}")
    seen = await take(live, 7)  # k0 k1 k2 run_done, "not kept", run_done, state_update
    assert [e[2] for e in seen[:3]] == [b"k0", b"k1", b"k2"]

    sub = await pair.sub.subscribe_thread(thread, "-1")
    assert [e[2] for e in await take(sub, 3)] == [b"k0", b"k1", b"k2"]
    await nothing_more(sub)
    await pair.pub.publish_thread(thread, "state_update", b'{"n":2}')
    assert [e[2] for e in await take(sub, 1)] == [b'{"n":2}']
    sub.close()

    mid = await pair.sub.subscribe_thread(thread, seen[0][0])
    assert [e[2] for e in await take(mid, 2)] == [b"k1", b"k2"]
    await nothing_more(mid)
    mid.close()
    live.close()


async def test_thread_replay_ends_with_the_ttl(make_pair: MakePair) -> None:
    pair = await make_pair(resumable_ttl=0.5)
    thread = new_id()
    await run_events(pair.pub, new_id(), thread, numbered(2), resumable=True, shown=SHOWN)
    sub = await pair.sub.subscribe_thread(thread, "-1")
    assert len(await take(sub, 2)) == 2
    sub.close()
    await asyncio.sleep(1.2)
    expired = await pair.sub.subscribe_thread(thread, "-1")
    await nothing_more(expired)
    expired.close()


async def test_thread_subscriber_during_a_run(pair: Pair) -> None:
    """Subscribed mid-run without a Last-Event-ID: from now on, then the run's end."""
    run, thread = new_id(), new_id()
    run_sub = await pair.sub.subscribe(run)
    await run_events(pair.pub, run, thread, numbered(3), resumable=True, shown=SHOWN, status=None)
    await take(run_sub, 3)
    sub = await pair.sub.subscribe_thread(thread)
    await pair.pub.publish(run, "values", b"late")
    await pair.pub.end(run, "success", thread)
    got = await take(sub, 2)
    assert got[0][2] == b"late" and got[1][1] == "metadata"
    assert names(await until_done(run_sub)) == ["values", DONE]
    sub.close()
