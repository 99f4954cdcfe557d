"""Conformance: run leases. A claimed run is leased to its worker, which renews the lease; a
run whose lease ran out is taken back to the queue (its attempt counted) and its old attempt
can no longer renew, end or hand it back. Races between a renewal, a take-back and an end are
randomized trials: exactly one side wins each, and nothing runs twice."""

from __future__ import annotations

import asyncio
import time

import pytest

from agentd.storage.base import LeaseLost, Storage
from tests.storage.helpers import finish, history, new_id, queue, run_graph, run_status
from tests.storage.test_conformance_races import _rng, bounded

SHORT = 0.05  # a lease that runs out while the test sleeps
LONG = 60.0  # one that does not


async def _claim(storage: Storage, owner: str = "w1", lease: float = LONG) -> dict:
    [run] = await storage.claim_runs(1, owner=owner, lease=lease)
    return run


async def test_the_claim_leases_the_run_to_its_owner(storage: Storage) -> None:
    await queue(storage, new_id())
    run = await _claim(storage)
    held = [(run["run_id"], run["attempt"])]
    assert await storage.renew_leases("w1", held, LONG) == {run["run_id"]: None}
    # Another worker, or another attempt, holds nothing.
    assert await storage.renew_leases("w2", held, LONG) == {}
    assert await storage.renew_leases("w1", [(run["run_id"], run["attempt"] + 1)], LONG) == {}
    assert await storage.renew_leases("w1", [], LONG) == {}
    assert await storage.take_back_expired() == []
    assert await run_status(storage, run["run_id"]) == "running"


async def test_a_run_whose_lease_ran_out_is_taken_back_and_its_attempt_fenced(
    storage: Storage,
) -> None:
    tid = new_id()
    await queue(storage, tid)
    old = await _claim(storage, "w1", SHORT)
    await asyncio.sleep(SHORT * 2)
    taken = await storage.take_back_expired()
    assert [(r["run_id"], r["thread_id"], r["attempt"]) for r in taken] == [
        (old["run_id"], tid, old["attempt"])
    ]
    assert await run_status(storage, old["run_id"]) == "pending"
    assert await storage.take_back_expired() == []
    # The dead attempt stays counted: the next claim is attempt 2.
    new = await _claim(storage, "w2")
    assert new["run_id"] == old["run_id"] and new["attempt"] == old["attempt"] + 1
    # The old attempt can neither renew, nor hand back, nor end the run.
    assert await storage.renew_leases("w1", [(old["run_id"], old["attempt"])], LONG) == {}
    assert not await storage.requeue_run(old["run_id"], old["attempt"])
    assert not await finish(storage, old)
    assert await run_status(storage, old["run_id"]) == "running"
    assert await finish(storage, new)
    assert await run_status(storage, old["run_id"]) == "success"


async def test_a_renewed_lease_is_not_taken_back(storage: Storage) -> None:
    await queue(storage, new_id())
    run = await _claim(storage, "w1", 0.3)
    assert await storage.renew_leases("w1", [(run["run_id"], run["attempt"])], LONG)
    await asyncio.sleep(0.4)  # past the claim's lease, within the renewal's
    assert await storage.take_back_expired() == []
    assert await run_status(storage, run["run_id"]) == "running"


async def test_a_renewal_brings_the_cancel_recorded_for_a_held_run(storage: Storage) -> None:
    """A cancel's nudge through the broker can be lost (Redis away): the worker's heartbeat
    learns it from the renewal of the run's lease."""
    tid = new_id()
    await queue(storage, tid)
    run = await _claim(storage)
    held = [(run["run_id"], run["attempt"])]
    [cancelled] = await storage.cancel_runs(tid, [run["run_id"]], "rollback")
    assert not cancelled.ended  # running: its executor honours it
    assert await storage.renew_leases("w1", held, LONG) == {run["run_id"]: "rollback"}


async def test_a_lease_that_ran_out_can_still_be_renewed_until_it_is_taken(
    storage: Storage,
) -> None:
    """Nobody took the run yet: its holder keeps it (a slow heartbeat is not a lost run)."""
    await queue(storage, new_id())
    run = await _claim(storage, "w1", SHORT)
    await asyncio.sleep(SHORT * 2)
    assert await storage.renew_leases("w1", [(run["run_id"], run["attempt"])], LONG) == {
        run["run_id"]: None
    }
    assert await storage.take_back_expired() == []


