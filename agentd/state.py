"""Thread state through LangGraph itself: read (latest, at a checkpoint, history) and update,
shaped as the Agent Server's ``ThreadState``."""

from __future__ import annotations

from contextlib import aclosing
from typing import Any

import orjson
from langgraph.errors import InvalidUpdateError
from langgraph.types import StateSnapshot, StateUpdate

from agentd import serde
from agentd.graphs import GraphRegistry
from agentd.schemas import BadRequest, CheckpointConfig, Conflict, NotFound, Unprocessable
from agentd.storage.base import Row, Storage

EMPTY_STATE: dict[str, Any] = {
    "values": {},
    "next": [],
    "tasks": [],
    "metadata": None,
    "created_at": None,
    "checkpoint": None,
    "parent_checkpoint": None,
    "interrupts": [],
    "checkpoint_id": None,
    "parent_checkpoint_id": None,
}


HISTORY_MAX_BYTES = 10 * 1024 * 1024  # AGENTD_HISTORY_MAX_BYTES


class ThreadStates:
    def __init__(
        self, storage: Storage, graphs: GraphRegistry, *, max_history_bytes: int = HISTORY_MAX_BYTES
    ):
        self.storage = storage
        self.graphs = graphs
        self.max_history_bytes = max_history_bytes

    def _graph_id(self, thread: Row) -> str | None:
        graph_id = (thread.get("metadata") or {}).get("graph_id")
        if graph_id is not None and graph_id not in self.graphs:
            raise NotFound(f"Graph '{graph_id}' of thread {thread['thread_id']} is not served here")
        return graph_id

    def _config(self, thread: Row, checkpoint: CheckpointConfig | None = None) -> dict[str, Any]:
        configurable: dict[str, Any] = {
            **(thread.get("config") or {}).get("configurable", {}),
            "thread_id": thread["thread_id"],
            "checkpoint_ns": "",
        }
        if checkpoint is not None:
            for key in ("checkpoint_ns", "checkpoint_id", "checkpoint_map"):
                value = getattr(checkpoint, key)
                if value is not None:
                    configurable[key] = value
        return {"configurable": configurable}

    async def get(
        self, thread: Row, *, checkpoint: CheckpointConfig | None = None, subgraphs: bool = False
    ) -> dict[str, Any]:
        graph_id = self._graph_id(thread)
        if graph_id is None:
            return dict(EMPTY_STATE)
        config = self._config(thread, checkpoint)
        async with self.graphs.bound(
            graph_id, config, self.storage.checkpointer, self.storage.store
        ) as graph:
            snapshot = await graph.aget_state(config, subgraphs=subgraphs)
            if snapshot.created_at is None:
                if checkpoint is not None and checkpoint.checkpoint_id:
                    raise NotFound(f"Checkpoint {checkpoint.checkpoint_id} not found")
                return dict(EMPTY_STATE)
            parent = None
            if snapshot.parent_config and snapshot.metadata.get("source") == "loop":
                parent = await graph.aget_state(snapshot.parent_config)
        return snapshot_to_wire(snapshot, parent)

    async def history(
        self,
        thread: Row,
        *,
        limit: int,
        before: CheckpointConfig | None,
        metadata: dict[str, Any] | None,
        checkpoint: CheckpointConfig | None,
    ) -> bytes:
        """Up to ``limit`` states, newest first, as an encoded JSON array of at most
        ``max_history_bytes`` (always at least one state): clients page with ``before``.

        LangGraph's ``aget_state_history`` lists all the checkpoints it is asked for before it
        yields the first, so it is asked for one at a time: only two states (one and its
        parent, for its ``writes``) are decoded at once, whatever the history's length."""
        graph_id = self._graph_id(thread)
        if graph_id is None:
            return b"[]"
        config = self._config(thread, checkpoint)
        before_config = self._config(thread, before) if before else None
        items: list[bytes] = []
        size = 1  # the closing bracket; each item brings its opening bracket or comma
        async with self.graphs.bound(
            graph_id, config, self.storage.checkpointer, self.storage.store
        ) as graph:

            async def older(before: dict[str, Any] | None) -> StateSnapshot | None:
                states = graph.aget_state_history(
                    config, filter=metadata or None, before=before, limit=1
                )
                try:
                    async with aclosing(states):
                        async for snapshot in states:
                            return snapshot
                except ValueError as exc:  # e.g. a metadata filter key the checkpointer refuses
                    raise Unprocessable(str(exc)) from exc
                return None

            snapshot = await older(before_config)
            while snapshot is not None and len(items) < limit:
                parent = await older(snapshot.config)
                writes_from = parent if parent and parent.config == snapshot.parent_config else None
                item = serde.dumps(snapshot_to_wire(snapshot, writes_from))
                if items and size + 1 + len(item) > self.max_history_bytes:
                    break
                items.append(item)
                size += 1 + len(item)
                snapshot = parent
        return b"[" + b",".join(items) + b"]"

    async def apply_supersteps(self, thread: Row, supersteps: list[list[StateUpdate]]) -> None:
        """Write ``supersteps`` of updates as checkpoints of a new thread (LangGraph's
        ``bulk_update_state``), as the thread's own history."""
        thread_id = thread["thread_id"]
        graph_id = self._graph_id(thread)
        if graph_id is None:
            raise Unprocessable("supersteps need the thread's graph: set metadata.graph_id")
        config = self._config(thread)
        async with self.graphs.bound(
            graph_id, config, self.storage.checkpointer, self.storage.store, access="threads.update"
        ) as graph:
            try:
                await graph.abulk_update_state(config, supersteps)
            except (InvalidUpdateError, ValueError, KeyError, TypeError) as exc:
                raise BadRequest(f"{type(exc).__name__}: {exc}") from exc
            snapshot = await graph.aget_state({"configurable": {"thread_id": thread_id}})
        await self._store_snapshot(thread_id, snapshot)

    async def _store_snapshot(self, thread_id: str, snapshot: StateSnapshot) -> None:
        """The thread row mirrors its newest checkpoint (values, interrupts, status)."""
        interrupts = {t.id: list(t.interrupts) for t in snapshot.tasks if t.interrupts}
        await self.storage.set_thread_state(
            thread_id,
            orjson.Fragment(serde.dumps(snapshot.values)),
            orjson.Fragment(serde.dumps(interrupts)),
            "interrupted" if snapshot.next or interrupts else "idle",
        )

    async def update(
        self,
        thread: Row,
        *,
        values: Any,
        as_node: str | None,
        checkpoint: CheckpointConfig | None,
    ) -> dict[str, Any]:
        thread_id = thread["thread_id"]
        if thread["status"] == "busy":
            raise Conflict(f"Thread {thread_id} has in-flight runs; update its state when idle")
        graph_id = self._graph_id(thread)
        if graph_id is None:
            raise BadRequest(
                f"Thread '{thread_id}' has no assigned graph ID: run it with an assistant first"
            )
        config = self._config(thread, checkpoint)
        if checkpoint is not None and checkpoint.checkpoint_id:
            # LangGraph would fork from an empty state; an unknown checkpoint is the client's error.
            assert self.storage.checkpointer is not None
            if await self.storage.checkpointer.aget_tuple(config) is None:
                raise NotFound(f"Checkpoint {checkpoint.checkpoint_id} not found")
        async with self.graphs.bound(
            graph_id, config, self.storage.checkpointer, self.storage.store, access="threads.update"
        ) as graph:
            try:
                new_config = await graph.aupdate_state(config, values, as_node=as_node)
            except (InvalidUpdateError, ValueError, KeyError, TypeError) as exc:
                raise BadRequest(f"{type(exc).__name__}: {exc}") from exc
            snapshot = await graph.aget_state({"configurable": {"thread_id": thread_id}})
        await self._store_snapshot(thread_id, snapshot)
        checkpoint_out = _checkpoint(new_config)
        return {
            "checkpoint": checkpoint_out,
            "configurable": checkpoint_out,
            "checkpoint_id": checkpoint_out["checkpoint_id"] if checkpoint_out else None,
        }


