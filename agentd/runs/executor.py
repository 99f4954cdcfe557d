"""Execute one claimed run: build its config, stream the graph through LangGraph's
checkpointer, publish every chunk, and write the outcome to the run and its thread."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import orjson
from langgraph.types import Command, Send

from agentd import serde
from agentd.broker.base import Broker
from agentd.graphs import GraphRegistry
from agentd.runs.streaming import EventEncoder, langgraph_modes, split_item, visible_events
from agentd.storage.base import Row, Storage
from agentd.webhooks.sender import WebhookSender

log = logging.getLogger("agentd.executor")
FINISH_ATTEMPTS = 5


class Executor:
    def __init__(
        self,
        storage: Storage,
        broker: Broker,
        graphs: GraphRegistry,
        webhooks: WebhookSender,
        *,
        timeout: float | None = None,
        max_attempts: int = 3,
    ):
        self.storage = storage
        self.broker = broker
        self.graphs = graphs
        self.webhooks = webhooks
        self.timeout = timeout
        self.max_attempts = max_attempts
        # run_id -> "interrupt" | "rollback", set by the worker before it cancels a run's task.
        self.cancel_actions: dict[str, str] = {}

    async def execute(self, run: Row) -> str:
        """Run ``run`` to its end and return its final status. A cancellation that is not a
        user's cancel (shutdown) puts the run back in the queue and propagates."""
        run_id, thread_id, kwargs = run["run_id"], run["thread_id"], run["kwargs"]
        started_at = serde.now()
        temporary = bool(kwargs.get("temporary"))
        self.broker.open_run(
            run_id,
            thread_id,
            resumable=bool(kwargs.get("resumable")),
            shown=visible_events(kwargs.get("stream_mode") or ()),
        )
        await self.broker.publish(
            run_id, "metadata", serde.dumps({"run_id": run_id, "attempt": run["attempt"]})
        )
        config = _graph_config(run)
        graph_input, command = kwargs.get("input"), kwargs.get("command")
        if not temporary and run.get("resume"):
            # A run started before (a crash, a shutdown) continues from the checkpoints it wrote.
            graph_input, command = None, None
            config["configurable"].pop("checkpoint_id", None)
        checkpointer = None if temporary else self.storage.checkpointer
        graph_id = run["metadata"].get("graph_id") or kwargs["config"]["configurable"]["graph_id"]

        status, thread_status, error = "success", "idle", None
        values: Any = None
        interrupts: dict[str, Any] | None = None
        progress: dict[str, Any] = {}  # the last root values streamed, also on failure
        timer = asyncio.timeout(self.timeout)
        try:
            if run["attempt"] > self.max_attempts:
                # Every attempt so far died with its process: stop before it takes down another.
                raise RunAttemptsExceeded(
                    f"Run {run_id} exceeded max attempts ({self.max_attempts}): the process "
                    "executing it stopped each time"
                )
            async with timer:
                async with self.graphs.bound(
                    graph_id,
                    config,
                    checkpointer,
                    self.storage.store,
                    access="threads.create_run",
                    context=kwargs.get("context") or None,
                ) as graph:
                    graph_input = _to_command(command) if command else graph_input
                    await self._stream(graph, graph_input, config, run, progress)
                    if checkpointer is not None and _may_have_paused(graph, kwargs, progress):
                        snapshot = await graph.aget_state(
                            {"configurable": {"thread_id": thread_id}}
                        )
                        values = snapshot.values
                        interrupts = _interrupts_by_task(snapshot)
                        if snapshot.next or interrupts:
                            thread_status = "interrupted"
                    else:
                        # Ran to its end: the last root values are the final state.
                        values = progress.get("values")
        except asyncio.CancelledError:
            action = self.cancel_actions.pop(run_id, None)
            if action is None:  # shutdown, not a user's cancel: another attempt will come
                self.broker.release(run_id)
                await self.storage.requeue_run(run_id)
                raise
            status = "rollback" if action == "rollback" else "interrupted"
            if status == "interrupted" and checkpointer is not None:
                values, interrupts, thread_status = await self._state_after_cancel(
                    graph_id, config, thread_id
                )
        except Exception as exc:
            values = progress.get("values")
            if isinstance(exc, TimeoutError) and timer.expired():
                # Our time limit; a TimeoutError the graph raised itself is an error like any.
                status, thread_status = "timeout", "error"
                error = {"error": "TimeoutError", "message": f"run exceeded {self.timeout} s"}
            else:
                log.warning("run %s failed: %s: %s", run_id, type(exc).__name__, exc)
                status, thread_status = "error", "error"
                error = serde.error_payload(exc)
                await self.broker.publish(run_id, "error", serde.dumps(error))
        encoded = serde.dumps(values) if values is not None else None
        await self._finish(
            run_id,
            thread_id,
            status,
            thread_status=thread_status,
            values=orjson.Fragment(encoded) if encoded is not None else None,
            interrupts=orjson.Fragment(serde.dumps(interrupts)) if interrupts else None,
            error=error,
            delete=temporary,
            rollback=status == "rollback",
        )
        # Recorded first; the delivery runs in the background and never holds this slot.
        self.webhooks.run_ended(run, status, values=encoded, error=error, started_at=started_at)
        await self.broker.end(run_id, status, thread_id)
        return status

    async def _stream(
        self, graph: Any, graph_input: Any, config: dict[str, Any], run: Row, progress: Row
    ) -> None:
        """Stream the graph, publishing each chunk as it comes; keep the last root values."""
        run_id, kwargs = run["run_id"], run["kwargs"]
        stream_modes = kwargs.get("stream_mode") or ()
        encoder = EventEncoder(stream_modes)
        options = {
            "context": kwargs.get("context") or None,
            "stream_mode": langgraph_modes(stream_modes),
            "subgraphs": bool(kwargs.get("subgraphs")),
            "interrupt_before": kwargs.get("interrupt_before"),
            "interrupt_after": kwargs.get("interrupt_after"),
            "durability": kwargs.get("durability") or "async",
        }
        with_events = "events" in stream_modes
        if with_events:
            stream = graph.astream_events(graph_input, config, version="v2", **options)
        else:
            stream = graph.astream(graph_input, config, **options)
        async for item in stream:
            if with_events:
                # The root's own stream chunks carry the other modes' output; every other
                # LangChain event is sent as an `events` event.
                if item["event"] != "on_chain_stream" or item["parent_ids"]:
                    if self.broker.listened(run_id):
                        await self.broker.publish(run_id, "events", serde.dumps(item))
                    continue
                item = item["data"]["chunk"]
            namespace, mode, chunk = split_item(item)
            if mode == "values" and not namespace:
                progress["values"] = chunk
                if isinstance(chunk, dict) and "__interrupt__" in chunk:
                    progress["interrupted"] = True
            if encoder.stateful or self.broker.listened(run_id):  # else nobody would see it
                for event, data in encoder.encode(mode, chunk, namespace):
                    await self.broker.publish(run_id, event, data)

    async def _finish(self, run_id: str, thread_id: str, status: str, **outcome: Any) -> None:
        """Record the outcome, retrying through transient database errors: a run must not stay
        ``running`` because one write failed."""
        for attempt in range(FINISH_ATTEMPTS):
            try:
                await self.storage.finish_run(run_id, thread_id, status, **outcome)
                return
            except Exception:
                if attempt == FINISH_ATTEMPTS - 1:
                    log.exception("could not record the end of run %s; it will be retried "
                                  "at the next start", run_id)  # fmt: skip
                    return
                await asyncio.sleep(0.2 * 2**attempt)

    async def _state_after_cancel(
        self, graph_id: str, config: dict[str, Any], thread_id: str
    ) -> tuple[Any, dict[str, Any] | None, str]:
        async with self.graphs.bound(
            graph_id, config, self.storage.checkpointer, self.storage.store
        ) as graph:
            snapshot = await graph.aget_state({"configurable": {"thread_id": thread_id}})
        interrupts = _interrupts_by_task(snapshot)
        status = "interrupted" if snapshot.next or interrupts else "idle"
        return (snapshot.values if snapshot.created_at else None), interrupts, status


