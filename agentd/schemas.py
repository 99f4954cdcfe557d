"""The wire shapes: request bodies as pydantic models (validated by the API, described in the
OpenAPI document), the enums they use, and the errors every layer may raise."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

ThreadStatus = Literal["idle", "busy", "interrupted", "error"]
RunStatus = Literal["pending", "running", "success", "error", "timeout", "interrupted"]
MultitaskStrategy = Literal["reject", "rollback", "interrupt", "enqueue"]
StreamMode = Literal[
    "values", "messages", "messages-tuple", "tasks", "checkpoints", "updates", "events",
    "debug", "custom",
]  # fmt: skip
Durability = Literal["sync", "async", "exit"]
TERMINAL_RUN_STATUSES = ("success", "error", "timeout", "interrupted")
MAX_OFFSET = 2**63 - 1  # what a database integer holds
# A filter's keys become one SQL condition each, ANDed: SQLite nests such a chain one level per
# condition and refuses more than 1000 levels. A thread search carries two filters (metadata,
# values), each kept well under half of that.
MAX_FILTER_KEYS = 256


def _no_nul_keys(flt: dict[str, Any]) -> dict[str, Any]:
    # A key is a JSON path in the query: SQLite refuses a path holding NUL, and PostgreSQL's
    # JSON holds no NUL at all, so no stored key could match one.
    if any("\x00" in key for key in flt):
        raise ValueError("filter keys must not contain NUL characters")
    return flt


Filter = Annotated[dict[str, Any], Field(max_length=MAX_FILTER_KEYS), AfterValidator(_no_nul_keys)]
# A start further off than a year is a cron's job (or seconds mistaken for milliseconds); the
# due time must also stay a date the database and the clock can hold.
MAX_AFTER_SECONDS = 365 * 24 * 3600


class ApiError(Exception):
    """An error with an HTTP status; the API answers ``{"detail": message}``."""

    status_code = 400

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


class BadRequest(ApiError):
    status_code = 400


class NotFound(ApiError):
    status_code = 404


class Conflict(ApiError):
    status_code = 409


class Unprocessable(ApiError):
    status_code = 422


class ServiceUnavailable(ApiError):
    """A condition of the server, not of the request (e.g. the database could not commit):
    the same request may succeed later."""

    status_code = 503


class _Body(BaseModel):
    # Unknown fields are accepted, as the official server does; clients newer than us still work.
    model_config = ConfigDict(extra="allow")


class CheckpointConfig(_Body):
    thread_id: str | None = None
    checkpoint_ns: str | None = None
    checkpoint_id: str | None = None
    checkpoint_map: dict[str, Any] | None = None


class Send(_Body):
    node: str
    input: Any = None


class Command(_Body):
    update: dict[str, Any] | list[Any] | None = None
    resume: Any = None
    goto: Send | list[Send] | str | list[str] | None = None


class RunConfig(_Body):
    """LangChain's ``RunnableConfig`` as JSON can carry it: typed, so a wrong type is a 422
    rather than a run that fails (or a request that crashes) later."""

    tags: list[str] | None = None
    metadata: dict[str, Any] | None = None
    run_name: str | None = None
    recursion_limit: int | None = Field(default=None, ge=1)
    max_concurrency: int | None = Field(default=None, ge=1)
    configurable: dict[str, Any] | None = None


class RunCreate(_Body):
    """A run on a thread (``/threads/{id}/runs*``) or stateless (``/runs*``)."""

    assistant_id: str
    input: dict[str, Any] | list[Any] | str | int | float | bool | None = None
    command: Command | None = None
    checkpoint: CheckpointConfig | None = None
    checkpoint_id: str | None = None
    metadata: dict[str, Any] | None = None
    config: RunConfig | None = None
    context: dict[str, Any] | None = None
    webhook: str | None = Field(default=None, min_length=1, max_length=65536)
    interrupt_before: Literal["*"] | list[str] | None = None
    interrupt_after: Literal["*"] | list[str] | None = None
    stream_mode: StreamMode | list[StreamMode] | None = None
    stream_subgraphs: bool = False
    stream_resumable: bool = False
    feedback_keys: list[str] | None = None
    multitask_strategy: MultitaskStrategy = "enqueue"
    if_not_exists: Literal["create", "reject"] = "reject"
    on_completion: Literal["delete", "keep"] = "delete"
    on_disconnect: Literal["cancel", "continue"] = "continue"
    after_seconds: float | None = Field(default=None, ge=0, le=MAX_AFTER_SECONDS)
    checkpoint_during: bool | None = None
    durability: Durability | None = None


class RunsCancel(_Body):
    """``POST /runs/cancel``: runs of one thread by id, or every run in a status."""

    thread_id: str | None = None
    run_ids: list[str] | None = Field(default=None, min_length=1, max_length=1000)
    status: Literal["pending", "running", "all"] | None = None

    @model_validator(mode="after")
    def _one_selection(self) -> RunsCancel:
        by_ids = self.thread_id is not None or self.run_ids is not None
        if by_ids == (self.status is not None):
            raise ValueError("give either status, or thread_id and run_ids")
        if by_ids and (self.thread_id is None or self.run_ids is None):
            raise ValueError("thread_id and run_ids go together")
        return self


class ThreadTTL(_Body):
    """A thread's time to live: swept ``ttl`` minutes after its last write."""

    strategy: Literal["delete", "keep_latest"] = "delete"
    ttl: float = Field(gt=0, le=2**31)


