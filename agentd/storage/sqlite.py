"""The embedded backend's engine: one SQLite file (WAL) holds agentd's tables, LangGraph's
checkpoints (``AsyncSqliteSaver``, ``checkpointer.py``) and its store (``AsyncSqliteStore``,
``store.py``). What each transaction does is ``relational.py``'s; its SQL is in ``sql/``.

agentd's own transactions run on one connection owned by one thread: each is a plain function
executed there, so a transaction costs one thread hop and needs no lock. One process owns the
file (``agentd.lock``), which is what makes the start-up requeue of ``running`` runs safe."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
from langgraph.checkpoint.sqlite import SqliteSaver

from agentd.schemas import ServiceUnavailable
from agentd.storage.base import LeaseLost, Row, StorageStartupError
from agentd.storage.checkpointer import SqliteCheckpointer
from agentd.storage.relational import RelationalStorage
from agentd.storage.sql import Dialect, Tx, Where, dumps, load_queries, sql_file
from agentd.storage.store import SqliteStore

T = TypeVar("T")
log = logging.getLogger("agentd.storage")
SCHEMA_VERSION = 3
WAL_CHECKPOINT_SECONDS = 1.0
WAL_SIZE_LIMIT = 64 * 1024 * 1024
EVENT_INSERT_ROWS = 64
EVENT_INSERT_BYTES = 256 * 1024
_INSERT_EVENT = (
    "INSERT OR IGNORE INTO run_events (run_id, ms, seq, thread_id, event, data)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
_INSERT_EVENTS = _INSERT_EVENT + ", (?, ?, ?, ?, ?, ?)" * (EVENT_INSERT_ROWS - 1)


class StorageLocked(StorageStartupError):
    pass


class StorageTooNew(StorageStartupError):
    pass


class WriteFailed(ServiceUnavailable):
    """The database could not store a write (disk full, I/O error, a transaction that could
    not commit): nothing of it was saved, and the writer carries on with the next one."""

    def __init__(self, reason: str):
        super().__init__(f"The database could not save this write ({reason}); retry later")


# Primary result codes of a database that cannot write now: not a fault of the write itself.
_UNAVAILABLE = {
    sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED,
    sqlite3.SQLITE_NOMEM, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN,
    sqlite3.SQLITE_PROTOCOL, sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB,
}  # fmt: skip


def _write_error(exc: Exception) -> Exception:
    """What the caller of a write that raised gets: the database's own failures (disk full,
    I/O...) become WriteFailed; the write's errors (NotFound, Conflict...) stay as they are."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(exc, sqlite3.Error) and code is not None and code & 0xFF in _UNAVAILABLE:
        return _write_failed(exc)
    return exc


def _write_failed(cause: BaseException) -> WriteFailed:
    failed = WriteFailed(str(cause) or type(cause).__name__)
    failed.__cause__ = cause
    return failed


class _Failed:
    """A write of a group commit that raised: its caller gets ``exc``."""

    def __init__(self, exc: Exception):
        self.exc = exc


