"""``agentd copy``: move a deployment from its SQLite file to a PostgreSQL database.

Both ends are opened as ``agentd serve`` opens them, so each is at this version's schema and
held the way a server holds it: the source by its data dir's ``agentd.lock`` (a server running
on it makes the copy refuse), the target by the serving advisory lock (likewise). Then:

- agentd's tables, row by row in the source's insertion order (the target's ``row_order``
  then orders ties as the source did), in dependency order, with explicit column lists and
  ``ON CONFLICT DO NOTHING``: a re-run copies what the target lacks and leaves the rest;
- LangGraph's checkpoints and pending writes, thread by thread, through the savers' APIs
  (``SqliteSaver.list`` -> ``AsyncPostgresSaver.aput`` / ``aput_writes``), never SQL on both
  layouts, so each saver lays out its own tables;
- the store's items through the target store's API (``ttl_minutes`` read from the source's
  ``store`` table, which the API does not expose);
- a verification: every source key is looked up in the target.

The savers commit every statement; the copy's own connections commit without waiting for the
disk, and it waits for PostgreSQL's WAL to be flushed once, before verifying (``_bulk_pool``).

Resumable-stream events (``run_events``) live for minutes after their run and are not copied.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import sqlite3
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import orjson
import psycopg
from langgraph.checkpoint.base import WRITES_IDX_MAP, CheckpointTuple, writes_sort_key
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.checkpoint.sqlite.utils import pending_writes_sql
from langgraph.store.base import BaseStore, GetOp, PutOp
from langgraph.store.postgres.aio import AsyncPostgresStore
from langgraph.store.sqlite.base import _decode_ns_text
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from agentd.schemas import ApiError
from agentd.storage import postgres_url, sqlite_file
from agentd.storage.base import DatabaseUnavailable, StorageStartupError
from agentd.storage.postgres import CONNECT_TIMEOUT, PostgresStorage, StorageLocked
from agentd.storage.postgres import connect as pg_connect
from agentd.storage.sqlite import SqliteStorage
from agentd.storage.sqlite import StorageLocked as SqliteLocked

BATCH = 500  # rows per transaction on the target; also store items per batch
CHECKPOINT_CHUNK = 32  # checkpoints read from the source per thread hop
WORKERS = 4  # threads whose checkpoints are copied (or verified) at once
SHOWN = 5  # failures listed one by one; the rest are counted
BAR_MIN_ROWS = 1000  # a progress bar off a terminal only for copies bigger than this
BAR_WIDTH = 30
BAR_INTERVAL = 0.1  # seconds between redraws
DURABLE_TIMEOUT = 60.0  # seconds the WAL writer gets to flush the copy's commits
NOT_COPIED = ("run_events", "run_event_logs", "schema_version")


@dataclass(frozen=True)
class Table:
    """One of agentd's tables: its columns, each with the PostgreSQL type the source's value
    is cast to (JSON text -> jsonb, ISO-8601 text -> timestamptz, 0/1 -> boolean, BLOB ->
    bytea), and its primary key."""

    name: str
    key: tuple[str, ...]
    columns: tuple[tuple[str, str], ...]

    @property
    def names(self) -> str:
        return ", ".join(f'"{name}"' for name, _ in self.columns)

    def insert_sql(self) -> str:
        values = ", ".join(f"%s::{kind}" for _, kind in self.columns)
        return f"INSERT INTO {self.name} ({self.names}) VALUES ({values}) ON CONFLICT DO NOTHING"

    def key_types(self) -> list[str]:
        kinds = dict(self.columns)
        return [kinds[name] for name in self.key]


# Dependency order: a row's foreign keys point to tables above it.
TABLES = (
    Table("assistants", ("assistant_id",), (
        ("assistant_id", "text"), ("graph_id", "text"), ("config", "jsonb"),
        ("context", "jsonb"), ("metadata", "jsonb"), ("name", "text"), ("description", "text"),
        ("version", "integer"), ("created_at", "timestamptz"), ("updated_at", "timestamptz"),
    )),
    Table("assistant_versions", ("assistant_id", "version"), (
        ("assistant_id", "text"), ("version", "integer"), ("graph_id", "text"),
        ("config", "jsonb"), ("context", "jsonb"), ("metadata", "jsonb"), ("name", "text"),
        ("description", "text"), ("created_at", "timestamptz"),
    )),
    Table("threads", ("thread_id",), (
        ("thread_id", "text"), ("created_at", "timestamptz"), ("updated_at", "timestamptz"),
        ("state_updated_at", "timestamptz"), ("metadata", "jsonb"), ("status", "text"),
        ("config", "jsonb"), ("values", "jsonb"), ("interrupts", "jsonb"), ("error", "jsonb"),
        ("rest_status", "text"),
    )),
    Table("thread_ttl", ("thread_id",), (
        ("thread_id", "text"), ("strategy", "text"), ("ttl_minutes", "double precision"),
        ("swept_at", "timestamptz"),
    )),
    Table("runs", ("run_id",), (
        ("run_id", "text"), ("thread_id", "text"), ("assistant_id", "text"),
        ("created_at", "timestamptz"), ("updated_at", "timestamptz"), ("metadata", "jsonb"),
        ("status", "text"), ("kwargs", "jsonb"), ("multitask_strategy", "text"),
        ("attempt", "integer"), ("cancel_action", "text"), ("start_writes", "jsonb"),
        ("lease_owner", "text"), ("lease_expires_at", "timestamptz"),
    )),
    Table("crons", ("cron_id",), (
        ("cron_id", "text"), ("assistant_id", "text"), ("thread_id", "text"),
        ("user_id", "text"), ("schedule", "text"), ("timezone", "text"),
        ("end_time", "timestamptz"), ("payload", "jsonb"), ("metadata", "jsonb"),
        ("on_run_completed", "text"), ("enabled", "boolean"), ("next_run_date", "timestamptz"),
        ("created_at", "timestamptz"), ("updated_at", "timestamptz"),
    )),
    Table("webhook_outbox", ("delivery_id",), (
        ("delivery_id", "text"), ("run_id", "text"), ("url", "text"), ("payload", "bytea"),
        ("attempt", "integer"), ("next_attempt_at", "timestamptz"),
        ("locked_until", "timestamptz"), ("created_at", "timestamptz"),
    )),
)  # fmt: skip


def _convert(kind: str, value: Any) -> Any:
    """A SQLite value as the parameter its PostgreSQL column's cast takes."""
    if value is None:
        return None
    if kind == "boolean":
        return bool(value)
    if kind == "bytea":
        return value.encode() if isinstance(value, str) else bytes(value)
    if kind in ("jsonb", "text", "timestamptz") and isinstance(value, bytes):
        return value.decode()
    return value


