"""Conformance under races: subscribers (live, from the start, from an id seen, per run and
per thread) join at random moments before, during and after a run publishes and ends; each
gets a contiguous part of the run's events (no gap, no duplicate, ids increasing) that ends
with the run's end whenever it subscribed before it, and none waits forever. Hundreds of
trials, a few seconds in all."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

from agentd.broker.base import DONE, Event, Subscription
from tests.broker.conftest import Pair
from tests.broker.helpers import QUIET, SETTLE, assert_increasing, new_id, until_done

TRIALS = 240
AT_ONCE = 24
SHOWN = frozenset({"values"})

# Where the run was: not opened yet, open, ending (inside end(): its end may be written or
# not yet), ended.
BEFORE, DURING, ENDING, AFTER = 0, 1, 2, 3


@dataclass
class Watch:
    mode: str  # live | start | mid | thread | thread-start
    sub: Subscription | None = None
    since: tuple[int, int] = (BEFORE, BEFORE)  # the run's phase when subscribing, and after
    after_index: int = -1  # mid: the index of the event whose id was given
    got: list[Event] = field(default_factory=list)


@dataclass
class Trial:
    run: str
    thread: str
    resumable: bool
    count: int
    phase: int = BEFORE
    reference: list[Event] = field(default_factory=list)
    watches: list[Watch] = field(default_factory=list)


def _terminal(watch: Watch, event: Event) -> bool:
    if watch.mode.startswith("thread"):
        return event[1] == "metadata"
    return event[1] == DONE


def _must_end(trial: Trial, watch: Watch) -> bool:
    """Whether the run's end must reach this subscriber."""
    if watch.mode in ("start", "mid") and trial.resumable and trial.count:
        return True  # kept (the memory broker keeps no log of a run that published nothing)
    return watch.since[1] <= DURING


async def _subscribe(pair: Pair, trial: Trial, watch: Watch, delay: float) -> None:
    await asyncio.sleep(delay)
    last_event_id = None
    if watch.mode in ("start", "thread-start"):
        last_event_id = "-1"
    elif watch.mode == "mid":
        seen = list(trial.reference)
        if not seen or seen[-1][1] == DONE:
            watch.mode, last_event_id = "start", "-1"
        else:
            watch.after_index = len(seen) - 1
            last_event_id = seen[-1][0]
    before = trial.phase
    if watch.mode.startswith("thread"):
        watch.sub = await pair.sub.subscribe_thread(trial.thread, last_event_id)
    else:
        watch.sub = await pair.sub.subscribe(trial.run, last_event_id)
    watch.since = (before, trial.phase)


async def _publish(pair: Pair, trial: Trial, rng: random.Random) -> None:
    await asyncio.sleep(rng.random() * 0.004)
    trial.phase = DURING
    pair.pub.open_run(trial.run, trial.thread, resumable=trial.resumable, shown=SHOWN)
    for i in range(trial.count):
        await pair.pub.publish(trial.run, "values", f"{i:04d}".encode())
        if rng.random() < 0.2:
            await asyncio.sleep(rng.random() * 0.002)
    trial.phase = ENDING
    await pair.pub.end(trial.run, "success", trial.thread)
    trial.phase = AFTER


async def _collect(trial: Trial, watch: Watch, settled: list[float]) -> None:
    assert watch.sub is not None
    must_end = _must_end(trial, watch)
    while True:
        item = await watch.sub.get(0.05)
        if item is not None:
            watch.got.append(item)
            if _terminal(watch, item):
                return
            continue
        if settled:
            waited = time.monotonic() - settled[0]
            if waited > (SETTLE if must_end else QUIET):
                return


def _check(trial: Trial, watch: Watch) -> None:
    events = trial.reference[:-1]  # the reference saw everything: events, then DONE
    where = f"{watch.mode} subscriber (phases {watch.since}, resumable={trial.resumable})"
    got = watch.got
    assert_increasing(got)
    thread = watch.mode.startswith("thread")
    body = [e for e in got if not _terminal(watch, e)]
    ended = bool(got) and _terminal(watch, got[-1])
    assert all(not _terminal(watch, e) for e in got[:-1]), f"{where}: events after the end"
    if body:
        first = events.index(body[0]) if body[0] in events else -1
        assert first >= 0, f"{where}: an event the run did not publish: {body[0]}"
        assert body == events[first : first + len(body)], f"{where}: a gap or a duplicate"
        assert first + len(body) == len(events), f"{where}: stopped before the run's end"
    if _must_end(trial, watch) and not (thread and watch.since[1] == AFTER):
        assert ended, f"{where}: the run's end never came (got {len(got)} events)"
    whole = watch.since[1] == BEFORE or (trial.resumable and watch.mode in ("start",))
    whole |= trial.resumable and watch.mode == "thread-start"
    if whole:
        assert body == events, f"{where}: {len(body)} of {len(events)} events"
    if watch.mode == "mid" and trial.resumable:
        assert body == events[watch.after_index + 1 :], f"{where}: not what followed its id"
    if watch.since[0] == AFTER and watch.mode in ("live", "thread"):
        assert got == [], f"{where}: subscribed after the end, yet got {len(got)} events"


async def _trial(pair: Pair, rng: random.Random) -> None:
    trial = Trial(new_id(), new_id(), rng.random() < 0.5, rng.randint(0, 25))
    reference = await pair.sub.subscribe(trial.run)
    modes = ["live", "start", "mid", "thread", "thread-start"]
    trial.watches = [Watch(rng.choice(modes)) for _ in range(rng.randint(2, 6))]

    async def follow_reference() -> None:
        while True:
            item = await reference.get(SETTLE)
            assert item is not None, "the reference subscriber stalled"
            trial.reference.append(item)
            if item[1] == DONE:
                return

    follower = asyncio.ensure_future(follow_reference())
    await asyncio.gather(
        _publish(pair, trial, rng),
        *(_subscribe(pair, trial, w, rng.random() * 0.012) for w in trial.watches),
    )
    await asyncio.wait_for(follower, SETTLE)
    settled: list[float] = [time.monotonic()]
    await asyncio.wait_for(
        asyncio.gather(*(_collect(trial, w, settled) for w in trial.watches)), SETTLE * 2
    )
    assert len(trial.reference) == trial.count + 1
    for watch in trial.watches:
        _check(trial, watch)
        assert watch.sub is not None
        watch.sub.close()
    reference.close()


async def test_subscribe_publish_and_end_race(pair: Pair) -> None:
    rng = random.Random(20261202)
    started = time.monotonic()
    for _ in range(TRIALS // AT_ONCE):
        await asyncio.gather(*(_trial(pair, rng) for _ in range(AT_ONCE)))
    assert time.monotonic() - started < 60


async def test_replay_while_publishing_fast(pair: Pair) -> None:
    """A replay that starts while the run publishes as fast as it can ends up live with
    nothing lost or repeated."""
    run, thread = new_id(), new_id()
    pair.pub.open_run(run, thread, resumable=True, shown=SHOWN)
    n = 1500

    async def publish() -> None:
        for i in range(n):
            await pair.pub.publish(run, "values", f"{i:05d}".encode())
            if i % 100 == 0:
                await asyncio.sleep(0)
        await pair.pub.end(run, "success", thread)

    publisher = asyncio.ensure_future(publish())
    subs = []
    for _ in range(6):
        await asyncio.sleep(0.002)
        subs.append(await pair.sub.subscribe(run, "-1"))
    await publisher
    for sub in subs:
        got = await until_done(sub, within=20)
        assert [e[2] for e in got[:-1]] == [f"{i:05d}".encode() for i in range(n)]
        assert_increasing(got)
