"""Conformance: the webhook outbox. Deliveries go in with the transaction that ends their run
(``finish_run``, a cancel that ends a run, a multitask strategy that does); senders lease them,
release them for a retry, or delete them."""

from __future__ import annotations

import asyncio
import time

import orjson

from agentd.storage.base import Row, Storage
from tests.storage.helpers import (
    HOOK,
    delivery,
    finish,
    new_id,
    outbox,
    queue,
    webhook_for,
)


async def _delivered_runs(storage: Storage, n: int) -> list[Row]:
    """``n`` runs ended by their worker, each with a delivery in the outbox, oldest first."""
    ended = []
    for _ in range(n):
        await queue(storage, new_id())
        [run] = await storage.claim_runs(1)
        assert await finish(storage, run, webhook=delivery(run, "success"))
        ended.append(run)
        await asyncio.sleep(0.002)  # distinct due times
    return ended


async def test_a_runs_end_puts_its_delivery_in_the_outbox(storage: Storage) -> None:
    assert await storage.next_webhook_at() is None
    assert await storage.claim_webhooks(10, 60) == []
    await queue(storage, new_id())
    [run] = await storage.claim_runs(1)
    sent = delivery(run, "success")
    # A stale attempt records nothing.
    assert not await finish(storage, {**run, "attempt": 9}, webhook=delivery(run, "error"))
    assert await storage.next_webhook_at() is None
    before = time.time()
    assert await finish(storage, run, webhook=sent)
    at = await storage.next_webhook_at()
    assert at is not None and before - 1 <= at <= time.time() + 0.01  # due now
    [row] = await storage.claim_webhooks(10, 60)
    assert row["delivery_id"] == sent.delivery_id and row["run_id"] == run["run_id"]
    assert row["url"] == HOOK and bytes(row["payload"]) == sent.payload
    assert row["attempt"] == 1


async def test_a_delivery_outlives_its_deleted_run_and_thread(storage: Storage) -> None:
    temporary, deleted, rolled = new_id(), new_id(), new_id()
    for tid in (temporary, deleted, rolled):
        await queue(storage, tid)
    claimed = {r["thread_id"]: r for r in await storage.claim_runs(10)}
    assert await finish(
        storage, claimed[temporary], delete=True, webhook=delivery(claimed[temporary], "success")
    )
    assert await finish(
        storage,
        claimed[rolled],
        "rollback",
        rollback=True,
        webhook=delivery(claimed[rolled], "rollback"),
    )
    await storage.delete_thread(deleted)
    # Deleted while the run was unwinding: the end is not recorded, its webhook still fires.
    assert not await finish(
        storage, claimed[deleted], "interrupted", webhook=delivery(claimed[deleted], "interrupted")
    )
    rows = await outbox(storage)
    assert sorted((r["payload"]["run_id"], r["payload"]["status"]) for r in rows) == sorted(
        [
            (claimed[temporary]["run_id"], "success"),
            (claimed[rolled]["run_id"], "rollback"),
            (claimed[deleted]["run_id"], "interrupted"),
        ]
    )


async def test_cancels_record_deliveries_for_the_runs_they_end(storage: Storage) -> None:
    tid = new_id()
    running, _ = await queue(storage, tid, webhook=HOOK)
    await storage.claim_runs(1)
    queued, _ = await queue(storage, tid, webhook=HOOK)
    silent, _ = await queue(storage, tid)  # no webhook asked
    ids = [running["run_id"], queued["run_id"], silent["run_id"]]
    cancelled = await storage.cancel_runs(tid, ids, "interrupt", webhook=webhook_for)
    assert {c.run["run_id"]: c.ended for c in cancelled} == {
        running["run_id"]: False,
        queued["run_id"]: True,
        silent["run_id"]: True,
    }
    # The running run's webhook comes with its end, from its executor: not here.
    assert [(r["run_id"], r["payload"]["status"]) for r in await outbox(storage)] == [
        (queued["run_id"], "interrupted")
    ]
    # A multitask strategy's cancels too; a rollback's status is "rollback".
    other = new_id()
    first, _ = await queue(storage, other, webhook=HOOK)
    created = await storage.create_run(
        {**first, "run_id": new_id(), "multitask_strategy": "rollback"},
        thread_metadata={},
        if_not_exists="reject",
        webhook=webhook_for,
    )
    assert created is not None
    assert [(c.run["run_id"], c.ended) for c in created[1]] == [(first["run_id"], True)]
    assert [(r["run_id"], r["payload"]["status"]) for r in await outbox(storage)] == [
        (first["run_id"], "rollback")
    ]


