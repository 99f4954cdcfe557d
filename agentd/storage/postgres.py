"""The PostgreSQL backend's engine: agentd's tables, LangGraph's ``AsyncPostgresSaver`` and
``AsyncPostgresStore`` in one database. What each transaction does is ``relational.py``'s; its
SQL is in ``sql/`` (``sql/postgres/`` for what differs from SQLite).

agentd's transactions are plain functions of a ``Tx`` (shared with the SQLite engine), so they
run on psycopg's synchronous connections, from a pool, on threads of their own: one thread hop
per transaction, as on SQLite, and many at once. LangGraph's saver and store run on an async
pool of their own.

Alone (no Redis), a process holds a session advisory lock for its lifetime, as the embedded
backend holds its file's lock: events and wake-ups travel inside it. With Redis (``shared``)
many processes serve the database. Runs depend on neither: they come back by their leases
(``exclusive`` is False), so no two processes run one at once."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime
from typing import Any, TypeVar

import psycopg
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.store.postgres.aio import AsyncPostgresStore
from psycopg import errors
from psycopg.adapt import Loader
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

from agentd.schemas import Unprocessable
from agentd.storage.base import DatabaseUnavailable, LeaseLost, Row, StorageStartupError
from agentd.storage.pg_outage import RECONNECT_SECONDS, Outage
from agentd.storage.relational import RelationalStorage
from agentd.storage.sql import (
    Dialect,
    Tx,
    Where,
    dumps,
    load_queries,
    parse_queries,
    pyformat,
    sql_file,
)

T = TypeVar("T")
log = logging.getLogger("agentd.storage")
SCHEMA_VERSION = 3
POOL_SIZE = 10  # agentd's own connections (and threads); LangGraph's pool has as many
RETRIES = 5  # of a transaction that lost a deadlock or a serialization conflict
CONNECT_TIMEOUT = 5.0
# A session that stalls inside a transaction (its process stopped, or cut off) is ended by the
# server, releasing its locks: a take-back or a claim never waits on a frozen worker for long.
IDLE_IN_TRANSACTION_MS = 10_000
LEASE_LOST = "AGL01"  # the SQLSTATE of agentd_hold_run (migrations/3.sql)
# Advisory lock keys: the one serving process, whoever migrates agentd's tables, and whoever
# sets up LangGraph's.
SERVE_LOCK = 0x61_67_65_6E_74_64_01
MIGRATE_LOCK = 0x61_67_65_6E_74_64_02
SETUP_LOCK = 0x61_67_65_6E_74_64_03
SETUP_WAIT = 120.0  # seconds a start waits for another process's setup of LangGraph's tables


class StorageLocked(StorageStartupError):
    pass


class StorageTooNew(StorageStartupError):
    pass


class PostgresDialect(Dialect):
    name = "postgres"
    insertion_order = "row_order"

    def convert(self, sql: str) -> str:
        return pyformat(sql)

    def json_equals(self, where: Where, column: str, key: str, value: Any) -> None:
        # Containment finds candidates through the GIN index; equality makes the match exact
        # (objects and arrays compared whole, as on SQLite).
        k, v = where.param(key), where.param(dumps(value))
        where.add(
            f"{column} @> jsonb_build_object({k}::text, {v}::jsonb)"
            f" AND {column} -> {k}::text = {v}::jsonb"
        )

    def in_list(self, where: Where, column: str, values: Sequence[str]) -> None:
        where.add(f"{column} = ANY({where.param(list(values))}::text[])")

    def contains_text(self, where: Where, column: str, text: str) -> None:
        where.add(f"strpos(lower({column}), lower({where.param(text)}::text)) > 0")

    def list_param(self, values: Sequence[str]) -> Any:
        return list(values)


DIALECT = PostgresDialect()


_NUL = "Text with the character U+0000 cannot be stored (PostgreSQL refuses it)"


def _refused(exc: psycopg.DataError) -> Unprocessable:
    """A value PostgreSQL cannot store (the character U+0000 in text or jsonb, a number or a
    time out of its range): the request's fault."""
    if isinstance(exc, errors.UntranslatableCharacter) or "NUL" in str(exc):
        return Unprocessable(_NUL)
    first = (str(exc).strip().splitlines() or ["invalid value"])[0]
    return Unprocessable(f"The database refused a value: {first}")


