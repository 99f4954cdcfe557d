"""Conformance: threads (create, update, delete with their checkpoints), TTLs and their sweep,
copy and prune through LangGraph's own checkpoint listings, and search order and paging."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import pytest

from agentd.schemas import Conflict
from agentd.storage.base import Row, Storage
from tests.storage.helpers import (
    OpenBackend,
    ensure_assistant,
    finish,
    history,
    latest_values,
    new_cron,
    new_id,
    now_iso,
    queue,
    run_graph,
)

TINY_TTL = 0.001  # minutes: 60 ms


async def _ran(storage: Storage, tid: str, *words: str, paused: bool = False) -> None:
    """One run per word on ``tid``, each writing checkpoints (the last paused before b)."""
    for i, word in enumerate(words):
        await queue(storage, tid)
        [run] = await storage.claim_runs(1)
        pause = paused and i == len(words) - 1
        before = ["b"] if pause else None
        out = await run_graph(storage, run, {"log": [word]}, interrupt_before=before)
        rest = "interrupted" if pause else "idle"
        assert await finish(storage, run, thread_status=rest, values=out)


def _heads(checkpoints: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The newest checkpoint of each namespace, with no parent, as keep_latest leaves it."""
    seen: dict[str, tuple[Any, ...]] = {}
    for c in checkpoints:  # newest first
        seen.setdefault(c[0], c)
    return [(c[0], c[1], None, *c[3:]) for c in seen.values()]


# ---------------------------------------------------------------- CRUD


async def test_threads_are_created_updated_and_deleted(storage: Storage) -> None:
    tid = new_id()
    created = await storage.create_thread(tid, {"a": 1, "b": {"c": [1]}}, "raise")
    assert created["thread_id"] == tid and created["status"] == "idle"
    assert created["metadata"] == {"a": 1, "b": {"c": [1]}} and created["values"] is None
    assert await storage.get_thread(tid) == created
    with pytest.raises(Conflict):
        await storage.create_thread(tid, {"other": True}, "raise")
    assert await storage.create_thread(tid, {"other": True}, "do_nothing") == created
    updated = await storage.update_thread(tid, {"b": None, "d": "x"})
    assert updated is not None and updated["metadata"] == {"a": 1, "b": None, "d": "x"}
    assert await storage.get_thread(tid) == updated
    assert await storage.update_thread(new_id(), {"a": 1}) is None
    assert await storage.delete_thread(tid)
    assert not await storage.delete_thread(tid)
    assert await storage.get_thread(tid) is None


async def test_deleting_a_thread_deletes_its_checkpoints_runs_and_crons(storage: Storage) -> None:
    tid = new_id()
    await _ran(storage, tid, "one")
    queued, _ = await queue(storage, tid)
    await ensure_assistant(storage)
    cron = await storage.create_cron(new_cron(now_iso(60), thread_id=tid))
    assert await history(storage, tid) != []
    assert await storage.delete_thread(tid)
    assert await storage.get_run(None, queued["run_id"]) is None
    assert await storage.get_cron(cron["cron_id"]) is None
    assert await storage.inflight_run_ids(None) == []
    # Re-created with the same id, it starts from nothing.
    await storage.create_thread(tid, {}, "raise")
    assert await latest_values(storage, tid) is None
    assert await history(storage, tid) == []
    assert await storage.list_runs(tid, limit=10, offset=0, status=None) == []


# ---------------------------------------------------------------- TTL


async def test_a_threads_ttl_is_kept_and_reported(storage: Storage) -> None:
    tid = new_id()
    await storage.create_thread(tid, {}, "raise", ttl=("delete", 30))
    ttl = await storage.get_thread_ttl(tid)
    thread = await storage.get_thread(tid)
    assert ttl is not None and thread is not None
    assert (ttl["strategy"], ttl["ttl_minutes"]) == ("delete", 30)
    expires = datetime.fromisoformat(thread["updated_at"]) + timedelta(minutes=30)
    assert abs((datetime.fromisoformat(ttl["expires_at"]) - expires).total_seconds()) < 0.01
    await storage.update_thread(tid, {}, ttl=("keep_latest", 2.5))
    ttl = await storage.get_thread_ttl(tid)
    assert ttl is not None and (ttl["strategy"], ttl["ttl_minutes"]) == ("keep_latest", 2.5)
    plain = new_id()
    await storage.create_thread(plain, {}, "raise")
    assert await storage.get_thread_ttl(plain) is None
    assert await storage.get_thread_ttl(new_id()) is None


async def test_a_default_ttl_reaches_every_new_thread(open_backend: OpenBackend) -> None:
    storage = await open_backend(default_thread_ttl=("delete", 10))
    made, by_run, own = new_id(), new_id(), new_id()
    await storage.create_thread(made, {}, "raise")
    await queue(storage, by_run)
    await storage.create_thread(own, {}, "raise", ttl=("keep_latest", 5))
    for tid, expected in (
        (made, ("delete", 10)),
        (by_run, ("delete", 10)),
        (own, ("keep_latest", 5)),
    ):
        ttl = await storage.get_thread_ttl(tid)
        assert ttl is not None and (ttl["strategy"], ttl["ttl_minutes"]) == expected


