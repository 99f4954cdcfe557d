"""What the conformance tests share: rows shaped as the services build them, a small LangGraph
graph that writes real checkpoints through ``storage.checkpointer``, readers of a thread's
checkpoint history and of the webhook outbox, and JSON equality for the filter tests.

Only the ``Storage`` protocol's public methods and LangGraph's own saver are used: the same
helpers serve every backend."""

from __future__ import annotations

import operator
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypedDict

import orjson
from langgraph.graph import END, START, StateGraph

from agentd.ids import uuid7
from agentd.storage.base import Row, Storage, WebhookDelivery

# The ``open_backend`` fixture: opens a storage of the backend under test (open_storage options
# as keywords) on fresh data.
OpenBackend = Callable[..., Awaitable[Storage]]

HOOK = "https://hooks.example.com/agentd"
ASSISTANT = "a0000000-0000-4000-8000-000000000001"


def iso(when: datetime) -> str:
    """An ISO-8601 UTC timestamp with microseconds, as agentd writes them."""
    return when.astimezone(UTC).isoformat(timespec="microseconds")


def now_iso(seconds: float = 0.0) -> str:
    return iso(datetime.now(UTC) + timedelta(seconds=seconds))


def new_id() -> str:
    return str(uuid7())


def new_run(
    thread_id: str,
    strategy: str = "enqueue",
    *,
    created_at: str | None = None,
    webhook: str | None = None,
    assistant_id: str = ASSISTANT,
    **kwargs: Any,
) -> Row:
    """A run row as ``RunService`` builds it (``created_at`` in the future: a delayed run)."""
    created = created_at or now_iso()
    return {
        "run_id": new_id(),
        "thread_id": thread_id,
        "assistant_id": assistant_id,
        "created_at": created,
        "updated_at": created,
        "metadata": {"graph_id": "g"},
        "kwargs": {"config": {"configurable": {}}, "webhook": webhook, **kwargs},
        "multitask_strategy": strategy,
    }


async def queue(
    storage: Storage,
    thread_id: str,
    strategy: str = "enqueue",
    *,
    if_not_exists: str = "create",
    **run: Any,
) -> tuple[Row, list[Any]]:
    created = await storage.create_run(
        new_run(thread_id, strategy, **run), thread_metadata={}, if_not_exists=if_not_exists
    )
    assert created is not None
    return created


async def status(storage: Storage, thread_id: str) -> str | None:
    thread = await storage.get_thread(thread_id)
    return None if thread is None else thread["status"]


async def run_status(storage: Storage, run_id: str) -> str | None:
    run = await storage.get_run(None, run_id)
    return None if run is None else run["status"]


async def finish(
    storage: Storage,
    run: Row,
    status_: str = "success",
    *,
    thread_status: str = "idle",
    values: Any = None,
    interrupts: Row | None = None,
    error: Row | None = None,
    **options: Any,
) -> bool:
    return await storage.finish_run(
        run["run_id"],
        run["thread_id"],
        run["attempt"],
        status_,
        thread_status=thread_status,
        values=values,
        interrupts=interrupts,
        error=error,
        **options,
    )


async def ensure_assistant(storage: Storage, assistant_id: str = ASSISTANT) -> Row:
    return await storage.create_assistant(
        {
            "assistant_id": assistant_id,
            "graph_id": "g",
            "config": {},
            "context": {},
            "metadata": {},
            "name": "g",
            "description": None,
        },
        "do_nothing",
    )


def new_cron(
    next_run_date: str | None,
    *,
    thread_id: str | None = None,
    assistant_id: str = ASSISTANT,
    metadata: Row | None = None,
    enabled: bool = True,
    end_time: str | None = None,
    created_at: str | None = None,
) -> Row:
    created = created_at or now_iso()
    return {
        "cron_id": new_id(),
        "assistant_id": assistant_id,
        "thread_id": thread_id,
        "user_id": None,
        "schedule": "* * * * *",
        "timezone": None,
        "end_time": end_time,
        "payload": {"input": {"v": 1}},
        "metadata": metadata or {},
        "on_run_completed": None,
        "enabled": enabled,
        "next_run_date": next_run_date,
        "created_at": created,
        "updated_at": created,
    }


