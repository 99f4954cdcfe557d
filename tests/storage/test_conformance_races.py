"""Conformance under concurrency: randomized trials of many concurrent callers (asyncio tasks
on one storage; on PostgreSQL their transactions really run at once) asserting that nothing
runs twice, nothing is lost and nothing wedges. Each trial is seeded (``RACE_SEED`` in the
environment replays one) and bounded in time."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pytest

from agentd.schemas import Conflict, NotFound
from agentd.storage.base import Row, Storage
from tests.storage.helpers import (
    HOOK,
    delivery,
    ensure_assistant,
    finish,
    iso,
    new_cron,
    new_id,
    new_run,
    now_iso,
    outbox,
    queue,
    run_status,
    status,
    webhook_for,
)

T = TypeVar("T")
SEED = int(os.environ.get("RACE_SEED", "20240613"))
ENDS = {"interrupt": "interrupted", "rollback": "rollback"}  # a cancel's end status
DEADLINE = 8.0  # seconds a trial may take before it counts as wedged


async def bounded(what: Awaitable[T], seconds: float = DEADLINE) -> T:
    try:
        return await asyncio.wait_for(what, seconds)
    except TimeoutError:
        pytest.fail(f"wedged: not done after {seconds} s (RACE_SEED={SEED})")


def _rng(salt: str) -> random.Random:
    return random.Random(f"{SEED}:{salt}")


async def test_concurrent_claimers_take_each_run_once_in_thread_order(storage: Storage) -> None:
    rng = _rng("claims")
    threads = [new_id() for _ in range(16)]
    per_thread = 4
    # Due times interleave the threads at random; within a thread they increase.
    slots = [t for t in threads for _ in range(per_thread)]
    rng.shuffle(slots)
    base = datetime.now(UTC) - timedelta(hours=1)
    runs = [
        new_run(t, created_at=iso(base + timedelta(milliseconds=i))) for i, t in enumerate(slots)
    ]
    created = await bounded(
        asyncio.gather(
            *(storage.create_run(r, thread_metadata={}, if_not_exists="create") for r in runs)
        )
    )
    assert all(c is not None for c in created)
    expected = {t: [r["run_id"] for r in runs if r["thread_id"] == t] for t in threads}

    holding: dict[str, str] = {}  # thread -> run held by a worker
    held: set[str] = set()
    claims: dict[str, list[str]] = defaultdict(list)
    finished: set[str] = set()
    problems: list[str] = []
    handed_back = 0

    async def worker(w: int) -> None:
        nonlocal handed_back
        while len(finished) < len(runs):
            claimed = await storage.claim_runs(rng.randint(1, 3))
            if not claimed:
                await asyncio.sleep(rng.random() * 0.002)
                continue
            for run in claimed:
                rid, tid = run["run_id"], run["thread_id"]
                if rid in held or rid in finished:
                    problems.append(f"run {rid} claimed while held or after its end")
                if tid in holding:
                    problems.append(f"thread {tid} has two runs claimed: {holding[tid]}, {rid}")
                holding[tid] = rid
                held.add(rid)
                claims[tid].append(rid)
            await asyncio.sleep(rng.random() * 0.003)
            for run in claimed:
                # Released here, before the end commits: until then nobody may claim the next.
                holding.pop(run["thread_id"], None)
                held.discard(run["run_id"])
                if rng.random() < 0.15:  # a shutdown hands it back
                    handed_back += 1
                    if not await storage.requeue_run(run["run_id"], run["attempt"]):
                        problems.append(f"run {run['run_id']} could not be handed back")
                    continue
                if not await finish(storage, run):
                    problems.append(f"the holder of {run['run_id']} could not end it")
                finished.add(run["run_id"])

    await bounded(asyncio.gather(*(worker(w) for w in range(8))))
    assert problems == []
    for tid in threads:
        # Claimed in creation order (a run handed back is claimed again before the next).
        collapsed = [r for i, r in enumerate(claims[tid]) if i == 0 or claims[tid][i - 1] != r]
        assert collapsed == expected[tid]
    assert sum(len(c) for c in claims.values()) == len(runs) + handed_back
    assert await storage.inflight_run_ids(None) == []
    for tid in threads:
        assert await status(storage, tid) == "idle"


@pytest.mark.parametrize("thread", ["idle", "missing", "ran_before"])
async def test_concurrent_reject_runs_on_an_idle_thread_admit_exactly_one(
    storage: Storage, thread: str
) -> None:
    rng = _rng(f"reject-{thread}")
    for _trial in range(8):
        tid = new_id()
        if thread != "missing":
            await storage.create_thread(tid, {}, "raise")
        if thread == "ran_before":
            await queue(storage, tid)
            [run] = await storage.claim_runs(1)
            assert await finish(storage, run)
        n = rng.randint(10, 30)
        runs = [new_run(tid, "reject") for _ in range(n)]
        outcomes = await bounded(
            asyncio.gather(
                *(
                    storage.create_run(r, thread_metadata={"n": i}, if_not_exists="create")
                    for i, r in enumerate(runs)
                ),
                return_exceptions=True,
            )
        )
        won = [o for o in outcomes if isinstance(o, tuple)]
        others = [o for o in outcomes if not isinstance(o, tuple)]
        assert len(won) == 1, outcomes
        assert all(isinstance(o, Conflict) for o in others), others
        inflight = await storage.inflight_runs(tid)
        assert [r["run_id"] for r in inflight] == [won[0][0]["run_id"]]
        assert await status(storage, tid) == "busy"
        [run] = await storage.claim_runs(10)
        assert await finish(storage, run)


async def test_concurrent_enqueued_runs_on_a_missing_thread_all_land(storage: Storage) -> None:
    for _trial in range(5):
        tid = new_id()
        runs = [new_run(tid) for _ in range(20)]
        outcomes = await bounded(
            asyncio.gather(
                *(storage.create_run(r, thread_metadata={}, if_not_exists="create") for r in runs),
                return_exceptions=True,
            )
        )
        assert all(isinstance(o, tuple) for o in outcomes), outcomes
        assert {r["run_id"] for r in await storage.inflight_runs(tid)} == {
            r["run_id"] for r in runs
        }
        assert await storage.get_thread(tid) is not None


async def test_concurrent_thread_creations_of_one_id(storage: Storage) -> None:
    tid = new_id()
    outcomes = await bounded(
        asyncio.gather(
            *(storage.create_thread(tid, {"n": i}, "raise") for i in range(20)),
            return_exceptions=True,
        )
    )
    won = [o for o in outcomes if isinstance(o, dict)]
    assert len(won) == 1 and all(isinstance(o, Conflict) for o in outcomes if o is not won[0])
    again = await bounded(
        asyncio.gather(*(storage.create_thread(tid, {"other": i}, "do_nothing") for i in range(20)))
    )
    assert all(row == won[0] for row in again)
    fresh = new_id()
    rows = await bounded(
        asyncio.gather(
            *(storage.create_thread(fresh, {"n": i}, "do_nothing") for i in range(20)),
            return_exceptions=True,
        )
    )
    assert all(isinstance(r, dict) for r in rows), rows
    assert len({r["metadata"]["n"] for r in rows}) == 1  # type: ignore[index]  # one made it


async def test_interrupts_claims_cancels_and_ends_on_one_thread_stay_consistent(
    storage: Storage,
) -> None:
    rng = _rng("interrupt")
    tid = new_id()
    await storage.create_thread(tid, {}, "raise")
    created: list[str] = []
    held: dict[str, Row] = {}
    problems: list[str] = []

    async def create() -> None:
        row, _ = await queue(storage, tid, "interrupt", if_not_exists="reject")
        created.append(row["run_id"])

    async def claim() -> None:
        for run in await storage.claim_runs(rng.randint(1, 2)):
            if run["run_id"] in held:
                problems.append(f"run {run['run_id']} claimed twice")
            held[run["run_id"]] = run

    async def cancel() -> None:
        ids = rng.sample(created, min(len(created), rng.randint(1, 3)))
        await storage.cancel_runs(tid, ids, rng.choice(["interrupt", "rollback"]))

    async def end() -> None:
        if not held:
            return
        run = held.pop(rng.choice(sorted(held)))
        if rng.random() < 0.2:
            if not await storage.requeue_run(run["run_id"], run["attempt"]):
                problems.append(f"the holder of {run['run_id']} could not hand it back")
            return
        action = await storage.run_cancel_action(run["run_id"])
        ok = await finish(
            storage,
            run,
            "interrupted" if action else "success",
            thread_status=rng.choice(["idle", "interrupted", "error"]),
            rollback=action == "rollback",
        )
        if not ok:
            problems.append(f"the holder of {run['run_id']} could not end it")

    async def consistent() -> list[Row]:
        inflight = await storage.inflight_runs(tid)
        running = {r["run_id"] for r in inflight if r["status"] == "running"}
        assert len(running) <= 1, inflight
        assert running == set(held), (running, set(held))
        assert (await status(storage, tid) == "busy") == bool(inflight)
        flags = [await storage.run_cancel_action(r["run_id"]) for r in inflight]
        # Each interrupt run cancels all before it: at most one in-flight run is unflagged.
        assert flags.count(None) <= 1, list(zip(inflight, flags, strict=True))
        return inflight

    ops = [create, claim, cancel, end]
    started = time.monotonic()
    for _round in range(40):
        batch = [rng.choice(ops) for _ in range(rng.randint(3, 10))]
        await bounded(asyncio.gather(*(op() for op in batch)))
        await consistent()
    assert problems == []
    # Drained: every run ends, and the thread rests.
    for _ in range(100):
        inflight = await consistent()
        if not inflight and not held:
            break
        await claim()
        while held:
            await end()
    else:
        pytest.fail("the thread's runs could not be drained")
    assert problems == []
    assert await status(storage, tid) in ("idle", "interrupted", "error")
    for rid in created:
        assert await run_status(storage, rid) in (None, "success", "interrupted")
    assert time.monotonic() - started < DEADLINE


async def test_a_run_is_ended_once_whatever_races_its_cancel(storage: Storage) -> None:
    rng = _rng("cancel-vs-finish")
    threads = [new_id() for _ in range(12)]
    runs: dict[str, list[str]] = {t: [] for t in threads}
    for tid in threads:
        for _ in range(3):
            run, _ = await queue(storage, tid, webhook=HOOK)
            runs[tid].append(run["run_id"])
    every = [r for rs in runs.values() for r in rs]
    by_cancel: Counter[str] = Counter()
    by_worker: Counter[str] = Counter()
    action_of: dict[str, str] = {}
    done = False

    async def worker() -> None:
        while not done:
            claimed = await storage.claim_runs(rng.randint(1, 3))
            if not claimed:
                await asyncio.sleep(0.001)
                continue
            for run in claimed:
                await asyncio.sleep(rng.random() * 0.002)
                if rng.random() < 0.1:
                    assert await storage.requeue_run(run["run_id"], run["attempt"])
                    continue
                action = run["cancel_action"] or await storage.run_cancel_action(run["run_id"])
                end_as = ENDS.get(action or "", "success")
                # The same end recorded twice at once (a retried write): one counts.
                results = await asyncio.gather(
                    *(
                        finish(
                            storage,
                            run,
                            end_as,
                            rollback=action == "rollback",
                            webhook=delivery(run, end_as),
                        )
                        for _ in range(2)
                    )
                )
                by_worker[run["run_id"]] += sum(bool(ended) for ended in results)
                action_of[run["run_id"]] = end_as

    async def canceller() -> None:
        while not done:
            tid = rng.choice(threads)
            ids = rng.sample(runs[tid], rng.randint(1, 3))
            action = rng.choice(["interrupt", "rollback"])
            for c in await storage.cancel_runs(tid, ids, action, webhook=webhook_for):
                if c.ended:
                    by_cancel[c.run["run_id"]] += 1
                    action_of[c.run["run_id"]] = ENDS[action]
            await asyncio.sleep(rng.random() * 0.004)

    async def watch() -> None:
        nonlocal done
        while not done:
            await asyncio.sleep(0.01)
            done = not await storage.inflight_run_ids(None)

    await bounded(
        asyncio.gather(watch(), *(worker() for _ in range(4)), *(canceller() for _ in range(4)))
    )
    for rid in every:
        assert by_cancel[rid] + by_worker[rid] == 1, (rid, by_cancel[rid], by_worker[rid])
        stored = await run_status(storage, rid)
        assert stored == (None if action_of[rid] == "rollback" else action_of[rid])
    sent = Counter(r["run_id"] for r in await outbox(storage))
    assert sent == Counter(every)  # one delivery per run, whoever ended it
    for tid in threads:
        assert await status(storage, tid) == "idle"


async def test_concurrent_leases_never_hand_a_delivery_out_twice(storage: Storage) -> None:
    rng = _rng("leases")
    for _ in range(40):
        await queue(storage, new_id())
    ended = await storage.claim_runs(100)
    for run in ended:
        assert await finish(storage, run, webhook=delivery(run, "success"))
    leased: Counter[str] = Counter()

    async def sender() -> None:
        while rows := await storage.claim_webhooks(rng.randint(1, 4), 60):
            for row in rows:
                leased[row["delivery_id"]] += 1
            await asyncio.sleep(rng.random() * 0.002)

    await bounded(asyncio.gather(*(sender() for _ in range(10))))
    assert len(leased) == len(ended) and set(leased.values()) == {1}


async def test_concurrent_firings_of_one_cron_tick_queue_one_run(storage: Storage) -> None:
    await ensure_assistant(storage)
    for _trial in range(5):
        tid = new_id()
        await storage.create_thread(tid, {}, "raise")
        due = now_iso(-1)
        cron = await storage.create_cron(new_cron(due, thread_id=tid))
        tick = (cron["cron_id"], due, now_iso(60))
        outcomes = await bounded(
            asyncio.gather(
                *(
                    storage.create_run(
                        new_run(tid, "enqueue"),
                        thread_metadata={},
                        if_not_exists="reject",
                        cron_tick=tick,
                    )
                    for _ in range(20)
                ),
                return_exceptions=True,
            )
        )
        assert sum(isinstance(o, tuple) for o in outcomes) == 1, outcomes
        assert all(o is None for o in outcomes if not isinstance(o, tuple)), outcomes
        assert len(await storage.list_runs(tid, limit=100, offset=0, status=None)) == 1


async def test_concurrent_assistant_updates_each_get_their_own_version(storage: Storage) -> None:
    row = await ensure_assistant(storage)
    aid = row["assistant_id"]
    updated = await bounded(
        asyncio.gather(
            *(storage.update_assistant(aid, metadata={f"k{i}": i}) for i in range(25)),
            return_exceptions=True,
        )
    )
    assert all(isinstance(u, dict) for u in updated), updated
    assert sorted(u["version"] for u in updated) == list(range(2, 27))  # type: ignore[index]
    versions = await storage.list_assistant_versions(aid, metadata=None, limit=100, offset=0)
    assert [v["version"] for v in versions] == list(range(26, 0, -1))
    latest = await storage.get_assistant(aid)
    assert latest is not None and latest["version"] == 26
    assert latest["metadata"] == {f"k{i}": i for i in range(25)}  # every merge kept


async def test_runs_never_outlive_their_thread_under_sweeps_and_deletes(
    storage: Storage,
) -> None:
    rng = _rng("sweep")
    threads = [new_id() for _ in range(30)]
    for tid in threads:
        await storage.create_thread(tid, {}, "raise", ttl=("delete", 0.001))
    await asyncio.sleep(0.1)  # all expired
    made: dict[str, str] = {}

    async def create(tid: str) -> None:
        await asyncio.sleep(rng.random() * 0.02)
        try:
            row, _ = await queue(storage, tid, if_not_exists="reject")
        except NotFound:
            return
        made[tid] = row["run_id"]

    async def sweep() -> None:
        for _ in range(6):
            await storage.sweep_threads(rng.randint(1, 3))
            await asyncio.sleep(rng.random() * 0.004)

    deleted = rng.sample(threads, 5)

    async def delete() -> None:
        for tid in deleted:
            await asyncio.sleep(rng.random() * 0.01)
            await storage.delete_thread(tid)

    await bounded(asyncio.gather(*(create(t) for t in threads), sweep(), sweep(), delete()))
    for tid in threads:
        thread = await storage.get_thread(tid)
        runs = await storage.list_runs(tid, limit=10, offset=0, status=None)
        if thread is None:
            assert runs == [], f"runs of a deleted thread: {runs}"
        elif tid in made:  # a thread with a pending run is never swept
            assert [r["run_id"] for r in runs] == [made[tid]]
            assert thread["status"] == "busy"
    for tid, _rid in await storage.inflight_run_ids(None):
        assert await storage.get_thread(tid) is not None
    # An acknowledged run's thread is taken only by a delete, never by a sweep.
    gone = [t for t in made if await storage.get_thread(t) is None]
    assert set(gone) <= set(deleted), gone