class SqliteDialect(Dialect):
    name = "sqlite"
    insertion_order = "rowid"

    def json_equals(self, where: Where, column: str, key: str, value: Any) -> None:
        # The top-level members through json_each, so that any key matches as written (a JSON
        # path would have to quote it), compared with their JSON type: 1 is not true, and a
        # string is not the object it spells.
        if isinstance(value, (dict, list)):
            # Equal trees (every node's path, type and value), whatever the order of keys.
            v = where.param(dumps(value))
            tree = "SELECT fullkey, type, atom FROM json_tree"
            match = (
                f"e.type = {where.param('object' if isinstance(value, dict) else 'array')}"
                f" AND NOT EXISTS ({tree}(e.value) EXCEPT {tree}({v}))"
                f" AND NOT EXISTS ({tree}({v}) EXCEPT {tree}(e.value))"
            )
        elif value is None:
            match = "e.type = 'null'"
        elif isinstance(value, bool):
            match = "e.type = 'true'" if value else "e.type = 'false'"
        elif isinstance(value, (int, float)):
            match = f"e.type IN ('integer', 'real') AND e.value = {where.param(value)}"
        else:
            match = f"e.type = 'text' AND e.value = {where.param(str(value))}"
        k = where.param(key)
        where.add(f"EXISTS (SELECT 1 FROM json_each({column}) e WHERE e.key = {k} AND {match})")

    def in_list(self, where: Where, column: str, values: Sequence[str]) -> None:
        # One JSON parameter, not one per value: SQLite caps a statement's parameters.
        if values:
            where.add(f"{column} IN (SELECT value FROM json_each({where.param(dumps(values))}))")
        else:
            where.add("0")

    def contains_text(self, where: Where, column: str, text: str) -> None:
        where.add(f"instr(lower({column}), lower({where.param(text)})) > 0")

    def list_param(self, values: Sequence[str]) -> Any:
        return dumps(list(values))

    def insert_events(self, tx: Tx, rows: list[dict[str, Any]]) -> int:
        # Small events many rows per statement: each statement releases and takes back the
        # GIL, which a busy event loop holds for up to the switch interval. Two statement
        # shapes only, and the larger one for small data only: a cached statement keeps the
        # values last bound to it (our blobs) until it is used again.
        values = [(r["run_id"], r["ms"], r["seq"], r["thread_id"], r["event"], r["data"])
                  for r in rows]  # fmt: skip
        inserted = 0
        for i in range(0, len(values), EVENT_INSERT_ROWS):
            chunk = values[i : i + EVENT_INSERT_ROWS]
            if (
                len(chunk) == EVENT_INSERT_ROWS
                and sum(len(r[5]) for r in chunk) <= EVENT_INSERT_BYTES
            ):
                inserted += tx.conn.execute(_INSERT_EVENTS, [v for r in chunk for v in r]).rowcount
            else:
                inserted += tx.conn.executemany(_INSERT_EVENT, chunk).rowcount
        return inserted


DIALECT = SqliteDialect()