class ThreadSuperstepUpdate(_Body):
    values: dict[str, Any] | list[Any] | None = None
    command: Command | None = None
    as_node: str


class ThreadSuperstep(_Body):
    updates: list[ThreadSuperstepUpdate]


class ThreadCreate(_Body):
    thread_id: str | None = None
    metadata: dict[str, Any] | None = None
    if_exists: Literal["raise", "do_nothing"] = "raise"
    ttl: ThreadTTL | None = None
    supersteps: list[ThreadSuperstep] | None = None


class ThreadPatch(_Body):
    metadata: dict[str, Any] | None = None
    ttl: ThreadTTL | None = None


class ThreadSearch(_Body):
    ids: list[str] | None = None
    metadata: Filter | None = None
    values: Filter | None = None
    status: ThreadStatus | None = None
    limit: int = Field(default=10, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)
    sort_by: Literal["thread_id", "status", "created_at", "updated_at", "state_updated_at"] = (
        "updated_at"
    )
    sort_order: Literal["asc", "desc"] = "desc"
    select: list[
        Literal[
            "thread_id", "created_at", "updated_at", "state_updated_at", "metadata", "config",
            "status", "values", "interrupts", "error",
        ]
    ] | None = None  # fmt: skip


class ThreadStateUpdate(_Body):
    values: dict[str, Any] | list[Any] | None = None
    checkpoint: CheckpointConfig | None = None
    checkpoint_id: str | None = None
    as_node: str | None = None


class ThreadStateSearch(_Body):
    limit: int = Field(default=1, ge=1, le=1000)
    before: CheckpointConfig | str | None = None
    metadata: Filter | None = None
    checkpoint: CheckpointConfig | None = None


class ThreadCount(_Body):
    metadata: Filter | None = None
    values: Filter | None = None
    status: ThreadStatus | None = None


class ThreadPrune(_Body):
    thread_ids: list[str]
    strategy: Literal["delete", "keep_latest"] = "delete"


StoreFilterOperator = Literal["$eq", "$ne", "$gt", "$gte", "$lt", "$lte"]
Namespace = list[str]


class StorePut(_Body):
    namespace: Namespace
    key: str = Field(min_length=1)
    value: dict[str, Any]
    index: Literal[False] | list[str] | None = None
    ttl: float | None = Field(default=None, gt=0, le=2**31)  # minutes


class StoreDelete(_Body):
    namespace: Namespace = []
    key: str = Field(min_length=1)


class StoreSearch(_Body):
    namespace_prefix: Namespace | None = None
    filter: Filter | None = None
    limit: int = Field(default=10, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)
    query: str | None = None
    refresh_ttl: bool | None = None


