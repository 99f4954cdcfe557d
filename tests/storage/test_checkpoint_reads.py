"""The checkpointer's listings read on threads of their own, without the lock agentd's writer
takes for every transaction, one checkpoint at a time, and give their connection back however
the caller stops."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.base import empty_checkpoint

from agentd.storage.checkpointer import READ_THREADS, SqliteCheckpointer
from agentd.storage.sqlite import SqliteStorage

THREAD = "0190b2b4-0000-7000-8000-0000000000c1"
CONFIG = {"configurable": {"thread_id": THREAD, "checkpoint_ns": ""}}


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[SqliteStorage]:
    s = SqliteStorage(tmp_path / "agentd.sqlite")
    await s.open()
    try:
        yield s
    finally:
        await asyncio.wait_for(s.close(), 10)


async def _checkpoints(storage: SqliteStorage, n: int) -> list[str]:
    saver = storage.checkpointer
    assert saver is not None
    ids = []
    for i in range(n):
        checkpoint = empty_checkpoint()
        checkpoint["channel_values"] = {"i": i}
        saved = await saver.aput(CONFIG, checkpoint, {"step": i}, {})  # type: ignore[arg-type]
        ids.append(saved["configurable"]["checkpoint_id"])
    return ids


def _saver(storage: SqliteStorage) -> SqliteCheckpointer:
    assert storage.checkpointer is not None
    return storage.checkpointer


async def test_listing_does_not_wait_for_the_writers_lock(storage: SqliteStorage) -> None:
    ids = await _checkpoints(storage, 5)
    saver = _saver(storage)
    async with saver.lock:  # what agentd's writer holds during each transaction
        listed = await asyncio.wait_for(_list(saver), 5)
    assert listed == ids[::-1]
    before = {"configurable": {"checkpoint_id": ids[2]}}
    older = [t async for t in saver.alist(CONFIG, before=before, limit=1)]
    assert [t.checkpoint["channel_values"] for t in older] == [{"i": 1}]


async def _list(saver: SqliteCheckpointer) -> list[str]:
    return [t.config["configurable"]["checkpoint_id"] async for t in saver.alist(CONFIG)]


class _Counted(sqlite3.Connection):
    opened = closed = 0

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        _Counted.opened += 1

    def close(self) -> None:
        _Counted.closed += 1
        super().close()


async def test_connections_come_back_however_the_listing_ends(storage: SqliteStorage) -> None:
    await _checkpoints(storage, 6)
    saver = _saver(storage)
    saver._connect = lambda: sqlite3.connect(  # type: ignore[method-assign]
        storage.path, isolation_level=None, check_same_thread=False, factory=_Counted
    )

    def leaked() -> int:
        return _Counted.opened - _Counted.closed - len(saver._idle)

    # Ten listings at once: all complete, at most READ_THREADS connections are kept.
    results = await asyncio.wait_for(asyncio.gather(*(_list(saver) for _ in range(10))), 10)
    assert all(len(r) == 6 for r in results)
    assert 1 <= len(saver._idle) <= READ_THREADS and leaked() == 0

    # The caller stops early.
    listing = saver.alist(CONFIG)
    async for _ in listing:
        break
    await listing.aclose()
    assert leaked() == 0

    # The caller is cancelled while a step runs (or waits) on its thread.
    for _ in range(20):
        task = asyncio.create_task(_list(saver))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    await asyncio.sleep(0.2)  # a step that was running ends, then gives its connection back
    assert leaked() == 0 and len(saver._idle) <= READ_THREADS
    assert len(await _list(saver)) == 6  # and listings still work
