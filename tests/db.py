"""Reading and writing a test server's database directly, on either backend.

SQL is written once, with ``?`` placeholders, in what both backends accept: the tables and
columns are the same (agentd/storage/sql/sqlite/schema.sql and
agentd/storage/sql/postgres/migrations/1.sql). Values come back as each driver gives them:
on PostgreSQL timestamps are datetimes, booleans bools and payloads bytes; on SQLite they are
ISO strings, 0/1 and bytes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import psycopg

from tests.server import Server


def _postgres(sql: str) -> str:
    return sql.replace("%", "%%").replace("?", "%s")


def query(server: Server, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """The rows of a SELECT on ``server``'s database (running or not)."""
    if server.backend == "postgres":
        assert server.database_url is not None
        with psycopg.connect(server.database_url, autocommit=True) as conn:
            return conn.execute(_postgres(sql), params).fetchall()  # type: ignore[arg-type]
    # Read-only: a reader never takes the writer's lock, nor creates a missing file.
    conn = sqlite3.connect(f"file:{server.data_dir / 'agentd.sqlite'}?mode=ro", uri=True)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def execute(server: Server, sql: str, params: Sequence[Any] = ()) -> int:
    """Run one statement on ``server``'s database (stopped: agentd does not expect writes
    behind its back) and commit it; returns the number of rows it changed."""
    if server.backend == "postgres":
        assert server.database_url is not None
        with psycopg.connect(server.database_url, autocommit=True) as conn:
            return conn.execute(_postgres(sql), params).rowcount  # type: ignore[arg-type]
    conn = sqlite3.connect(server.data_dir / "agentd.sqlite")
    try:
        with conn:
            return conn.execute(sql, params).rowcount
    finally:
        conn.close()
