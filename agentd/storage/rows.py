"""Database rows to wire-shaped dicts, the same for every backend: JSON columns arrive as JSON
text and timestamps as ISO-8601 strings (each engine sees to that)."""

from __future__ import annotations

from typing import Any

from agentd.storage.base import Row
from agentd.storage.sql import loads

# The columns ``update_cron`` may change.
CRON_MUTABLE = (
    "schedule", "timezone", "end_time", "payload", "metadata", "on_run_completed", "enabled",
    "next_run_date", "updated_at",
)  # fmt: skip


def thread_row(row: Any) -> Row:
    return {
        "thread_id": row["thread_id"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "state_updated_at": row["state_updated_at"],
        "metadata": loads(row["metadata"]),
        "status": row["status"],
        "config": loads(row["config"]),
        "values": loads(row["values"]),
        "interrupts": loads(row["interrupts"]) or {},
        "error": loads(row["error"]),
    }


def run_row(row: Any) -> Row:
    return {
        "run_id": row["run_id"],
        "thread_id": row["thread_id"],
        "assistant_id": row["assistant_id"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "metadata": loads(row["metadata"]),
        "status": row["status"],
        "kwargs": loads(row["kwargs"]),
        "multitask_strategy": row["multitask_strategy"],
        "attempt": row["attempt"],
    }


def assistant_row(row: Any) -> Row:
    return {
        "assistant_id": row["assistant_id"],
        "graph_id": row["graph_id"],
        "config": loads(row["config"]),
        "context": loads(row["context"]),
        "metadata": loads(row["metadata"]),
        "name": row["name"],
        "description": row["description"],
        "version": row["version"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def assistant_version_row(row: Any) -> Row:
    return {
        "assistant_id": row["assistant_id"],
        "version": row["version"],
        "graph_id": row["graph_id"],
        "config": loads(row["config"]),
        "context": loads(row["context"]),
        "metadata": loads(row["metadata"]),
        "name": row["name"],
        "description": row["description"],
        "created_at": row["created_at"],
    }


def cron_row(row: Any) -> Row:
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
        "payload": loads(row["payload"]),
        "user_id": row["user_id"],
        "next_run_date": row["next_run_date"],
        "metadata": loads(row["metadata"]),
        "enabled": bool(row["enabled"]),
    }