# ---------------------------------------------------------------- webhooks


def delivery(run: Row, status_: str) -> WebhookDelivery:
    payload = orjson.dumps({"run_id": run["run_id"], "status": status_})
    return WebhookDelivery(str(uuid.uuid4()), run["run_id"], HOOK, payload)


def webhook_for(run: Row, status_: str) -> WebhookDelivery | None:
    """A ``WebhookFor`` as the sender's: a delivery for runs created with a webhook URL."""
    if not (run.get("kwargs") or {}).get("webhook"):
        return None
    return delivery(run, status_)


async def outbox(storage: Storage) -> list[Row]:
    """Every due delivery (leased for a minute by this read): run_id and decoded payload."""
    rows = await storage.claim_webhooks(10_000, 60)
    return [{**r, "payload": orjson.loads(bytes(r["payload"]))} for r in rows]


# ---------------------------------------------------------------- a graph with checkpoints


class State(TypedDict):
    log: Annotated[list[str], operator.add]


def _step(name: str) -> Any:
    def node(state: State) -> Row:
        return {"log": [name]}

    return node


def graph(checkpointer: Any) -> Any:
    """START -> a -> b -> END, each node appending its name to ``log``."""
    builder = StateGraph(State)
    builder.add_node("a", _step("a"))
    builder.add_node("b", _step("b"))
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    builder.add_edge("b", END)
    return builder.compile(checkpointer=checkpointer)


async def run_graph(
    storage: Storage,
    run: Row,
    graph_input: Any = None,
    *,
    interrupt_before: list[str] | None = None,
    checkpointer: Any = None,
) -> Any:
    """Execute ``run`` on its thread as the executor does (its run_id in the checkpoints'
    metadata, from the checkpoint its kwargs fork from, if any): checkpoints and writes land
    through ``checkpointer`` (default: ``storage.checkpointer``)."""
    stored = ((run.get("kwargs") or {}).get("config") or {}).get("configurable") or {}
    configurable = {"thread_id": run["thread_id"], "run_id": run["run_id"]}
    if stored.get("checkpoint_id"):
        configurable["checkpoint_id"] = stored["checkpoint_id"]
    config = {"configurable": configurable, "metadata": {"run_attempt": run.get("attempt", 1)}}
    return await graph(checkpointer or storage.checkpointer).ainvoke(
        graph_input, config, durability="sync", interrupt_before=interrupt_before
    )


async def history(storage: Storage, thread_id: str) -> list[tuple[Any, ...]]:
    """A thread's checkpoints, newest first, as LangGraph's saver lists them: namespace, id,
    parent id, values, metadata and pending writes."""
    assert storage.checkpointer is not None
    out = []
    async for t in storage.checkpointer.alist({"configurable": {"thread_id": thread_id}}):
        parent = t.parent_config["configurable"]["checkpoint_id"] if t.parent_config else None
        out.append(
            (
                t.config["configurable"].get("checkpoint_ns", ""),
                t.config["configurable"]["checkpoint_id"],
                parent,
                t.checkpoint["channel_values"],
                t.metadata,
                sorted((w[0], w[1], repr(w[2])) for w in t.pending_writes or ()),
            )
        )
    return out


async def latest_values(storage: Storage, thread_id: str) -> Any:
    assert storage.checkpointer is not None
    saved = await storage.checkpointer.aget_tuple({"configurable": {"thread_id": thread_id}})
    return None if saved is None else saved.checkpoint["channel_values"]


# ---------------------------------------------------------------- JSON equality


def canon(value: Any) -> Any:
    """A value's JSON identity: true is not 1, a string is not the object it spells, and an
    object's key order does not count."""
    if value is None:
        return ("null",)
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return ("number", value)
    if isinstance(value, str):
        return ("string", value)
    if isinstance(value, list):
        return ("array", tuple(canon(v) for v in value))
    if isinstance(value, dict):
        return ("object", frozenset((k, canon(v)) for k, v in value.items()))
    raise TypeError(type(value))


def matches(document: Row, flt: Row) -> bool:
    """A filter matches a document iff every key is present with a value equal to its own."""
    return all(key in document and canon(document[key]) == canon(v) for key, v in flt.items())