def _checkpoint(config: dict[str, Any] | None) -> dict[str, Any] | None:
    if not config:
        return None
    c = config["configurable"]
    out = {
        "checkpoint_id": c.get("checkpoint_id"),
        "thread_id": c.get("thread_id"),
        "checkpoint_ns": c.get("checkpoint_ns", ""),
    }
    if c.get("checkpoint_map"):
        out["checkpoint_map"] = c["checkpoint_map"]
    return out


def _task(task: Any) -> dict[str, Any]:
    state = task.state
    return {
        "id": task.id,
        "name": task.name,
        "path": list(task.path),
        "error": serde.error_payload(task.error) if isinstance(task.error, BaseException)
        else task.error,
        "interrupts": list(task.interrupts),
        "checkpoint": _checkpoint(state) if isinstance(state, dict) else None,
        "state": snapshot_to_wire(state) if isinstance(state, StateSnapshot) else None,
        "result": task.result,
    }  # fmt: skip


def snapshot_to_wire(s: StateSnapshot, parent: StateSnapshot | None = None) -> dict[str, Any]:
    metadata = dict(s.metadata or {})
    if "writes" not in metadata:
        # LangGraph 1.x no longer stores a checkpoint's writes; they are its parent's task results.
        writes = {t.name: t.result for t in parent.tasks if t.result is not None} if parent else {}
        metadata["writes"] = writes or None
    checkpoint = _checkpoint(s.config)
    parent_checkpoint = _checkpoint(s.parent_config)
    if checkpoint is not None:
        # LangGraph keeps thread_id out of checkpoint metadata; the Agent Server shows it.
        metadata.setdefault("thread_id", checkpoint["thread_id"])
    return {
        "values": s.values,
        "next": list(s.next),
        "tasks": [_task(t) for t in s.tasks],
        "metadata": metadata,
        "created_at": s.created_at,
        "checkpoint": checkpoint,
        "parent_checkpoint": parent_checkpoint,
        "interrupts": list(s.interrupts),
        "checkpoint_id": checkpoint["checkpoint_id"] if checkpoint else None,
        "parent_checkpoint_id": parent_checkpoint["checkpoint_id"] if parent_checkpoint else None,
    }