async def test_the_sweep_applies_the_ttl_of_expired_idle_threads(storage: Storage) -> None:
    deleted, busy, plain, fresh, pruned = (new_id() for _ in range(5))
    await _ran(storage, deleted, "one")
    await storage.update_thread(deleted, {}, ttl=("delete", TINY_TTL))
    await _ran(storage, pruned, "one", "two")
    await storage.update_thread(pruned, {}, ttl=("keep_latest", TINY_TTL))
    await storage.create_thread(busy, {}, "raise", ttl=("delete", TINY_TTL))
    await queue(storage, busy)
    await storage.create_thread(plain, {}, "raise")
    await storage.create_thread(fresh, {}, "raise", ttl=("delete", 60))
    full = await history(storage, pruned)
    await asyncio.sleep(0.15)
    assert await storage.sweep_threads(100) == ([deleted], [pruned])
    assert await storage.get_thread(deleted) is None and await history(storage, deleted) == []
    for tid in (busy, plain, fresh, pruned):
        assert await storage.get_thread(tid) is not None
    after = await history(storage, pruned)
    assert after == _heads(full) and len(after) == 1
    assert await latest_values(storage, pruned) == full[0][3]
    # Pruned and unchanged since: not pruned again.
    assert await storage.sweep_threads(100) == ([], [])
    # Its run ended: the busy thread expires in its turn.
    [run] = await storage.claim_runs(1)
    assert await finish(storage, run)
    await asyncio.sleep(0.15)
    assert await storage.sweep_threads(100) == ([busy], [])
    assert await storage.get_thread(busy) is None


async def test_the_sweep_takes_at_most_its_limit(storage: Storage) -> None:
    threads = [new_id() for _ in range(5)]
    for tid in threads:
        await storage.create_thread(tid, {}, "raise", ttl=("delete", TINY_TTL))
    await asyncio.sleep(0.15)
    first, _ = await storage.sweep_threads(2)
    second, _ = await storage.sweep_threads(10)
    assert len(first) == 2 and sorted(first + second) == sorted(threads)
    assert await storage.sweep_threads(10) == ([], [])


# ---------------------------------------------------------------- copy and prune


async def test_a_copy_has_the_sources_history_state_and_ttl(storage: Storage) -> None:
    source = new_id()
    await storage.create_thread(source, {"owner": "x"}, "raise", ttl=("keep_latest", 30))
    await _ran(storage, source, "one", "two", paused=True)
    await queue(storage, source)  # busy: the copy takes its resting status, not its runs
    src = await storage.get_thread(source)
    assert src is not None and src["status"] == "busy"
    copy_id = new_id()
    copied = await storage.copy_thread(source, copy_id)
    assert copied is not None and copied["thread_id"] == copy_id
    assert copied["metadata"] == {"owner": "x"} and copied["status"] == "interrupted"
    assert copied["values"] == src["values"] and copied["interrupts"] == src["interrupts"]
    assert await storage.get_thread(copy_id) == copied
    ttl = await storage.get_thread_ttl(copy_id)
    assert ttl is not None and (ttl["strategy"], ttl["ttl_minutes"]) == ("keep_latest", 30)
    source_history = await history(storage, source)
    assert len(source_history) >= 6
    assert await history(storage, copy_id) == source_history
    assert await storage.list_runs(copy_id, limit=10, offset=0, status=None) == []
    # The two live apart: a run on the copy leaves the source as it was.
    await queue(storage, copy_id)
    [run] = [r for r in await storage.claim_runs(10) if r["thread_id"] == copy_id]
    await run_graph(storage, run, None)
    assert await history(storage, source) == source_history
    assert await history(storage, copy_id) != source_history
    assert await storage.copy_thread(new_id(), new_id()) is None


async def test_prune_deletes_threads_or_keeps_their_latest_checkpoint(storage: Storage) -> None:
    gone, kept, other = new_id(), new_id(), new_id()
    for tid in (gone, kept, other):
        await _ran(storage, tid, "one", "two")
    full = await history(storage, kept)
    assert await storage.prune_threads([gone, new_id()], "delete") == 1
    assert await storage.get_thread(gone) is None and await history(storage, gone) == []
    other_history = await history(storage, other)
    assert await storage.prune_threads([kept, new_id()], "keep_latest") == 1
    assert await history(storage, kept) == _heads(full)
    assert await latest_values(storage, kept) == full[0][3]
    assert await history(storage, other) == other_history
    assert await storage.prune_threads([], "delete") == 0