async def test_a_claim_leases_the_oldest_due_deliveries(storage: Storage) -> None:
    runs = await _delivered_runs(storage, 3)
    first = await storage.claim_webhooks(2, 60)
    assert [r["run_id"] for r in first] == [r["run_id"] for r in runs[:2]]
    assert all(r["attempt"] == 1 for r in first)
    second = await storage.claim_webhooks(10, 60)
    assert [r["run_id"] for r in second] == [runs[2]["run_id"]]  # the others are leased
    assert await storage.claim_webhooks(10, 60) == []
    at = await storage.next_webhook_at()  # when the first lease runs out
    assert at is not None and abs(at - (time.time() + 60)) < 2


async def test_a_lease_that_runs_out_makes_a_delivery_due_again(storage: Storage) -> None:
    [run] = await _delivered_runs(storage, 1)
    [row] = await storage.claim_webhooks(10, 1.0)
    assert await storage.claim_webhooks(10, 1.0) == []
    await asyncio.sleep(1.1)
    [again] = await storage.claim_webhooks(10, 60)
    assert again["delivery_id"] == row["delivery_id"] and again["attempt"] == 2
    assert again["run_id"] == run["run_id"]


async def test_retries_counted_or_not_and_deletes(storage: Storage) -> None:
    await _delivered_runs(storage, 2)
    one, two = await storage.claim_webhooks(10, 60)
    await storage.retry_webhook(one["delivery_id"], 0)
    [row] = await storage.claim_webhooks(10, 60)
    assert row["delivery_id"] == one["delivery_id"] and row["attempt"] == 2
    # Cut short by a shutdown: the attempt is handed back.
    await storage.retry_webhook(one["delivery_id"], 0, counted=False)
    [row] = await storage.claim_webhooks(10, 60)
    assert row["delivery_id"] == one["delivery_id"] and row["attempt"] == 2
    await storage.retry_webhook(one["delivery_id"], 30)
    assert await storage.claim_webhooks(10, 60) == []
    await storage.delete_webhook(two["delivery_id"])
    at = await storage.next_webhook_at()
    assert at is not None and abs(at - (time.time() + 30)) < 2
    await storage.delete_webhook(one["delivery_id"])
    await storage.delete_webhook(one["delivery_id"])  # gone already: nothing happens
    assert await storage.next_webhook_at() is None


async def test_requeue_makes_leased_deliveries_due_now(storage: Storage) -> None:
    await _delivered_runs(storage, 3)
    leased = await storage.claim_webhooks(2, 600)
    assert await storage.requeue_webhooks() == 2
    rows = await storage.claim_webhooks(10, 60)
    attempts = {r["delivery_id"]: r["attempt"] for r in rows}
    assert len(rows) == 3
    for row in leased:
        assert attempts[row["delivery_id"]] == 2  # the cut-short attempt stays counted
    assert await storage.requeue_webhooks() == 3


async def test_payloads_come_back_byte_for_byte(storage: Storage) -> None:
    await queue(storage, new_id())
    [run] = await storage.claim_runs(1)
    payload = orjson.dumps({"v": "ünï \u2028 \\ \" ' \x7f", "n": [1.5, None, True]}) + b"\x00\xff"
    sent = delivery(run, "success")
    sent = type(sent)(sent.delivery_id, sent.run_id, sent.url, payload)
    assert await finish(storage, run, webhook=sent)
    [row] = await storage.claim_webhooks(10, 60)
    assert bytes(row["payload"]) == payload
