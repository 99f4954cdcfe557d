"""Conformance: a run's attempt fences its events. Once a newer attempt of the run has opened
(the run was taken over from a worker that froze past its lease), what the older attempt still
sends (events, its end, its release) reaches no subscriber of the run or its thread, is not
kept for replay, and does not close the newer attempt's channel. On the Redis broker the two
attempts execute in different processes; on the memory broker, in the one process there is."""

from __future__ import annotations

from agentd.broker.base import DONE, Broker
from tests.broker.conftest import MakePair
from tests.broker.helpers import (
    assert_increasing,
    datas,
    names,
    new_id,
    nothing_more,
    take,
    until_done,
)

SHOWN = frozenset({"values"})


async def _two_attempts(make_pair: MakePair) -> tuple[Broker, Broker, Broker]:
    """Where the old attempt executes, where the new one does, and where clients subscribe."""
    first = await make_pair()
    if first.kind == "memory":
        return first.pub, first.pub, first.sub
    second = await make_pair()  # the same key prefix: another worker of the deployment
    return first.pub, second.pub, first.sub


async def test_a_taken_over_attempt_reaches_no_subscriber(make_pair: MakePair) -> None:
    old, new, client = await _two_attempts(make_pair)
    run, thread = new_id(), new_id()
    sub = await client.subscribe(run)
    thread_sub = await client.subscribe_thread(thread)
    old.open_run(run, thread, resumable=True, shown=SHOWN, attempt=1)
    await old.publish(run, "values", b"old-1", attempt=1)
    assert datas(await take(sub, 1)) == [b"old-1"]
    # The run is taken over: attempt 2 opens and publishes (seen: the open is written).
    new.open_run(run, thread, resumable=True, shown=SHOWN, attempt=2)
    await new.publish(run, "values", b"new-1", attempt=2)
    assert datas(await take(sub, 1)) == [b"new-1"]
    # The old attempt wakes up: its events, its end and its release change nothing.
    await old.publish(run, "values", b"old-2", attempt=1)
    await old.publish(run, "error", b"old-error", attempt=1)
    await old.end(run, "error", thread, attempt=1)
    old.release(run, attempt=1)
    # A stale open (the old attempt starting again, late) does not take the channel back.
    old.open_run(run, thread, resumable=True, shown=SHOWN, attempt=1)
    await old.publish(run, "values", b"old-3", attempt=1)
    await nothing_more(sub)
    await new.publish(run, "values", b"new-2", attempt=2)
    await new.end(run, "success", thread, attempt=2)
    got = await until_done(sub)
    assert names(got) == ["values", DONE] and got[-1][2] == b"success", got
    assert datas(got) == [b"new-2"]
    # The thread's subscribers saw the same, and one run_done.
    seen = await take(thread_sub, 4)
    assert datas(seen[:3]) == [b"old-1", b"new-1", b"new-2"]
    assert names(seen) == ["values"] * 3 + ["metadata"]
    await nothing_more(thread_sub)
    # What is kept for replay has nothing of the old attempt after the take-over either.
    replay = await client.subscribe(run, "-1")
    kept = await until_done(replay)
    assert datas(kept) == [b"old-1", b"new-1", b"new-2"]
    assert_increasing(kept)
    for s in (sub, thread_sub, replay):
        s.close()


async def test_an_end_naming_no_attempt_is_not_fenced(make_pair: MakePair) -> None:
    """A process that did not execute the run ends it (a cancel): it names no attempt."""
    old, new, client = await _two_attempts(make_pair)
    run, thread = new_id(), new_id()
    sub = await client.subscribe(run)
    new.open_run(run, thread, resumable=False, shown=SHOWN, attempt=3)
    await new.publish(run, "values", b"v", attempt=3)
    assert datas(await take(sub, 1)) == [b"v"]
    new.release(run, attempt=3)  # handed back (a shutdown): the channel is let go
    await old.end(run, "interrupted", thread)
    got = await until_done(sub)
    assert got[-1][2] == b"interrupted"
    sub.close()


async def test_the_same_attempt_after_a_hand_back_is_not_fenced(make_pair: MakePair) -> None:
    """A hand-back does not count the attempt: the next execution has the same number."""
    old, new, client = await _two_attempts(make_pair)
    run, thread = new_id(), new_id()
    sub = await client.subscribe(run)
    old.open_run(run, thread, resumable=False, shown=SHOWN, attempt=1)
    await old.publish(run, "values", b"first", attempt=1)
    assert datas(await take(sub, 1)) == [b"first"]
    old.release(run, attempt=1)
    new.open_run(run, thread, resumable=False, shown=SHOWN, attempt=1)
    await new.publish(run, "values", b"again", attempt=1)
    await new.end(run, "success", thread, attempt=1)
    got = await until_done(sub)
    assert datas(got) == [b"again"] and got[-1][2] == b"success"
    sub.close()