class RunAttemptsExceeded(Exception):
    pass


def _graph_config(run: Row) -> dict[str, Any]:
    stored = run["kwargs"].get("config") or {}
    configurable = dict(stored.get("configurable") or {})
    configurable["thread_id"] = run["thread_id"]
    configurable["run_id"] = run["run_id"]
    if not configurable.get("checkpoint_id"):
        configurable.pop("checkpoint_id", None)
    # Checkpoint metadata is built from these, so state and history can tell who wrote what.
    metadata = {
        **(stored.get("metadata") or {}),
        "run_attempt": run["attempt"],
    }
    config = {**stored, "configurable": configurable, "metadata": metadata}
    if run["attempt"] == 1:
        config["run_id"] = uuid.UUID(run["run_id"])  # the root trace id, as the reference does
    return config


def _to_command(command: dict[str, Any]) -> Command:
    goto = command.get("goto")
    if isinstance(goto, dict):
        goto = Send(goto["node"], goto.get("input"))
    elif isinstance(goto, list):
        goto = [Send(g["node"], g.get("input")) if isinstance(g, dict) else g for g in goto]
    return Command(
        update=command.get("update"),
        resume=command.get("resume"),
        goto=goto if goto is not None else (),
    )


def _may_have_paused(graph: Any, kwargs: Row, progress: Row) -> bool:
    """Whether the run may have stopped before the graph's end, so that the thread's state
    must be read back: an interrupt was streamed, breakpoints are set, or nothing ran."""
    return bool(
        progress.get("interrupted")
        or "values" not in progress
        or kwargs.get("interrupt_before")
        or kwargs.get("interrupt_after")
        or getattr(graph, "interrupt_before_nodes", None)
        or getattr(graph, "interrupt_after_nodes", None)
    )


def _interrupts_by_task(snapshot: Any) -> dict[str, Any]:
    return {task.id: list(task.interrupts) for task in snapshot.tasks if task.interrupts}