async def test_only_expired_leases_are_taken_back(storage: Storage) -> None:
    a, b = new_id(), new_id()
    await queue(storage, a)
    await queue(storage, b)
    [first] = await storage.claim_runs(1, owner="w1", lease=SHORT)
    [second] = await storage.claim_runs(1, owner="w2", lease=LONG)
    await asyncio.sleep(SHORT * 2)
    taken = await storage.take_back_expired()
    assert [r["run_id"] for r in taken] == [first["run_id"]]
    assert await run_status(storage, second["run_id"]) == "running"


async def test_a_hand_back_releases_the_lease(storage: Storage) -> None:
    await queue(storage, new_id())
    run = await _claim(storage, "w1", SHORT)
    assert await storage.requeue_run(run["run_id"], run["attempt"])
    await asyncio.sleep(SHORT * 2)
    assert await storage.take_back_expired() == []  # pending: there is no lease to run out
    again = await _claim(storage, "w2")
    assert again["attempt"] == run["attempt"]  # a hand-back is not counted
    assert await storage.renew_leases("w1", [(run["run_id"], run["attempt"])], LONG) == {}
    assert await storage.renew_leases("w2", [(run["run_id"], run["attempt"])], LONG) == {
        run["run_id"]: None
    }


async def test_an_ended_or_deleted_run_is_no_longer_held(storage: Storage) -> None:
    ended, deleted = new_id(), new_id()
    await queue(storage, ended)
    await queue(storage, deleted)
    runs = {r["thread_id"]: r for r in await storage.claim_runs(2, owner="w1", lease=SHORT)}
    assert await finish(storage, runs[ended])
    await storage.delete_thread(deleted)
    held = [(r["run_id"], r["attempt"]) for r in runs.values()]
    assert await storage.renew_leases("w1", held, LONG) == {}
    await asyncio.sleep(SHORT * 2)
    assert await storage.take_back_expired() == []


async def test_at_start_up_an_exclusive_storage_takes_back_every_running_run(
    storage: Storage, backend: str
) -> None:
    """Embedded mode: only this process could hold runs, so every lease is stale. A shared
    database is not exclusive: its runs come back by their leases alone."""
    assert storage.exclusive == (backend == "sqlite")
    await queue(storage, new_id())
    run = await _claim(storage, "w1", LONG)
    assert await storage.requeue_running() == 1
    assert await run_status(storage, run["run_id"]) == "pending"


async def test_renewal_take_back_and_end_race_with_exactly_one_winner(storage: Storage) -> None:
    """A worker renewing (or ending) a run whose lease just ran out, against others taking
    expired runs back: for every run exactly one side wins, and the loser writes nothing."""
    rng = _rng("leases")
    trials = 200
    for _ in range(trials):
        await queue(storage, new_id())
    runs = await storage.claim_runs(trials, owner="w1", lease=SHORT)
    assert len(runs) == trials
    await asyncio.sleep(SHORT * 2)
    holder_won: dict[str, str] = {}  # run_id -> "renewed" | "ended"
    taken: list[str] = []

    async def hold(run: dict) -> None:
        if rng.random() < 0.5:
            kept = await storage.renew_leases("w1", [(run["run_id"], run["attempt"])], LONG)
            if run["run_id"] in kept:
                holder_won[run["run_id"]] = "renewed"
        elif await finish(storage, run):
            holder_won[run["run_id"]] = "ended"

    async def take() -> None:
        taken.extend(r["run_id"] for r in await storage.take_back_expired(limit=rng.randint(1, 3)))

    for start in range(0, trials, 25):
        calls = [hold(r) for r in runs[start : start + 25]]
        calls += [take() for _ in range(rng.randint(5, 15))]
        rng.shuffle(calls)
        await bounded(asyncio.gather(*calls))
    assert len(taken) == len(set(taken)), "a run was taken back twice"
    leftover = {r["run_id"] for r in await storage.take_back_expired(limit=trials)}
    taken_ids = set(taken) | leftover
    for run in runs:
        rid = run["run_id"]
        won = holder_won.get(rid)
        was_taken = rid in taken_ids
        assert (won is not None) != was_taken, f"{rid}: holder {won}, taken {was_taken}"
        expected = {"renewed": "running", "ended": "success", None: "pending"}[won]
        assert await run_status(storage, rid) == expected
    assert holder_won and set(taken), "the trials never raced"


