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
from agentd.storage.base import Cancelled, Row, Storage
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
    ) -> Row:
        """Queue a run; ``thread_id=None`` makes a stateless run on a new thread.
        ``check_webhook=False``: its webhook URL passed the policy already (a cron's, when the
        cron was written); the sender checks it again at each delivery in any case."""
        run = await self._create(thread_id, body, run_id, check_webhook, None)
        assert run is not None  # only a cron tick can be lost
        return run

    async def create_for_tick(
        self, thread_id: str | None, body: RunCreate, cron_tick: tuple[str, str, str | None]
    ) -> Row | None:
        """Queue a cron firing's run, claiming its tick (cron_id, due, next_run_date) in the
        same transaction: None when another scheduler holds the tick. A run that cannot be
        created raises its ApiError, and the tick is consumed all the same."""
        # Its webhook passed the URL policy when the cron was written: a DNS hiccup now
        # must not skip the tick (the sender checks again before each delivery).
        return await self._create(thread_id, body, None, False, cron_tick)

    async def _create(
        self,
        thread_id: str | None,
        body: RunCreate,
        run_id: str | None,
        check_webhook: bool,
        cron_tick: tuple[str, str, str | None] | None,
    ) -> Row | None:
        new = await self._prepare(thread_id, body, run_id, check_webhook=check_webhook)
        created = await self.storage.create_run(
            new.run, **new.options, cron_tick=cron_tick, webhook=self.webhooks.delivery
        )
        if created is None:
            return None
        run, cancelled = created
        await self._after_cancel(run["thread_id"], cancelled)
        await self._wake(body)
        return run

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

    async def cancel(self, thread_id: str, run_ids: list[str], action: str) -> list[Cancelled]:
        """Cancel in-flight runs: the cancel is recorded (and pending runs ended, their
        webhooks in the outbox) in one transaction; running ones are then told, and end when
        their executor has unwound."""
        cancelled = await self.storage.cancel_runs(
            thread_id, run_ids, action, webhook=self.webhooks.delivery
        )
        await self._after_cancel(thread_id, cancelled)
        return cancelled

    async def _after_cancel(self, thread_id: str, cancelled: list[Cancelled]) -> None:
        """What follows a committed cancel: runs that ended in it wake their subscribers and
        their webhooks are sent; the others' executors are told (they also read the recorded
        cancel when they start, so a lost signal only delays the end)."""
        for item in cancelled:
            run_id = item.run["run_id"]
            if item.ended:
                status = "rollback" if item.action == "rollback" else "interrupted"
                await self.broker.end(run_id, status, thread_id)
            else:
                await self.broker.cancel(run_id, item.action)
        if cancelled:
            self.webhooks.wake()
            await self.broker.wake()

    async def cancel_many(
        self, *, thread_id: str | None, run_ids: list[str] | None, status: str | None, action: str
    ) -> list[Cancelled]:
        """Cancel the given runs of a thread, or every run in a status (pending, running, all)."""
        targets: dict[str, list[str]] = {}
        if status is not None:
            for tid, rid in await self.storage.inflight_run_ids(
                None if status == "all" else status
            ):
                targets.setdefault(tid, []).append(rid)
        elif thread_id is not None and run_ids:
            targets[thread_id] = run_ids
        cancelled: list[Cancelled] = []
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
