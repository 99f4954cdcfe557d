"""Conformance: a run's events reach its subscribers (live, filtered, ended by DONE), and a
resumable run's are replayed after a Last-Event-ID (from the start, mid-way, after the end,
not after the TTL); a run that is not resumable is live only."""

from __future__ import annotations

import asyncio

from agentd.broker.base import DONE
from tests.broker.conftest import MakePair, Pair
from tests.broker.helpers import (
    assert_increasing,
    datas,
    names,
    new_id,
    nothing_more,
    numbered,
    run_events,
    take,
    until_done,
)


async def test_live_events_in_order_then_done(pair: Pair) -> None:
    run, thread = new_id(), new_id()
    sub = await pair.sub.subscribe(run)
    await run_events(pair.pub, run, thread, numbered(5), status="interrupted")
    got = await until_done(sub)
    assert datas(got) == [d for _, d in numbered(5)]
    assert names(got) == ["values"] * 5 + [DONE]
    assert got[-1][2] == b"interrupted"
    assert_increasing(got)
    assert not sub.kept
    sub.close()


async def test_every_subscriber_gets_every_event(pair: Pair) -> None:
    run, thread = new_id(), new_id()
    subs = [await pair.sub.subscribe(run) for _ in range(3)] + [await pair.pub.subscribe(run)]
    await run_events(pair.pub, run, thread, numbered(4))
    results = [await until_done(s) for s in subs]
    assert all(r == results[0] for r in results)
    assert len(results[0]) == 5


async def test_subscribers_of_other_runs_see_nothing(pair: Pair) -> None:
    run, other, thread = new_id(), new_id(), new_id()
    sub = await pair.sub.subscribe(other)
    await run_events(pair.pub, run, thread, numbered(3))
    await nothing_more(sub)
    sub.close()


async def test_only_keeps_the_names_asked_for_and_done(pair: Pair) -> None:
    run, thread = new_id(), new_id()
    sub = await pair.sub.subscribe(run, only=frozenset({"values", "error"}))
    events = [("updates", b"u1"), ("values", b"v1"), ("messages|sub:1", b"m"), ("error", b"e")]
    await run_events(pair.pub, run, thread, events)
    got = await until_done(sub)
    assert names(got) == ["values", "error", DONE]
    run2 = new_id()
    empty2 = await pair.sub.subscribe(run2, only=frozenset())
    await run_events(pair.pub, run2, thread, [("values", b"v")])
    assert names(await until_done(empty2)) == [DONE]


async def test_a_live_subscriber_after_the_end_gets_nothing(pair: Pair) -> None:
    """Not kept and ended: nothing comes (the API re-checks the run's status at keep-alives)."""
    run, thread = new_id(), new_id()
    first = await pair.sub.subscribe(run)
    await run_events(pair.pub, run, thread, numbered(2))
    await until_done(first)
    late = await pair.sub.subscribe(run)
    assert not late.kept
    await nothing_more(late)
    late.close()
    resumed = await pair.sub.subscribe(run, "-1")
    assert not resumed.kept
    await nothing_more(resumed)
    resumed.close()


async def test_resumable_replay_from_the_start_mid_way_and_after_the_end(pair: Pair) -> None:
    run, thread = new_id(), new_id()
    shown = frozenset({"values", "updates"})
    live = await pair.sub.subscribe(run)
    events = [("values", b"v0"), ("custom", b"c0"), ("updates", b"u0"), ("values", b"v1")]
    await run_events(pair.pub, run, thread, events, resumable=True, shown=shown)
    seen = await until_done(live)
    assert names(seen) == ["values", "custom", "updates", "values", DONE]

    # From the start: what the stream shows (kept), not "custom"; then DONE.
    for start in ("-1", "0", "-"):
        sub = await pair.sub.subscribe(run, start)
        assert sub.kept
        got = await until_done(sub)
        assert names(got) == ["values", "updates", "values", DONE]
        assert [e[0] for e in got[:3]] == [seen[0][0], seen[2][0], seen[3][0]]
        sub.close()

    # Mid-way: exactly what follows that id.
    sub = await pair.sub.subscribe(run, seen[2][0])
    got = await until_done(sub)
    assert [e[0] for e in got[:-1]] == [seen[3][0]] and got[-1][1] == DONE
    sub.close()

    # After the last event: only the end.
    sub = await pair.sub.subscribe(run, seen[3][0])
    assert names(await until_done(sub)) == [DONE]
    await nothing_more(sub)
    sub.close()

    # Filtered replay.
    sub = await pair.sub.subscribe(run, "-1", only=frozenset({"updates"}))
    assert names(await until_done(sub)) == ["updates", DONE]
    sub.close()


