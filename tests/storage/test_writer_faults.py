"""The writer (group commit) recovers from any failed transaction: a COMMIT that fails, a disk
that is full, a rollback that fails. Faults are injected into a real SQLite file through
``SqliteStorage`` itself, as a server cannot be made to fail on demand."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.base import empty_checkpoint

from agentd.schemas import ServiceUnavailable
from agentd.storage.sqlite import SqliteStorage, WriteFailed

THREAD_A = "0190b2b4-0000-7000-8000-00000000000a"
THREAD_B = "0190b2b4-0000-7000-8000-00000000000b"
THREAD_C = "0190b2b4-0000-7000-8000-00000000000c"


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[SqliteStorage]:
    s = SqliteStorage(tmp_path / "agentd.sqlite")
    await s.open()
    try:
        yield s
    finally:
        await asyncio.wait_for(s.close(), 10)


def _fk_violation_at_commit(conn: sqlite3.Connection) -> None:
    """A write whose statements succeed but whose transaction cannot COMMIT: a deferred
    foreign key left violated (SQLite keeps the transaction open after that failed COMMIT)."""
    conn.execute("PRAGMA defer_foreign_keys = ON")
    conn.execute(
        "INSERT INTO thread_ttl (thread_id, strategy, ttl_minutes) VALUES ('nowhere', 'delete', 1)"
    )


async def _put_checkpoint(storage: SqliteStorage, thread_id: str, **values: Any) -> str:
    assert storage.checkpointer is not None
    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = values
    config = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
    saved = await storage.checkpointer.aput(config, checkpoint, {"step": 0}, {})  # type: ignore[arg-type]
    return saved["configurable"]["checkpoint_id"]


async def _checkpoint_values(storage: SqliteStorage, thread_id: str) -> dict[str, Any] | None:
    assert storage.checkpointer is not None
    saved = await storage.checkpointer.aget_tuple({"configurable": {"thread_id": thread_id}})
    return None if saved is None else saved.checkpoint["channel_values"]


def _writer_in_transaction(storage: SqliteStorage) -> bool:
    conn = storage._conn
    return conn is not None and conn.in_transaction


async def test_failed_commit_fails_its_writes_with_503_and_later_writes_succeed(
    storage: SqliteStorage,
) -> None:
    # Three writes in one group commit: a thread, a checkpoint insert, and the poisoned write.
    outcomes = await asyncio.gather(
        storage.create_thread(THREAD_A, {}, "raise"),
        _put_checkpoint(storage, THREAD_A, x=1),
        storage._commit(_fk_violation_at_commit),
        return_exceptions=True,
    )
    for outcome in outcomes:
        assert isinstance(outcome, WriteFailed), outcome
        assert isinstance(outcome, ServiceUnavailable) and outcome.status_code == 503
        assert "FOREIGN KEY constraint failed" in outcome.detail
        assert outcome.detail.endswith("retry later")
    assert not _writer_in_transaction(storage)
    # Nothing of the failed transaction was kept...
    assert await storage.get_thread(THREAD_A) is None
    assert await _checkpoint_values(storage, THREAD_A) is None
    # ...and the writer carries on: agentd's writes and the checkpointer's inserts.
    for _ in range(3):  # several transactions, not a lucky first one
        assert (await storage.create_thread(THREAD_A, {}, "do_nothing"))["thread_id"] == THREAD_A
    await _put_checkpoint(storage, THREAD_A, x=2)
    assert await _checkpoint_values(storage, THREAD_A) == {"x": 2}
    assert (await storage.get_thread(THREAD_A)) is not None


async def test_checkpoint_inserts_alone_recover_from_a_failed_commit(
    storage: SqliteStorage,
) -> None:
    failed = await asyncio.gather(
        _put_checkpoint(storage, THREAD_B, x=1),
        _put_checkpoint(storage, THREAD_C, x=1),
        storage._commit(_fk_violation_at_commit),
        return_exceptions=True,
    )
    assert all(isinstance(f, WriteFailed) for f in failed), failed
    assert await _checkpoint_values(storage, THREAD_B) is None
    await asyncio.gather(
        _put_checkpoint(storage, THREAD_B, x=2), _put_checkpoint(storage, THREAD_C, x=3)
    )
    assert await _checkpoint_values(storage, THREAD_B) == {"x": 2}
    assert await _checkpoint_values(storage, THREAD_C) == {"x": 3}


async def test_disk_full_fails_the_write_with_503_then_writes_succeed_again(
    storage: SqliteStorage,
) -> None:
    await storage.create_thread(THREAD_A, {}, "raise")
    pages = await storage._commit(lambda c: c.execute("PRAGMA page_count").fetchone()[0])
    # The writer connection may not grow the file: any write needing a new page fails.
    await storage._commit(lambda c: c.execute(f"PRAGMA max_page_count = {pages}"))
    big = {"blob": "x" * 200_000}
    with pytest.raises(WriteFailed) as thread_failure:
        await storage.create_thread(THREAD_B, big, "raise")
    assert thread_failure.value.status_code == 503
    assert "full" in thread_failure.value.detail
    with pytest.raises(WriteFailed):
        await _put_checkpoint(storage, THREAD_A, blob="y" * 200_000)
    # Both at once, in one group commit, and a failing update: still no transaction left open.
    together = await asyncio.gather(
        storage.create_thread(THREAD_C, big, "raise"),
        _put_checkpoint(storage, THREAD_C, blob="z" * 200_000),
        storage.update_thread(THREAD_A, big, None),
        return_exceptions=True,
    )
    assert all(isinstance(t, WriteFailed) for t in together), together
    assert not _writer_in_transaction(storage)
    assert await storage.get_thread(THREAD_B) is None

    await storage._commit(lambda c: c.execute("PRAGMA max_page_count = 4294967294"))
    assert (await storage.create_thread(THREAD_B, big, "raise"))["metadata"] == big
    await _put_checkpoint(storage, THREAD_A, blob="y" * 200_000)
    assert await _checkpoint_values(storage, THREAD_A) == {"blob": "y" * 200_000}
    assert (await storage.update_thread(THREAD_A, big, None))["metadata"] == big  # type: ignore[index]


async def test_whole_transaction_lost_inside_a_write(storage: SqliteStorage) -> None:
    """SQLite may roll back the whole transaction on SQLITE_FULL or SQLITE_IOERR: the
    savepoint's rollback then fails, and every write of the transaction fails with it."""

    def lost(conn: sqlite3.Connection) -> None:
        conn.execute("ROLLBACK")  # what SQLite does by itself on some errors
        raise sqlite3.OperationalError("disk I/O error")

    outcomes = await asyncio.gather(
        storage.create_thread(THREAD_A, {}, "raise"),
        storage._commit(lost),
        return_exceptions=True,
    )
    assert all(isinstance(o, WriteFailed) for o in outcomes), outcomes
    assert await storage.get_thread(THREAD_A) is None
    assert (await storage.create_thread(THREAD_A, {}, "raise"))["thread_id"] == THREAD_A


