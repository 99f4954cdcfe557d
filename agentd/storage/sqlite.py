"""The embedded backend: one SQLite file (WAL) holds agentd's tables, LangGraph's checkpoints
(``AsyncSqliteSaver``, ``checkpointer.py``) and its store (``AsyncSqliteStore``, ``store.py``).

agentd's own queries run on one connection owned by one thread: each transaction is a plain
function executed there, so a transaction costs one thread hop and needs no lock. One process
owns the file (``agentd.lock``), which is what makes the start-up requeue of ``running`` runs
safe."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import orjson
from langgraph.checkpoint.sqlite import SqliteSaver

from agentd.schemas import ApiError, Conflict, NotFound, ServiceUnavailable, Unprocessable
from agentd.storage.base import (
    Cancelled,
    LoggedEvent,
    Row,
    StorageStartupError,
    StoredEvent,
    WebhookDelivery,
    WebhookFor,
)
from agentd.storage.checkpointer import SqliteCheckpointer
from agentd.storage.store import SqliteStore

T = TypeVar("T")
log = logging.getLogger("agentd.storage")
SCHEMA_VERSION = 2
WAL_CHECKPOINT_SECONDS = 1.0
WAL_SIZE_LIMIT = 64 * 1024 * 1024
_INFLIGHT = ("pending", "running")
EVENT_SWEEP_CHUNK = 5000
EVENT_INSERT_ROWS = 64
EVENT_INSERT_BYTES = 256 * 1024
_INSERT_EVENT = (
    "INSERT OR IGNORE INTO run_events (run_id, ms, seq, thread_id, event, data)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
_INSERT_EVENTS = _INSERT_EVENT + ", (?, ?, ?, ?, ?, ?)" * (EVENT_INSERT_ROWS - 1)


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _json(value: str | None) -> Any:
    return None if value is None else orjson.loads(value)


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


class SqliteStorage:
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
        self.path = path
        self._synchronous = synchronous
        self._store_index = store_index
        self._store_ttl = store_ttl
        self._default_thread_ttl = default_thread_ttl
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
            write=self._write,
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
                write=self._write,
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

    def _add_default_ttl_trigger(self, conn: sqlite3.Connection) -> None:
        if self._default_thread_ttl:
            # Every thread created while a default TTL is configured gets it, whichever code path
            # inserts it (POST /threads, runs creating their thread). A TEMP trigger lives on this
            # connection only, which runs all of agentd's SQL; older threads keep no TTL.
            strategy, minutes = self._default_thread_ttl
            conn.execute(
                "CREATE TEMP TRIGGER thread_default_ttl AFTER INSERT ON main.threads BEGIN"
                " INSERT OR IGNORE INTO thread_ttl (thread_id, strategy, ttl_minutes)"
                f" VALUES (NEW.thread_id, '{_strategy(strategy)}', {float(minutes)!r}); END"
            )

    def _writer(self) -> sqlite3.Connection:
        """The writer connection (on the storage thread); a new one if the last was dropped."""
        if self._conn is None:
            conn = self._connect_writer()
            self._add_default_ttl_trigger(conn)
            self._conn = conn
        return self._conn

    def _open_sync(self) -> None:
        conn = self._connect_writer()
        conn.execute("PRAGMA journal_mode = WAL")
        _migrate(conn)
        self._add_default_ttl_trigger(conn)
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

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
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

    def _lookup(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A point read (one row by primary key), inline on the calling thread."""
        assert self._reader is not None
        return fn(self._reader)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def run() -> T:
            return fn(self._writer())

        return await self._run(run)

    # ---------------------------------------------------------------- assistants

    async def sync_default_assistants(self, assistants: Sequence[Row]) -> None:
        """Create each graph's default assistant if missing. One never edited (still at a
        single version) follows its graph's name and description; one with versions made by
        a user keeps them."""

        def tx(conn: sqlite3.Connection) -> None:
            now = _now()
            system = _dumps({"created_by": "system"})
            for a in assistants:
                conn.execute(
                    "INSERT INTO assistants (assistant_id, graph_id, config, context, metadata,"
                    " name, description, version, created_at, updated_at)"
                    " VALUES (?, ?, '{}', '{}', ?, ?, ?, 1, ?, ?) ON CONFLICT DO NOTHING",
                    (a["assistant_id"], a["graph_id"], system, a["name"], a["description"],
                     now, now),
                )  # fmt: skip
                conn.execute(
                    "INSERT INTO assistant_versions (assistant_id, version, graph_id, config,"
                    " context, metadata, name, description, created_at)"
                    " SELECT assistant_id, 1, graph_id, config, context, metadata, name,"
                    " description, created_at FROM assistants WHERE assistant_id = ?"
                    " ON CONFLICT DO NOTHING",
                    (a["assistant_id"],),
                )
                untouched = (
                    " WHERE assistant_id = ? AND graph_id = ?"
                    " AND (name != ? OR description IS NOT ?)"
                    " AND (SELECT max(version) FROM assistant_versions v"
                    "      WHERE v.assistant_id = ?) = 1"
                )
                args = (a["name"], a["description"], a["assistant_id"], a["graph_id"],
                        a["name"], a["description"], a["assistant_id"])  # fmt: skip
                conn.execute(f"UPDATE assistants SET name = ?, description = ?{untouched}", args)
                conn.execute(
                    f"UPDATE assistant_versions SET name = ?, description = ?{untouched}", args
                )

        await self._write(tx)

    async def create_assistant(self, assistant: Row, if_exists: str) -> Row:
        """Insert an assistant and its version 1; an existing id is a Conflict, or with
        ``if_exists="do_nothing"`` the existing assistant unchanged."""

        def tx(conn: sqlite3.Connection) -> Row:
            row = conn.execute(
                "SELECT * FROM assistants WHERE assistant_id = ?", (assistant["assistant_id"],)
            ).fetchone()
            if row is not None:
                if if_exists == "do_nothing":
                    return _assistant(row)
                raise Conflict(f"Assistant {assistant['assistant_id']} already exists")
            now = _now()
            row = conn.execute(
                "INSERT INTO assistants (assistant_id, graph_id, config, context, metadata,"
                " name, description, version, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?) RETURNING *",
                (assistant["assistant_id"], assistant["graph_id"], _dumps(assistant["config"]),
                 _dumps(assistant["context"]), _dumps(assistant["metadata"]),
                 assistant["name"], assistant["description"], now, now),
            ).fetchone()  # fmt: skip
            _insert_version(conn, row)
            return _assistant(row)

        return await self._write(tx)

    async def get_assistant(self, assistant_id: str) -> Row | None:
        def q(conn: sqlite3.Connection) -> Row | None:
            row = conn.execute(
                "SELECT * FROM assistants WHERE assistant_id = ?", (assistant_id,)
            ).fetchone()
            return _assistant(row) if row else None

        return self._lookup(q)

    async def update_assistant(
        self,
        assistant_id: str,
        *,
        graph_id: str | None = None,
        config: Row | None = None,
        context: Row | None = None,
        metadata: Row | None = None,
        name: str | None = None,
        description: str | None = None,
    ) -> Row | None:
        """Make a new version from the latest one: None keeps a field, ``metadata`` is merged,
        and ``config.configurable`` always mirrors ``context``. None if there is no such
        assistant."""

        def tx(conn: sqlite3.Connection) -> Row | None:
            row = conn.execute(
                "SELECT * FROM assistants WHERE assistant_id = ?", (assistant_id,)
            ).fetchone()
            if row is None:
                return None
            new_context = context if context is not None else _json(row["context"])
            new_config = {
                k: v
                for k, v in (config if config is not None else _json(row["config"])).items()
                if k != "configurable"
            }
            if new_context:
                new_config["configurable"] = new_context
            version = conn.execute(
                "SELECT max(version) FROM assistant_versions WHERE assistant_id = ?",
                (assistant_id,),
            ).fetchone()[0]
            row = conn.execute(
                "UPDATE assistants SET graph_id = ?, config = ?, context = ?, metadata = ?,"
                " name = ?, description = ?, version = ?, updated_at = ?"
                " WHERE assistant_id = ? RETURNING *",
                (graph_id or row["graph_id"], _dumps(new_config), _dumps(new_context),
                 _dumps({**_json(row["metadata"]), **(metadata or {})}),
                 row["name"] if name is None else name,
                 row["description"] if description is None else description,
                 (version or 0) + 1, _now(), assistant_id),
            ).fetchone()  # fmt: skip
            _insert_version(conn, row)
            return _assistant(row)

        return await self._write(tx)

    async def set_latest_assistant_version(self, assistant_id: str, version: int) -> Row | None:
        """Make ``version`` the assistant's current one: the assistant takes all its fields.
        None if there is no such assistant; NotFound if it has no such version."""

        def tx(conn: sqlite3.Connection) -> Row | None:
            if not conn.execute(
                "SELECT 1 FROM assistants WHERE assistant_id = ?", (assistant_id,)
            ).fetchone():
                return None
            v = conn.execute(
                "SELECT * FROM assistant_versions WHERE assistant_id = ? AND version = ?",
                (assistant_id, version),
            ).fetchone()
            if v is None:
                raise NotFound(f"Version {version} not found for assistant {assistant_id}")
            row = conn.execute(
                "UPDATE assistants SET graph_id = ?, config = ?, context = ?, metadata = ?,"
                " name = ?, description = ?, version = ?, updated_at = ?"
                " WHERE assistant_id = ? RETURNING *",
                (v["graph_id"], v["config"], v["context"], v["metadata"], v["name"],
                 v["description"], version, _now(), assistant_id),
            ).fetchone()  # fmt: skip
            return _assistant(row)

        return await self._write(tx)

    async def delete_assistant(self, assistant_id: str) -> bool:
        """Delete an assistant and (by cascade) its versions."""

        def tx(conn: sqlite3.Connection) -> bool:
            n = conn.execute(
                "DELETE FROM assistants WHERE assistant_id = ?", (assistant_id,)
            ).rowcount
            return n > 0

        return await self._write(tx)

    async def assistant_inflight_runs(self, assistant_id: str) -> list[Row]:
        def q(conn: sqlite3.Connection) -> list[Row]:
            return [
                _run(r)
                for r in conn.execute(
                    "SELECT * FROM runs WHERE status IN (?, ?) AND assistant_id = ?"
                    " ORDER BY created_at",
                    (*_INFLIGHT, assistant_id),
                )
            ]

        return await self._read(q)

    async def assistant_thread_ids(self, assistant_id: str) -> list[str]:
        """Threads whose ``metadata.assistant_id`` names this assistant."""

        def q(conn: sqlite3.Connection) -> list[str]:
            return [
                r[0]
                for r in conn.execute(
                    "SELECT thread_id FROM threads"
                    " WHERE json_extract(metadata, '$.assistant_id') = ?",
                    (assistant_id,),
                )
            ]

        return await self._read(q)

    async def list_assistant_versions(
        self, assistant_id: str, *, metadata: Row | None, limit: int, offset: int
    ) -> list[Row]:
        """Versions, newest first."""
        where, args = ["assistant_id = ?"], [assistant_id]
        _metadata_filter(metadata, where, args)

        def q(conn: sqlite3.Connection) -> list[Row]:
            return [
                _assistant_version(r)
                for r in conn.execute(
                    f"SELECT * FROM assistant_versions WHERE {' AND '.join(where)}"
                    " ORDER BY version DESC LIMIT ? OFFSET ?",
                    [*args, limit, offset],
                )
            ]

        return await self._read(q)

    async def get_assistant_version(self, assistant_id: str, version: int) -> Row | None:
        def q(conn: sqlite3.Connection) -> Row | None:
            row = conn.execute(
                "SELECT * FROM assistant_versions WHERE assistant_id = ? AND version = ?",
                (assistant_id, version),
            ).fetchone()
            return _assistant_version(row) if row else None

        return await self._read(q)

    async def search_assistants(
        self,
        *,
        graph_ids: Sequence[str],
        graph_id: str | None,
        metadata: Row | None,
        name: str | None,
        limit: int,
        offset: int,
        sort_by: str,
        sort_order: str,
    ) -> tuple[list[Row], int]:
        """Assistants of the graphs in ``graph_ids`` (those served) matching the filters."""
        where, args = _assistant_filter(graph_ids, graph_id, metadata, name)
        return await self._search("assistants", where, args, sort_by, sort_order, limit,
                                  offset, _assistant)  # fmt: skip

    async def count_assistants(
        self,
        *,
        graph_ids: Sequence[str],
        graph_id: str | None,
        metadata: Row | None,
        name: str | None,
    ) -> int:
        where, args = _assistant_filter(graph_ids, graph_id, metadata, name)

        def q(conn: sqlite3.Connection) -> int:
            sql = f"SELECT count(*) FROM assistants WHERE {' AND '.join(where)}"
            return conn.execute(sql, args).fetchone()[0]

        return await self._read(q)

    # ---------------------------------------------------------------- threads

    async def create_thread(
        self,
        thread_id: str,
        metadata: Row,
        if_exists: str,
        ttl: tuple[str, float] | None = None,
    ) -> Row:
        """``ttl`` is (strategy, minutes); a thread that exists already is returned unchanged
        with ``if_exists="do_nothing"``."""

        def tx(conn: sqlite3.Connection) -> Row:
            row = conn.execute("SELECT * FROM threads WHERE thread_id = ?", (thread_id,)).fetchone()
            if row is not None:
                if if_exists == "do_nothing":
                    return _thread(row)
                raise Conflict(f"Thread with ID {thread_id} already exists")
            now = _now()
            row = conn.execute(
                "INSERT INTO threads (thread_id, created_at, updated_at, state_updated_at,"
                " metadata, status, config) VALUES (?, ?, ?, ?, ?, 'idle', '{}') RETURNING *",
                (thread_id, now, now, now, _dumps(metadata)),
            ).fetchone()
            if ttl is not None:
                _set_ttl(conn, thread_id, ttl)
            return _thread(row)

        return await self._write(tx)

    async def get_thread(self, thread_id: str, *, with_values: bool = True) -> Row | None:
        """A thread; ``with_values=False`` leaves its values and interrupts out (``None``),
        for callers that only need its status, metadata or config: a long conversation's
        values are the bulk of the row."""
        columns = "*" if with_values else _THREAD_WITHOUT_VALUES

        def q(conn: sqlite3.Connection) -> Row | None:
            row = conn.execute(
                f"SELECT {columns} FROM threads WHERE thread_id = ?", (thread_id,)
            ).fetchone()
            return _thread(row) if row else None

        return self._lookup(q)

    async def update_thread(
        self, thread_id: str, metadata: Row, ttl: tuple[str, float] | None = None
    ) -> Row | None:
        def tx(conn: sqlite3.Connection) -> Row | None:
            row = conn.execute(
                "SELECT metadata FROM threads WHERE thread_id = ?", (thread_id,)
            ).fetchone()
            if row is None:
                return None
            merged = {**_json(row["metadata"]), **metadata}
            row = conn.execute(
                "UPDATE threads SET metadata = ?, updated_at = ? WHERE thread_id = ? RETURNING *",
                (_dumps(merged), _now(), thread_id),
            ).fetchone()
            if ttl is not None:
                _set_ttl(conn, thread_id, ttl)
            return _thread(row)

        return await self._write(tx)

    async def delete_thread(self, thread_id: str) -> bool:
        def tx(conn: sqlite3.Connection) -> bool:
            found = conn.execute(
                "SELECT 1 FROM threads WHERE thread_id = ?", (thread_id,)
            ).fetchone()
            # Checkpoints live in the same file: they go in the same transaction.
            _delete_threads(conn, [thread_id])
            return found is not None

        return await self._write(tx)

    async def search_threads(
        self,
        *,
        ids: Sequence[str] | None,
        metadata: Row | None,
        values: Row | None,
        status: str | None,
        limit: int,
        offset: int,
        sort_by: str,
        sort_order: str,
    ) -> tuple[list[Row], int]:
        where: list[str] = []
        args: list[Any] = []
        if ids is not None:
            # One JSON parameter, not one per id: SQLite caps a statement's parameters. Sorted,
            # as SQLite indexes the list before the search, several times faster so.
            where.append("thread_id IN (SELECT value FROM json_each(?))" if ids else "0")
            if ids:
                args.append(_dumps(sorted(set(ids))))
        if status is not None:
            where.append("status = ?")
            args.append(status)
        _metadata_filter(metadata, where, args)
        _metadata_filter(values, where, args, column='"values"')
        return await self._search("threads", where, args, sort_by, sort_order, limit, offset,
                                  _thread)  # fmt: skip

    async def count_threads(
        self, *, metadata: Row | None, values: Row | None, status: str | None
    ) -> int:
        where: list[str] = []
        args: list[Any] = []
        if status is not None:
            where.append("status = ?")
            args.append(status)
        _metadata_filter(metadata, where, args)
        _metadata_filter(values, where, args, column='"values"')
        clause = f" WHERE {' AND '.join(where)}" if where else ""

        def q(conn: sqlite3.Connection) -> int:
            return conn.execute(f"SELECT count(*) FROM threads{clause}", args).fetchone()[0]

        return await self._read(q)

    async def copy_thread(self, thread_id: str, new_thread_id: str) -> Row | None:
        """A new thread with the metadata, state, TTL and every checkpoint and write of
        ``thread_id`` (None when it does not exist), in one transaction."""

        def tx(conn: sqlite3.Connection) -> Row | None:
            now = _now()
            row = conn.execute(
                "INSERT INTO threads (thread_id, created_at, updated_at, state_updated_at,"
                ' metadata, status, rest_status, config, "values", interrupts, error)'
                " SELECT ?, ?, ?, state_updated_at, metadata, rest_status, rest_status,"
                ' config, "values", interrupts, error FROM threads WHERE thread_id = ?'
                " RETURNING *",
                (new_thread_id, now, now, thread_id),
            ).fetchone()
            if row is None:
                return None
            conn.execute(
                "INSERT OR REPLACE INTO thread_ttl (thread_id, strategy, ttl_minutes)"
                " SELECT ?, strategy, ttl_minutes FROM thread_ttl WHERE thread_id = ?",
                (new_thread_id, thread_id),
            )
            conn.execute(
                "INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id,"
                " parent_checkpoint_id, type, checkpoint, metadata)"
                " SELECT ?, checkpoint_ns, checkpoint_id, parent_checkpoint_id, type, checkpoint,"
                " metadata FROM checkpoints WHERE thread_id = ?",
                (new_thread_id, thread_id),
            )
            conn.execute(
                "INSERT INTO writes (thread_id, checkpoint_ns, checkpoint_id, task_id, task_path,"
                " idx, channel, type, value) SELECT ?, checkpoint_ns, checkpoint_id, task_id,"
                " task_path, idx, channel, type, value FROM writes WHERE thread_id = ?",
                (new_thread_id, thread_id),
            )
            return _thread(row)

        return await self._write(tx)

    async def prune_threads(self, thread_ids: Sequence[str], strategy: str) -> int:
        """Delete the threads (``delete``) or all but their latest checkpoint
        (``keep_latest``) in one transaction; returns how many of them existed."""

        wanted = _dumps(sorted(set(thread_ids)))  # one parameter, sorted: as in search

        def tx(conn: sqlite3.Connection) -> int:
            found = [
                r[0]
                for r in conn.execute(
                    "SELECT thread_id FROM threads"
                    " WHERE thread_id IN (SELECT value FROM json_each(?))",
                    (wanted,),
                )
            ]
            if strategy == "delete":
                _delete_threads(conn, found)
            else:
                busy = [t for t in found if _has_inflight_run(conn, t)]
                if busy:
                    # A pending run may fork from a checkpoint keep_latest would remove.
                    raise Conflict(
                        "keep_latest cannot prune threads with a pending or running run: "
                        f"{', '.join(busy)}"
                    )
                delta = [t for t in found if _uses_delta_channel(conn, t)]
                if delta:
                    raise Unprocessable(
                        "keep_latest cannot prune threads whose graph uses a DeltaChannel "
                        f"(their state is rebuilt from older checkpoints): {', '.join(delta)}"
                    )
                for thread_id in found:
                    _keep_latest(conn, thread_id)
            return len(found)

        return await self._write(tx) if thread_ids else 0

    async def get_thread_ttl(self, thread_id: str) -> Row | None:
        """The thread's TTL: strategy, minutes, and when it expires if nothing writes to it."""

        def q(conn: sqlite3.Connection) -> Row | None:
            row = conn.execute(
                "SELECT x.strategy, x.ttl_minutes, t.updated_at FROM thread_ttl x"
                " JOIN threads t USING (thread_id) WHERE thread_id = ?",
                (thread_id,),
            ).fetchone()
            if row is None:
                return None
            expires = datetime.fromisoformat(row["updated_at"]) + timedelta(
                minutes=row["ttl_minutes"]
            )
            return {"strategy": row["strategy"], "ttl_minutes": row["ttl_minutes"],
                    "expires_at": expires.isoformat()}  # fmt: skip

        return await self._read(q)

    async def sweep_threads(self, limit: int) -> tuple[list[str], list[str]]:
        """Apply the TTL of up to ``limit`` expired threads that have no pending or running run:
        returns the ids deleted and the ids pruned to their latest checkpoint."""

        def tx(conn: sqlite3.Connection) -> tuple[list[str], list[str]]:
            rows = conn.execute(
                "SELECT t.thread_id, x.strategy, t.updated_at FROM thread_ttl x"
                " JOIN threads t USING (thread_id)"
                " WHERE julianday(t.updated_at) + x.ttl_minutes / 1440.0 <= julianday(?)"
                " AND (x.swept_at IS NULL OR x.swept_at < t.updated_at)"
                " AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.thread_id = t.thread_id"
                " AND r.status IN ('pending', 'running')) LIMIT ?",
                (_now(), limit),
            ).fetchall()
            deleted = [r["thread_id"] for r in rows if r["strategy"] == "delete"]
            _delete_threads(conn, deleted)
            pruned = []
            for r in rows:
                if r["strategy"] != "keep_latest":
                    continue
                if not _uses_delta_channel(conn, r["thread_id"]):
                    _keep_latest(conn, r["thread_id"])
                    pruned.append(r["thread_id"])
                conn.execute(
                    "UPDATE thread_ttl SET swept_at = ? WHERE thread_id = ?",
                    (r["updated_at"], r["thread_id"]),
                )
            return deleted, pruned

        return await self._write(tx)

    async def set_thread_state(
        self, thread_id: str, values: Any, interrupts: Row, status: str
    ) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            now = _now()
            conn.execute(
                'UPDATE threads SET "values" = ?, interrupts = ?, state_updated_at = ?,'
                " rest_status = ? WHERE thread_id = ?",
                (_dumps(values), _dumps(interrupts), now, status, thread_id),
            )
            _settle_thread(conn, thread_id, now)

        await self._write(tx)

    async def _search(
        self,
        table: str,
        where: list[str],
        args: list[Any],
        sort_by: str,
        sort_order: str,
        limit: int,
        offset: int,
        convert: Callable[[sqlite3.Row], Row],
    ) -> tuple[list[Row], int]:
        # sort_by and sort_order are validated against fixed literals by the API schemas.
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        order = "ASC" if sort_order == "asc" else "DESC"

        def q(conn: sqlite3.Connection) -> tuple[list[Row], int]:
            total = conn.execute(f"SELECT count(*) FROM {table}{clause}", args).fetchone()[0]
            rows = conn.execute(
                f"SELECT * FROM {table}{clause} ORDER BY {sort_by} {order}, rowid {order}"
                " LIMIT ? OFFSET ?",
                [*args, limit, offset],
            ).fetchall()
            return [convert(r) for r in rows], total

        return await self._read(q)

    # ---------------------------------------------------------------- runs

    async def create_run(
        self,
        run: Row,
        *,
        thread_metadata: Row,
        if_not_exists: str,
        cron_tick: tuple[str, str, str | None] | None = None,
        webhook: WebhookFor | None = None,
    ) -> tuple[Row, list[Cancelled]] | None:
        """Insert a pending run (creating its thread if asked) and apply its multitask
        strategy, in one transaction: returns the run and the runs it cancelled (those that
        end here get their ``webhook`` delivery in the same transaction).

        With ``cron_tick`` (cron_id, due, next_run_date) the same transaction first claims
        that cron's tick: None when another scheduler has it. A run that cannot be created
        (its thread is gone, ``reject`` found it busy) still consumes the tick: the claim
        commits and the error is raised, so a crash can neither lose nor repeat a firing."""

        def tx(conn: sqlite3.Connection) -> tuple[Row, list[Cancelled]] | ApiError | None:
            if cron_tick is None:
                return _insert_run(conn, run, thread_metadata, if_not_exists, webhook)
            if not _claim_cron(conn, *cron_tick):
                return None
            conn.execute("SAVEPOINT run")
            try:
                created = _insert_run(conn, run, thread_metadata, if_not_exists, webhook)
            except ApiError as exc:
                conn.execute("ROLLBACK TO run")
                return exc
            finally:
                conn.execute("RELEASE run")
            return created

        outcome = await self._write(tx)
        if isinstance(outcome, ApiError):
            raise outcome
        return outcome

    async def create_runs(self, items: Sequence[tuple[Row, Row]]) -> list[Row]:
        """Several ``create_run``s (run, options) in one transaction: all or none."""

        def tx(conn: sqlite3.Connection) -> list[Row]:
            return [_insert_run(conn, run, **options)[0] for run, options in items]

        return await self._write(tx)

    async def get_run(self, thread_id: str | None, run_id: str) -> Row | None:
        def q(conn: sqlite3.Connection) -> Row | None:
            if thread_id is None:
                row = conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            else:
                row = conn.execute(
                    "SELECT * FROM runs WHERE run_id = ? AND thread_id = ?", (run_id, thread_id)
                ).fetchone()
            return _run(row) if row else None

        return self._lookup(q)

    async def list_runs(
        self, thread_id: str, *, limit: int, offset: int, status: str | None
    ) -> list[Row]:
        sql = "SELECT * FROM runs WHERE thread_id = ?"
        args: list[Any] = [thread_id]
        if status is not None:
            sql += " AND status = ?"
            args.append(status)
        sql += " ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?"
        args += [limit, offset]

        def q(conn: sqlite3.Connection) -> list[Row]:
            return [_run(r) for r in conn.execute(sql, args)]

        return await self._read(q)

    async def inflight_runs(self, thread_id: str) -> list[Row]:
        def q(conn: sqlite3.Connection) -> list[Row]:
            return [
                _run(r)
                for r in conn.execute(
                    "SELECT * FROM runs WHERE thread_id = ? AND status IN (?, ?)"
                    " ORDER BY created_at",
                    (thread_id, *_INFLIGHT),
                )
            ]

        return await self._read(q)

    async def inflight_run_ids(self, status: str | None) -> list[tuple[str, str]]:
        """(thread_id, run_id) of every run in ``status`` (pending or running; None: both)."""
        statuses = _INFLIGHT if status is None else (status,)

        def q(conn: sqlite3.Connection) -> list[tuple[str, str]]:
            marks = ",".join("?" * len(statuses))
            return [
                (r[0], r[1])
                for r in conn.execute(
                    f"SELECT thread_id, run_id FROM runs WHERE status IN ({marks})"
                    " ORDER BY created_at",
                    statuses,
                )
            ]

        return await self._read(q)

    async def delete_run(self, thread_id: str, run_id: str) -> bool:
        def tx(conn: sqlite3.Connection) -> bool:
            n = conn.execute(
                "DELETE FROM runs WHERE run_id = ? AND thread_id = ?", (run_id, thread_id)
            ).rowcount
            if n:
                _delete_run_checkpoints(conn, thread_id, run_id)
            return n > 0

        return await self._write(tx)

    async def claim_runs(self, limit: int) -> list[Row]:
        """Mark up to ``limit`` runnable runs ``running`` in one transaction: the oldest due
        pending run of each thread that has nothing running. Each claimed run carries
        ``resume`` (its thread's newest checkpoint is its own: a start cut short before) and
        ``cancel_action`` (a cancel asked of it before, to honour instead of running it)."""

        def tx(conn: sqlite3.Connection) -> list[Row]:
            now = _now()
            claimed: list[Row] = []
            for _ in range(limit):
                row = conn.execute(
                    "UPDATE runs SET status = 'running', attempt = attempt + 1, updated_at = ?"
                    " WHERE run_id = (SELECT r.run_id FROM runs r"
                    "   WHERE r.status = 'pending' AND r.created_at <= ?"
                    "   AND NOT EXISTS (SELECT 1 FROM runs x"
                    "                   WHERE x.thread_id = r.thread_id AND x.status = 'running')"
                    "   ORDER BY r.created_at LIMIT 1)"
                    " RETURNING *",
                    (now, now),
                ).fetchone()
                if row is None:
                    break
                run = _run(row)
                run["cancel_action"] = row["cancel_action"]
                if row["start_writes"] is None:
                    _note_start_writes(conn, run)
                latest = conn.execute(
                    "SELECT json_extract(CAST(metadata AS TEXT), '$.run_id') FROM checkpoints"
                    " WHERE thread_id = ? AND checkpoint_ns = ''"
                    " ORDER BY checkpoint_id DESC LIMIT 1",
                    (run["thread_id"],),
                ).fetchone()
                run["resume"] = latest is not None and latest[0] == run["run_id"]
                claimed.append(run)
            return claimed

        return await self._write(tx)

    async def run_cancel_action(self, run_id: str) -> str | None:
        """The cancel asked of a run (``interrupt``/``rollback``), if any: what its executor
        reads once it is ready to hear cancels, so one asked in between is not missed."""

        def q(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                "SELECT cancel_action FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()
            return row[0] if row else None

        return self._lookup(q)

    async def next_due_at(self) -> float | None:
        def q(conn: sqlite3.Connection) -> float | None:
            row = conn.execute(
                "SELECT min(created_at) FROM runs WHERE status = 'pending' AND created_at > ?",
                (_now(),),
            ).fetchone()
            return datetime.fromisoformat(row[0]).timestamp() if row[0] else None

        return await self._read(q)

    async def requeue_running(self) -> int:
        def tx(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "UPDATE runs SET status = 'pending', updated_at = ? WHERE status = 'running'",
                (_now(),),
            ).rowcount

        return await self._write(tx)

    async def requeue_run(self, run_id: str, attempt: int) -> bool:
        """Hand attempt ``attempt`` of a running run back to the queue (a shutdown), without
        counting it; False when that attempt no longer holds the run."""

        def tx(conn: sqlite3.Connection) -> bool:
            return (
                conn.execute(
                    "UPDATE runs SET status = 'pending', attempt = attempt - 1, updated_at = ?"
                    " WHERE run_id = ? AND status = 'running' AND attempt = ?",
                    (_now(), run_id, attempt),
                ).rowcount
                > 0
            )

        return await self._write(tx)

    async def finish_run(
        self,
        run_id: str,
        thread_id: str,
        attempt: int,
        status: str,
        *,
        thread_status: str,
        values: Any,
        interrupts: Row | None,
        error: Row | None,
        delete: bool = False,
        rollback: bool = False,
        webhook: WebhookDelivery | None = None,
    ) -> bool:
        """Record the end of attempt ``attempt`` of a running run, write its outcome to the
        thread and put its ``webhook`` delivery in the outbox. Only the attempt that holds the
        run ends it, once: False when the run is no longer running under that attempt (or its
        thread was deleted meanwhile)."""

        def tx(conn: sqlite3.Connection) -> bool:
            now = _now()
            if conn.execute("SELECT 1 FROM threads WHERE thread_id = ?", (thread_id,)).fetchone():
                held = conn.execute(
                    "SELECT 1 FROM runs WHERE run_id = ? AND status = 'running' AND attempt = ?",
                    (run_id, attempt),
                ).fetchone()
                if held is None:
                    return False
                _record_webhook(conn, webhook)
            else:
                # Deleted while this run was still unwinding: the checkpoints it wrote after
                # the delete go too, or a thread re-created with the same id would see them.
                # The run ended all the same (cancelled by the delete): its webhook fires.
                _delete_threads(conn, [thread_id])
                _record_webhook(conn, webhook)
                return False
            if delete:  # a temporary run's thread goes with it
                _delete_threads(conn, [thread_id])
                return True
            if rollback:
                _roll_back(conn, thread_id, run_id)  # again: a write may have landed since
                conn.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))
            else:
                conn.execute(
                    "UPDATE runs SET status = ?, updated_at = ? WHERE run_id = ?",
                    (status, now, run_id),
                )
            sets = ["rest_status = ?", "error = ?"]
            args: list[Any] = [thread_status, _dumps(error) if error else None]
            if values is not None:
                sets += ['"values" = ?', "interrupts = ?", "state_updated_at = ?"]
                args += [_dumps(values), _dumps(interrupts or {}), now]
            conn.execute(f"UPDATE threads SET {', '.join(sets)} WHERE thread_id = ?",
                         [*args, thread_id])  # fmt: skip
            _settle_thread(conn, thread_id, now)
            return True

        return await self._write(tx)

    async def roll_back_run(self, thread_id: str, run_id: str) -> None:
        """Remove what a run wrote to its thread's checkpoints: the checkpoints it created
        and the writes it added to those it started from. The run itself stays (running)
        until ``finish_run(rollback=True)``, so its thread's state can be read in between."""

        def tx(conn: sqlite3.Connection) -> None:
            _roll_back(conn, thread_id, run_id)

        await self._write(tx)

    async def cancel_runs(
        self,
        thread_id: str,
        run_ids: Sequence[str],
        action: str,
        *,
        webhook: WebhookFor | None = None,
    ) -> list[Cancelled]:
        """Cancel the thread's in-flight runs among ``run_ids`` (see ``Cancelled``); a run that
        ends here gets its ``webhook(run, status)`` delivery in the same transaction."""

        def tx(conn: sqlite3.Connection) -> list[Cancelled]:
            rows = [
                _run(r)
                for r in conn.execute(
                    "SELECT * FROM runs WHERE thread_id = ? AND status IN ('pending', 'running')"
                    " AND run_id IN (SELECT value FROM json_each(?)) ORDER BY created_at",
                    (thread_id, _dumps(list(run_ids))),
                )
            ]
            cancelled = _cancel(conn, rows, action, webhook)
            if cancelled:
                _settle_thread(conn, thread_id, _now())
            return cancelled

        return await self._write(tx)

    # ---------------------------------------------------------------- crons

    async def create_cron(self, cron: Row) -> Row:
        """Insert a cron; NotFound when its assistant or thread does not exist."""

        def tx(conn: sqlite3.Connection) -> Row:
            if not conn.execute(
                "SELECT 1 FROM assistants WHERE assistant_id = ?", (cron["assistant_id"],)
            ).fetchone():
                raise NotFound(f"Assistant {cron['assistant_id']} not found")
            thread_id = cron["thread_id"]
            exists = "SELECT 1 FROM threads WHERE thread_id = ?"
            if thread_id is not None and not conn.execute(exists, (thread_id,)).fetchone():
                raise NotFound(f"Thread with ID {cron['thread_id']} not found")
            row = conn.execute(
                "INSERT INTO crons (cron_id, assistant_id, thread_id, user_id, schedule, timezone,"
                " end_time, payload, metadata, on_run_completed, enabled, next_run_date,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " RETURNING *",
                (cron["cron_id"], cron["assistant_id"], cron["thread_id"], cron["user_id"],
                 cron["schedule"], cron["timezone"], cron["end_time"], _dumps(cron["payload"]),
                 _dumps(cron["metadata"]), cron["on_run_completed"], int(cron["enabled"]),
                 cron["next_run_date"], cron["created_at"], cron["updated_at"]),
            ).fetchone()  # fmt: skip
            return _cron(row)

        return await self._write(tx)

    async def get_cron(self, cron_id: str) -> Row | None:
        def q(conn: sqlite3.Connection) -> Row | None:
            row = conn.execute("SELECT * FROM crons WHERE cron_id = ?", (cron_id,)).fetchone()
            return _cron(row) if row else None

        return await self._read(q)

    async def update_cron(self, cron_id: str, change: Callable[[Row], Row]) -> Row | None:
        """Apply ``change(current) -> changed fields`` in one transaction; None when missing.

        ``change`` runs inside the transaction, so it sees the row no one else is writing."""

        def tx(conn: sqlite3.Connection) -> Row | None:
            row = conn.execute("SELECT * FROM crons WHERE cron_id = ?", (cron_id,)).fetchone()
            if row is None:
                return None
            fields = change(_cron(row))
            sets, args = [], []
            for name in _CRON_MUTABLE:
                if name in fields:
                    value = fields[name]
                    sets.append(f"{name} = ?")
                    args.append(_dumps(value) if name in ("payload", "metadata") else value)
            if not sets:
                return _cron(row)
            row = conn.execute(
                f"UPDATE crons SET {', '.join(sets)} WHERE cron_id = ? RETURNING *",
                [*args, cron_id],
            ).fetchone()
            return _cron(row)

        return await self._write(tx)

    async def delete_cron(self, cron_id: str) -> bool:
        def tx(conn: sqlite3.Connection) -> bool:
            return conn.execute("DELETE FROM crons WHERE cron_id = ?", (cron_id,)).rowcount > 0

        return await self._write(tx)

    async def search_crons(
        self,
        *,
        assistant_id: str | None,
        thread_id: str | None,
        enabled: bool | None,
        metadata: Row | None,
        limit: int,
        offset: int,
        sort_by: str,
        sort_order: str,
    ) -> tuple[list[Row], int]:
        where, args = _cron_filter(assistant_id, thread_id, enabled, metadata)
        return await self._search("crons", where, args, sort_by, sort_order, limit, offset,
                                  _cron)  # fmt: skip

    async def count_crons(
        self, *, assistant_id: str | None, thread_id: str | None, metadata: Row | None
    ) -> int:
        where, args = _cron_filter(assistant_id, thread_id, None, metadata)
        clause = f" WHERE {' AND '.join(where)}" if where else ""

        def q(conn: sqlite3.Connection) -> int:
            return conn.execute(f"SELECT count(*) FROM crons{clause}", args).fetchone()[0]

        return await self._read(q)

    async def due_crons(self, now: str, limit: int = 100) -> list[Row]:
        """Enabled crons whose ``next_run_date`` is at or before ``now``, earliest first."""

        def q(conn: sqlite3.Connection) -> list[Row]:
            rows = conn.execute(
                "SELECT * FROM crons WHERE enabled = 1 AND next_run_date IS NOT NULL"
                " AND next_run_date <= ? ORDER BY next_run_date LIMIT ?",
                (now, limit),
            ).fetchall()
            return [_cron(r) for r in rows]

        return await self._read(q)

    async def claim_cron(self, cron_id: str, due: str, next_run_date: str | None) -> Row | None:
        """Claim the firing due at ``due``: move ``next_run_date`` from ``due`` to the next one.

        One conditional UPDATE (compare-and-set): of all the schedulers that saw the same due
        tick, exactly one gets the row back; the others get None. The same statement is safe
        under Postgres READ COMMITTED, where a second updater re-checks the WHERE clause
        after the first commits."""

        def tx(conn: sqlite3.Connection) -> Row | None:
            row = conn.execute(
                "UPDATE crons SET next_run_date = ? WHERE cron_id = ? AND enabled = 1"
                " AND next_run_date = ? RETURNING *",
                (next_run_date, cron_id, due),
            ).fetchone()
            return _cron(row) if row else None

        return await self._write(tx)

    async def next_cron_at(self) -> float | None:
        """Epoch seconds of the earliest next firing of an enabled cron."""

        def q(conn: sqlite3.Connection) -> float | None:
            row = conn.execute("SELECT min(next_run_date) FROM crons WHERE enabled = 1").fetchone()
            return datetime.fromisoformat(row[0]).timestamp() if row[0] else None

        return await self._read(q)

    # ---------------------------------------------------------------- webhook outbox

    async def claim_webhooks(self, limit: int, lease: float) -> list[Row]:
        """Lease up to ``limit`` due deliveries for ``lease`` seconds, counting an attempt each.

        The lease is the due time moved forward: a delivery being sent is not due, and one
        whose sender died is due again when the lease runs out. One UPDATE picks and leases
        (on Postgres the same subquery takes FOR UPDATE SKIP LOCKED)."""

        def tx(conn: sqlite3.Connection) -> list[Row]:
            now = datetime.now(UTC)
            until = _at(now, lease)
            rows = conn.execute(
                "UPDATE webhook_outbox SET attempt = attempt + 1, next_attempt_at = ?,"
                " locked_until = ? WHERE delivery_id IN (SELECT delivery_id FROM webhook_outbox"
                "   WHERE next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?)"
                " RETURNING delivery_id, run_id, url, payload, attempt",
                (until, until, _at(now), limit),
            ).fetchall()
            return [dict(r) for r in rows]

        return await self._write(tx)

    async def next_webhook_at(self) -> float | None:
        def q(conn: sqlite3.Connection) -> float | None:
            row = conn.execute("SELECT min(next_attempt_at) FROM webhook_outbox").fetchone()
            return datetime.fromisoformat(row[0]).timestamp() if row[0] else None

        return await self._read(q)

    async def retry_webhook(self, delivery_id: str, delay: float, *, counted: bool = True) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE webhook_outbox SET next_attempt_at = ?, locked_until = NULL,"
                " attempt = attempt - ? WHERE delivery_id = ?",
                (_at(datetime.now(UTC), delay), 0 if counted else 1, delivery_id),
            )

        await self._write(tx)

    async def delete_webhook(self, delivery_id: str) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM webhook_outbox WHERE delivery_id = ?", (delivery_id,))

        await self._write(tx)

    async def requeue_webhooks(self) -> int:
        """Deliveries leased by a dead process are due now: one process owns this file, so at
        start-up every lease is an orphan (the attempt it counted stays counted)."""

        def tx(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "UPDATE webhook_outbox SET next_attempt_at = ?, locked_until = NULL"
                " WHERE locked_until IS NOT NULL",
                (_at(datetime.now(UTC)),),
            ).rowcount

        return await self._write(tx)

    # ---------------------------------------------------------------- run events
    # The EventLog of the in-process broker (agentd.broker.base): resumable runs' events,
    # appended in batches through the group commit, capped per run, expired after the run.

    async def append_events(
        self,
        events: Sequence[LoggedEvent],
        ends: Sequence[tuple[str, float]],
        *,
        max_events: int,
        max_bytes: int,
    ) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            by_run: dict[str, list[LoggedEvent]] = {}
            for event in events:
                by_run.setdefault(event[0], []).append(event)
            for run_id, batch in by_run.items():
                _append_run_events(conn, run_id, batch, max_events, max_bytes)
            conn.executemany(
                "UPDATE run_event_logs SET expires_at = ? WHERE run_id = ?",
                [(expires_at, run_id) for run_id, expires_at in ends],
            )

        await self._write(tx)

    async def read_events(
        self, run_id: str, after: tuple[int, int], *, limit: int, max_bytes: int
    ) -> tuple[list[StoredEvent], bool | None]:
        def q(conn: sqlite3.Connection) -> tuple[list[StoredEvent], bool | None]:
            log_ = conn.execute(
                "SELECT expires_at FROM run_event_logs WHERE run_id = ?", (run_id,)
            ).fetchone()
            if log_ is None or (log_[0] is not None and log_[0] <= time.time()):
                return [], None
            rows = conn.execute(
                "SELECT ms, seq, event, data FROM run_events"
                " WHERE run_id = ? AND (ms, seq) > (?, ?) ORDER BY ms, seq LIMIT ?",
                (run_id, *after, limit),
            )
            return _event_page(rows, max_bytes), log_[0] is not None

        return await self._read(q)

    async def read_thread_events(
        self, thread_id: str, after: tuple[int, int], *, limit: int, max_bytes: int
    ) -> list[StoredEvent]:
        def q(conn: sqlite3.Connection) -> list[StoredEvent]:
            rows = conn.execute(
                "SELECT e.ms, e.seq, e.event, e.data FROM run_events e"
                " JOIN run_event_logs l ON l.run_id = e.run_id"
                " WHERE e.thread_id = ? AND (e.ms, e.seq) > (?, ?)"
                " AND (l.expires_at IS NULL OR l.expires_at > ?)"
                " ORDER BY e.ms, e.seq LIMIT ?",
                (thread_id, *after, time.time(), limit),
            )
            return _event_page(rows, max_bytes)

        return await self._read(q)

    async def sweep_event_logs(self, ttl: float) -> int:
        now = time.time()

        def expired(conn: sqlite3.Connection) -> list[str]:
            # A log still open whose run is no longer in flight lost its end with a process.
            conn.execute(
                "UPDATE run_event_logs SET expires_at = ? WHERE expires_at IS NULL AND run_id"
                " NOT IN (SELECT run_id FROM runs WHERE status IN ('pending', 'running'))",
                (now + ttl,),
            )
            return [
                row[0]
                for row in conn.execute(
                    "SELECT run_id FROM run_event_logs WHERE expires_at <= ?", (now,)
                )
            ]

        run_ids = await self._write(expired)
        for run_id in run_ids:
            # In chunks, so that other writes are not held up behind a long delete.
            def chunk(conn: sqlite3.Connection, run_id: str = run_id) -> int:
                return conn.execute(
                    "DELETE FROM run_events WHERE rowid IN"
                    " (SELECT rowid FROM run_events WHERE run_id = ? LIMIT ?)",
                    (run_id, EVENT_SWEEP_CHUNK),
                ).rowcount

            while await self._write(chunk) == EVENT_SWEEP_CHUNK:
                pass

            def forget(conn: sqlite3.Connection, run_id: str = run_id) -> None:
                conn.execute(
                    "DELETE FROM run_event_logs WHERE run_id = ? AND expires_at <= ?",
                    (run_id, now),
                )

            await self._write(forget)
        return len(run_ids)

    async def last_event_key(self) -> tuple[int, int] | None:
        def q(conn: sqlite3.Connection) -> tuple[int, int] | None:
            # Inserted in id order, so the newest row has the highest id.
            row = conn.execute(
                "SELECT ms, seq FROM run_events ORDER BY rowid DESC LIMIT 1"
            ).fetchone()
            return (row[0], row[1]) if row else None

        return await self._read(q)


