"""Conformance: the run queue and lifecycle (create, claim, cancel, hand back, finish) as every
backend must store it. See ARCHITECTURE.md, "The run lifecycle"."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from agentd.schemas import Conflict, NotFound
from agentd.storage.base import LeaseLost, Storage
from tests.storage.helpers import (
    delivery,
    ensure_assistant,
    finish,
    history,
    iso,
    latest_values,
    new_cron,
    new_id,
    new_run,
    now_iso,
    queue,
    run_graph,
    run_status,
    status,
)

IDLE = {"thread_status": "idle"}


# ---------------------------------------------------------------- creation


async def test_a_run_creates_its_thread_busy_and_waits_pending(storage: Storage) -> None:
    tid = new_id()
    run = new_run(tid)
    created = await storage.create_run(run, thread_metadata={"k": "v"}, if_not_exists="create")
    assert created is not None
    row, cancelled = created
    assert cancelled == []
    assert row["run_id"] == run["run_id"] and row["thread_id"] == tid
    assert row["status"] == "pending" and row["attempt"] == 0
    assert row["kwargs"] == run["kwargs"] and row["metadata"] == run["metadata"]
    assert row["multitask_strategy"] == "enqueue"
    thread = await storage.get_thread(tid)
    assert thread is not None
    assert thread["status"] == "busy" and thread["metadata"] == {"k": "v"}
    assert await storage.get_run(tid, run["run_id"]) == row
    assert await storage.get_run(None, run["run_id"]) == row
    assert await storage.get_run(new_id(), run["run_id"]) is None
    assert await storage.inflight_runs(tid) == [row]


async def test_a_run_on_a_missing_thread_is_refused_without_create(storage: Storage) -> None:
    tid = new_id()
    with pytest.raises(NotFound):
        await storage.create_run(new_run(tid), thread_metadata={}, if_not_exists="reject")
    assert await storage.get_thread(tid) is None
    assert await storage.inflight_run_ids(None) == []


async def test_thread_metadata_merges_into_an_idle_thread_only(storage: Storage) -> None:
    tid = new_id()
    await storage.create_thread(tid, {"a": 1, "b": 1}, "raise")
    first = new_run(tid)
    await storage.create_run(first, thread_metadata={"b": 2}, if_not_exists="reject")
    thread = await storage.get_thread(tid)
    assert thread is not None and thread["metadata"] == {"a": 1, "b": 2}
    # Busy: it keeps the metadata its runs found.
    await storage.create_run(new_run(tid), thread_metadata={"c": 3}, if_not_exists="reject")
    thread = await storage.get_thread(tid)
    assert thread is not None and thread["metadata"] == {"a": 1, "b": 2}


async def test_create_runs_is_all_or_none(storage: Storage) -> None:
    busy = new_id()
    await queue(storage, busy)
    fresh = new_id()
    ok = new_run(fresh)
    refused = new_run(busy, "reject")
    with pytest.raises(Conflict):
        await storage.create_runs(
            [
                (ok, {"thread_metadata": {}, "if_not_exists": "create"}),
                (refused, {"thread_metadata": {}, "if_not_exists": "create"}),
            ]
        )
    assert await storage.get_run(None, ok["run_id"]) is None
    assert await storage.get_thread(fresh) is None
    assert len(await storage.inflight_runs(busy)) == 1
    both = [new_run(fresh), new_run(new_id())]
    rows = await storage.create_runs(
        [(r, {"thread_metadata": {}, "if_not_exists": "create"}) for r in both]
    )
    assert [r["run_id"] for r in rows] == [r["run_id"] for r in both]
    assert all(r["status"] == "pending" for r in rows)


# ---------------------------------------------------------------- claims


async def test_one_running_run_per_thread_in_creation_order(storage: Storage) -> None:
    tid = new_id()
    base = datetime.now(UTC) - timedelta(minutes=1)
    runs = [
        (await queue(storage, tid, created_at=iso(base + timedelta(seconds=i))))[0]
        for i in range(3)
    ]
    for expected in runs:
        claimed = await storage.claim_runs(10)
        assert [c["run_id"] for c in claimed] == [expected["run_id"]]
        [run] = claimed
        assert run["status"] == "running" and run["attempt"] == 1
        assert run["resume"] is False and run["cancel_action"] is None
        assert await storage.claim_runs(10) == []  # the thread is running one
        assert await status(storage, tid) == "busy"
        assert await finish(storage, run)
    assert await storage.claim_runs(10) == []
    assert await status(storage, tid) == "idle"


async def test_the_oldest_due_run_is_claimed_first_across_threads(storage: Storage) -> None:
    base = datetime.now(UTC) - timedelta(hours=1)
    offsets = [5, 1, 4, 2, 3, 0]  # created in this order, due in another
    runs = []
    for offset in offsets:
        created_at = iso(base + timedelta(seconds=offset))
        runs.append((await queue(storage, new_id(), created_at=created_at))[0])
    by_age = [r["run_id"] for r in sorted(runs, key=lambda r: r["created_at"])]
    first_two = await storage.claim_runs(2)
    assert [r["run_id"] for r in first_two] == by_age[:2]
    rest = []
    while claimed := await storage.claim_runs(1):
        rest += [r["run_id"] for r in claimed]
    assert rest == by_age[2:]


async def test_a_delayed_run_is_not_claimed_before_it_is_due(storage: Storage) -> None:
    assert await storage.next_due_at() is None
    due_at = datetime.now(UTC) + timedelta(seconds=0.8)
    delayed, _ = await queue(storage, new_id(), created_at=iso(due_at))
    now_run, _ = await queue(storage, new_id())
    # Behind a due run on its own thread, a delayed run waits too.
    tid = new_id()
    ahead, _ = await queue(storage, tid)
    behind, _ = await queue(storage, tid, created_at=iso(due_at))
    next_due = await storage.next_due_at()
    assert next_due is not None and abs(next_due - due_at.timestamp()) < 0.01
    claimed = await storage.claim_runs(10)
    assert {r["run_id"] for r in claimed} == {now_run["run_id"], ahead["run_id"]}
    for run in claimed:
        assert await finish(storage, run)
    assert await storage.claim_runs(10) == []
    assert await run_status(storage, delayed["run_id"]) == "pending"
    await asyncio.sleep(max(0.0, due_at.timestamp() - time.time()) + 0.05)
    assert await storage.next_due_at() is None  # due now: no longer "not due yet"
    claimed = await storage.claim_runs(10)
    assert {r["run_id"] for r in claimed} == {delayed["run_id"], behind["run_id"]}


async def test_a_claim_says_whether_the_run_resumes_its_own_checkpoint(storage: Storage) -> None:
    tid = new_id()
    first, _ = await queue(storage, tid)
    [run] = await storage.claim_runs(1)
    assert run["resume"] is False  # no checkpoint at all
    await run_graph(storage, run, {"log": ["in"]}, interrupt_before=["b"])
    # Cut short (a shutdown): handed back, its next claim resumes from what it wrote.
    assert await storage.requeue_run(run["run_id"], run["attempt"])
    [again] = await storage.claim_runs(1)
    assert again["run_id"] == first["run_id"] and again["resume"] is True
    assert await finish(storage, again, thread_status="interrupted")
    await queue(storage, tid)
    [second] = await storage.claim_runs(1)
    assert second["resume"] is False  # the newest checkpoint is the first run's


# ---------------------------------------------------------------- multitask strategies


async def test_reject_refuses_a_run_while_one_is_in_flight(storage: Storage) -> None:
    tid = new_id()
    await storage.create_thread(tid, {}, "raise")
    first, _ = await queue(storage, tid, "reject", if_not_exists="reject")
    refused = new_run(tid, "reject")
    with pytest.raises(Conflict):  # pending
        await storage.create_run(refused, thread_metadata={}, if_not_exists="reject")
    [run] = await storage.claim_runs(1)
    with pytest.raises(Conflict):  # running
        await storage.create_run(refused, thread_metadata={}, if_not_exists="reject")
    assert await storage.get_run(None, refused["run_id"]) is None
    assert [r["run_id"] for r in await storage.inflight_runs(tid)] == [first["run_id"]]
    assert await finish(storage, run)
    second, cancelled = await queue(storage, tid, "reject")
    assert cancelled == [] and second["status"] == "pending"


async def test_enqueue_queues_behind_what_is_in_flight(storage: Storage) -> None:
    tid = new_id()
    first, _ = await queue(storage, tid)
    await storage.claim_runs(1)
    second, cancelled = await queue(storage, tid, "enqueue")
    assert cancelled == []
    assert await run_status(storage, first["run_id"]) == "running"
    assert await storage.run_cancel_action(first["run_id"]) is None
    assert [r["run_id"] for r in await storage.inflight_runs(tid)] == [
        first["run_id"],
        second["run_id"],
    ]


@pytest.mark.parametrize("strategy", ["interrupt", "rollback"])
async def test_interrupt_and_rollback_cancel_what_is_in_flight(
    storage: Storage, strategy: str
) -> None:
    tid = new_id()
    running, _ = await queue(storage, tid)
    [claimed] = await storage.claim_runs(1)
    queued, _ = await queue(storage, tid)
    newest, cancelled = await queue(storage, tid, strategy)
    assert [(c.run["run_id"], c.action, c.ended) for c in cancelled] == [
        (running["run_id"], strategy, False),
        (queued["run_id"], strategy, True),
    ]
    # Each as it was before the cancel.
    assert [c.run["status"] for c in cancelled] == ["running", "pending"]
    # The running one carries the durable flag and runs on; the queued one ended here.
    assert await storage.run_cancel_action(running["run_id"]) == strategy
    assert await run_status(storage, running["run_id"]) == "running"
    ended = await run_status(storage, queued["run_id"])
    assert ended == ("interrupted" if strategy == "interrupt" else None)  # rollback: deleted
    assert await run_status(storage, newest["run_id"]) == "pending"
    assert await status(storage, tid) == "busy"
    # Its executor honours the flag; then the new run is claimed.
    assert await finish(storage, claimed, "interrupted", rollback=strategy == "rollback")
    [next_run] = await storage.claim_runs(10)
    assert next_run["run_id"] == newest["run_id"] and next_run["cancel_action"] is None


async def test_the_first_cancel_asked_of_a_run_wins(storage: Storage) -> None:
    tid = new_id()
    run, _ = await queue(storage, tid)
    await storage.claim_runs(1)
    await storage.cancel_runs(tid, [run["run_id"]], "interrupt")
    again = await storage.cancel_runs(tid, [run["run_id"]], "rollback")
    assert [(c.run["run_id"], c.ended) for c in again] == [(run["run_id"], False)]
    assert await storage.run_cancel_action(run["run_id"]) == "interrupt"
    assert await storage.run_cancel_action(new_id()) is None


# ---------------------------------------------------------------- cancels


async def test_cancel_runs_touches_only_the_threads_in_flight_runs(storage: Storage) -> None:
    tid, other = new_id(), new_id()
    done, _ = await queue(storage, tid)
    [claimed] = await storage.claim_runs(1)
    assert await finish(storage, claimed)
    pending, _ = await queue(storage, tid)
    foreign, _ = await queue(storage, other)
    ids = [done["run_id"], pending["run_id"], foreign["run_id"], new_id()]
    cancelled = await storage.cancel_runs(tid, ids, "interrupt")
    assert [(c.run["run_id"], c.ended) for c in cancelled] == [(pending["run_id"], True)]
    assert await run_status(storage, done["run_id"]) == "success"
    assert await run_status(storage, pending["run_id"]) == "interrupted"
    assert await run_status(storage, foreign["run_id"]) == "pending"
    assert await storage.cancel_runs(tid, [pending["run_id"]], "interrupt") == []
    assert await storage.cancel_runs(tid, [], "interrupt") == []


async def test_a_cancelled_queued_run_leaves_the_thread_as_it_rested(storage: Storage) -> None:
    tid = new_id()
    await queue(storage, tid)
    [run] = await storage.claim_runs(1)
    paused = {"thread_status": "interrupted", "values": {}, "interrupts": {"t": []}}
    assert await finish(storage, run, **paused)
    assert await status(storage, tid) == "interrupted"
    resume, _ = await queue(storage, tid)
    assert await status(storage, tid) == "busy"
    [c] = await storage.cancel_runs(tid, [resume["run_id"]], "rollback")
    assert c.ended and await storage.get_run(tid, resume["run_id"]) is None
    assert await status(storage, tid) == "interrupted"


async def test_a_flag_survives_a_hand_back(storage: Storage) -> None:
    tid = new_id()
    run, _ = await queue(storage, tid)
    [claimed] = await storage.claim_runs(1)
    [c] = await storage.cancel_runs(tid, [run["run_id"]], "rollback")
    assert not c.ended
    assert await storage.requeue_run(run["run_id"], claimed["attempt"])
    [again] = await storage.claim_runs(1)
    assert again["run_id"] == run["run_id"] and again["cancel_action"] == "rollback"


async def test_a_cancel_of_a_handed_back_run_flags_it_and_rollback_undoes_it(
    storage: Storage,
) -> None:
    tid = new_id()
    await queue(storage, tid)
    [run] = await storage.claim_runs(1)
    await run_graph(storage, run, {"log": ["in"]})
    assert await finish(storage, run)
    before = await history(storage, tid)
    second, _ = await queue(storage, tid)
    [run] = await storage.claim_runs(1)
    await run_graph(storage, run, {"log": ["again"]}, interrupt_before=["b"])
    assert await storage.requeue_run(run["run_id"], run["attempt"])  # a shutdown
    # It ran before and was handed back: flagged, not ended (Cancelled's contract).
    [c] = await storage.cancel_runs(tid, [second["run_id"]], "rollback")
    assert not c.ended
    [again] = await storage.claim_runs(1)
    assert again["cancel_action"] == "rollback"
    await storage.roll_back_run(tid, second["run_id"])
    assert await finish(storage, again, "rollback", rollback=True)
    assert await history(storage, tid) == before


# ---------------------------------------------------------------- hand back and fencing


async def test_only_the_attempt_holding_a_run_ends_it_once(storage: Storage) -> None:
    tid = new_id()
    pending, _ = await queue(storage, tid)
    assert not await storage.finish_run(
        pending["run_id"], tid, 0, "success", values=None, interrupts=None, error=None, **IDLE
    )
    assert not await storage.requeue_run(pending["run_id"], 0)
    [run] = await storage.claim_runs(1)
    stale = {**run, "attempt": run["attempt"] + 1}
    assert not await finish(storage, stale, values={"v": "stale"})
    assert not await storage.requeue_run(run["run_id"], run["attempt"] + 1)
    assert await status(storage, tid) == "busy"
    assert await run_status(storage, run["run_id"]) == "running"
    assert await finish(storage, run, values={"v": 1})
    assert not await finish(storage, run, "error", thread_status="error", values={"v": 2})
    assert not await storage.requeue_run(run["run_id"], run["attempt"])
    assert await run_status(storage, run["run_id"]) == "success"
    thread = await storage.get_thread(tid)
    assert thread is not None and thread["status"] == "idle" and thread["values"] == {"v": 1}


async def test_a_handed_back_run_is_claimed_again_uncounted(storage: Storage) -> None:
    tid = new_id()
    await queue(storage, tid)
    [run] = await storage.claim_runs(1)
    assert await storage.requeue_run(run["run_id"], run["attempt"])
    assert await run_status(storage, run["run_id"]) == "pending"
    assert await status(storage, tid) == "busy"
    assert not await storage.requeue_run(run["run_id"], run["attempt"])  # no longer held
    [again] = await storage.claim_runs(1)
    assert again["run_id"] == run["run_id"] and again["attempt"] == run["attempt"]


async def test_requeue_running_takes_back_every_running_run_counted(storage: Storage) -> None:
    threads = [new_id() for _ in range(3)]
    for tid in threads:
        await queue(storage, tid)
    claimed = await storage.claim_runs(2)
    assert await storage.requeue_running() == 2
    assert await storage.inflight_run_ids("running") == []
    assert len(await storage.inflight_run_ids("pending")) == 3
    again = await storage.claim_runs(10)
    attempts = {r["run_id"]: r["attempt"] for r in again}
    for run in claimed:
        assert attempts[run["run_id"]] == 2  # the dead process's start counts
    assert await storage.requeue_running() == 3


# ---------------------------------------------------------------- ends and thread status


async def test_a_threads_status_is_busy_in_flight_then_its_rest_status(storage: Storage) -> None:
    tid = new_id()
    await storage.create_thread(tid, {}, "raise")
    assert await status(storage, tid) == "idle"
    await queue(storage, tid)
    await queue(storage, tid)
    assert await status(storage, tid) == "busy"
    [run] = await storage.claim_runs(1)
    # A state update while busy sets the rest status; the thread stays busy.
    await storage.set_thread_state(tid, {"v": 0}, {}, "interrupted")
    assert await status(storage, tid) == "busy"
    error = {"error": "ValueError", "message": "boom"}
    assert await finish(storage, run, "error", thread_status="error", values={"v": 1}, error=error)
    thread = await storage.get_thread(tid)
    assert thread is not None and thread["status"] == "busy"  # the second run is queued
    assert thread["values"] == {"v": 1} and thread["error"] == error
    [run] = await storage.claim_runs(1)
    interrupts = {"task-1": [{"value": "ask", "id": "i1"}]}
    values = orjson.Fragment(b'{"v":2,"nested":{"x":[1,2]}}')  # as the executor passes them
    assert await finish(
        storage, run, thread_status="interrupted", values=values, interrupts=interrupts
    )
    thread = await storage.get_thread(tid)
    assert thread is not None and thread["status"] == "interrupted"
    assert thread["values"] == {"v": 2, "nested": {"x": [1, 2]}}
    assert thread["interrupts"] == interrupts and thread["error"] is None
    lean = await storage.get_thread(tid, with_values=False)
    assert lean is not None and lean["values"] is None and lean["status"] == "interrupted"
    # An end without values keeps the thread's values.
    await queue(storage, tid)
    [run] = await storage.claim_runs(1)
    assert await finish(storage, run, values=None)
    thread = await storage.get_thread(tid)
    assert thread is not None and thread["status"] == "idle"
    assert thread["values"] == {"v": 2, "nested": {"x": [1, 2]}}
    await storage.set_thread_state(tid, {"v": 3}, {"t": []}, "interrupted")
    thread = await storage.get_thread(tid)
    assert thread is not None and thread["status"] == "interrupted"
    assert thread["values"] == {"v": 3} and thread["interrupts"] == {"t": []}


async def test_finish_with_delete_drops_the_thread_and_its_checkpoints(storage: Storage) -> None:
    tid = new_id()
    run, _ = await queue(storage, tid, temporary=True)
    [claimed] = await storage.claim_runs(1)
    await run_graph(storage, claimed, {"log": ["in"]})
    assert await latest_values(storage, tid) is not None
    assert await finish(storage, claimed, delete=True)
    assert await storage.get_thread(tid) is None
    assert await storage.get_run(None, run["run_id"]) is None
    assert await latest_values(storage, tid) is None
    assert await history(storage, tid) == []


async def test_an_end_after_its_thread_was_deleted_removes_late_checkpoints(
    storage: Storage,
) -> None:
    tid = new_id()
    await queue(storage, tid)
    [run] = await storage.claim_runs(1)
    assert await storage.delete_thread(tid)
    await run_graph(storage, run, {"log": ["late"]})  # still unwinding after the delete
    assert not await finish(storage, run)
    assert await storage.get_thread(tid) is None
    assert await history(storage, tid) == []


@pytest.mark.known_bug(
    "sqlite",
    reason="finish_run cannot tell a thread re-created (same id) under a running run from its "
    "own: the end is refused without its webhook (a doubled end of a rolled-back run looks "
    "the same)",
)
@pytest.mark.known_bug("postgres", reason="as on sqlite")
async def test_an_end_after_its_thread_was_deleted_and_recreated(storage: Storage) -> None:
    tid = new_id()
    await queue(storage, tid)
    [run] = await storage.claim_runs(1)
    assert await storage.delete_thread(tid)
    await storage.create_thread(tid, {}, "raise")  # the same id, a new thread
    # The old run still unwinding: its writes are fenced, the run is gone with its thread.
    fenced = storage.fenced_checkpointer(run["run_id"], run["attempt"])
    with pytest.raises(LeaseLost):
        await run_graph(storage, run, {"log": ["late"]}, checkpointer=fenced)
    sent = delivery(run, "interrupted")
    assert not await finish(storage, run, "interrupted", webhook=sent)
    # Its thread was deleted meanwhile: its webhook still fires (finish_run's contract)...
    assert [r["delivery_id"] for r in await storage.claim_webhooks(10, 60)] == [sent.delivery_id]
    # ...and what it wrote after the delete is not the new thread's history.
    assert [c for c in await history(storage, tid) if c[4].get("run_id") == run["run_id"]] == []


@pytest.mark.parametrize("undone_first", [True, False], ids=["roll_back_run", "finish_only"])
@pytest.mark.parametrize("how", ["resume", "new_input", "fork"])
async def test_rollback_leaves_the_checkpoints_as_before_the_run(
    storage: Storage, how: str, undone_first: bool
) -> None:
    tid = new_id()
    await queue(storage, tid)
    [first] = await storage.claim_runs(1)
    await run_graph(storage, first, {"log": ["in"]}, interrupt_before=["b"])
    assert await finish(storage, first, thread_status="interrupted", values={"log": ["in", "a"]})
    before = await history(storage, tid)
    assert len(before) >= 2
    if how == "fork":  # from the first run's checkpoint before node a ran
        [fork] = [c[1] for c in before if c[4]["step"] == 0]
        second, _ = await queue(storage, tid, config={"configurable": {"checkpoint_id": fork}})
    else:
        second, _ = await queue(storage, tid)
    [run] = await storage.claim_runs(1)
    if how == "new_input":
        out = await run_graph(storage, run, {"log": ["other"]})
    else:  # resume: its first writes land on the checkpoint the first run left
        out = await run_graph(storage, run, None)
    assert out["log"][-1] == "b"
    assert await history(storage, tid) != before
    if undone_first:  # the executor's way: undone, state read, then the end recorded
        await storage.roll_back_run(tid, second["run_id"])
        assert await history(storage, tid) == before
    assert await finish(storage, run, "rollback", thread_status="interrupted", rollback=True)
    assert await history(storage, tid) == before
    assert await storage.get_run(tid, second["run_id"]) is None
    assert [r["run_id"] for r in await storage.list_runs(tid, limit=10, offset=0, status=None)] == [
        first["run_id"]
    ]
    assert await status(storage, tid) == "interrupted"


async def test_delete_run_removes_the_run_and_its_checkpoints(storage: Storage) -> None:
    tid = new_id()
    for word in ("one", "two"):
        await queue(storage, tid)
        [run] = await storage.claim_runs(1)
        await run_graph(storage, run, {"log": [word]})
        assert await finish(storage, run)
    first, second = sorted(
        await storage.list_runs(tid, limit=10, offset=0, status=None), key=lambda r: r["created_at"]
    )
    full = await history(storage, tid)
    assert not await storage.delete_run(new_id(), second["run_id"])
    assert await storage.delete_run(tid, second["run_id"])
    assert not await storage.delete_run(tid, second["run_id"])
    assert await storage.get_run(tid, second["run_id"]) is None
    assert await history(storage, tid) == [c for c in full if c[4]["run_id"] != second["run_id"]]
    assert await storage.get_run(tid, first["run_id"]) is not None


# ---------------------------------------------------------------- listings


async def test_runs_are_listed_newest_first_with_filters_and_pages(storage: Storage) -> None:
    tid = new_id()
    base = datetime.now(UTC) - timedelta(minutes=10)
    runs = [
        (await queue(storage, tid, created_at=iso(base + timedelta(seconds=i))))[0]
        for i in range(5)
    ]
    [run] = await storage.claim_runs(1)
    assert await finish(storage, run)
    await storage.claim_runs(1)
    ids = [r["run_id"] for r in runs]
    listed = await storage.list_runs(tid, limit=10, offset=0, status=None)
    assert [r["run_id"] for r in listed] == ids[::-1]
    page = await storage.list_runs(tid, limit=2, offset=1, status=None)
    assert [r["run_id"] for r in page] == ids[::-1][1:3]
    pending = await storage.list_runs(tid, limit=10, offset=0, status="pending")
    assert [r["run_id"] for r in pending] == ids[:1:-1]
    assert [
        r["run_id"] for r in await storage.list_runs(tid, limit=10, offset=0, status="success")
    ] == ids[:1]
    assert await storage.list_runs(new_id(), limit=10, offset=0, status=None) == []
    inflight = await storage.inflight_runs(tid)
    assert [r["run_id"] for r in inflight] == ids[1:]
    assert await storage.inflight_run_ids("running") == [(tid, ids[1])]
    assert await storage.inflight_run_ids("pending") == [(tid, i) for i in ids[2:]]
    assert await storage.inflight_run_ids(None) == [(tid, i) for i in ids[1:]]


# ---------------------------------------------------------------- cron ticks


async def test_a_cron_tick_is_claimed_once_in_its_runs_transaction(storage: Storage) -> None:
    tid = new_id()
    await storage.create_thread(tid, {}, "raise")
    await ensure_assistant(storage)
    due, later, after = now_iso(-60), now_iso(60), now_iso(120)
    cron = await storage.create_cron(new_cron(due, thread_id=tid))
    cid = cron["cron_id"]

    async def fire(tick: tuple[str, str, str | None], thread_id: str = tid) -> object:
        run = new_run(thread_id, "reject")
        return await storage.create_run(
            run, thread_metadata={}, if_not_exists="reject", cron_tick=tick
        )

    assert await fire((cid, later, later)) is None  # not the cron's due tick: nothing written
    assert await storage.list_runs(tid, limit=10, offset=0, status=None) == []
    created = await fire((cid, due, later))
    assert created is not None
    cron_now = await storage.get_cron(cid)
    assert cron_now is not None and cron_now["next_run_date"] == later
    assert await fire((cid, due, later)) is None  # the same tick again
    assert len(await storage.list_runs(tid, limit=10, offset=0, status=None)) == 1
    # A run that cannot be created still consumes its tick: reject on a busy thread...
    with pytest.raises(Conflict):
        await fire((cid, later, after))
    cron_now = await storage.get_cron(cid)
    assert cron_now is not None and cron_now["next_run_date"] == after
    assert len(await storage.list_runs(tid, limit=10, offset=0, status=None)) == 1
    # ...or a thread that is gone.
    with pytest.raises(NotFound):
        await fire((cid, after, None), new_id())
    cron_now = await storage.get_cron(cid)
    assert cron_now is not None and cron_now["next_run_date"] is None
    # A disabled cron's tick cannot be claimed.
    await storage.update_cron(cid, lambda _: {"enabled": False, "next_run_date": due})
    assert await fire((cid, due, later)) is None
