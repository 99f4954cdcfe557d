"""Conformance: crons (create, update in a transaction, due and next firing, the tick's
compare-and-set claim) and their search."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agentd.schemas import NotFound
from agentd.storage.base import Row, Storage
from tests.storage.helpers import ASSISTANT, ensure_assistant, iso, new_cron, new_id, now_iso

OTHER = "a0000000-0000-4000-8000-000000000002"


async def test_a_cron_needs_its_assistant_and_thread(storage: Storage) -> None:
    with pytest.raises(NotFound):
        await storage.create_cron(new_cron(now_iso(60)))
    await ensure_assistant(storage)
    with pytest.raises(NotFound):
        await storage.create_cron(new_cron(now_iso(60), thread_id=new_id()))
    assert await storage.search_crons(
        assistant_id=None,
        thread_id=None,
        enabled=None,
        metadata=None,
        limit=10,
        offset=0,
        sort_by="created_at",
        sort_order="asc",
    ) == ([], 0)
    tid = new_id()
    await storage.create_thread(tid, {}, "raise")
    body = new_cron(now_iso(60), thread_id=tid, metadata={"m": [1]}, end_time=now_iso(3600))
    row = await storage.create_cron(body)
    assert row == body
    assert await storage.get_cron(body["cron_id"]) == body
    assert await storage.get_cron(new_id()) is None


async def test_a_cron_is_updated_from_what_it_is(storage: Storage) -> None:
    await ensure_assistant(storage)
    cron = await storage.create_cron(new_cron(now_iso(60), metadata={"n": 0}))
    seen: list[Row] = []

    def change(current: Row) -> Row:
        seen.append(current)
        return {
            "metadata": {"n": current["metadata"]["n"] + 1},
            "enabled": False,
            "payload": {"input": {"v": 2}},
            "schedule": "0 * * * *",
        }

    updated = await storage.update_cron(cron["cron_id"], change)
    assert seen[-1] == cron
    assert updated is not None and updated == {
        **cron,
        "metadata": {"n": 1},
        "enabled": False,
        "payload": {"input": {"v": 2}},
        "schedule": "0 * * * *",
    }
    assert await storage.get_cron(cron["cron_id"]) == updated
    assert await storage.update_cron(cron["cron_id"], lambda _: {}) == updated
    # Concurrent read-modify-writes each see the last one's result: none is lost.
    await asyncio.gather(*(storage.update_cron(cron["cron_id"], change) for _ in range(20)))
    final = await storage.get_cron(cron["cron_id"])
    assert final is not None and final["metadata"] == {"n": 21}
    assert await storage.update_cron(new_id(), change) is None
    assert await storage.delete_cron(cron["cron_id"])
    assert not await storage.delete_cron(cron["cron_id"])
    assert await storage.get_cron(cron["cron_id"]) is None


async def test_due_crons_and_the_next_firing(storage: Storage) -> None:
    await ensure_assistant(storage)
    assert await storage.next_cron_at() is None
    now = datetime.now(UTC)
    made = {}
    for name, offset, enabled in [
        ("late", -10, True),
        ("early", -60, True),
        ("off", -120, False),
        ("soon", 30, True),
        ("never", None, True),
    ]:
        when = None if offset is None else iso(now + timedelta(seconds=offset))
        made[name] = await storage.create_cron(new_cron(when, enabled=enabled))
    due = await storage.due_crons(iso(now))
    assert [c["cron_id"] for c in due] == [made["early"]["cron_id"], made["late"]["cron_id"]]
    assert [c["cron_id"] for c in await storage.due_crons(iso(now), 1)] == [
        made["early"]["cron_id"]
    ]
    at = await storage.next_cron_at()
    assert at is not None and abs(at - (now - timedelta(seconds=60)).timestamp()) < 0.01
    assert [c["cron_id"] for c in await storage.due_crons(iso(now + timedelta(minutes=1)))] == [
        made[n]["cron_id"] for n in ("early", "late", "soon")
    ]
    # Exactly at its time, a cron is due.
    soon = made["soon"]["next_run_date"]
    assert made["soon"]["cron_id"] in [c["cron_id"] for c in await storage.due_crons(soon)]
    for name in ("early", "late"):
        await storage.delete_cron(made[name]["cron_id"])
    at = await storage.next_cron_at()
    assert at is not None and abs(at - (now + timedelta(seconds=30)).timestamp()) < 0.01


async def test_a_tick_is_claimed_by_compare_and_set(storage: Storage) -> None:
    await ensure_assistant(storage)
    due, later, latest = now_iso(-5), now_iso(60), now_iso(120)
    cron = await storage.create_cron(new_cron(due))
    cid = cron["cron_id"]
    assert await storage.claim_cron(cid, later, latest) is None  # not its due tick
    claimed = await storage.claim_cron(cid, due, later)
    assert claimed is not None and claimed["next_run_date"] == later
    assert await storage.claim_cron(cid, due, later) is None  # taken
    assert await storage.claim_cron(new_id(), due, later) is None
    finished = await storage.claim_cron(cid, later, None)  # the last firing
    assert finished is not None and finished["next_run_date"] is None
    assert await storage.due_crons(now_iso(3600)) == []
    await storage.update_cron(cid, lambda _: {"next_run_date": due, "enabled": False})
    assert await storage.claim_cron(cid, due, later) is None  # disabled


async def test_one_of_many_concurrent_claims_of_a_tick_wins(storage: Storage) -> None:
    await ensure_assistant(storage)
    for _ in range(5):
        due = now_iso(-1)
        cron = await storage.create_cron(new_cron(due))
        nexts = [now_iso(60 + i) for i in range(40)]
        results = await asyncio.gather(
            *(storage.claim_cron(cron["cron_id"], due, n) for n in nexts)
        )
        winners = [(r, n) for r, n in zip(results, nexts, strict=True) if r is not None]
        assert len(winners) == 1
        row, next_run = winners[0]
        assert row["next_run_date"] == next_run
        stored = await storage.get_cron(cron["cron_id"])
        assert stored is not None and stored["next_run_date"] == next_run


async def _crons(storage: Storage) -> list[Row]:
    await ensure_assistant(storage)
    await ensure_assistant(storage, OTHER)
    threads = [new_id(), new_id()]
    for tid in threads:
        await storage.create_thread(tid, {}, "raise")
    now = datetime.now(UTC)
    made = []
    for i, (aid, tid, enabled, end) in enumerate(
        [
            (ASSISTANT, None, True, None),
            (OTHER, threads[0], True, 5),
            (ASSISTANT, threads[1], False, 1),
            (OTHER, None, True, 3),
            (ASSISTANT, threads[0], False, None),
            (OTHER, threads[1], True, 2),
        ]
    ):
        made.append(
            await storage.create_cron(
                new_cron(
                    iso(now + timedelta(minutes=7 - i)),
                    assistant_id=aid,
                    thread_id=tid,
                    enabled=enabled,
                    end_time=None if end is None else iso(now + timedelta(hours=end)),
                    created_at=iso(now + timedelta(seconds=(i * 5) % 7)),
                    metadata={"i": i},
                )
            )
        )
    return made


async def test_crons_are_searched_and_counted(storage: Storage) -> None:
    made = await _crons(storage)

    async def search(**options: Any) -> tuple[list[int], int]:
        rows, total = await storage.search_crons(
            **{
                "assistant_id": None,
                "thread_id": None,
                "enabled": None,
                "metadata": None,
                "limit": 100,
                "offset": 0,
                "sort_by": "created_at",
                "sort_order": "asc",
                **options,
            }
        )
        return sorted(r["metadata"]["i"] for r in rows), total

    def where(test: Any) -> tuple[list[int], int]:
        found = [c["metadata"]["i"] for c in made if test(c)]
        return found, len(found)

    assert await search() == where(lambda c: True)
    assert await search(assistant_id=OTHER) == where(lambda c: c["assistant_id"] == OTHER)
    tid = made[1]["thread_id"]
    assert await search(thread_id=tid) == where(lambda c: c["thread_id"] == tid)
    assert await search(enabled=False) == where(lambda c: not c["enabled"])
    assert await search(enabled=True, assistant_id=ASSISTANT) == where(
        lambda c: c["enabled"] and c["assistant_id"] == ASSISTANT
    )
    assert await search(metadata={"i": 4}) == ([4], 1)
    assert await search(assistant_id=new_id()) == ([], 0)
    for options in ({}, {"assistant_id": OTHER}, {"thread_id": tid}, {"metadata": {"i": 2}}):
        _, total = await search(**options)
        count = await storage.count_crons(
            **{"assistant_id": None, "thread_id": None, "metadata": None, **options}
        )
        assert count == total


@pytest.mark.parametrize(
    "sort_by",
    [
        "cron_id",
        "assistant_id",
        "thread_id",
        "next_run_date",
        "end_time",
        "created_at",
        "updated_at",
    ],
)
async def test_crons_are_sorted_and_paged(storage: Storage, sort_by: str) -> None:
    made = await _crons(storage)
    orders = {}
    for order in ("asc", "desc"):
        rows, total = await storage.search_crons(
            assistant_id=None,
            thread_id=None,
            enabled=None,
            metadata=None,
            limit=100,
            offset=0,
            sort_by=sort_by,
            sort_order=order,
        )
        assert total == len(made)
        keys = [r[sort_by] for r in rows]
        # Rows without a value (a cron of no thread, no end) come together at one end; the
        # others are in order. Where the NULLs go is the database's choice.
        nulls = [k is None for k in keys]
        assert nulls == sorted(nulls) or nulls == sorted(nulls, reverse=True), keys
        present = [
            datetime.fromisoformat(k) if sort_by.endswith(("_at", "_date", "_time")) else k
            for k in keys
            if k is not None
        ]
        assert present == sorted(present, reverse=order == "desc")
        paged = []
        for offset in range(0, len(made), 4):
            page, _ = await storage.search_crons(
                assistant_id=None,
                thread_id=None,
                enabled=None,
                metadata=None,
                limit=4,
                offset=offset,
                sort_by=sort_by,
                sort_order=order,
            )
            paged += [r["cron_id"] for r in page]
        assert paged == [r["cron_id"] for r in rows]
        orders[order] = paged
    if sort_by not in ("assistant_id", "thread_id", "end_time"):  # unique keys
        assert orders["desc"] == orders["asc"][::-1]