async def test_replay_of_a_running_resumable_run_goes_live_without_gap(pair: Pair) -> None:
    run, thread = new_id(), new_id()
    live = await pair.sub.subscribe(run)
    await run_events(pair.pub, run, thread, numbered(30), resumable=True, status=None)
    await take(live, 30)  # another process's events take a moment to arrive
    sub = await pair.sub.subscribe(run, "-1")
    assert sub.kept
    first = await take(sub, 10)
    for name, data in numbered(30, start=30):
        await pair.pub.publish(run, name, data)
    await pair.pub.end(run, "success", thread)
    got = first + await until_done(sub)
    assert datas(got) == [d for _, d in numbered(60)]
    assert_increasing(got)


async def test_resumable_subscriber_before_the_run_opens_gets_everything(pair: Pair) -> None:
    run, thread = new_id(), new_id()
    sub = await pair.sub.subscribe(run, "-1")
    await run_events(pair.pub, run, thread, numbered(8), resumable=True)
    got = await until_done(sub)
    assert datas(got) == [d for _, d in numbered(8)]


async def test_not_resumable_is_live_only(pair: Pair) -> None:
    run, thread = new_id(), new_id()
    live = await pair.sub.subscribe(run)
    await run_events(pair.pub, run, thread, numbered(3), status=None)
    assert len(await take(live, 3)) == 3
    # Subscribed with a Last-Event-ID while it runs: nothing is kept, so from now on only.
    resumed = await pair.sub.subscribe(run, "-1")
    assert not resumed.kept
    await pair.pub.publish(run, "values", b"after")
    await pair.pub.end(run, "success", thread)
    assert datas(await until_done(resumed)) == [b"after"]
    assert datas(await until_done(live)) == [b"after"]


async def test_replay_ends_with_the_ttl(make_pair: MakePair) -> None:
    pair = await make_pair(resumable_ttl=0.5)
    run, thread = new_id(), new_id()
    await run_events(pair.pub, run, thread, numbered(3), resumable=True)
    sub = await pair.sub.subscribe(run, "-1")
    assert sub.kept
    assert len(await until_done(sub)) == 4
    sub.close()
    await asyncio.sleep(1.2)
    expired = await pair.sub.subscribe(run, "-1")
    assert not expired.kept
    await nothing_more(expired)
    expired.close()


async def test_a_new_attempt_appends_to_the_same_kept_stream(pair: Pair) -> None:
    run, thread = new_id(), new_id()
    live = await pair.sub.subscribe(run)
    await run_events(pair.pub, run, thread, numbered(2), resumable=True, status=None)
    pair.pub.release(run)  # handed back
    await take(live, 2)
    sub = await pair.sub.subscribe(run, "-1")
    assert sub.kept
    assert len(await take(sub, 2)) == 2
    await run_events(pair.pub, run, thread, numbered(2, start=2), resumable=True)
    got = await until_done(sub)
    assert datas(got) == [d for _, d in numbered(2, start=2)]
    replay = await pair.sub.subscribe(run, "-1")
    got = await until_done(replay)
    assert datas(got) == [d for _, d in numbered(4)]
    assert_increasing(got)


async def test_end_of_a_run_that_never_ran_here(pair: Pair) -> None:
    """A cancel ends a queued run from any process: its subscribers get DONE."""
    run, thread = new_id(), new_id()
    sub = await pair.sub.subscribe(run)
    await pair.pub.end(run, "interrupted", thread)
    got = await until_done(sub)
    assert got[-1][2] == b"interrupted"


async def test_ids_increase_across_runs(pair: Pair) -> None:
    thread = new_id()
    seen = []
    for _ in range(3):
        run = new_id()
        sub = await pair.sub.subscribe(run)
        await run_events(pair.pub, run, thread, numbered(20))
        seen += await until_done(sub)
    assert_increasing(seen)
