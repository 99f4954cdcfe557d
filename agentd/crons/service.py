"""Create, update and delete crons: validate, build the payload, compute ``next_run_date``;
and the run request a firing queues from a cron."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from agentd import serde
from agentd.crons.schedule import as_utc, first_firing, iso, zone
from agentd.ids import uuid7
from agentd.runs.service import RunService
from agentd.runs.service import validate_body as validate_run
from agentd.schemas import (
    BadRequest,
    CronCreate,
    CronPatch,
    NotFound,
    RunCreate,
    ThreadCronCreate,
    Unprocessable,
)
from agentd.storage.base import Row, Storage

# The payload fields a firing passes on to its run; the rest describe the cron itself.
_RUN_FIELDS = (
    "input", "metadata", "config", "context", "webhook", "interrupt_before", "interrupt_after",
    "stream_mode", "stream_subgraphs", "stream_resumable", "durability", "checkpoint_during",
    "multitask_strategy",
)  # fmt: skip
# PATCH fields that change when the cron fires: next_run_date is computed again from now.
_TIMING_FIELDS = {"schedule", "timezone", "end_time", "enabled"}
# PATCH fields that are columns of the cron as well as payload fields.
_CRON_COLUMNS = ("schedule", "timezone", "enabled", "on_run_completed")


def run_request(cron: Row) -> RunCreate:
    """The run a firing of ``cron`` queues: its payload's run fields, the cron's metadata
    under the payload's, ``cron_id`` in the run's metadata, and for a stateless cron
    ``on_completion`` from ``on_run_completed``."""
    payload = cron["payload"]
    body: dict[str, Any] = {k: payload[k] for k in _RUN_FIELDS if payload.get(k) is not None}
    body["assistant_id"] = cron["assistant_id"]
    body["metadata"] = {**cron["metadata"], **(payload.get("metadata") or {}),
                        "cron_id": cron["cron_id"]}  # fmt: skip
    if body.get("context"):
        # A run takes either configurable or context: the injected cron_id must not make a
        # cron with a context unrunnable (the run's metadata carries the cron_id).
        config = dict(body.get("config") or {})
        configurable = {
            k: v for k, v in (config.get("configurable") or {}).items() if k != "cron_id"
        }
        config.pop("configurable", None)
        if configurable:
            config["configurable"] = configurable
        body["config"] = config
    if cron["thread_id"] is None:
        body["on_completion"] = cron["on_run_completed"] or "delete"
    return RunCreate.model_validate(body)


def _check_runnable(cron: Row) -> None:
    """What a firing would refuse is refused when the cron is written instead."""
    body = run_request(cron)
    validate_run(body, cron["thread_id"] is None)
    user_configurable = {
        k: v
        for k, v in ((cron["payload"].get("config") or {}).get("configurable") or {}).items()
        if k != "cron_id"
    }
    if user_configurable and body.context:
        raise BadRequest(
            "Cannot specify both configurable and context. Prefer setting context alone."
        )


def _end_time(value: datetime | None) -> datetime | None:
    end = as_utc(value)
    if end is not None and end <= serde.now():
        raise Unprocessable(f"end_time {end.isoformat()} is in the past: the cron would never run")
    return end


class CronService:
    def __init__(self, storage: Storage, runs: RunService, wake: Callable[[], None]):
        self.storage = storage
        self.runs = runs
        self._wake = wake  # the scheduler sleeps until the earliest next_run_date

    async def create(self, thread_id: str | None, body: ThreadCronCreate | CronCreate) -> Row:
        """A cron on ``thread_id``, or a stateless one (a new thread per firing) when None."""
        tz = zone(body.timezone)
        end = _end_time(body.end_time)
        now = serde.now()
        first = first_firing(body.schedule, tz, now)
        assistant = await self.runs.resolve_assistant(body.assistant_id)
        cron_id = str(uuid7())
        # The payload is the request as sent, with the assistant resolved and the cron's id
        # in config.configurable (as the official server records it).
        payload = body.model_dump(mode="json", exclude_unset=True, exclude_none=True)
        payload["assistant_id"] = assistant["assistant_id"]
        if thread_id is not None:
            payload.pop("on_run_completed", None)
        config = payload.setdefault("config", {})
        config["configurable"] = {**(config.get("configurable") or {}), "cron_id": cron_id}
        cron = {
            "cron_id": cron_id,
            "assistant_id": assistant["assistant_id"],
            "thread_id": thread_id,
            "user_id": "",
            "schedule": body.schedule,
            "timezone": body.timezone,
            "end_time": iso(end),
            "payload": payload,
            "metadata": body.metadata or {},
            "on_run_completed": body.on_run_completed if isinstance(body, CronCreate) else None,
            "enabled": body.enabled,
            "next_run_date": iso(None if end is not None and first > end else first),
            "created_at": now.isoformat(),
            "updated_at": now.isoformat(),
        }
        _check_runnable(cron)
        if body.webhook is not None:
            await self.runs.webhooks.check(body.webhook)  # the URL policy, before storing
        created = await self.storage.create_cron(cron)
        self._wake()
        return created

    async def update(self, cron_id: str, body: CronPatch) -> Row:
        fields = body.model_fields_set
        if not fields:
            raise BadRequest("Request body cannot be empty")
        # What does not depend on the stored cron is checked before the transaction.
        if "timezone" in fields:
            zone(body.timezone)
        end = _end_time(body.end_time) if "end_time" in fields else None
        if body.webhook is not None:
            await self.runs.webhooks.check(body.webhook)
        patch = body.model_dump(mode="json", exclude_unset=True)

        def change(cron: Row) -> Row:
            if "on_run_completed" in fields and cron["thread_id"] is not None:
                raise Unprocessable("on_run_completed applies to stateless crons only")
            now = serde.now()
            updated = {**cron, "updated_at": now.isoformat()}
            payload = {**cron["payload"]}
            for key, value in patch.items():
                if key in ("metadata", "end_time"):
                    continue
                if key in _CRON_COLUMNS:
                    if value is None and key != "timezone":  # a null timezone means UTC
                        continue
                    updated[key] = value
                if value is None:
                    payload.pop(key, None)
                else:
                    payload[key] = value
            if "end_time" in fields:
                updated["end_time"] = payload["end_time"] = iso(end)
                if end is None:
                    del payload["end_time"]
            if body.metadata is not None:
                updated["metadata"] = {**cron["metadata"], **body.metadata}
                payload["metadata"] = updated["metadata"]
            if "config" in patch:
                # The cron keeps its id in the payload's configurable whatever the new config.
                config = payload.setdefault("config", {})
                config["configurable"] = {**(config.get("configurable") or {}),
                                          "cron_id": cron["cron_id"]}  # fmt: skip
            updated["payload"] = payload
            if fields & _TIMING_FIELDS:
                tz = zone(updated["timezone"])
                first = first_firing(updated["schedule"], tz, now)
                stored_end = updated["end_time"]
                last = datetime.fromisoformat(stored_end) if stored_end else None
                updated["next_run_date"] = iso(None if last is not None and first > last else first)
            _check_runnable(updated)
            return updated

        updated = await self.storage.update_cron(cron_id, change)
        if updated is None:
            raise NotFound(f"Cron '{cron_id}' not found")
        self._wake()
        return updated

    async def delete(self, cron_id: str) -> None:
        if not await self.storage.delete_cron(cron_id):
            raise NotFound(f"Cron '{cron_id}' not found")
