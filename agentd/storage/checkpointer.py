"""LangGraph's SQLite checkpointer, scheduled for many concurrent runs.

It is LangGraph's ``AsyncSqliteSaver`` (same tables, same serializer, its own code for every
read but one), with two changes to where the SQL runs:

- Checkpoint and write inserts join agentd's group commit (``SqliteStorage._write``): with 100
  runs in flight, their ~500 inserts become a few transactions instead of 500 separate commits
  queued one by one on the saver's single connection.
- The newest-checkpoint lookup each run starts with (``aget_tuple``) is served by LangGraph's
  synchronous ``SqliteSaver`` on a read connection of its own, inline: an indexed read in WAL
  mode does not wait for writers, so it need not queue behind them either.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiosqlite
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_metadata,
)
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

Write = Callable[[Callable[[Any], Any]], Awaitable[Any]]

_PUT = (
    "INSERT OR REPLACE INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id,"
    " parent_checkpoint_id, type, checkpoint, metadata) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_WRITE_COLUMNS = (
    " INTO writes (thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx, channel,"
    " type, value) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


class SqliteCheckpointer(AsyncSqliteSaver):
    def __init__(self, conn: aiosqlite.Connection, *, reader: SqliteSaver, write: Write):
        super().__init__(conn)
        self._reader = reader
        self._write = write

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self._reader.get_tuple(config)

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