# ---------------------------------------------------------------- fencing checkpoint writes


async def test_a_fenced_checkpointer_saves_only_while_its_attempt_holds_the_run(
    storage: Storage,
) -> None:
    tid = new_id()
    await queue(storage, tid)
    old = await _claim(storage, "w1", SHORT)
    fenced_old = storage.fenced_checkpointer(old["run_id"], old["attempt"])
    out = await run_graph(
        storage, old, {"log": []}, checkpointer=fenced_old, interrupt_before=["b"]
    )
    assert out["log"] == ["a"]
    first = await history(storage, tid)
    assert first
    await asyncio.sleep(SHORT * 2)
    assert await storage.take_back_expired()
    with pytest.raises(LeaseLost):  # the old attempt, stalled, goes on to node b
        await run_graph(storage, old, None, checkpointer=fenced_old)
    assert await history(storage, tid) == first  # nothing of the lost attempt was saved
    new = await _claim(storage, "w2")
    fenced_new = storage.fenced_checkpointer(new["run_id"], new["attempt"])
    assert (await run_graph(storage, new, None, checkpointer=fenced_new))["log"] == ["a", "b"]
    second = await history(storage, tid)
    assert len(second) > len(first)
    assert await finish(storage, new)
    saved = await fenced_new.aget_tuple({"configurable": {"thread_id": tid}})
    with pytest.raises(LeaseLost):  # an ended run takes no more writes, from any attempt
        await fenced_new.aput_writes(saved.config, [("log", ["late"])], "late-task")
    assert await history(storage, tid) == second


async def test_fenced_writes_racing_a_take_back_never_land_after_it(storage: Storage) -> None:
    """A stalled attempt keeps writing while its run is taken back: every write that started
    after the take-back returned is refused, and each write is saved whole or not at all."""
    rng = _rng("fence")
    trials = 40
    for _ in range(trials):
        await queue(storage, new_id())
    runs = await storage.claim_runs(trials, owner="w1", lease=0.3)
    assert len(runs) == trials
    checkpoints = {}
    for run in runs:
        fenced = storage.fenced_checkpointer(run["run_id"], run["attempt"])
        await run_graph(storage, run, {"log": []}, checkpointer=fenced)
        saved = await fenced.aget_tuple({"configurable": {"thread_id": run["thread_id"]}})
        checkpoints[run["run_id"]] = (fenced, saved.config)
    taken_at: dict[str, float] = {}
    saved_writes: dict[str, list[str]] = {r["run_id"]: [] for r in runs}
    problems: list[str] = []

    async def writer(run: dict) -> None:
        fenced, config = checkpoints[run["run_id"]]
        for i in range(200):
            started = time.monotonic()
            task_id = f"t{i}"
            try:
                await fenced.aput_writes(config, [("log", [task_id])], task_id)
            except LeaseLost:
                return
            done_after = taken_at.get(run["run_id"])
            if done_after is not None and started > done_after:
                problems.append(f"{run['run_id']}: write {task_id} landed after the take-back")
            saved_writes[run["run_id"]].append(task_id)
            await asyncio.sleep(rng.random() * 0.01)
        problems.append(f"{run['run_id']}: never fenced")

    async def taker() -> None:
        deadline = time.monotonic() + 10
        while len(taken_at) < trials and time.monotonic() < deadline:
            for row in await storage.take_back_expired(limit=rng.randint(1, 5)):
                taken_at[row["run_id"]] = time.monotonic()
            await asyncio.sleep(rng.random() * 0.02)

    await bounded(asyncio.gather(taker(), *(writer(r) for r in runs)), 30)
    assert problems == []
    assert len(taken_at) == trials
    for run in runs:
        fenced, config = checkpoints[run["run_id"]]
        saved = await fenced.aget_tuple(config)
        kept = sorted(w[0] for w in saved.pending_writes or ())
        assert kept == sorted(saved_writes[run["run_id"]]), run["run_id"]