async def test_keep_latest_is_refused_for_a_thread_with_a_pending_run(storage: Storage) -> None:
    idle, queued = new_id(), new_id()
    for tid in (idle, queued):
        await _ran(storage, tid, "one", "two")
    await queue(storage, queued)
    idle_history = await history(storage, idle)
    queued_history = await history(storage, queued)
    with pytest.raises(Conflict):
        await storage.prune_threads([idle, queued], "keep_latest")
    assert await history(storage, idle) == idle_history  # all or nothing
    assert await history(storage, queued) == queued_history
    # delete is not refused: the thread goes with its runs.
    assert await storage.prune_threads([queued], "delete") == 1
    assert await storage.inflight_run_ids(None) == []


# ---------------------------------------------------------------- search, count, order


async def _statuses(storage: Storage) -> dict[str, str]:
    """Threads in every status: idle, busy, interrupted, error (two of each)."""
    made: dict[str, str] = {}
    for rest in ("idle", "busy", "interrupted", "error", "idle", "busy", "interrupted", "error"):
        tid = new_id()
        await storage.create_thread(tid, {"rest": rest}, "raise")
        if rest in ("interrupted", "error"):
            await queue(storage, tid)
            [run] = await storage.claim_runs(1)
            assert await finish(storage, run, thread_status=rest, values={"rest": rest})
        made[tid] = rest
    for tid in [t for t, rest in made.items() if rest == "busy"]:
        await queue(storage, tid)
    return made


def _key(row: Row, field: str) -> Any:
    value = row[field]
    return datetime.fromisoformat(value) if field.endswith("_at") else value


async def test_threads_are_searched_by_ids_status_and_filters(storage: Storage) -> None:
    made = await _statuses(storage)
    everything = dict(limit=100, offset=0, sort_by="created_at", sort_order="asc")
    rows, total = await storage.search_threads(
        ids=None, metadata=None, values=None, status=None, **everything
    )
    assert [r["thread_id"] for r in rows] == list(made) and total == len(made)
    for wanted in ("idle", "busy", "interrupted", "error"):
        rows, total = await storage.search_threads(
            ids=None, metadata=None, values=None, status=wanted, **everything
        )
        expected = [t for t, s in made.items() if s == wanted]
        assert [r["thread_id"] for r in rows] == expected and total == 2
        assert {r["status"] for r in rows} == {wanted}
        assert await storage.count_threads(metadata=None, values=None, status=wanted) == 2
    some = list(made)[1:4]
    rows, total = await storage.search_threads(
        ids=[*some, new_id()], metadata=None, values=None, status=None, **everything
    )
    assert [r["thread_id"] for r in rows] == some and total == 3
    assert await storage.search_threads(
        ids=[], metadata=None, values=None, status=None, **everything
    ) == ([], 0)
    rows, total = await storage.search_threads(
        ids=None, metadata={"rest": "busy"}, values=None, status=None, **everything
    )
    assert [r["thread_id"] for r in rows] == [t for t, s in made.items() if s == "busy"]
    rows, total = await storage.search_threads(
        ids=None, metadata=None, values={"rest": "error"}, status=None, **everything
    )
    assert [r["thread_id"] for r in rows] == [t for t, s in made.items() if s == "error"]
    assert (
        total
        == 2
        == await storage.count_threads(metadata=None, values={"rest": "error"}, status=None)
    )
    assert await storage.count_threads(metadata=None, values=None, status=None) == len(made)
    assert await storage.count_threads(metadata={"rest": "idle"}, values=None, status="busy") == 0


@pytest.mark.parametrize(
    "sort_by", ["thread_id", "status", "created_at", "updated_at", "state_updated_at"]
)
async def test_threads_are_sorted_and_paged(storage: Storage, sort_by: str) -> None:
    made = await _statuses(storage)
    orders = {}
    for order in ("asc", "desc"):
        rows, total = await storage.search_threads(
            ids=None,
            metadata=None,
            values=None,
            status=None,
            limit=100,
            offset=0,
            sort_by=sort_by,
            sort_order=order,
        )
        assert total == len(made) and {r["thread_id"] for r in rows} == set(made)
        keys = [_key(r, sort_by) for r in rows]
        assert keys == sorted(keys, reverse=order == "desc")
        # Pages walk the same order, ties included, whatever the page size.
        for size in (1, 3):
            paged: list[str] = []
            for offset in range(0, len(made) + size, size):
                page, page_total = await storage.search_threads(
                    ids=None,
                    metadata=None,
                    values=None,
                    status=None,
                    limit=size,
                    offset=offset,
                    sort_by=sort_by,
                    sort_order=order,
                )
                assert page_total == len(made) and len(page) <= size
                paged += [r["thread_id"] for r in page]
            assert paged == [r["thread_id"] for r in rows]
        orders[order] = [r["thread_id"] for r in rows]
    if sort_by != "status":  # unique keys: one order is the other reversed
        assert orders["desc"] == orders["asc"][::-1]