def _sql(name: str) -> str:
    return resources.files("agentd.storage").joinpath(f"sql/{name}").read_text()


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring the file to ``SCHEMA_VERSION``: a new file gets the whole schema; an older one
    runs each ``sqlite-<n>.sql`` above its version, each in a transaction of its own, then the
    schema (whose ``IF NOT EXISTS`` statements add tables that are new). The data-dir lock
    makes this process the only one doing it."""
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
                for statement in _statements(_sql(f"sqlite-{target}.sql")):
                    conn.execute(statement)
                conn.execute("DELETE FROM schema_version")
                conn.execute("INSERT INTO schema_version VALUES (?)", (target,))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            log.info("database upgraded to schema %d", target)
    conn.executescript(_sql("sqlite.sql"))
    if fresh:
        conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))


def _statements(script: str) -> list[str]:
    """The statements of a migration script (no triggers: ``;`` ends each statement)."""
    lines = [line for line in script.splitlines() if not line.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def _append_run_events(
    conn: sqlite3.Connection,
    run_id: str,
    batch: list[LoggedEvent],
    max_events: int,
    max_bytes: int,
) -> None:
    """Append one run's events and trim its oldest past the caps."""
    row = conn.execute(
        "SELECT events, bytes FROM run_event_logs WHERE run_id = ?", (run_id,)
    ).fetchone()
    if row is None:
        conn.execute(
            "INSERT INTO run_event_logs (run_id, thread_id) VALUES (?, ?)", (run_id, batch[0][1])
        )
        count, size = 0, 0
    else:
        count, size = row
    # Only the newest events of the batch that fit (at least one): older ones would be
    # trimmed at once.
    keep = keep_bytes = 0
    for event in reversed(batch):
        if keep and (keep + 1 > max_events or keep_bytes + len(event[5]) > max_bytes):
            break
        keep += 1
        keep_bytes += len(event[5])
    kept = batch[len(batch) - keep :]
    # Small events many rows per statement: each statement releases and takes back the GIL,
    # which a busy event loop holds for up to the switch interval. Two statement shapes only,
    # and the larger one for small data only: a cached statement keeps the values last bound
    # to it (our blobs) until it is used again.
    values = [(e[0], e[2], e[3], e[1], e[4], e[5]) for e in kept]
    inserted = 0
    for i in range(0, len(values), EVENT_INSERT_ROWS):
        rows = values[i : i + EVENT_INSERT_ROWS]
        if len(rows) == EVENT_INSERT_ROWS and sum(len(r[5]) for r in rows) <= EVENT_INSERT_BYTES:
            inserted += conn.execute(_INSERT_EVENTS, [v for row in rows for v in row]).rowcount
        else:
            inserted += conn.executemany(_INSERT_EVENT, rows).rowcount
    if inserted == len(kept):  # else a batch written twice: its events are counted already
        count, size = count + keep, size + keep_bytes
    if count > max_events or size > max_bytes:
        # Trim an eighth below the caps (as Redis's approximate MAXLEN ~ does): one larger
        # delete now and then costs far less than a few rows at every append. The cut is
        # the first old event by which enough events and bytes are counted, or all old ones.
        need_events = max(0, count - (max_events - max_events // 8))
        need_bytes = max(0, size - (max_bytes - max_bytes // 8))
        older = (run_id, kept[0][2], kept[0][3])
        cut = conn.execute(
            "SELECT ms, seq, n, b FROM (SELECT ms, seq, count(*) OVER w AS n,"
            " sum(length(data)) OVER w AS b FROM run_events"
            " WHERE run_id = ? AND (ms, seq) < (?, ?)"
            " WINDOW w AS (ORDER BY ms, seq ROWS UNBOUNDED PRECEDING))"
            " WHERE n >= ? AND b >= ? LIMIT 1",
            (*older, need_events, need_bytes),
        ).fetchone()
        if cut is None:
            cut = conn.execute(
                "SELECT max(ms), max(seq), count(*), coalesce(sum(length(data)), 0)"
                " FROM run_events WHERE run_id = ? AND (ms, seq) < (?, ?)",
                older,
            ).fetchone()
            where = "(ms, seq) < (?, ?)"
            args: tuple[Any, ...] = older
        else:
            where = "(ms, seq) <= (?, ?)"
            args = (run_id, cut[0], cut[1])
        conn.execute(f"DELETE FROM run_events WHERE run_id = ? AND {where}", args)
        count, size = count - cut[2], size - cut[3]
    conn.execute(
        "UPDATE run_event_logs SET events = ?, bytes = ? WHERE run_id = ?", (count, size, run_id)
    )


def _event_page(rows: sqlite3.Cursor, max_bytes: int) -> list[StoredEvent]:
    """Rows up to ``max_bytes`` of data (at least one)."""
    page: list[StoredEvent] = []
    size = 0
    for ms, seq, event, data in rows:
        page.append((ms, seq, event, data))
        size += len(data)
        if size >= max_bytes:
            break
    rows.close()
    return page


def _insert_run(
    conn: sqlite3.Connection,
    run: Row,
    thread_metadata: Row,
    if_not_exists: str,
    webhook: WebhookFor | None = None,
) -> tuple[Row, list[Cancelled]]:
    """Insert a pending run and apply its multitask strategy to the thread's in-flight runs:
    ``reject`` refuses it (Conflict), ``interrupt``/``rollback`` cancel them, ``enqueue``
    queues it behind them."""
    thread_id = run["thread_id"]
    now = _now()
    thread = conn.execute(
        "SELECT metadata, status FROM threads WHERE thread_id = ?", (thread_id,)
    ).fetchone()
    cancelled: list[Cancelled] = []
    if thread is None:
        if if_not_exists != "create":
            raise NotFound(f"Thread with ID {thread_id} not found")
        conn.execute(
            "INSERT INTO threads (thread_id, created_at, updated_at, state_updated_at,"
            " metadata, status, config) VALUES (?, ?, ?, ?, ?, 'busy', '{}')",
            (thread_id, now, now, now, _dumps(thread_metadata)),
        )
    else:
        inflight = [
            _run(r)
            for r in conn.execute(
                "SELECT * FROM runs WHERE thread_id = ? AND status IN (?, ?) ORDER BY created_at",
                (thread_id, *_INFLIGHT),
            )
        ]
        strategy = run["multitask_strategy"]
        if inflight and strategy == "reject":
            raise Conflict(
                "Thread is already running a task. Wait for it to finish or choose a "
                "different multitask strategy."
            )
        if inflight and strategy in ("interrupt", "rollback"):
            # In the same transaction as the new run: a crash cannot leave both to run.
            cancelled = _cancel(conn, inflight, strategy, webhook)
        if thread["status"] != "busy":  # a busy thread keeps the metadata its runs found
            metadata = {**_json(thread["metadata"]), **thread_metadata}
            conn.execute(
                "UPDATE threads SET metadata = ? WHERE thread_id = ?",
                (_dumps(metadata), thread_id),
            )
    row = conn.execute(
        "INSERT INTO runs (run_id, thread_id, assistant_id, created_at, updated_at,"
        " metadata, status, kwargs, multitask_strategy)"
        " VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?) RETURNING *",
        (run["run_id"], thread_id, run["assistant_id"], run["created_at"],
         run["updated_at"], _dumps(run["metadata"]), _dumps(run["kwargs"]),
         run["multitask_strategy"]),
    ).fetchone()  # fmt: skip
    _settle_thread(conn, thread_id, now)
    return _run(row), cancelled


def _cancel(
    conn: sqlite3.Connection, runs: list[Row], action: str, webhook: WebhookFor | None
) -> list[Cancelled]:
    """Cancel in-flight runs (rows read in this transaction). A run that never started ends
    here (interrupted, or deleted on rollback). A run that is running, or that ran before
    and was handed back, is flagged: its executor ends it at a safe point, with the state
    its checkpoints left. The caller settles the thread's status."""
    now = _now()
    out: list[Cancelled] = []
    for run in runs:
        never_ran = run["status"] == "pending" and run["attempt"] == 0
        if not never_ran:
            conn.execute(
                "UPDATE runs SET cancel_action = coalesce(cancel_action, ?) WHERE run_id = ?",
                (action, run["run_id"]),
            )
        elif action == "rollback":
            conn.execute("DELETE FROM runs WHERE run_id = ?", (run["run_id"],))
        else:
            conn.execute(
                "UPDATE runs SET status = 'interrupted', updated_at = ? WHERE run_id = ?",
                (now, run["run_id"]),
            )
        if never_ran and webhook is not None:  # it ends here: its webhook still fires
            status = "rollback" if action == "rollback" else "interrupted"
            _record_webhook(conn, webhook(run, status))
        out.append(Cancelled(run, action, ended=never_ran))
    return out


def _settle_thread(conn: sqlite3.Connection, thread_id: str, now: str) -> None:
    """The one place that writes a thread's status: ``busy`` while a run is pending or
    running, else its resting status (what its last run, cancel or state update left)."""
    conn.execute(
        "UPDATE threads SET status = CASE WHEN EXISTS (SELECT 1 FROM runs"
        " WHERE thread_id = ?1 AND status IN ('pending', 'running')) THEN 'busy'"
        " ELSE rest_status END, updated_at = ?2 WHERE thread_id = ?1",
        (thread_id, now),
    )


def _claim_cron(
    conn: sqlite3.Connection, cron_id: str, due: str, next_run_date: str | None
) -> bool:
    return (
        conn.execute(
            "UPDATE crons SET next_run_date = ? WHERE cron_id = ? AND enabled = 1"
            " AND next_run_date = ?",
            (next_run_date, cron_id, due),
        ).rowcount
        > 0
    )


def _strategy(strategy: str) -> str:
    if strategy not in ("delete", "keep_latest"):
        raise ValueError(f"unknown thread TTL strategy {strategy!r}")
    return strategy


def _set_ttl(conn: sqlite3.Connection, thread_id: str, ttl: tuple[str, float]) -> None:
    strategy, minutes = ttl
    conn.execute(
        "INSERT OR REPLACE INTO thread_ttl (thread_id, strategy, ttl_minutes) VALUES (?, ?, ?)",
        (thread_id, _strategy(strategy), float(minutes)),
    )


def _delete_threads(conn: sqlite3.Connection, thread_ids: Sequence[str]) -> None:
    """Threads with their runs and TTL (cascades), checkpoints and writes."""
    for thread_id in thread_ids:
        conn.execute("DELETE FROM threads WHERE thread_id = ?", (thread_id,))
        conn.execute("DELETE FROM checkpoints WHERE thread_id = ?", (thread_id,))
        conn.execute("DELETE FROM writes WHERE thread_id = ?", (thread_id,))


def _has_inflight_run(conn: sqlite3.Connection, thread_id: str) -> bool:
    return (
        conn.execute(
            "SELECT 1 FROM runs WHERE thread_id = ? AND status IN (?, ?) LIMIT 1",
            (thread_id, *_INFLIGHT),
        ).fetchone()
        is not None
    )


def _uses_delta_channel(conn: sqlite3.Connection, thread_id: str) -> bool:
    # A DeltaChannel leaves these markers in checkpoint metadata (as LangGraph's own
    # checkpointers check before pruning): its value is rebuilt from older checkpoints.
    return (
        conn.execute(
            "SELECT 1 FROM checkpoints WHERE thread_id = ? AND ("
            "json_type(CAST(metadata AS TEXT), '$.counters_since_delta_snapshot') IS NOT NULL"
            " OR json_type(CAST(metadata AS TEXT), '$.delta_writes_versioned') IS NOT NULL)"
            " LIMIT 1",
            (thread_id,),
        ).fetchone()
        is not None
    )


def _keep_latest(conn: sqlite3.Connection, thread_id: str) -> None:
    """Keep only the newest checkpoint of each namespace (with its pending writes); the kept
    checkpoints lose their deleted parents. A subgraph call's namespace (``node:task``) is kept
    only when it belongs to the kept root checkpoint (an interrupted subgraph resumes from it)."""
    heads = conn.execute(
        "SELECT checkpoint_ns, max(checkpoint_id) FROM checkpoints WHERE thread_id = ?"
        " GROUP BY checkpoint_ns",
        (thread_id,),
    ).fetchall()
    root = next((head for ns, head in heads if ns == ""), None)
    for ns, head in heads:
        if ":" in ns:
            parent = conn.execute(
                "SELECT json_extract(CAST(metadata AS TEXT), '$.parents.\"\"') FROM checkpoints"
                " WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?",
                (thread_id, ns, head),
            ).fetchone()[0]
            if parent != root:
                head = None  # a finished call of an older root checkpoint: drop it all
        for table in ("writes", "checkpoints"):
            conn.execute(
                f"DELETE FROM {table} WHERE thread_id = ? AND checkpoint_ns = ?"
                " AND checkpoint_id IS NOT ?",
                (thread_id, ns, head),
            )
        conn.execute(
            "UPDATE checkpoints SET parent_checkpoint_id = NULL WHERE thread_id = ?"
            " AND checkpoint_ns = ?",
            (thread_id, ns),
        )


def _delete_run_checkpoints(conn: sqlite3.Connection, thread_id: str, run_id: str) -> None:
    ids = [
        r[0]
        for r in conn.execute(
            "SELECT checkpoint_id FROM checkpoints WHERE thread_id = ?"
            " AND json_extract(CAST(metadata AS TEXT), '$.run_id') = ?",
            (thread_id, run_id),
        )
    ]
    for checkpoint_id in ids:
        conn.execute(
            "DELETE FROM writes WHERE thread_id = ? AND checkpoint_id = ?",
            (thread_id, checkpoint_id),
        )
        conn.execute(
            "DELETE FROM checkpoints WHERE thread_id = ? AND checkpoint_id = ?",
            (thread_id, checkpoint_id),
        )


def _note_start_writes(conn: sqlite3.Connection, run: Row) -> None:
    """Note the pending writes on the checkpoints ``run`` starts from (each namespace's
    newest, and the one it forks from): a resume or a fork adds its first writes to them."""
    thread_id = run["thread_id"]
    heads = conn.execute(
        "SELECT checkpoint_ns, max(checkpoint_id) FROM checkpoints WHERE thread_id = ?"
        " GROUP BY checkpoint_ns",
        (thread_id,),
    ).fetchall()
    starts = {(ns, cid) for ns, cid in heads}
    fork = ((run["kwargs"].get("config") or {}).get("configurable") or {}).get("checkpoint_id")
    if fork:
        configurable = run["kwargs"]["config"]["configurable"]
        starts.add((configurable.get("checkpoint_ns") or "", fork))
    noted = [
        [ns, cid, [list(k) for k in conn.execute(
            "SELECT task_id, idx FROM writes WHERE thread_id = ? AND checkpoint_ns = ?"
            " AND checkpoint_id = ?", (thread_id, ns, cid))]]
        for ns, cid in sorted(starts)
    ]  # fmt: skip
    conn.execute(
        "UPDATE runs SET start_writes = ? WHERE run_id = ?", (_dumps(noted), run["run_id"])
    )


def _roll_back(conn: sqlite3.Connection, thread_id: str, run_id: str) -> None:
    """Delete the checkpoints a run created and the writes it added to the checkpoints it
    started from (as noted at its first claim)."""
    _delete_run_checkpoints(conn, thread_id, run_id)
    row = conn.execute("SELECT start_writes FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    for ns, checkpoint_id, kept in _json(row[0]) if row and row[0] else ():
        keep = {(task_id, idx) for task_id, idx in kept}
        for task_id, idx in conn.execute(
            "SELECT task_id, idx FROM writes WHERE thread_id = ? AND checkpoint_ns = ?"
            " AND checkpoint_id = ?",
            (thread_id, ns, checkpoint_id),
        ).fetchall():
            if (task_id, idx) not in keep:
                conn.execute(
                    "DELETE FROM writes WHERE thread_id = ? AND checkpoint_ns = ?"
                    " AND checkpoint_id = ? AND task_id = ? AND idx = ?",
                    (thread_id, ns, checkpoint_id, task_id, idx),
                )


def _metadata_filter(
    flt: Row | None, where: list[str], args: list[Any], column: str = "metadata"
) -> None:
    """JSON containment of ``flt`` in ``column``: every key must match (objects compared whole)."""
    for key, value in (flt or {}).items():
        path = '$."' + str(key).replace('"', '""') + '"'
        if isinstance(value, (dict, list)):
            # Only objects and arrays go through json(): a plain string there is not JSON text.
            where.append(
                f"CASE WHEN json_type({column}, ?) IN ('object', 'array')"
                f" THEN json(json_extract({column}, ?)) END = json(?)"
            )
            args += [path, path, _dumps(value)]
        elif value is None:
            where.append(f"json_type({column}, ?) = 'null'")
            args.append(path)
        elif isinstance(value, bool):
            where.append(f"json_type({column}, ?) = ?")
            args += [path, "true" if value else "false"]
        else:
            where.append(f"json_extract({column}, ?) = ?")
            args += [path, value]


def _assistant_filter(
    graph_ids: Sequence[str], graph_id: str | None, metadata: Row | None, name: str | None
) -> tuple[list[str], list[Any]]:
    where = [f"graph_id IN ({','.join('?' * len(graph_ids))})" if graph_ids else "0"]
    args: list[Any] = list(graph_ids)
    if graph_id is not None:
        where.append("graph_id = ?")
        args.append(graph_id)
    if name is not None:
        where.append("instr(lower(name), lower(?)) > 0")
        args.append(name)
    _metadata_filter(metadata, where, args)
    return where, args


def _insert_version(conn: sqlite3.Connection, row: sqlite3.Row) -> None:
    """Record an assistant row as its version ``row["version"]``."""
    conn.execute(
        "INSERT INTO assistant_versions (assistant_id, version, graph_id, config, context,"
        " metadata, name, description, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (row["assistant_id"], row["version"], row["graph_id"], row["config"], row["context"],
         row["metadata"], row["name"], row["description"], row["updated_at"]),
    )  # fmt: skip


_THREAD_WITHOUT_VALUES = (
    "thread_id, created_at, updated_at, state_updated_at, metadata, status, config,"
    ' NULL AS "values", NULL AS interrupts, error'
)


def _thread(row: sqlite3.Row) -> Row:
    return {
        "thread_id": row["thread_id"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "state_updated_at": row["state_updated_at"],
        "metadata": _json(row["metadata"]),
        "status": row["status"],
        "config": _json(row["config"]),
        "values": _json(row["values"]),
        "interrupts": _json(row["interrupts"]) or {},
        "error": _json(row["error"]),
    }


def _run(row: sqlite3.Row) -> Row:
    return {
        "run_id": row["run_id"],
        "thread_id": row["thread_id"],
        "assistant_id": row["assistant_id"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "metadata": _json(row["metadata"]),
        "status": row["status"],
        "kwargs": _json(row["kwargs"]),
        "multitask_strategy": row["multitask_strategy"],
        "attempt": row["attempt"],
    }


def _assistant(row: sqlite3.Row) -> Row:
    return {
        "assistant_id": row["assistant_id"],
        "graph_id": row["graph_id"],
        "config": _json(row["config"]),
        "context": _json(row["context"]),
        "metadata": _json(row["metadata"]),
        "name": row["name"],
        "description": row["description"],
        "version": row["version"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def _assistant_version(row: sqlite3.Row) -> Row:
    return {
        "assistant_id": row["assistant_id"],
        "version": row["version"],
        "graph_id": row["graph_id"],
        "config": _json(row["config"]),
        "context": _json(row["context"]),
        "metadata": _json(row["metadata"]),
        "name": row["name"],
        "description": row["description"],
        "created_at": row["created_at"],
    }


_CRON_MUTABLE = (
    "schedule", "timezone", "end_time", "payload", "metadata", "on_run_completed", "enabled",
    "next_run_date", "updated_at",
)  # fmt: skip


def _cron_filter(
    assistant_id: str | None, thread_id: str | None, enabled: bool | None, metadata: Row | None
) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    args: list[Any] = []
    for column, value in (("assistant_id", assistant_id), ("thread_id", thread_id)):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    if enabled is not None:
        where.append("enabled = ?")
        args.append(int(enabled))
    _metadata_filter(metadata, where, args)
    return where, args


def _cron(row: sqlite3.Row) -> Row:
    return {
        "cron_id": row["cron_id"],
        "assistant_id": row["assistant_id"],
        "thread_id": row["thread_id"],
        "on_run_completed": row["on_run_completed"],
        "end_time": row["end_time"],
        "schedule": row["schedule"],
        "timezone": row["timezone"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "payload": _json(row["payload"]),
        "user_id": row["user_id"],
        "next_run_date": row["next_run_date"],
        "metadata": _json(row["metadata"]),
        "enabled": bool(row["enabled"]),
    }


# ---------------------------------------------------------------- webhook outbox


def _at(now: datetime, seconds: float = 0.0) -> str:
    # Always with microseconds, so that the column's strings sort in time order.
    return (now + timedelta(seconds=seconds)).isoformat(timespec="microseconds")


def _record_webhook(conn: sqlite3.Connection, delivery: WebhookDelivery | None) -> None:
    """Put a delivery in the outbox, due now, in the caller's transaction. A run end recorded
    twice (a retried write whose first COMMIT did land) keeps one row."""
    if delivery is None:
        return
    now = _at(datetime.now(UTC))
    conn.execute(
        "INSERT INTO webhook_outbox (delivery_id, run_id, url, payload, next_attempt_at,"
        " created_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        (delivery.delivery_id, delivery.run_id, delivery.url, delivery.payload, now, now),
    )