@contextmanager
def _errors(outage: Outage) -> Iterator[None]:
    """LangGraph's Postgres classes fail with psycopg's errors: those of the database server
    are agentd's (503, a run handed back), a value jsonb refuses is the request's (422).
    While the database is known to be down, nothing waits for a connection."""
    outage.check()
    try:
        yield
    except psycopg.DataError as exc:
        raise _refused(exc) from None
    except (psycopg.OperationalError, PoolTimeout) as exc:
        outage.suspect(exc)
        raise _unavailable(exc) from exc


class _Checkpointer(AsyncPostgresSaver):
    """LangGraph's saver, failing with agentd's errors (``_errors``).

    The saver holds an instance-wide ``asyncio.Lock`` around every operation, needed on one
    shared connection but not on a pool, where each operation takes a connection of its own:
    with it, one checkpoint read or write runs at a time in the whole process (langgraph
    issue #7259). A semaphore as wide as the pool queues them instead."""

    def __init__(self, pool: AsyncConnectionPool, outage: Outage, **kwargs: Any):
        super().__init__(pool, **kwargs)  # type: ignore[arg-type]
        self.lock = asyncio.Semaphore(POOL_SIZE)  # type: ignore[assignment]
        self.outage = outage

    async def aget_tuple(self, config: Any) -> Any:
        with _errors(self.outage):
            return await super().aget_tuple(config)

    async def alist(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        with _errors(self.outage):
            async for item in super().alist(*args, **kwargs):
                yield item

    async def aput(self, *args: Any, **kwargs: Any) -> Any:
        with _errors(self.outage):
            return await super().aput(*args, **kwargs)

    async def aput_writes(self, *args: Any, **kwargs: Any) -> None:
        with _errors(self.outage):
            await super().aput_writes(*args, **kwargs)


class _FencedCheckpointer(_Checkpointer):
    """The saver of one run attempt: each checkpoint and pending write is saved in a
    transaction that first holds the run as that attempt (``hold_run``: a share lock on the
    run's row, or the error LEASE_LOST), so a write either lands before a take-back or is
    refused after it."""

    def __init__(
        self, pool: AsyncConnectionPool, outage: Outage, hold: str, run_id: str, attempt: int
    ):
        super().__init__(pool, outage)
        self._hold, self._run_id, self._attempt = hold, run_id, attempt

    @asynccontextmanager
    async def _holding(self) -> AsyncIterator[AsyncPostgresSaver]:
        async with self.conn.connection() as conn, conn.transaction():  # type: ignore[union-attr]
            try:
                await conn.execute(self._hold, {"run_id": self._run_id, "attempt": self._attempt})
            except psycopg.DatabaseError as exc:
                if exc.sqlstate == LEASE_LOST:
                    raise LeaseLost(self._run_id, self._attempt) from None
                raise
            # LangGraph's saver on this one connection: its statements join the transaction.
            saver = AsyncPostgresSaver(conn, serde=self.serde)  # type: ignore[arg-type]
            # Not in pipeline mode: a session with pipelined statements not yet synced is
            # "active" to PostgreSQL, so idle_in_transaction_session_timeout never ends it,
            # and a worker frozen mid-write would keep the run's row locked, and the
            # take-back away, until it woke. (Its statements go in a savepoint instead.)
            saver.supports_pipeline = False
            yield saver

    async def aput(self, *args: Any, **kwargs: Any) -> Any:
        with _errors(self.outage):
            async with self._holding() as saver:
                return await saver.aput(*args, **kwargs)

    async def aput_writes(self, *args: Any, **kwargs: Any) -> None:
        with _errors(self.outage):
            async with self._holding() as saver:
                await saver.aput_writes(*args, **kwargs)


class _Store(AsyncPostgresStore):
    outage: Outage

    async def abatch(self, ops: Any) -> Any:
        with _errors(self.outage):
            return await super().abatch(ops)


class _JsonText(Loader):
    """jsonb as its text: rows.py decodes JSON once, with orjson, as for SQLite."""

    def load(self, data: Any) -> str:
        return bytes(data).decode()


class _IsoTime(Loader):
    """timestamptz as the ISO-8601 text SQLite stores (the session's time zone is UTC)."""

    def load(self, data: Any) -> str:
        return datetime.fromisoformat(bytes(data).decode()).isoformat()


def _configure(conn: psycopg.Connection[Any]) -> None:
    conn.adapters.register_loader("jsonb", _JsonText)
    conn.adapters.register_loader("json", _JsonText)
    conn.adapters.register_loader("timestamptz", _IsoTime)


def _unavailable(exc: BaseException) -> DatabaseUnavailable:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    failed = DatabaseUnavailable(first)
    failed.__cause__ = exc
    return failed


class PostgresStorage(RelationalStorage):
    dialect = DIALECT
    # Runs come back by their leases: nothing a process holds is taken at start-up, so a
    # second process, or the same one after a restart of PostgreSQL, cannot run one twice.
    exclusive = False

    def __init__(
        self,
        url: str,
        *,
        store_index: Row | None = None,
        store_ttl: Row | None = None,
        default_thread_ttl: tuple[str, float] | None = None,
        shared: bool = False,
    ):
        """``shared``: many agentd processes serve this database (with Redis); otherwise
        this one serves it alone and holds the serving lock."""
        super().__init__(default_thread_ttl=default_thread_ttl)
        self.url = url
        self.shared = shared
        self._store_index = store_index
        self._store_ttl = store_ttl
        self._queries = load_queries(DIALECT)
        self._threads = ThreadPoolExecutor(POOL_SIZE, thread_name_prefix="agentd-pg")
        self._outage = Outage(url, self._check_pools)
        self._pool: ConnectionPool | None = None
        self._lock_conn: psycopg.Connection[Any] | None = None
        self._saver_pool: AsyncConnectionPool | None = None
        self.checkpointer: AsyncPostgresSaver | None = None
        self.store: AsyncPostgresStore | None = None

    # ---------------------------------------------------------------- lifecycle

    async def open(self) -> None:
        self._outage.start()
        await self._run(self._open_sync)
        self._saver_pool = AsyncConnectionPool(
            self.url,
            min_size=1,
            max_size=POOL_SIZE,
            # What LangGraph's Postgres classes require of their connections.
            kwargs={
                "autocommit": True,
                "prepare_threshold": 0,
                "row_factory": dict_row,
                "options": f"-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}",
            },
            open=False,
            reconnect_timeout=RECONNECT_SECONDS,
        )
        await self._saver_pool.open(wait=True, timeout=CONNECT_TIMEOUT)
        self.checkpointer = _Checkpointer(self._saver_pool, self._outage)
        if self._store_index is not None:
            await self._run(self._require_pgvector)
        self.store = _Store(
            self._saver_pool,  # type: ignore[arg-type]
            index=self._store_index,  # type: ignore[arg-type]
            ttl=self._store_ttl,  # type: ignore[arg-type]
        )
        self.store.outage = self._outage
        async with self._saver_pool.connection() as conn:
            # LangGraph's migrations take no lock: processes starting together on a new
            # database would each create its tables (a unique violation in one of them).
            await _lock_polling(conn, SETUP_LOCK)
            try:
                await self.checkpointer.setup()
                await self.store.setup()
                await self._run(self._widen_store_ttl)
            finally:
                await conn.execute("SELECT pg_advisory_unlock(%s)", (SETUP_LOCK,))

    async def _check_pools(self) -> None:
        """Drop the pools' dead connections (PostgreSQL restarted): LangGraph's saver would
        fail a run's checkpoint write on one, handing the run back for nothing."""
        if self._saver_pool is not None:
            await self._saver_pool.check()
        if self._pool is not None:
            await self._run(self._pool.check)

    def fenced_checkpointer(self, run_id: str, attempt: int) -> AsyncPostgresSaver:
        assert self._saver_pool is not None
        [hold] = self._queries["hold_run"]
        return _FencedCheckpointer(self._saver_pool, self._outage, hold, run_id, attempt)

    def _widen_store_ttl(self) -> None:
        """LangGraph's store keeps ``ttl_minutes`` as an integer: a TTL under a minute would
        be 0, and an item read (its TTL refreshed) would expire at once. A float column
        keeps the TTL the client gave, as the SQLite store does; LangGraph's SQL works on it
        unchanged (``ttl_minutes || ' minutes'``)."""
        with self._connect(autocommit=True) as conn:
            row = conn.execute(
                "SELECT data_type FROM information_schema.columns"
                " WHERE table_schema = current_schema() AND table_name = 'store'"
                " AND column_name = 'ttl_minutes'"
            ).fetchone()
            if row is not None and row[0] == "integer":
                conn.execute("ALTER TABLE store ALTER COLUMN ttl_minutes TYPE double precision")

    def _connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        return connect(self.url, **kwargs)

    def _open_sync(self) -> None:
        if not self.shared:
            # The serving lock, on a connection that lives as long as this process serves.
            self._lock_conn = _serving_lock(self.url)
        with self._connect(autocommit=True) as conn:
            _migrate(conn)
        self._pool = ConnectionPool(
            self.url,
            min_size=1,
            max_size=POOL_SIZE,
            kwargs={
                "autocommit": True,  # transactions are explicit: conn.transaction()
                "row_factory": dict_row,
                "options": "-c TimeZone=UTC -c DateStyle=ISO"
                f" -c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}",
            },
            configure=_configure,
            # No check on checkout (a round trip per transaction): a connection found dead at
            # its first statement is replaced and the transaction run again (_transact).
            open=False,
            timeout=CONNECT_TIMEOUT,
            reconnect_timeout=RECONNECT_SECONDS,
        )
        self._pool.open(wait=True, timeout=CONNECT_TIMEOUT)

    def _require_pgvector(self) -> None:
        with self._connect(autocommit=True) as conn:
            row = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")
            if row.fetchone() is None:
                raise StorageStartupError(
                    "store.index (semantic search) needs the PostgreSQL extension pgvector "
                    "('vector'), which this server does not have: install pgvector, or remove "
                    "store.index from langgraph.json"
                )

    async def close(self) -> None:
        await self._outage.stop()
        if self._saver_pool is not None:
            await self._saver_pool.close()
        await self._run(self._close_sync)
        self._threads.shutdown(wait=True)

    def _close_sync(self) -> None:
        if self._pool is not None:
            self._pool.close()
        if self._lock_conn is not None:
            self._lock_conn.close()  # releases the serving lock
            self._lock_conn = None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._threads, fn, *args)

    # ---------------------------------------------------------------- transactions

    async def _write(self, fn: Callable[[Tx], T]) -> T:
        return await self._run(self._transact, fn, True)

    async def _read(self, fn: Callable[[Tx], T]) -> T:
        # No BEGIN/COMMIT: under READ COMMITTED each statement takes its own snapshot
        # anyway, so a read-only transaction would only add two round trips.
        return await self._run(self._transact, fn, False)

    def _transact(self, fn: Callable[[Tx], T], write: bool) -> T:
        """Run ``fn`` (in a transaction if it ``write``s), again when it lost a deadlock or a
        serialization conflict (the rules are functions of the database alone, so a retry is
        safe), or when its pooled connection turned out dead before anything was done (the
        database restarted since it was last used). While the database is known to be down
        (``Outage``), it fails at once."""
        assert self._pool is not None
        self._outage.check()
        for attempt in range(RETRIES):
            began = False
            conn = None
            try:
                with self._pool.connection() as conn:
                    if not write:
                        return fn(Tx(conn, self._queries, DIALECT))
                    with conn.transaction():
                        began = True
                        return fn(Tx(conn, self._queries, DIALECT))
            except (errors.SerializationFailure, errors.DeadlockDetected):
                if attempt == RETRIES - 1:
                    raise DatabaseUnavailable("too many conflicting transactions") from None
                time.sleep(random.uniform(0.001, 0.01) * 2**attempt)
            except psycopg.DataError as exc:  # a value of the request: 22xxx, or NUL in text
                raise _refused(exc) from None
            except psycopg.OperationalError as exc:
                # A connection lost: the database's, or only this connection's?
                if conn is not None and conn.broken and (down := self._outage.confirm(exc)):
                    raise down from exc
                # A read did nothing; a write that failed at BEGIN neither: both can go again
                # on another connection. Past BEGIN, whether the commit happened is unknown.
                if (write and began) or attempt == RETRIES - 1:
                    raise _unavailable(exc) from exc
            except PoolTimeout as exc:
                # The database gone, or only every connection busy?
                raise (self._outage.confirm(exc) or _unavailable(exc)) from exc
        raise AssertionError("unreachable")


