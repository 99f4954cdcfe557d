"""The run lifecycle's transitions as the embedded storage records them, on a real SQLite file:
an end recorded once and only by the attempt holding the run, cancels that end or flag runs,
the thread status settled from its resting status, a cron tick claimed in its run's transaction,
and a schema-1 file (agentd before the lifecycle rewrite) upgraded in place."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agentd.ids import uuid7
from agentd.schemas import NotFound
from agentd.storage.sqlite import SqliteStorage


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[SqliteStorage]:
    s = SqliteStorage(tmp_path / "agentd.sqlite")
    await s.open()
    yield s
    await s.close()


def _run(thread_id: str, strategy: str = "enqueue", **kwargs: Any) -> dict[str, Any]:
    now = "2026-01-01T00:00:00+00:00"
    return {
        "run_id": str(uuid7()),
        "thread_id": thread_id,
        "assistant_id": "a",
        "created_at": now,
        "updated_at": now,
        "metadata": {},
        "kwargs": {"config": {"configurable": {}}, **kwargs},
        "multitask_strategy": strategy,
    }


async def _queue(storage: SqliteStorage, thread_id: str, strategy: str = "enqueue") -> Any:
    created = await storage.create_run(
        _run(thread_id, strategy), thread_metadata={}, if_not_exists="create"
    )
    assert created is not None
    return created


async def _status(storage: SqliteStorage, thread_id: str) -> str:
    thread = await storage.get_thread(thread_id)
    assert thread is not None
    return thread["status"]


async def test_an_end_is_recorded_once_by_the_attempt_holding_the_run(
    storage: SqliteStorage,
) -> None:
    tid = str(uuid7())
    run, _ = await _queue(storage, tid)
    [claimed] = await storage.claim_runs(10)
    assert claimed["run_id"] == run["run_id"] and claimed["attempt"] == 1
    outcome = {"thread_status": "idle", "values": {"v": 1}, "interrupts": None, "error": None}
    # A stale attempt (one that lost the run) cannot end it.
    assert not await storage.finish_run(run["run_id"], tid, 2, "success", **outcome)
    assert await _status(storage, tid) == "busy"
    assert await storage.finish_run(run["run_id"], tid, 1, "success", **outcome)
    assert not await storage.finish_run(run["run_id"], tid, 1, "error", **outcome)
    assert (await storage.get_run(tid, run["run_id"]))["status"] == "success"  # type: ignore[index]
    assert await _status(storage, tid) == "idle"


async def test_cancels_end_what_never_ran_and_flag_the_rest(storage: SqliteStorage) -> None:
    tid = str(uuid7())
    running, _ = await _queue(storage, tid)
    queued, _ = await _queue(storage, tid)
    await storage.claim_runs(10)  # the first one only: one running run per thread
    cancelled = await storage.cancel_runs(tid, [running["run_id"], queued["run_id"]], "interrupt")
    assert {c.run["run_id"]: c.ended for c in cancelled} == {
        running["run_id"]: False,
        queued["run_id"]: True,
    }
    assert (await storage.get_run(tid, queued["run_id"]))["status"] == "interrupted"  # type: ignore[index]
    # The running one is flagged, still running, and its thread still busy.
    assert await storage.run_cancel_action(running["run_id"]) == "interrupt"
    assert (await storage.get_run(tid, running["run_id"]))["status"] == "running"  # type: ignore[index]
    assert await _status(storage, tid) == "busy"
    # Handed back (a shutdown), it keeps the flag: its next claim carries it.
    assert await storage.requeue_run(running["run_id"], 1)
    [again] = await storage.claim_runs(10)
    assert again["run_id"] == running["run_id"] and again["cancel_action"] == "interrupt"


async def test_interrupt_strategy_cancels_in_flight_runs_in_the_new_runs_transaction(
    storage: SqliteStorage,
) -> None:
    tid = str(uuid7())
    first, _ = await _queue(storage, tid)
    await storage.claim_runs(10)
    second, cancelled = await _queue(storage, tid, "interrupt")
    assert [(c.run["run_id"], c.ended) for c in cancelled] == [(first["run_id"], False)]
    assert await storage.run_cancel_action(first["run_id"]) == "interrupt"
    _, cancelled = await _queue(storage, tid, "rollback")
    # The pending second run never ran: rolled back, it is gone.
    assert [(c.run["run_id"], c.ended) for c in cancelled] == [
        (first["run_id"], False),
        (second["run_id"], True),
    ]
    assert await storage.get_run(tid, second["run_id"]) is None
    assert await storage.run_cancel_action(first["run_id"]) == "interrupt"  # the first ask wins


async def test_a_cancelled_queued_run_leaves_the_thread_as_it_rested(
    storage: SqliteStorage,
) -> None:
    tid = str(uuid7())
    run, _ = await _queue(storage, tid)
    await storage.claim_runs(10)
    paused = {"thread_status": "interrupted", "values": {}, "interrupts": {"t": []}, "error": None}
    assert await storage.finish_run(run["run_id"], tid, 1, "success", **paused)
    assert await _status(storage, tid) == "interrupted"
    resume, _ = await _queue(storage, tid)
    assert await _status(storage, tid) == "busy"
    await storage.cancel_runs(tid, [resume["run_id"]], "interrupt")
    assert await _status(storage, tid) == "interrupted"


async def test_a_cron_tick_is_claimed_in_its_runs_transaction(storage: SqliteStorage) -> None:
    tid = str(uuid7())
    await storage.create_thread(tid, {}, "raise")
    await storage.sync_default_assistants(
        [{"assistant_id": "a", "graph_id": "g", "name": "g", "description": None}]
    )
    due, later = "2026-01-01T00:00:00+00:00", "2026-01-01T00:01:00+00:00"
    cron = {
        "cron_id": str(uuid7()), "assistant_id": "a", "thread_id": tid, "user_id": "",
        "schedule": "* * * * *", "timezone": None, "end_time": None, "payload": {},
        "metadata": {}, "on_run_completed": None, "enabled": True, "next_run_date": due,
        "created_at": due, "updated_at": due,
    }  # fmt: skip
    await storage.create_cron(cron)
    tick = (cron["cron_id"], due, later)
    # Another scheduler's tick (a due time that is not the cron's): nothing is written.
    lost = (cron["cron_id"], later, later)
    assert await storage.create_run(_run(tid), thread_metadata={}, if_not_exists="reject",
                                    cron_tick=lost) is None  # fmt: skip
    assert await storage.list_runs(tid, limit=10, offset=0, status=None) == []
    created = await storage.create_run(
        _run(tid), thread_metadata={}, if_not_exists="reject", cron_tick=tick
    )
    assert created is not None
    assert (await storage.get_cron(cron["cron_id"]))["next_run_date"] == later  # type: ignore[index]
    # The same tick again: already claimed, no second run.
    assert await storage.create_run(_run(tid), thread_metadata={}, if_not_exists="reject",
                                    cron_tick=tick) is None  # fmt: skip
    assert len(await storage.list_runs(tid, limit=10, offset=0, status=None)) == 1
    # A run that cannot be created (its thread is gone) still consumes its tick.
    gone, after = str(uuid7()), "2026-01-01T00:02:00+00:00"
    with pytest.raises(NotFound):
        await storage.create_run(_run(gone), thread_metadata={}, if_not_exists="reject",
                                 cron_tick=(cron["cron_id"], later, after))  # fmt: skip
    assert (await storage.get_cron(cron["cron_id"]))["next_run_date"] == after  # type: ignore[index]


# The tables of schema 1 that schema 2 changes, as agentd created them before.
_SCHEMA_1 = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
INSERT INTO schema_version VALUES (1);
CREATE TABLE threads (
    thread_id TEXT PRIMARY KEY, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
    state_updated_at TEXT NOT NULL, metadata TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL DEFAULT 'idle', config TEXT NOT NULL DEFAULT '{}',
    "values" TEXT, interrupts TEXT, error TEXT
);
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY,
    thread_id TEXT NOT NULL REFERENCES threads (thread_id) ON DELETE CASCADE,
    assistant_id TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}', status TEXT NOT NULL, kwargs TEXT NOT NULL,
    multitask_strategy TEXT NOT NULL, attempt INTEGER NOT NULL DEFAULT 0
);
INSERT INTO threads VALUES ('t-idle', 'x', 'x', 'x', '{}', 'idle', '{}', NULL, NULL, NULL);
INSERT INTO threads VALUES ('t-paused', 'x', 'x', 'x', '{}', 'interrupted', '{}', '{}',
                            '{"task": []}', NULL);
INSERT INTO threads VALUES ('t-busy-paused', 'x', 'x', 'x', '{}', 'busy', '{}', '{}',
                            '{"task": []}', NULL);
INSERT INTO runs VALUES ('r1', 't-busy-paused', 'a', 'x', 'x', '{}', 'pending',
                         '{"config": {"configurable": {}}}', 'enqueue', 0);
"""