class StoreListNamespaces(_Body):
    prefix: Namespace | None = None
    suffix: Namespace | None = None
    max_depth: int | None = Field(default=None, ge=1)
    limit: int = Field(default=100, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)


class AssistantSearch(_Body):
    metadata: Filter | None = None
    graph_id: str | None = None
    name: str | None = None
    limit: int = Field(default=10, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)
    sort_by: Literal["assistant_id", "created_at", "updated_at", "name", "graph_id"] = "created_at"
    sort_order: Literal["asc", "desc"] = "desc"
    select: list[
        Literal[
            "assistant_id", "graph_id", "name", "description", "config", "context",
            "created_at", "updated_at", "metadata", "version",
        ]
    ] | None = None  # fmt: skip


class AssistantCount(_Body):
    metadata: Filter | None = None
    graph_id: str | None = None
    name: str | None = None


class AssistantCreate(_Body):
    assistant_id: str | None = None
    graph_id: str
    config: RunConfig | None = None
    context: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    if_exists: Literal["raise", "do_nothing"] = "raise"
    name: str | None = None
    description: str | None = None


class AssistantPatch(_Body):
    """Fields left out keep their value; ``metadata`` is merged into the stored one."""

    graph_id: str | None = None
    config: RunConfig | None = None
    context: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    name: str | None = None
    description: str | None = None


class AssistantVersionSearch(_Body):
    metadata: Filter | None = None
    limit: int = Field(default=10, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)


class AssistantVersionChange(_Body):
    version: int | None = Field(default=None, ge=1, le=MAX_OFFSET)


# ---------------------------------------------------------------- crons


class _CronRun(_Body):
    """What a cron's runs are made of: the run fields a cron stores in its ``payload``."""

    input: dict[str, Any] | list[Any] | str | int | float | bool | None = None
    metadata: dict[str, Any] | None = None
    config: RunConfig | None = None
    context: dict[str, Any] | None = None
    webhook: str | None = Field(default=None, min_length=1, max_length=65536)
    interrupt_before: Literal["*"] | list[str] | None = None
    interrupt_after: Literal["*"] | list[str] | None = None
    stream_mode: StreamMode | list[StreamMode] | None = None
    stream_subgraphs: bool | None = None
    stream_resumable: bool | None = None
    durability: Durability | None = None
    checkpoint_during: bool | None = None


class ThreadCronCreate(_CronRun):
    """A cron that runs on one thread (``POST /threads/{id}/runs/crons``)."""

    assistant_id: str
    schedule: str
    timezone: str | None = None
    end_time: datetime | None = None
    enabled: bool = True
    multitask_strategy: MultitaskStrategy | None = None


class CronCreate(ThreadCronCreate):
    """A stateless cron: each firing runs on a new thread (``POST /runs/crons``)."""

    on_run_completed: Literal["delete", "keep"] = "delete"


class CronPatch(_CronRun):
    """Every field optional; ``end_time: null`` clears the end time, an omitted one keeps it."""

    schedule: str | None = None
    timezone: str | None = None
    end_time: datetime | None = None
    on_run_completed: Literal["delete", "keep"] | None = None
    enabled: bool | None = None
    multitask_strategy: MultitaskStrategy | None = None


class CronSearch(_Body):
    assistant_id: str | None = None
    thread_id: str | None = None
    enabled: bool | None = None
    metadata: Filter | None = None
    limit: int = Field(default=10, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)
    sort_by: Literal[
        "cron_id", "assistant_id", "thread_id", "next_run_date", "end_time", "created_at",
        "updated_at",
    ] = "created_at"  # fmt: skip
    sort_order: Literal["asc", "desc"] = "desc"
    select: list[
        Literal[
            "cron_id", "assistant_id", "thread_id", "on_run_completed", "end_time", "schedule",
            "timezone", "created_at", "updated_at", "user_id", "payload", "next_run_date",
            "metadata", "enabled",
        ]
    ] | None = None  # fmt: skip


class CronCount(_Body):
    assistant_id: str | None = None
    thread_id: str | None = None
    metadata: Filter | None = None
