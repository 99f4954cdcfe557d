"""LangGraph's SQLite checkpointer, scheduled for many concurrent runs.

It is LangGraph's ``AsyncSqliteSaver`` (same tables, same serializer, its own code for every
read), with changes to where the SQL runs:

- Checkpoint and write inserts join agentd's group commit (``SqliteStorage._write``): with 100
  runs in flight, their ~500 inserts become a few transactions instead of 500 separate commits
  queued one by one on the saver's single connection.
- The newest-checkpoint lookup each run starts with (``aget_tuple``) is served by LangGraph's
  synchronous ``SqliteSaver`` on a read connection of its own, inline: an indexed read in WAL
  mode does not wait for writers, so it need not queue behind them either.
- Listings (``alist``: history) and delta-channel replays read many checkpoints: they run
  LangGraph's synchronous code on pooled read connections, on threads, one checkpoint at a
  time. ``AsyncSqliteSaver`` holds its lock (which agentd's writer takes for every
  transaction) while it deserializes them all on the event loop.
"""

from __future__ import annotations

import asyncio
import copy
import json
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import aiosqlite
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    DeltaChannelHistory,
    get_checkpoint_metadata,
)
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

Write = Callable[[Callable[[Any], Any]], Awaitable[Any]]
READ_THREADS = 4  # listings and replays at once; more wait for a thread

_PUT = (
    "INSERT OR REPLACE INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id,"
    " parent_checkpoint_id, type, checkpoint, metadata) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_WRITE_COLUMNS = (
    " INTO writes (thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx, channel,"
    " type, value) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


class SqliteCheckpointer(AsyncSqliteSaver):
    def __init__(
        self,
        conn: aiosqlite.Connection,
        *,
        reader: SqliteSaver,
        write: Write,
        connect: Callable[[], sqlite3.Connection],
    ):
        """``reader`` serves ``aget_tuple`` inline; ``connect`` opens the read connections
        listings run on."""
        super().__init__(conn)
        self._reader = reader
        self._write = write
        self._connect = connect
        self._idle: list[sqlite3.Connection] = []
        self._reads = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="agentd-checkpoints")

    def fenced(self, check: Callable[[sqlite3.Connection], None]) -> SqliteCheckpointer:
        """A view of this checkpointer whose writes run ``check`` first, in their own
        transaction, and are saved only if it does not raise (a run attempt's fence)."""
        view = copy.copy(self)
        write = self._write

        def fenced_write(fn: Callable[[Any], Any]) -> Awaitable[Any]:
            def checked(conn: sqlite3.Connection) -> Any:
                check(conn)
                return fn(conn)

            return write(checked)

        view._write = fenced_write
        return view

    def close(self) -> None:
        self._reads.shutdown(wait=True)
        while self._idle:
            self._idle.pop().close()

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self._reader.get_tuple(config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """LangGraph's listing, newest first, read and deserialized on a thread one
        checkpoint at a time; the caller holds only the one it is given."""
        saver = self._borrow()
        rows = saver.list(config, filter=filter, before=before, limit=limit)
        step: Future[CheckpointTuple | None] | None = None
        try:
            while True:
                step = self._reads.submit(next, rows, None)  # type: ignore[arg-type]
                item = await asyncio.wrap_future(step)
                if item is None:
                    return
                yield item
        finally:
            # A step still running on its thread (the caller went away) keeps the cursor and
            # the connection until it ends; then the listing closes and the connection returns.
            def release(_: Any = None) -> None:
                rows.close()
                self._give_back(saver)

            if step is None:
                release()
            else:
                step.cancel()
                step.add_done_callback(release)

    async def aget_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        """LangGraph's replay of delta channels (it walks and deserializes the checkpoints
        back to each channel's seed), on a thread."""
        saver = self._borrow()
        step = self._reads.submit(saver.get_delta_channel_history, config=config, channels=channels)
        try:
            return await asyncio.wrap_future(step)
        finally:
            step.add_done_callback(lambda _: self._give_back(saver))

    def _borrow(self) -> SqliteSaver:
        """LangGraph's synchronous saver on a read connection no one else is using: its lock
        and its cursors are this caller's alone."""
        try:
            conn = self._idle.pop()
        except IndexError:
            conn = self._connect()
        saver = SqliteSaver(conn, serde=self.serde)
        saver.is_setup = True  # setup() ran on the saver's own connection at start-up
        saver._has_task_path = self._has_task_path
        return saver

    def _give_back(self, saver: SqliteSaver) -> None:
        if len(self._idle) < READ_THREADS:
            self._idle.append(saver.conn)
        else:
            saver.conn.close()

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        configurable = config["configurable"]
        thread_id, checkpoint_ns = str(configurable["thread_id"]), configurable["checkpoint_ns"]
        kind, blob = self.serde.dumps_typed(checkpoint)
        meta = json.dumps(get_checkpoint_metadata(config, metadata), ensure_ascii=False)
        row = (
            thread_id, checkpoint_ns, checkpoint["id"], configurable.get("checkpoint_id"), kind,
            blob, meta.encode("utf-8", "ignore"),
        )  # fmt: skip
        await self._write(lambda conn: conn.execute(_PUT, row))
        return {
            "configurable": {
                "thread_id": thread_id,
                "checkpoint_ns": checkpoint_ns,
                "checkpoint_id": checkpoint["id"],
            }
        }

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        configurable = config["configurable"]
        # Special channels (errors, interrupts...) replace an earlier write at their index;
        # ordinary writes of a retried task keep the first copy.
        verb = (
            "INSERT OR REPLACE"
            if all(channel in WRITES_IDX_MAP for channel, _ in writes)
            else "INSERT OR IGNORE"
        )
        rows = [
            (
                str(configurable["thread_id"]),
                str(configurable["checkpoint_ns"]),
                str(configurable["checkpoint_id"]),
                task_id,
                task_path,
                WRITES_IDX_MAP.get(channel, idx),
                channel,
                *self.serde.dumps_typed(value),
            )
            for idx, (channel, value) in enumerate(writes)
        ]
        await self._write(lambda conn: conn.executemany(verb + _WRITE_COLUMNS, rows))