class _RollbackFails:
    """The writer connection, except that ROLLBACK fails (as it can on an I/O error)."""

    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn

    def execute(self, sql: str, *args: Any) -> Any:
        if sql == "ROLLBACK":
            raise sqlite3.OperationalError("disk I/O error")
        return self._conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


async def test_a_failed_rollback_replaces_the_connection(storage: SqliteStorage) -> None:
    original = storage._conn
    assert original is not None
    storage._conn = _RollbackFails(original)  # type: ignore[assignment]
    with pytest.raises(WriteFailed):
        await storage._commit(_fk_violation_at_commit)
    assert storage._conn is None or storage._conn is not original  # dropped, not reused
    # The next writes run on a fresh connection, foreign keys and all.
    assert (await storage.create_thread(THREAD_A, {}, "raise"))["thread_id"] == THREAD_A
    with pytest.raises(WriteFailed, match="FOREIGN KEY"):
        await storage._commit(_fk_violation_at_commit)
    assert (await storage.create_thread(THREAD_B, {}, "raise"))["thread_id"] == THREAD_B


async def test_a_writes_own_error_fails_it_alone(storage: SqliteStorage) -> None:
    """The savepoint undoes a write that raises; the others of its transaction commit."""
    await storage.create_thread(THREAD_A, {}, "raise")
    outcomes = await asyncio.gather(
        storage.create_thread(THREAD_A, {}, "raise"),  # Conflict: its own error, a 409
        storage.create_thread(THREAD_B, {}, "raise"),
        return_exceptions=True,
    )
    assert getattr(outcomes[0], "status_code", None) == 409
    assert not isinstance(outcomes[0], WriteFailed)
    assert isinstance(outcomes[1], dict) and outcomes[1]["thread_id"] == THREAD_B
