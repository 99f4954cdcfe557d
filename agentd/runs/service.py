"""Create runs: validate, resolve the assistant and thread, build the stored kwargs, apply the
multitask strategy, insert the run as pending in one transaction, and wake a worker."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from agentd import serde
from agentd.broker.base import Broker
from agentd.graphs import GraphRegistry
from agentd.ids import parse_uuid, uuid7
from agentd.runs.streaming import SUPPORTED_MODES
from agentd.schemas import BadRequest, NotFound, RunCreate, Unprocessable
from agentd.storage.base import Row, Storage
from agentd.webhooks.sender import WebhookSender

# Keys clients may not set in configurable or metadata: agentd owns them.
_RESERVED_CONFIGURABLE = ("run_id", "thread_id", "graph_id", "assistant_id", "user_id")
# Keys of an assistant's config that are options of its runs, not part of the graph's config.
_NOT_GRAPH_CONFIG = ("configurable", "interrupt_before", "interrupt_after")


class RunService:
    def __init__(
        self,
        storage: Storage,
        broker: Broker,
        graphs: GraphRegistry,
        webhooks: WebhookSender,
    ):
        self.storage = storage
        self.broker = broker
        self.graphs = graphs
        self.webhooks = webhooks

    async def resolve_assistant(self, value: str) -> Row:
        assistant_id = self.graphs.resolve_assistant_id(value)
        if parse_uuid(assistant_id) is None:
            raise Unprocessable(
                f"Invalid assistant: '{value}'. Must be either:\n- A valid assistant UUID, or\n"
                f"- One of the registered graphs: {', '.join(self.graphs.graph_ids)}"
            )
        assistant = await self.storage.get_assistant(parse_uuid(assistant_id) or assistant_id)
        if assistant is None or assistant["graph_id"] not in self.graphs:
            raise NotFound(f"Assistant {assistant_id} not found")
        return assistant

    async def create(
        self,
        thread_id: str | None,
        body: RunCreate,
        *,
        run_id: str | None = None,
        check_webhook: bool = True,
    ) -> tuple[Row, list[Row]]:
        """Queue a run; ``thread_id=None`` makes a stateless run on a new thread.
        ``check_webhook=False``: its webhook URL passed the policy already (a cron's, when the
        cron was written); the sender checks it again at each delivery in any case.

        Returns the run and the runs that were in flight on its thread."""
        new = await self._prepare(thread_id, body, run_id, check_webhook=check_webhook)
        run, inflight = await self.storage.create_run(new.run, **new.options)
        if inflight and body.multitask_strategy in ("interrupt", "rollback"):
            await self.cancel(
                run["thread_id"], [r["run_id"] for r in inflight], body.multitask_strategy
            )
        await self._wake(body)
        return run, inflight

    async def create_batch(self, bodies: list[RunCreate]) -> list[Row]:
        """Queue stateless runs all or none: every one is checked before any is stored."""
        prepared = [await self._prepare(None, body, None, check_webhook=True) for body in bodies]
        runs = await self.storage.create_runs([(p.run, p.options) for p in prepared])
        for body in bodies:
            await self._wake(body)
        return runs

    async def _wake(self, body: RunCreate) -> None:
        due = time.time() + body.after_seconds if body.after_seconds else None
        await self.broker.wake(due)

    async def _prepare(
        self, thread_id: str | None, body: RunCreate, run_id: str | None, *, check_webhook: bool
    ) -> _NewRun:
        """Validate a request and build the run row to store; raises ApiError on bad input."""
        stateless = thread_id is None
        validate_body(body, stateless)
        if body.webhook is not None and check_webhook:
            await self.webhooks.check(body.webhook)  # the URL policy: 422, nothing stored
        assistant = await self.resolve_assistant(body.assistant_id)
        assistant_id, graph_id = assistant["assistant_id"], assistant["graph_id"]
        thread = (
            None if stateless else await self.storage.get_thread(thread_id, with_values=False)  # type: ignore[arg-type]
        )
        if thread is None and not stateless and body.if_not_exists != "create":
            raise NotFound(f"Thread with ID {thread_id} not found")
        if not stateless:
            await self._check_thread_input(thread_id, thread, body)  # type: ignore[arg-type]
        run_id = run_id or str(uuid7())
        thread_id = thread_id or str(uuid7())

        request_config = body.config.model_dump(exclude_none=True) if body.config else {}
        request_configurable = request_config.pop("configurable", None) or {}
        request_metadata = {**(request_config.pop("metadata", None) or {}), **(body.metadata or {})}
        context = body.context or {}
        if request_configurable and context:
            raise BadRequest(
                "Cannot specify both configurable and context. Prefer setting context alone."
            )
        ids = {"graph_id": graph_id, "assistant_id": assistant_id}
        metadata = {
            **assistant["metadata"],
            **(thread["metadata"] if thread else {}),
            **request_metadata,
            **ids,
        }
        assistant_config = dict(assistant["config"] or {})
        # An assistant may carry breakpoints for its runs; a run's own take precedence.
        breakpoints = {
            key: getattr(body, key) if getattr(body, key) is not None else assistant_config.get(key)
            for key in ("interrupt_before", "interrupt_after")
        }
        configurable = {
            **(assistant_config.get("configurable") or {}),
            **(thread["config"].get("configurable", {}) if thread else {}),
            **{k: v for k, v in (request_configurable or context).items()
               if k not in _RESERVED_CONFIGURABLE},
        }  # fmt: skip
        if context and not request_configurable:
            configurable["__context_provided__"] = True
        configurable.update(
            run_id=run_id,
            user_id="",
            thread_id=thread_id,
            checkpoint_id=_checkpoint_id(body),
            **ids,
        )
        if body.checkpoint and body.checkpoint.checkpoint_ns:
            configurable["checkpoint_ns"] = body.checkpoint.checkpoint_ns
        config = {
            **{k: v for k, v in assistant_config.items() if k not in _NOT_GRAPH_CONFIG},
            **request_config,
            "metadata": metadata,
            "configurable": configurable,
        }
        kwargs = _kwargs(
            body,
            config,
            context={**(assistant.get("context") or {}), **(context or request_configurable)},
            temporary=stateless and body.on_completion == "delete",
            breakpoints=breakpoints,
        )
        now = serde.now()
        created = now + timedelta(seconds=body.after_seconds or 0)
        run = {
            "run_id": run_id,
            "thread_id": thread_id,
            "assistant_id": assistant_id,
            "created_at": created.isoformat(),
            "updated_at": now.isoformat(),
            "metadata": metadata,
            "kwargs": kwargs,
            "multitask_strategy": body.multitask_strategy,
        }
        options = {
            # A new thread gets the run's metadata; an existing one learns its graph.
            "thread_metadata": {**request_metadata, **ids} if thread is None else ids,
            "if_not_exists": "create" if stateless else body.if_not_exists,
            "reject_if_busy": body.multitask_strategy == "reject",
        }
        return _NewRun(run, options)

    async def _check_thread_input(
        self, thread_id: str, thread: Row | None, body: RunCreate
    ) -> None:
        """What a run on an existing thread refers to must exist: the checkpoint it forks from,
        the interrupt it resumes."""
        checkpoint_id = _checkpoint_id(body)
        if checkpoint_id is not None:
            ns = (body.checkpoint.checkpoint_ns if body.checkpoint else None) or ""
            found = thread is not None and await self.storage.checkpointer.aget_tuple(
                {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns,
                                  "checkpoint_id": checkpoint_id}}
            )  # fmt: skip
            if not found:
                raise NotFound(f"Checkpoint {checkpoint_id} not found on thread {thread_id}")
        resume = body.command is not None and body.command.resume is not None
        # A busy thread may be paused by the time this run starts: only an idle one is refused.
        if (
            resume
            and checkpoint_id is None
            and (thread is None or thread["status"] in ("idle", "error"))
        ):
            raise BadRequest(
                f"Cannot resume thread {thread_id}: it has no pending interrupt. "
                "Resume a thread whose status is 'interrupted'."
            )

    async def cancel(self, thread_id: str, run_ids: list[str], action: str) -> list[Row]:
        """Cancel in-flight runs: pending ones end now, running ones when their worker stops."""
        runs = await self.storage.cancel_runs(thread_id, run_ids, action)
        for run in runs:
            if run["status"] == "running":
                await self.broker.cancel(run["run_id"], action)
            else:
                await self.broker.end(run["run_id"], "interrupted", thread_id)
                # A pending run ends here, never having started: its webhook still fires.
                self.webhooks.run_ended(run, "rollback" if action == "rollback" else "interrupted")
        if runs:
            await self.broker.wake()
        return runs

    async def cancel_many(
        self, *, thread_id: str | None, run_ids: list[str] | None, status: str | None, action: str
    ) -> list[Row]:
        """Cancel the given runs of a thread, or every run in a status (pending, running, all)."""
        targets: dict[str, list[str]] = {}
        if status is not None:
            for tid, rid in await self.storage.inflight_run_ids(
                None if status == "all" else status
            ):
                targets.setdefault(tid, []).append(rid)
        elif thread_id is not None and run_ids:
            targets[thread_id] = run_ids
        cancelled: list[Row] = []
        for tid, ids in targets.items():
            cancelled += await self.cancel(tid, ids, action)
        return cancelled


@dataclass
class _NewRun:
    run: Row
    options: dict[str, Any]  # the storage's create_run keyword arguments


def _checkpoint_id(body: RunCreate) -> str | None:
    return body.checkpoint_id or (body.checkpoint and body.checkpoint.checkpoint_id) or None


def _kwargs(
    body: RunCreate,
    config: dict[str, Any],
    *,
    context: dict[str, Any],
    temporary: bool,
    breakpoints: dict[str, Any],
) -> dict[str, Any]:
    """What the worker needs to execute the run, stored with it (the wire's ``kwargs``)."""
    stream_mode = body.stream_mode or ["values"]
    durability = body.durability or ("exit" if body.checkpoint_during is False else "async")
    return {
        "input": body.input,
        "command": body.command.model_dump(exclude_none=True) if body.command else None,
        "config": config,
        "context": context,
        "stream_mode": [stream_mode] if isinstance(stream_mode, str) else stream_mode,
        **breakpoints,
        "webhook": body.webhook,
        "feedback_keys": body.feedback_keys,
        "temporary": temporary,
        "subgraphs": body.stream_subgraphs,
        "resumable": body.stream_resumable,
        "checkpoint_during": durability != "exit",
        "durability": durability,
    }


def validate_body(body: RunCreate, stateless: bool) -> None:
    modes = [body.stream_mode] if isinstance(body.stream_mode, str) else body.stream_mode or []
    unsupported = [m for m in modes if m not in SUPPORTED_MODES]
    if unsupported:
        raise Unprocessable(
            f"Stream mode(s) not supported by this server yet: {', '.join(unsupported)}. "
            f"Supported: {', '.join(sorted(SUPPORTED_MODES))}"
        )
    if body.command is not None and body.command.resume is not None and stateless:
        raise BadRequest("You must provide a thread_id when resuming.")
    if body.checkpoint_id is not None and parse_uuid(body.checkpoint_id) is None:
        raise Unprocessable("Invalid checkpoint ID: must be a UUID")