@dataclass
class Tally:
    """What happened to one kind of row: read from the source, new in the target, already
    there, and the ones that could not be stored (key, reason)."""

    read: int = 0
    copied: int = 0
    present: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    found: int = 0  # source keys found in the target by the verification
    missing: list[str] = field(default_factory=list)


class Out:
    """Counts on stdout as they come; the progress bar on stderr."""

    def __init__(self, out: TextIO, err: TextIO):
        self.out = out
        self.err = err

    def say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def failures(self, name: str, failed: Sequence[tuple[str, str]]) -> None:
        for key, reason in failed[:SHOWN]:
            self.say(f"  {name} {key} not copied: {reason}")
        if len(failed) > SHOWN:
            self.say(f"  ... and {len(failed) - SHOWN} more of {name} not copied")


class Bar:
    """``label [#####-----] done/total threads``, redrawn in place (``\\r``) at most every
    ``BAR_INTERVAL``; drawn only when ``enabled``."""

    def __init__(self, err: TextIO, label: str, total: int, enabled: bool):
        self.err, self.label, self.total, self.enabled = err, label, total, enabled
        self.done = 0
        self.rows = 0
        self._drawn = 0.0

    def advance(self, rows: int) -> None:
        self.done += 1
        self.rows += rows
        if self.enabled and time.monotonic() - self._drawn >= BAR_INTERVAL:
            self._draw()

    def _draw(self) -> None:
        filled = BAR_WIDTH * self.done // max(self.total, 1)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        done = f"{self.done}/{self.total} threads, {self.rows} checkpoints"
        self.err.write(f"\r{self.label} [{bar}] {done}")
        self.err.flush()
        self._drawn = time.monotonic()

    def close(self) -> None:
        if self.enabled:
            self._draw()
            self.err.write("\n")
            self.err.flush()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0].strip()


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