async def test_a_schema_1_file_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "agentd.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript(_SCHEMA_1)
    storage = SqliteStorage(path)
    await storage.open()
    try:
        rested = {
            tid: (await storage.get_thread(tid))["status"]  # type: ignore[index]
            for tid in ("t-idle", "t-paused", "t-busy-paused")
        }
        assert rested == {"t-idle": "idle", "t-paused": "interrupted", "t-busy-paused": "busy"}
        # The queued run is cancelled: its thread rests where it was, paused.
        await storage.cancel_runs("t-busy-paused", ["r1"], "interrupt")
        assert (await storage.get_thread("t-busy-paused"))["status"] == "interrupted"  # type: ignore[index]
    finally:
        await storage.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(3,)]
    # Opening it again changes nothing.
    storage = SqliteStorage(path)
    await storage.open()
    await storage.close()


async def test_a_postgres_database_of_schema_1_is_upgraded_and_its_running_run_taken_back() -> None:
    """A database agentd's first PostgreSQL version wrote, with a run left running (no lease
    column then): the upgrade adds leases, and a run with none counts as expired."""
    import psycopg

    from agentd.storage import open_storage, postgres
    from agentd.storage.sql import parse_queries, sql_file
    from tests import pg

    url = pg.create_database("schema-1-upgrade")
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in parse_queries("-- name: m\n" + sql_file("postgres/migrations/1.sql"))["m"]:
            conn.execute(statement)  # type: ignore[arg-type]
        conn.execute("CREATE TABLE agentd_schema (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO agentd_schema VALUES (1)")
        now = "2026-01-01T00:00:00+00:00"
        conn.execute(
            "INSERT INTO threads (thread_id, created_at, updated_at, state_updated_at, metadata,"
            " status) VALUES ('t1', %s, %s, %s, '{}', 'busy')",
            (now, now, now),
        )
        conn.execute(
            "INSERT INTO runs (run_id, thread_id, assistant_id, created_at, updated_at, status,"
            " kwargs, multitask_strategy, attempt)"
            " VALUES ('r1', 't1', 'a', %s, %s, 'running', '{}', 'enqueue', 1)",
            (now, now),
        )
    storage = open_storage(url)
    await storage.open()
    try:
        assert [r["run_id"] for r in await storage.take_back_expired()] == ["r1"]
        [run] = await storage.claim_runs(1, owner="w", lease=60)
        assert run["run_id"] == "r1" and run["attempt"] == 2
    finally:
        await storage.close()
    with psycopg.connect(url) as conn:
        [(version,)] = conn.execute("SELECT version FROM agentd_schema").fetchall()
        assert version == postgres.SCHEMA_VERSION


async def test_postgres_storages_opening_together_on_a_new_database_all_open() -> None:
    """Processes started at once on a new database (API servers and workers): one creates the
    tables, agentd's and LangGraph's alike, and the others find them."""
    import asyncio

    from agentd.storage import postgres
    from tests import pg

    for trial in range(3):
        url = pg.create_database(f"open-together-{trial}")
        storages = [postgres.PostgresStorage(url, shared=True) for _ in range(4)]
        try:
            await asyncio.gather(*(s.open() for s in storages))
        finally:
            await asyncio.gather(*(s.close() for s in storages), return_exceptions=True)
