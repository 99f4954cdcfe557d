"""Execute one claimed run: build its config, stream the graph through LangGraph's
checkpointer, publish every chunk, and write the outcome to the run and its thread."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import orjson
from langgraph.types import Command, Send

from agentd import serde
from agentd.broker.base import Broker
from agentd.graphs import GraphRegistry
from agentd.runs.control import RunControl
from agentd.runs.streaming import EventEncoder, langgraph_modes, split_item, visible_events
from agentd.runs.tasks import RunTasks
from agentd.storage.base import DatabaseUnavailable, LeaseLost, Row, Storage
from agentd.webhooks.sender import WebhookSender

T = TypeVar("T")
log = logging.getLogger("agentd.executor")
FINISH_ATTEMPTS = 5
# How long a stopped run's leftover tasks get to finish before its end is recorded anyway.
UNWIND_GRACE = 10.0


@dataclass
class Outcome:
    """How an attempt ended: the run's status and what its thread rests at."""

    status: str  # success | error | timeout | interrupted | rollback
    thread_status: str = "idle"  # idle | interrupted | error
    values: Any = None  # the thread's new values; None keeps the old ones
    interrupts: dict[str, Any] | None = None
    error: Row | None = None


# An attempt that found its run no longer its own: it ends without recording anything.
LOST = Outcome("lost")


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
        self.tasks = RunTasks()

    async def execute(self, run: Row, control: RunControl) -> str:
        """Run one claimed attempt of ``run`` and record its end exactly once; returns the
        run's status, or ``pending`` when the attempt was handed back (shutdown).

        Every way out records the end and wakes the run's subscribers: the graph's end or
        error, a cancel, the time limit, too many attempts, agentd's own failure around the
        graph. Only a hard cancel of this task (the process stopping past its grace) leaves
        the run ``running``, for the next start to take back."""
        run_id, kwargs, attempt = run["run_id"], run["kwargs"], run["attempt"]
        started_at = serde.now()
        # Every broker call names the attempt: once the run is taken over, the broker drops
        # what this attempt still sends (see Broker's fencing).
        self.broker.open_run(
            run_id,
            run["thread_id"],
            resumable=bool(kwargs.get("resumable")),
            shown=visible_events(kwargs.get("stream_mode") or ()),
            attempt=attempt,
        )
        await self.broker.publish(
            run_id,
            "metadata",
            serde.dumps({"run_id": run_id, "attempt": attempt}),
            attempt=attempt,
        )
        try:
            outcome = await self._attempt(run, control)
        except DatabaseUnavailable as exc:
            # Around the graph (reading the run's cancel, a rollback): not the run's fault
            # either; it goes back to the queue, as when the graph meets it.
            log.warning("run %s: %s; handing it back", run_id, exc.detail)
            outcome = None
        except Exception as exc:  # agentd's own failure: the run must end all the same
            log.exception("run %s: executing it failed", run_id)
            outcome = await self._failed(run, exc, None)
        if outcome is LOST:
            self.broker.release(run_id, attempt=attempt)
            return "pending"
        if outcome is None:
            await _uncancellable(self._hand_back(run))
            return "pending"
        return await _uncancellable(self._end(run, outcome, started_at, control))

    async def _attempt(self, run: Row, control: RunControl) -> Outcome | None:
        """Execute the graph until it ends or a request (cancel, shutdown) or the time limit
        stops it. None: hand the run back; LOST: the run is no longer this attempt's."""
        run_id = run["run_id"]
        if run["attempt"] > self.max_attempts:
            # Every attempt so far died with its process: stop before it takes down another.
            return await self._failed(
                run,
                RunAttemptsExceeded(
                    f"Run {run_id} exceeded max attempts ({self.max_attempts}): the process "
                    "executing it stopped each time"
                ),
                None,
            )
        # A cancel asked before this run could hear one: before the claim, or between the
        # claim's commit and the worker registering ``control`` (read after registering).
        flagged = run.get("cancel_action") or await self.storage.run_cancel_action(run_id)
        if flagged:
            control.request(flagged)
        if control.action is not None:
            return await self._stopped(run, control, None)

        progress: dict[str, Any] = {}  # the last root values streamed, also on failure
        graph = self.tasks.start(run_id, self._run_graph(run, progress), f"graph-{run_id}")
        asked = asyncio.create_task(control.wait())
        try:
            done, _ = await asyncio.wait(
                {graph, asked}, timeout=self.timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            asked.cancel()
            # The graph is cancelled only here, by the one task that owns it, and only after
            # it started; a graph that already returned is not undone by a late request.
            graph.cancel()
            while not (await asyncio.wait({graph}, timeout=UNWIND_GRACE))[0]:
                # Its thread stays busy meanwhile: better than a next run beside it.
                log.warning(
                    "run %s: its graph still runs %.0f s after it was cancelled (does a node "
                    "catch CancelledError?)", run_id, UNWIND_GRACE,
                )  # fmt: skip
        if graph not in done or graph.cancelled():
            # Stopped mid-way: what the graph left running (a checkpoint write its exit was
            # awaiting when the cancel landed) finishes before the state is read.
            late = await self.tasks.wait(run_id, UNWIND_GRACE)
            if late:
                log.warning("run %s: %d task(s) it started still run %.0f s after it was "
                            "stopped", run_id, late, UNWIND_GRACE)  # fmt: skip
        if graph not in done:
            if control.action is not None:
                return await self._stopped(run, control, progress)
            # Our time limit; a TimeoutError the graph raises itself is an error like any.
            return Outcome(
                "timeout",
                "error",
                values=progress.get("values"),
                error={"error": "TimeoutError", "message": f"run exceeded {self.timeout} s"},
            )
        if graph.cancelled():  # cancelled from inside the graph: an error like any
            return await self._failed(run, asyncio.CancelledError(), progress)
        exc = graph.exception()
        if isinstance(exc, LeaseLost):
            # Another attempt holds the run, or it ended: this one stops and writes nothing
            # (not even a hand-back: were the run still its own, its lease would run out and
            # the attempt count, so that this could not repeat without end).
            log.warning("run %s: %s; this attempt stops", run_id, exc)
            return LOST
        if isinstance(exc, DatabaseUnavailable):
            # Not the run's fault: it goes back to the queue (uncounted) and resumes from its
            # last checkpoint once the database is back.
            log.warning("run %s: %s; handing it back", run_id, exc.detail)
            return None
        if exc is not None:
            log.warning("run %s failed: %s: %s", run_id, type(exc).__name__, exc)
            return await self._failed(run, exc, progress)
        return graph.result()

    async def _run_graph(self, run: Row, progress: Row) -> Outcome:
        thread_id, kwargs = run["thread_id"], run["kwargs"]
        config = _graph_config(run)
        graph_input, command = kwargs.get("input"), kwargs.get("command")
        temporary = bool(kwargs.get("temporary"))
        if not temporary and run.get("resume"):
            # A run started before (a crash, a shutdown) continues from the checkpoints it wrote.
            graph_input, command = None, None
            config["configurable"].pop("checkpoint_id", None)
        # Every checkpoint write of this attempt is fenced: saved only while it holds the run.
        checkpointer = (
            None if temporary else self.storage.fenced_checkpointer(run["run_id"], run["attempt"])
        )
        async with self.graphs.bound(
            _graph_id(run),
            config,
            checkpointer,
            self.storage.store,
            access="threads.create_run",
            context=kwargs.get("context") or None,
            shared=checkpointer is None,
        ) as graph:
            graph_input = _to_command(command) if command else graph_input
            await self._stream(graph, graph_input, config, run, progress)
            if checkpointer is None or not _may_have_paused(graph, kwargs, progress):
                # Ran to its end: the last root values are the final state.
                return Outcome("success", values=progress.get("values"))
            snapshot = await graph.aget_state({"configurable": {"thread_id": thread_id}})
        interrupts = _interrupts_by_task(snapshot)
        paused = bool(snapshot.next or interrupts)
        return Outcome("success", "interrupted" if paused else "idle", snapshot.values, interrupts)

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
        }
        if not kwargs.get("temporary"):  # no checkpointer: LangGraph warns that it has no effect
            options["durability"] = kwargs.get("durability") or "async"
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
                        await self.broker.publish(
                            run_id, "events", serde.dumps(item), attempt=run["attempt"]
                        )
                    continue
                item = item["data"]["chunk"]
            namespace, mode, chunk = split_item(item)
            if mode == "values" and not namespace:
                progress["values"] = chunk
                if isinstance(chunk, dict) and "__interrupt__" in chunk:
                    progress["interrupted"] = True
            if encoder.stateful or self.broker.listened(run_id):  # else nobody would see it
                for event, data in encoder.encode(mode, chunk, namespace):
                    await self.broker.publish(run_id, event, data, attempt=run["attempt"])

    async def _failed(self, run: Row, exc: BaseException, progress: Row | None) -> Outcome:
        error = serde.error_payload(exc)
        await self.broker.publish(
            run["run_id"], "error", serde.dumps(error), attempt=run["attempt"]
        )
        values = progress.get("values") if progress else None
        return Outcome("error", "error", values=values, error=error)

    async def _stopped(self, run: Row, control: RunControl, progress: Row | None) -> Outcome | None:
        """The outcome of a run stopped by a request: a cancel ends it, a shutdown hands it
        back (None), as does a lost lease (the hand-back then finds the run is no longer
        this attempt's, and writes nothing)."""
        action = control.action
        if action not in ("interrupt", "rollback"):
            return None
        if run["kwargs"].get("temporary"):  # no checkpoints: its thread goes with it
            return Outcome("rollback" if action == "rollback" else "interrupted")
        status = "interrupted"
        if action == "rollback":
            # Undone first, while the run still holds its thread; then the thread rests as
            # what is left says (the end's transaction undoes anything written since).
            await self.storage.roll_back_run(run["thread_id"], run["run_id"])
            status = "rollback"
        try:
            async with self.graphs.bound(
                _graph_id(run), _graph_config(run), self.storage.checkpointer, self.storage.store
            ) as graph:
                snapshot = await graph.aget_state({"configurable": {"thread_id": run["thread_id"]}})
        except Exception:
            log.exception("run %s: reading its state after the cancel failed", run["run_id"])
            return Outcome(status)
        # The thread rests as its checkpoints left it: paused at a node, or idle.
        interrupts = _interrupts_by_task(snapshot)
        paused = bool(snapshot.next or interrupts)
        values = snapshot.values if snapshot.created_at else None
        return Outcome(status, "interrupted" if paused else "idle", values, interrupts)

    async def _end(
        self, run: Row, outcome: Outcome, started_at: datetime, control: RunControl
    ) -> str:
        """Record the end (once, by the attempt holding the run), then its webhook, then wake
        every subscriber, whether or not the record succeeded: no one waits forever."""
        run_id, thread_id = run["run_id"], run["thread_id"]
        try:
            encoded = serde.dumps(outcome.values) if outcome.values is not None else None
            interrupts = serde.dumps(outcome.interrupts) if outcome.interrupts else None
        except Exception as exc:  # e.g. nested deeper than JSON can be encoded
            unstorable = ValueError(f"the run's values cannot be stored as JSON: {exc}")
            outcome = await self._failed(run, unstorable, None)
            encoded = interrupts = None
        # The webhook goes into the outbox in the transaction that records the end; it is
        # sent in the background after the commit and never holds this slot.
        webhook = self.webhooks.delivery(
            run, outcome.status, values=encoded, error=outcome.error, started_at=started_at
        )
        try:
            ended = await self._finish(
                run,
                outcome.status,
                thread_status=outcome.thread_status,
                values=orjson.Fragment(encoded) if encoded is not None else None,
                interrupts=orjson.Fragment(interrupts) if interrupts is not None else None,
                error=outcome.error,
                delete=bool(run["kwargs"].get("temporary")),
                rollback=outcome.status == "rollback",
                webhook=webhook,
            )
            if ended is not False:
                control.thread_queued = ended == "busy"
            if webhook is not None:
                self.webhooks.wake()
        finally:
            await self.broker.end(run_id, outcome.status, thread_id, attempt=run["attempt"])
        return outcome.status

    async def _finish(self, run: Row, status: str, **outcome: Any) -> str | bool:
        """Record the outcome, retrying through transient database errors: a run must not stay
        ``running`` because one write failed. False when this attempt no longer held it, else
        what ``finish_run`` answers."""
        for attempt in range(FINISH_ATTEMPTS):
            try:
                return await self.storage.finish_run(
                    run["run_id"], run["thread_id"], run["attempt"], status, **outcome
                )
            except Exception:
                if attempt == FINISH_ATTEMPTS - 1:
                    log.exception("could not record the end of run %s; it will be retried "
                                  "at the next start", run["run_id"])  # fmt: skip
                    return False
                await asyncio.sleep(0.2 * 2**attempt)
        return False

    async def _hand_back(self, run: Row) -> None:
        """Put the run back in the queue, retrying through transient database errors."""
        # The channel first: once the hand-back commits, the run's next execution (with the
        # same attempt number: a hand-back is not counted) may open it, even in this process.
        self.broker.release(run["run_id"], attempt=run["attempt"])
        for attempt in range(FINISH_ATTEMPTS):
            try:
                await self.storage.requeue_run(run["run_id"], run["attempt"])
                break
            except Exception as exc:
                if attempt == FINISH_ATTEMPTS - 1:  # it stays running: its lease runs out
                    if isinstance(exc, DatabaseUnavailable):  # the storage logged why
                        log.warning("could not hand run %s back to the queue: %s",
                                    run["run_id"], exc.detail)  # fmt: skip
                    else:
                        log.exception("could not hand run %s back to the queue", run["run_id"])
                    break
                await asyncio.sleep(0.2 * 2**attempt)


async def _uncancellable(coro: Coroutine[Any, Any, T]) -> T:
    """Await ``coro`` to its end even if this task is cancelled meanwhile (a run's end is
    recorded whole or not at all), then let the cancel through."""
    task = asyncio.ensure_future(coro)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
            break
        except asyncio.CancelledError:
            if task.done():
                raise
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return result


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


def _graph_id(run: Row) -> str:
    return run["metadata"].get("graph_id") or run["kwargs"]["config"]["configurable"]["graph_id"]


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