class SqliteStorage(RelationalStorage):
    dialect = DIALECT
    exclusive = True  # the data dir's lock: one process holds the file

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "NORMAL",
        store_index: Row | None = None,
        store_ttl: Row | None = None,
        default_thread_ttl: tuple[str, float] | None = None,
    ):
        """``store_index`` and ``store_ttl`` are LangGraph's ``IndexConfig`` and ``TTLConfig``
        for the store; ``default_thread_ttl`` is the (strategy, minutes) every new thread gets."""
        super().__init__(default_thread_ttl=default_thread_ttl)
        self.path = path
        self._synchronous = synchronous
        self._store_index = store_index
        self._store_ttl = store_ttl
        self._queries = load_queries(DIALECT)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="agentd-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._wal_task: asyncio.Task[None] | None = None
        self._reader: sqlite3.Connection | None = None
        self._checkpoint_reader: sqlite3.Connection | None = None
        self._pending: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]] = []
        self._committer: asyncio.Task[None] | None = None
        self._lock_fd: int | None = None
        self._saver_conn: aiosqlite.Connection | None = None
        self.checkpointer: SqliteCheckpointer | None = None
        self.store: SqliteStore | None = None

    # ---------------------------------------------------------------- lifecycle

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._acquire_file_lock()
        await self._run(self._open_sync)
        # LangGraph's own checkpointer and store, each on its own connection to the same file.
        self._saver_conn = await aiosqlite.connect(self.path, isolation_level=None)
        await self._configure_async(self._saver_conn)
        self._checkpoint_reader = sqlite3.connect(self.path, check_same_thread=False)
        self._checkpoint_reader.execute("PRAGMA busy_timeout = 1000")
        self.checkpointer = SqliteCheckpointer(
            self._saver_conn,
            reader=SqliteSaver(self._checkpoint_reader),
            write=self._commit,
            connect=self._connect_reader,
        )
        await self.checkpointer.setup()
        # The store's connection applies LangGraph's migrations, then goes: the store reads on
        # a connection of its own and writes through our group commit.
        store_conn = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            await self._configure_async(store_conn)
            self.store = SqliteStore(
                store_conn,
                path=self.path,
                write=self._commit,
                index=self._store_index,  # type: ignore[arg-type]
                ttl=self._store_ttl,  # type: ignore[arg-type]
            )
            await self.store.setup()
        finally:
            await store_conn.close()
        self._wal_task = asyncio.create_task(self._checkpoint_wal(), name="agentd-wal")

    async def _checkpoint_wal(self) -> None:
        """Copy the WAL back into the database file in the background. SQLite would otherwise
        do it inside whichever commit crosses 1000 pages, stalling every write queued behind
        that commit for tens of milliseconds in the middle of a burst. PASSIVE never blocks
        readers or writers; the WAL is reused from its start once all of it is copied."""
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        pool = ThreadPoolExecutor(1, thread_name_prefix="agentd-wal")
        loop = asyncio.get_running_loop()
        try:
            while True:
                await asyncio.sleep(WAL_CHECKPOINT_SECONDS)
                try:
                    await loop.run_in_executor(pool, conn.execute, "PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error:
                    log.warning("WAL checkpoint failed; retrying", exc_info=True)
        finally:
            pool.shutdown(wait=True)
            conn.close()

    async def close(self) -> None:
        if self._wal_task is not None:
            self._wal_task.cancel()
            await asyncio.gather(self._wal_task, return_exceptions=True)
        if self._saver_conn is not None:
            await self._saver_conn.close()
        if self.checkpointer is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.checkpointer.close)
        if self.store is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.store.close)
        if self._conn is not None:
            await self._run(self._conn.close)
            self._conn = None
        for reader in (self._reader, self._checkpoint_reader):
            if reader is not None:
                reader.close()
        self._reader = self._checkpoint_reader = None
        self._pool.shutdown(wait=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _acquire_file_lock(self) -> None:
        lock_path = self.path.parent / "agentd.lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StorageLocked(
                f"{self.path.parent} is in use by another agentd process; "
                "the embedded backend serves one process (use --database-url to scale out)"
            ) from None
        self._lock_fd = fd

    async def _configure_async(self, conn: aiosqlite.Connection) -> None:
        await conn.execute("PRAGMA busy_timeout = 30000")
        await conn.execute("PRAGMA wal_autocheckpoint = 0")  # done in the background
        await conn.execute(f"PRAGMA synchronous = {self._synchronous}")

    def _connect_reader(self) -> sqlite3.Connection:
        """A read connection, usable from any one thread at a time."""
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA query_only = ON")
        conn.execute("PRAGMA busy_timeout = 30000")
        return conn

    def _connect_writer(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA wal_autocheckpoint = 0")  # done in the background
        # A burst can grow the WAL to hundreds of MB before a checkpoint catches up; once it is
        # copied back, the next write truncates it to this size instead of keeping it all.
        conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
        conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def _writer(self) -> sqlite3.Connection:
        """The writer connection (on the storage thread); a new one if the last was dropped."""
        if self._conn is None:
            self._conn = self._connect_writer()
        return self._conn

    def _open_sync(self) -> None:
        conn = self._connect_writer()
        conn.execute("PRAGMA journal_mode = WAL")
        _migrate(conn)
        self._conn = conn
        # Point lookups run on the event loop's thread, on their own connection: an indexed
        # read of one row in WAL mode takes microseconds and never waits for a writer, so a
        # thread hop (and a place in the writer's queue) would cost more than the read.
        reader = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        reader.row_factory = sqlite3.Row
        reader.execute("PRAGMA query_only = ON")
        reader.execute("PRAGMA busy_timeout = 1000")
        self._reader = reader

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _commit_batch(self, batch: list[Callable[[sqlite3.Connection], Any]]) -> list[Any]:
        """Run several writes in one transaction (on the storage thread), each in a savepoint
        of its own: a write that raises is undone alone and its caller gets the exception.

        Whatever fails (BEGIN, a savepoint's rollback, COMMIT), the transaction is rolled back
        before this returns: SQLite leaves it open after some failed COMMITs (a deferred
        foreign key, SQLITE_BUSY, some I/O errors), and every later BEGIN would fail with it."""
        outcomes: list[Any] = []
        try:
            conn = self._writer()
            if conn.in_transaction:  # left open by a failure we could not roll back
                self._abandon(conn)
                conn = self._writer()
            conn.execute("BEGIN IMMEDIATE")
            for fn in batch:
                conn.execute("SAVEPOINT w")
                try:
                    outcomes.append(fn(conn))
                except Exception as exc:
                    # If SQLite already rolled back the whole transaction (it may on
                    # SQLITE_FULL, SQLITE_IOERR...), this raises and the batch fails below.
                    conn.execute("ROLLBACK TO w")
                    outcomes.append(_Failed(_write_error(exc)))
                conn.execute("RELEASE w")
            conn.execute("COMMIT")
        except BaseException as exc:
            if self._conn is not None and self._conn.in_transaction:
                self._abandon(self._conn)
            if isinstance(exc, Exception):
                raise _write_failed(exc) from exc
            raise
        return outcomes

    def _abandon(self, conn: sqlite3.Connection) -> None:
        """Roll back the open transaction; if even that fails, drop the connection (closing
        it rolls back) so the next transaction starts on a fresh one."""
        try:
            conn.execute("ROLLBACK")
            return
        except sqlite3.Error:
            log.exception("rolling back a failed transaction failed; reopening the connection")
        self._conn = None
        try:
            conn.close()
        except sqlite3.Error:
            log.exception("closing the failed connection failed")

    async def _write(self, fn: Callable[[Tx], T]) -> T:
        return await self._commit(lambda conn: fn(Tx(conn, self._queries, DIALECT)))

    def fenced_checkpointer(self, run_id: str, attempt: int) -> SqliteCheckpointer:
        assert self.checkpointer is not None

        def check(conn: sqlite3.Connection) -> None:
            tx = Tx(conn, self._queries, DIALECT)
            if tx.one("hold_run", run_id=run_id, attempt=attempt) is None:
                raise LeaseLost(run_id, attempt)

        return self.checkpointer.fenced(check)

    async def _commit(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in a write transaction; it is durable when this returns.

        Writes that arrive while a transaction is under way are committed together in the
        next one (group commit): a burst of 100 run creations costs a few transactions, not
        100, and a worker's claim does not queue behind all of them."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((fn, future))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_pending())
        outcome = await future
        if isinstance(outcome, _Failed):
            raise outcome.exc
        return outcome  # type: ignore[no-any-return]

    async def _commit_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                # SQLite has one writer at a time per file. Taking the checkpointer's lock
                # orders our transactions with LangGraph's writes in the event loop, instead of
                # letting the connections collide and back off in SQLite's busy handler (sleeps
                # of 1-100 ms that stall this writer thread).
                async with self._write_lock():
                    outcomes = await self._run(self._commit_batch, [fn for fn, _ in batch])
            except asyncio.CancelledError:
                for _, future in batch:
                    future.cancel()
                raise
            except Exception as exc:  # the whole transaction failed: every write in it did
                cause = exc.__cause__ if isinstance(exc, WriteFailed) else exc
                for _, future in batch:
                    if not future.done():  # one exception each: tracebacks are per caller
                        future.set_exception(_write_failed(cause or exc))
                continue
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if not future.done():
                    future.set_result(outcome)

    def _write_lock(self) -> Any:
        return self.checkpointer.lock if self.checkpointer is not None else contextlib.nullcontext()

    async def _lookup(self, fn: Callable[[Tx], T]) -> T:
        """A point read (one row by primary key), inline on the calling thread."""
        assert self._reader is not None
        return fn(Tx(self._reader, self._queries, DIALECT))

    async def _read(self, fn: Callable[[Tx], T]) -> T:
        def run() -> T:
            return fn(Tx(self._writer(), self._queries, DIALECT))

        return await self._run(run)


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring the file to ``SCHEMA_VERSION``: a new file gets the whole schema; an older one
    runs each ``sqlite/migrations/<n>.sql`` above its version, each in a transaction of its
    own, then the schema (whose ``IF NOT EXISTS`` statements add tables that are new). The
    data-dir lock makes this process the only one doing it."""
    fresh = (
        conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'schema_version'").fetchone() is None
    )
    if not fresh:
        version = conn.execute("SELECT max(version) FROM schema_version").fetchone()[0] or 1
        if version > SCHEMA_VERSION:
            raise StorageTooNew(
                f"the database was written by a newer agentd (schema {version}, this one "
                f"knows {SCHEMA_VERSION}); upgrade agentd"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _statements(sql_file(f"sqlite/migrations/{target}.sql")):
                    conn.execute(statement)
                conn.execute("DELETE FROM schema_version")
                conn.execute("INSERT INTO schema_version VALUES (?)", (target,))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            log.info("database upgraded to schema %d", target)
    conn.executescript(sql_file("sqlite/schema.sql"))
    if fresh:
        conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))


def _statements(script: str) -> list[str]:
    """The statements of a migration script (no triggers: ``;`` ends each statement)."""
    lines = [line for line in script.splitlines() if not line.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