def source_file(where: str) -> Path:
    """The SQLite file ``--from`` names: the file itself, or ``agentd.sqlite`` in a data dir."""
    if postgres_url(where):
        raise StorageStartupError("--from is a PostgreSQL URL: give a SQLite file or data dir")
    path = sqlite_file(where)
    if path.is_dir():
        path = path / "agentd.sqlite"
    if not path.is_file():
        raise StorageStartupError(f"{path}: no such SQLite file (give agentd.sqlite or its dir)")
    return path


def main(source: str, target: str, *, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Run the copy; the exit status: 0 done and verified, 1 something is missing in the
    target, 2 nothing done (a server holds either end, a database that cannot be opened)."""
    logging.basicConfig(level="WARNING", format="%(levelname)s %(name)s: %(message)s")
    try:
        path = source_file(source)
        if postgres_url(target) is None:
            raise StorageStartupError("--to must be a postgresql:// URL")
        return asyncio.run(Copy(path, target, Out(out, err)).run())
    except StorageStartupError as exc:
        print(f"agentd copy: {exc}", file=err)
        return 2
    except (psycopg.Error, ApiError) as exc:  # the target went away mid-copy
        print(f"agentd copy: PostgreSQL failed: {_first_line(exc)}; re-run to finish", file=err)
        return 1
    except sqlite3.Error as exc:
        print(f"agentd copy: reading {source} failed: {_first_line(exc)}", file=err)
        return 1


class Copy:
    def __init__(self, path: Path, url: str, out: Out):
        self.path = path
        self.url = url
        self.out = out
        self.tallies: dict[str, Tally] = {}
        # Per thread, per (checkpoint_ns, checkpoint_id): the pending writes as hashes of
        # (task_id, channel), in the saver's order, for the verification.
        self.listed: dict[str, dict[tuple[str, str], tuple[int, ...]]] = {}

    async def run(self) -> int:
        started = time.monotonic()
        source = SqliteStorage(self.path)
        try:
            await source.open()
        except SqliteLocked:
            await source.close()
            raise StorageStartupError(
                f"{self.path.parent} is in use by a running agentd (it holds agentd.lock): "
                "stop it before copying"
            ) from None
        except sqlite3.Error as exc:
            await source.close()
            raise StorageStartupError(
                f"{self.path} cannot be opened as agentd's SQLite file: {_first_line(exc)}"
            ) from None
        except BaseException:
            await source.close()
            raise
        target = PostgresStorage(self.url)
        try:
            try:
                await target.open()
            except StorageLocked:
                raise StorageStartupError(
                    f"{redact(self.url)} is served by a running agentd: stop it before copying"
                ) from None
            self.out.say(f"copying {self.path} to {redact(self.url)}")
            return await self._copy(source, target, started)
        finally:
            await target.close()
            await source.close()

    async def _copy(self, source: SqliteStorage, target: PostgresStorage, started: float) -> int:
        assert source.checkpointer is not None and target.checkpointer is not None
        reader = _connect_source(self.path)
        writer: psycopg.Connection[Any] | None = None
        pool = _bulk_pool(self.url)
        try:
            writer = await asyncio.to_thread(_connect_target, self.url)
            await pool.open(wait=True, timeout=CONNECT_TIMEOUT)
            # LangGraph's saver and store on the target (its tables are set up by open()), on
            # connections whose commits do not each wait for the disk (see _bulk_pool).
            saver = AsyncPostgresSaver(pool, serde=target.checkpointer.serde)  # type: ignore[arg-type]
            store = AsyncPostgresStore(pool)  # type: ignore[arg-type]
            for table in TABLES:
                tally = await asyncio.to_thread(_copy_table, reader, writer, table)
                self.tallies[table.name] = tally
                self._report(table.name, "rows", tally)
            self.out.say(
                "not copied: resumable-stream events (run_events: they are kept only minutes "
                "after their run)"
            )
            await self._copy_checkpoints(reader, source, saver)
            await self._copy_store(reader, store)
            await asyncio.to_thread(_wait_durable, writer)
            ok = await self._verify(reader, writer, saver, store)
        finally:
            await pool.close()
            if writer is not None:
                await asyncio.to_thread(writer.close)
            reader.close()
        elapsed = time.monotonic() - started
        if not ok:
            print(
                f"agentd copy: verification FAILED ({elapsed:.1f}s): what the lines above name "
                "is missing in the target; a re-run copies what is missing, but what PostgreSQL "
                "refused must be changed in the source first",
                file=self.out.err,
            )
            return 1
        self.out.say(
            f"done in {elapsed:.1f}s, verified; serve it with: agentd serve --database-url "
            f"{redact(self.url)}"
        )
        return 0

    def _report(self, name: str, unit: str, tally: Tally, note: str = "") -> None:
        self.out.say(
            f"{name}: {tally.read} {unit}, {tally.copied} copied, {tally.present} already "
            f"there{note}" + (f", {len(tally.failed)} FAILED" if tally.failed else "")
        )
        self.out.failures(name, tally.failed)

    # ------------------------------------------------------------ checkpoints

    async def _copy_checkpoints(
        self, reader: sqlite3.Connection, source: SqliteStorage, target: AsyncPostgresSaver
    ) -> None:
        """Each thread's checkpoints (every namespace) listed by LangGraph's SqliteSaver and
        put by the target's saver, as if its graph had written them there."""
        assert source.checkpointer is not None
        threads = [row[0] for row in reader.execute(
            "SELECT thread_id FROM threads UNION SELECT DISTINCT thread_id FROM checkpoints"
            " ORDER BY 1"
        )]  # fmt: skip
        total = reader.execute("SELECT count(*) FROM checkpoints").fetchone()[0]
        tally = self.tallies["checkpoints"] = Tally()
        writes = self.tallies["pending writes"] = Tally()
        bar = Bar(self.out.err, "checkpoints", len(threads), _show_bar(self.out.err, total))
        serde = source.checkpointer.serde
        has_task_path = source.checkpointer._has_task_path
        todo = iter(threads)

        async def worker() -> None:
            listing = _SourceCheckpoints(self.path, serde, has_task_path)
            try:
                for thread_id in todo:
                    n = await self._copy_thread(listing, target, thread_id, tally, writes)
                    bar.advance(n)
            finally:
                listing.close()

        try:
            await asyncio.gather(*(worker() for _ in range(WORKERS)))
        finally:
            bar.close()
        self.out.say(
            f"checkpoints: {tally.read} in {len(threads)} threads, with {writes.read} pending "
            "writes, put by id (a re-run puts the same ones, adding none)"
            + (f", {len(tally.failed)} FAILED" if tally.failed else "")
        )
        self.out.failures("checkpoints", tally.failed)

    async def _copy_thread(
        self,
        listing: _SourceCheckpoints,
        target: AsyncPostgresSaver,
        thread_id: str,
        tally: Tally,
        writes: Tally,
    ) -> int:
        listed = self.listed.setdefault(thread_id, {})
        blobs: set[tuple[str, str, str]] = set()  # (namespace, channel, version) put so far
        items = listing.tuples(thread_id)
        count = 0
        try:
            while chunk := await asyncio.to_thread(_take, items, CHECKPOINT_CHUNK):
                for item, item_writes in chunk:
                    c = item.config["configurable"]
                    ns, checkpoint_id = c["checkpoint_ns"], c["checkpoint_id"]
                    listed[(ns, checkpoint_id)] = tuple(
                        hash((task_id, channel)) for task_id, _, channel, _ in item_writes
                    )
                    tally.read += 1
                    writes.read += len(item_writes)
                    count += 1
                    try:
                        await _put_checkpoint(target, item, item_writes, blobs)
                    except psycopg.DataError as exc:  # a value the target refuses
                        tally.failed.append((f"{thread_id}/{ns}/{checkpoint_id}", _refused(exc)))
        finally:
            await asyncio.to_thread(items.close)
        return count

    # ------------------------------------------------------------ store

    async def _copy_store(self, reader: sqlite3.Connection, store: BaseStore) -> None:
        """Items not expired, through the target store's API: those already there are left
        as they are; a TTL starts again from now (LangGraph's stores set expires_at)."""
        tally = self.tallies["store"] = Tally()
        for batch in _store_items(reader):
            tally.read += len(batch)
            there = await store.abatch(
                [GetOp(ns, key, refresh_ttl=False) for ns, key, _, _ in batch]
            )
            puts = [
                PutOp(ns, key, value, index=False, ttl=ttl)
                for (ns, key, value, ttl), item in zip(batch, there, strict=True)
                if item is None
            ]
            tally.present += len(batch) - len(puts)
            try:
                await store.abatch(puts)
                tally.copied += len(puts)
            except psycopg.DataError:  # one item the target refuses: find it, store the others
                for op in puts:
                    try:
                        await store.abatch([op])
                        tally.copied += 1
                    except psycopg.DataError as exc:
                        tally.failed.append(("/".join((*op.namespace, op.key)), _refused(exc)))
        self._report("store", "items", tally, note=" (TTLs start again from now)")
        vectors = _vectors(reader)
        if vectors:
            self.out.say(
                f"store: {vectors} vectors (semantic index) not copied: an item gets its vector "
                "on PostgreSQL when it is written again (store.index needs pgvector there)"
            )

    # ------------------------------------------------------------ verification

    async def _verify(
        self,
        reader: sqlite3.Connection,
        writer: psycopg.Connection[Any],
        saver: AsyncPostgresSaver,
        store: BaseStore,
    ) -> bool:
        """Every source key looked up in the target: agentd's rows by primary key, each
        thread's checkpoints through the target saver (ids and pending writes), store items
        through the target store."""
        ok = True
        for table in TABLES:
            tally = self.tallies[table.name]
            await asyncio.to_thread(_verify_table, reader, writer, table, tally)
            ok &= self._verified(table.name, tally)
        await self._verify_checkpoints(saver)
        ok &= self._verified("checkpoints", self.tallies["checkpoints"])
        ok &= self._verified("pending writes", self.tallies["pending writes"])
        tally = self.tallies["store"]
        for batch in _store_items(reader):
            found = await store.abatch(
                [GetOp(ns, key, refresh_ttl=False) for ns, key, _, _ in batch]
            )
            for (ns, key, _, _), item in zip(batch, found, strict=True):
                if item is None:
                    tally.missing.append("/".join((*ns, key)))
                else:
                    tally.found += 1
        ok &= self._verified("store", tally)
        return ok

    def _verified(self, name: str, tally: Tally) -> bool:
        good = tally.found == tally.read and not tally.missing
        self.out.say(
            f"verify {name}: source {tally.read}, found in target {tally.found}"
            + ("" if good else " -- MISSING: " + ", ".join(tally.missing[:SHOWN]))
            + (f" and {len(tally.missing) - SHOWN} more" if len(tally.missing) > SHOWN else "")
        )
        return good

    async def _verify_checkpoints(self, target: AsyncPostgresSaver) -> None:
        """Each thread listed by the target saver: every source checkpoint is there, with
        the source's pending writes in the same order (the target may have more, if it has
        served since an earlier copy)."""
        tally, writes = self.tallies["checkpoints"], self.tallies["pending writes"]
        total = sum(len(listed) for listed in self.listed.values())
        bar = Bar(self.out.err, "verifying", len(self.listed), _show_bar(self.out.err, total))
        todo = iter(list(self.listed.items()))

        async def worker() -> None:
            for thread_id, listed in todo:
                there: dict[tuple[str, str], tuple[int, ...]] = {}
                async for item in target.alist({"configurable": {"thread_id": thread_id}}):
                    c = item.config["configurable"]
                    there[(c["checkpoint_ns"], c["checkpoint_id"])] = tuple(
                        hash((task_id, channel)) for task_id, channel, _ in item.pending_writes
                    )
                for (ns, checkpoint_id), source_writes in listed.items():
                    if (ns, checkpoint_id) not in there:
                        tally.missing.append(f"{thread_id}/{ns}/{checkpoint_id}")
                        continue
                    tally.found += 1
                    matched = _in_order(source_writes, there[(ns, checkpoint_id)])
                    writes.found += matched
                    if matched < len(source_writes):
                        writes.missing.append(f"{thread_id}/{ns}/{checkpoint_id}")
                bar.advance(len(listed))

        try:
            await asyncio.gather(*(worker() for _ in range(WORKERS)))
        finally:
            bar.close()


# ---------------------------------------------------------------- helpers


def _show_bar(err: TextIO, rows: int) -> bool:
    return err.isatty() or rows > BAR_MIN_ROWS


def _connect_source(path: Path) -> sqlite3.Connection:
    """A read connection of the copy's own (the storage holds the file's lock meanwhile)."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA query_only = ON")
    conn.execute("PRAGMA busy_timeout = 30000")
    return conn


def _connect_target(url: str) -> psycopg.Connection[Any]:
    # ISO text without an offset (none that agentd writes) would be read as UTC.
    return pg_connect(url, autocommit=True, options="-c TimeZone=UTC")


def _bulk_pool(url: str) -> AsyncConnectionPool:
    """Connections for LangGraph's saver and store, with what they require (autocommit, no
    prepared statements, dict rows), whose commits do not wait for the WAL to reach the disk:
    the saver commits each statement, and a checkpoint costs three flushes otherwise (most of
    the copy's time). Nothing is lost unless PostgreSQL itself crashes, and the copy waits for
    the WAL to be flushed (``_wait_durable``) before it verifies and says it is done."""
    return AsyncConnectionPool(
        url,
        min_size=1,
        max_size=WORKERS + 1,
        kwargs={
            "autocommit": True,
            "prepare_threshold": 0,
            "row_factory": dict_row,
            "options": "-c synchronous_commit=off",
        },
        open=False,
    )


def _wait_durable(conn: psycopg.Connection[Any]) -> None:
    """Return once the WAL written so far is on disk (the WAL writer flushes asynchronous
    commits within a few hundred milliseconds)."""
    lsn = conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]
    query = "SELECT pg_current_wal_flush_lsn() >= %s::pg_lsn"
    deadline = time.monotonic() + DURABLE_TIMEOUT
    while not conn.execute(query, (lsn,)).fetchone()[0]:
        if time.monotonic() > deadline:
            raise DatabaseUnavailable(f"its WAL was not flushed within {DURABLE_TIMEOUT:.0f}s")
        time.sleep(0.05)


def _refused(exc: psycopg.Error) -> str:
    if isinstance(exc, psycopg.errors.UntranslatableCharacter):
        return "PostgreSQL's jsonb cannot store the character U+0000 in it"
    return _first_line(exc)


def _copy_table(src: sqlite3.Connection, dst: psycopg.Connection[Any], table: Table) -> Tally:
    """The table's rows in batches, one transaction each; a batch the target refuses is
    retried row by row, so that only the rows it refuses are left out (and reported)."""
    tally = Tally()
    insert = table.insert_sql()
    kinds = [kind for _, kind in table.columns]
    at_key = [i for i, (name, _) in enumerate(table.columns) if name in table.key]
    names = [name for name, _ in table.columns]
    status = names.index("status") if table.name == "runs" else -1
    locked = names.index("locked_until") if table.name == "webhook_outbox" else -1
    cursor = src.execute(f"SELECT {table.names} FROM {table.name} ORDER BY rowid")
    while rows := cursor.fetchmany(BATCH):
        batch = []
        for row in rows:
            values = [_convert(kind, value) for kind, value in zip(kinds, row, strict=True)]
            if values[status:status + 1] == ["running"]:  # fmt: skip
                # No process holds it once copied: queued again, as a restart would.
                values[status] = "pending"
                for column in ("lease_owner", "lease_expires_at"):  # no one holds it now
                    values[names.index(column)] = None
            if locked >= 0 and values[locked] is not None:
                # A delivery under way when the source stopped: due again at once, as a
                # restart of the source would make it (its attempt stays counted).
                values[locked] = None
                values[names.index("next_attempt_at")] = datetime.now(UTC).isoformat()
            batch.append(values)
        tally.read += len(batch)
        try:
            with dst.transaction(), dst.cursor() as cur:
                cur.executemany(insert, batch)
                tally.copied += cur.rowcount
        except (psycopg.DataError, psycopg.IntegrityError):
            for values in batch:
                try:
                    with dst.transaction():
                        tally.copied += dst.execute(insert, values).rowcount
                except (psycopg.DataError, psycopg.IntegrityError) as exc:
                    key = "/".join(str(values[i]) for i in at_key)
                    tally.failed.append((key, _refused(exc)))
    tally.present = tally.read - tally.copied - len(tally.failed)
    return tally


def _verify_table(
    src: sqlite3.Connection, dst: psycopg.Connection[Any], table: Table, tally: Tally
) -> None:
    keys = ", ".join(f'"{name}"' for name in table.key)
    arrays = ", ".join(f"%s::{kind}[]" for kind in table.key_types())
    lookup = f"SELECT {keys} FROM {table.name} JOIN unnest({arrays}) AS k({keys}) USING ({keys})"
    cursor = src.execute(f"SELECT {keys} FROM {table.name} ORDER BY rowid")
    while rows := cursor.fetchmany(BATCH):
        found = {
            tuple(row) for row in dst.execute(lookup, [list(c) for c in zip(*rows, strict=True)])
        }
        for row in rows:
            if tuple(row) in found:
                tally.found += 1
            else:
                tally.missing.append("/".join(map(str, row)))


class _SourceCheckpoints:
    """LangGraph's ``SqliteSaver`` on a read connection of its own (one per worker)."""

    def __init__(self, path: Path, serde: SerializerProtocol, has_task_path: bool):
        self.conn = _connect_source(path)
        self.saver = SqliteSaver(self.conn, serde=serde)
        self.saver.is_setup = True  # the storage's open() ran setup() on this file
        self.saver._has_task_path = has_task_path
        self._writes_sql = pending_writes_sql(has_task_path)

    def close(self) -> None:
        self.conn.close()

    def tuples(self, thread_id: str) -> Iterator[tuple[CheckpointTuple, list[_Write]]]:
        """The thread's checkpoints in every namespace, newest first, each with its pending
        writes as (task_id, task_path, channel, value).

        A tuple's pending_writes drop the task_path and idx LangGraph stored them with; the
        target saver orders writes by (task_path, task_id, idx) as the source does, so they
        are read back with LangGraph's own query and matched to the tuple's values, which
        LangGraph sorted by that same key."""
        for item in self.saver.list({"configurable": {"thread_id": thread_id}}):
            c = item.config["configurable"]
            rows = self.conn.execute(
                self._writes_sql, (thread_id, c["checkpoint_ns"], c["checkpoint_id"])
            ).fetchall()
            rows.sort(key=lambda r: writes_sort_key(r[4], r[0], r[5]))
            writes: list[_Write] = []
            for (task_id, channel, _, _, task_path, _), (tid, ch, value) in zip(
                rows, item.pending_writes or [], strict=True
            ):
                if (task_id, channel) != (tid, ch):  # (task_id, idx) is unique: a total order
                    raise RuntimeError(f"{thread_id}: pending writes read out of step")
                writes.append((task_id, task_path, channel, value))
            yield item, writes


_Write = tuple[str, str, str, Any]  # task_id, task_path, channel, value


def _take(items: Iterator[Any], n: int) -> list[Any]:
    return list(itertools.islice(items, n))


async def _put_checkpoint(
    target: AsyncPostgresSaver,
    item: CheckpointTuple,
    writes: list[_Write],
    blobs: set[tuple[str, str, str]],
) -> None:
    """``aput`` with the parent's id in the config (that is how the saver records the
    parent), then the pending writes, each task's in one ``aput_writes``: the saver numbers a
    call's writes from 0 (as the task's writes were) and gives the special channels (errors,
    interrupts...) their fixed negative index, so they go in a call of their own.

    The target keeps a channel's value once per version (``checkpoint_blobs``), where the
    source kept every value in every checkpoint: ``new_versions`` names the versions of the
    values this checkpoint holds that no checkpoint of the thread has put yet (LangGraph's own
    puts name only the versions that changed). Putting one again would be harmless (the saver
    ignores a version it has) but would serialize the whole state again at every step."""
    c = item.config["configurable"]
    ns = c["checkpoint_ns"]
    configurable = {"thread_id": c["thread_id"], "checkpoint_ns": ns}
    if item.parent_config is not None:
        configurable["checkpoint_id"] = item.parent_config["configurable"]["checkpoint_id"]
    checkpoint = item.checkpoint
    values = checkpoint["channel_values"]
    new_versions = {
        channel: version
        for channel, version in checkpoint["channel_versions"].items()
        if channel in values and (ns, channel, str(version)) not in blobs
    }
    await target.aput({"configurable": configurable}, checkpoint, item.metadata, new_versions)
    blobs.update((ns, channel, str(version)) for channel, version in new_versions.items())
    at: Any = {"configurable": {**configurable, "checkpoint_id": c["checkpoint_id"]}}
    for (task_id, task_path), group in itertools.groupby(writes, key=lambda w: w[:2]):
        task_writes = [(channel, value) for _, _, channel, value in group]
        special = [w for w in task_writes if w[0] in WRITES_IDX_MAP]
        plain = [w for w in task_writes if w[0] not in WRITES_IDX_MAP]
        for part in (special, plain):
            if part:
                await target.aput_writes(at, part, task_id, task_path)


def _in_order(wanted: tuple[int, ...], have: tuple[int, ...]) -> int:
    """How many of ``wanted`` appear in ``have`` in the same order."""
    found = 0
    rest = iter(have)
    for item in wanted:
        if any(item == other for other in rest):
            found += 1
    return found


def _store_items(
    reader: sqlite3.Connection,
) -> Iterator[list[tuple[tuple[str, ...], str, Any, float | None]]]:
    """The source store's items not expired (those the sweeper has yet to delete), in
    batches: (namespace, key, value, ttl_minutes)."""
    cursor = reader.execute(
        "SELECT prefix, key, value, ttl_minutes FROM store"
        " WHERE expires_at IS NULL OR expires_at > CURRENT_TIMESTAMP ORDER BY prefix, key"
    )
    while rows := cursor.fetchmany(BATCH):
        yield [(_decode_ns_text(p), k, orjson.loads(v), ttl) for p, k, v, ttl in rows]


def _vectors(reader: sqlite3.Connection) -> int:
    exists = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'store_vectors'"
    if reader.execute(exists).fetchone() is None:
        return 0
    return int(reader.execute("SELECT count(*) FROM store_vectors").fetchone()[0])