def connect(url: str, **kwargs: Any) -> psycopg.Connection[Any]:
    """A connection, or StorageStartupError saying in one line why there is none."""
    try:
        return psycopg.connect(url, connect_timeout=int(CONNECT_TIMEOUT), **kwargs)
    except psycopg.OperationalError as exc:
        reason = " ".join(line.strip() for line in str(exc).splitlines()) or "no answer"
        raise StorageStartupError(f"cannot connect to PostgreSQL: {reason}") from None


def _serving_lock(url: str) -> psycopg.Connection[Any]:
    """A connection holding the serving lock (StorageLocked when another process has it)."""
    conn = connect(url, autocommit=True)
    if not conn.execute("SELECT pg_try_advisory_lock(%s)", (SERVE_LOCK,)).fetchone()[0]:
        conn.close()
        raise StorageLocked(
            "this database is in use by another agentd process; one process serves a "
            "database in this version"
        )
    return conn


def probe(url: str, *, shared: bool = False) -> None:
    """Start-up's first check, before the server binds its port: the database answers and,
    unless ``shared``, no other agentd serves it alone; StorageStartupError (one line)
    otherwise."""
    if shared:
        connect(url).close()
    else:
        _serving_lock(url).close()


async def _lock_polling(conn: psycopg.AsyncConnection[Any], key: int) -> None:
    """Take a session advisory lock by trying, not by waiting: LangGraph's setup creates
    indexes CONCURRENTLY, which waits for every open transaction, a statement waiting for
    the lock included (a deadlock)."""
    deadline = time.monotonic() + SETUP_WAIT
    while True:
        row = await (await conn.execute("SELECT pg_try_advisory_lock(%s) AS ok", (key,))).fetchone()
        if row["ok"]:  # type: ignore[index]
            return
        if time.monotonic() > deadline:
            raise StorageStartupError(
                f"another agentd process has been setting up the database for {SETUP_WAIT:.0f} s"
            )
        await asyncio.sleep(0.05)


def _migrate(conn: psycopg.Connection[Any]) -> None:
    """Bring the database to ``SCHEMA_VERSION``, each ``postgres/migrations/<n>.sql`` in a
    transaction of its own, under an advisory lock: of processes starting together, one
    migrates and the others find it done."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS agentd_schema (version INTEGER NOT NULL)")
        row = conn.execute("SELECT max(version) FROM agentd_schema").fetchone()
        version = row[0] or 0
        if version > SCHEMA_VERSION:
            raise StorageTooNew(
                f"the database was written by a newer agentd (schema {version}, this one "
                f"knows {SCHEMA_VERSION}); upgrade agentd"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            with conn.transaction():
                for statement in _statements(sql_file(f"postgres/migrations/{target}.sql")):
                    conn.execute(statement)  # type: ignore[arg-type]
                conn.execute("DELETE FROM agentd_schema")
                conn.execute("INSERT INTO agentd_schema VALUES (%s)", (target,))
            log.info("database upgraded to schema %d", target)


def _statements(script: str) -> tuple[str, ...]:
    return parse_queries(f"-- name: migration\n{script}")["migration"]
