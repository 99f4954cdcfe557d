"""The interface every storage backend implements. Rows come back as wire-shaped dicts."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.store.base import BaseStore

from agentd.schemas import ServiceUnavailable

Row = dict[str, Any]


# A kept event as written (run_id, thread_id, ms, seq, name, data) and as read (ms, seq, name,
# data): the shapes of agentd.broker.base's EventLog.
LoggedEvent = tuple[str, str, int, int, str, bytes]
StoredEvent = tuple[int, int, str, bytes]


class DatabaseUnavailable(ServiceUnavailable):
    """The database server could not be reached (or dropped the connection): nothing of the
    transaction was saved, and the same work may succeed once it is back. A run whose graph
    met it is handed back to the queue, not failed."""

    def __init__(self, reason: str):
        super().__init__(f"The database is unavailable ({reason}); retry later")


class LeaseLost(Exception):
    """A run's attempt wrote after it stopped holding the run (its lease ran out and the run
    was taken back, or the run ended or was deleted): nothing of the write was saved."""

    def __init__(self, run_id: str, attempt: int):
        super().__init__(f"run {run_id}: attempt {attempt} no longer holds the run")
        self.run_id, self.attempt = run_id, attempt


class StorageStartupError(Exception):
    """Storage that cannot be opened as configured (in use by another process, written by a
    newer agentd, a database URL not served): start-up stops with this one line."""


@dataclass(frozen=True)
class Cancelled:
    """A run a cancel reached, as it was before the cancel.

    ``ended``: it had never started and ended in the cancel's transaction (``interrupted``,
    or deleted on rollback). Otherwise it is running (or ran before and was handed back): it
    carries a durable cancel flag, and its executor ends it at a safe point."""

    run: Row
    action: str  # interrupt | rollback
    ended: bool


@dataclass(frozen=True)
class WebhookDelivery:
    """A webhook POST recorded in the outbox with its run's end, sent after the commit."""

    delivery_id: str  # stable across attempts: receivers drop a duplicate by it
    run_id: str
    url: str
    payload: bytes  # the JSON body; the sender adds webhook_sent_at to each attempt's copy


# The webhook of a run ending as ``status``, or None; pure, run inside the storage transaction.
WebhookFor = Callable[[Row, str], WebhookDelivery | None]


# How long a claimed run stays with its worker without a renewal, by default.
LEASE_SECONDS = 20.0


class Storage(Protocol):
    # LangGraph's own checkpointer and store on this backend, set by open().
    checkpointer: BaseCheckpointSaver[Any] | None
    store: BaseStore | None
    # Only this process can hold runs (the embedded file's lock): at start-up, whatever is
    # running was left by a dead process. Otherwise a run comes back when its lease runs out.
    exclusive: bool

    async def open(self) -> None: ...
    async def close(self) -> None: ...

    # Assistants
    async def sync_default_assistants(self, assistants: Sequence[Row]) -> None:
        """Create missing default assistants; re-sync name and description of those never
        edited (a single version); leave the others as their users made them."""
        ...

    async def create_assistant(self, assistant: Row, if_exists: str) -> Row: ...
    async def get_assistant(self, assistant_id: str) -> Row | None: ...
    async def update_assistant(
        self,
        assistant_id: str,
        *,
        graph_id: str | None = None,
        config: Row | None = None,
        context: Row | None = None,
        metadata: Row | None = None,
        name: str | None = None,
        description: str | None = None,
    ) -> Row | None:
        """Append a version (None keeps a field, metadata is merged, config.configurable
        mirrors context) and make it current; None if the assistant does not exist."""
        ...

    async def set_latest_assistant_version(self, assistant_id: str, version: int) -> Row | None:
        """The assistant takes the fields of ``version`` (NotFound if it has none such)."""
        ...

    async def delete_assistant(self, assistant_id: str) -> bool: ...
    async def assistant_inflight_runs(self, assistant_id: str) -> list[Row]: ...
    async def assistant_thread_ids(self, assistant_id: str) -> list[str]: ...
    async def get_assistant_version(self, assistant_id: str, version: int) -> Row | None: ...
    async def list_assistant_versions(
        self, assistant_id: str, *, metadata: Row | None, limit: int, offset: int
    ) -> list[Row]: ...
    async def search_assistants(
        self,
        *,
        graph_ids: Sequence[str],
        graph_id: str | None,
        metadata: Row | None,
        name: str | None,
        limit: int,
        offset: int,
        sort_by: str,
        sort_order: str,
    ) -> tuple[list[Row], int]: ...
    async def count_assistants(
        self,
        *,
        graph_ids: Sequence[str],
        graph_id: str | None,
        metadata: Row | None,
        name: str | None,
    ) -> int: ...

    # Threads
    async def create_thread(
        self,
        thread_id: str,
        metadata: Row,
        if_exists: str,
        ttl: tuple[str, float] | None = None,
    ) -> Row: ...
    async def get_thread(self, thread_id: str, *, with_values: bool = True) -> Row | None: ...
    async def update_thread(
        self, thread_id: str, metadata: Row, ttl: tuple[str, float] | None = None
    ) -> Row | None: ...
    async def delete_thread(self, thread_id: str) -> bool: ...
    async def search_threads(
        self,
        *,
        ids: Sequence[str] | None,
        metadata: Row | None,
        values: Row | None,
        status: str | None,
        limit: int,
        offset: int,
        sort_by: str,
        sort_order: str,
    ) -> tuple[list[Row], int]: ...
    async def count_threads(
        self, *, metadata: Row | None, values: Row | None, status: str | None
    ) -> int: ...
    async def copy_thread(self, thread_id: str, new_thread_id: str) -> Row | None:
        """A new thread with the metadata, state, TTL, checkpoints and writes of another."""
        ...

    async def prune_threads(self, thread_ids: Sequence[str], strategy: str) -> int:
        """``delete`` the threads or keep only their latest checkpoint (``keep_latest``);
        returns how many existed."""
        ...

    async def get_thread_ttl(self, thread_id: str) -> Row | None: ...
    async def sweep_threads(self, limit: int) -> tuple[list[str], list[str]]:
        """Apply the TTL of expired threads with no pending or running run: the ids deleted
        and the ids pruned to their latest checkpoint."""
        ...

    async def set_thread_state(
        self, thread_id: str, values: Any, interrupts: Row, status: str
    ) -> None: ...

    # Runs and the queue
    async def create_run(
        self,
        run: Row,
        *,
        thread_metadata: Row,
        if_not_exists: str,
        cron_tick: tuple[str, str, str | None] | None = None,
        webhook: WebhookFor | None = None,
    ) -> tuple[Row, list[Cancelled]] | None:
        """Insert a pending run (creating its thread if asked) and apply its multitask
        strategy (``run["multitask_strategy"]``) in one transaction; returns the run and the
        runs it cancelled. Raises NotFound for a missing thread with ``if_not_exists="reject"``,
        Conflict for ``reject`` on a thread with a pending or running run.

        ``cron_tick`` (cron_id, due, next_run_date): claim that tick in the same transaction;
        None when another scheduler holds it; a run that cannot be created still consumes it."""
        ...

    async def get_run(self, thread_id: str | None, run_id: str) -> Row | None: ...
    async def list_runs(
        self, thread_id: str, *, limit: int, offset: int, status: str | None
    ) -> list[Row]: ...
    async def inflight_runs(self, thread_id: str) -> list[Row]: ...
    async def delete_run(self, thread_id: str, run_id: str) -> bool: ...
    async def create_runs(self, items: Sequence[tuple[Row, Row]]) -> list[Row]:
        """Several ``create_run``s (run, its keyword arguments) in one transaction."""
        ...

    async def inflight_run_ids(self, status: str | None) -> list[tuple[str, str]]:
        """(thread_id, run_id) of every run in ``status`` (pending or running; None: both)."""
        ...

    async def claim_runs(
        self, limit: int, *, owner: str = "agentd", lease: float = LEASE_SECONDS
    ) -> list[Row]:
        """Mark up to ``limit`` runs running (attempt + 1), leased to ``owner`` for
        ``lease`` seconds: per thread with no running run, its oldest due pending run. Each
        carries ``resume`` (the thread's newest checkpoint is its own) and ``cancel_action``
        (a cancel to honour instead of running it)."""
        ...

    async def run_cancel_action(self, run_id: str) -> str | None:
        """The cancel asked of a run (``interrupt``/``rollback``), if any."""
        ...

    async def next_due_at(self) -> float | None:
        """Epoch seconds of the earliest pending run that is not due yet."""
        ...

    async def ping(self) -> dict[str, str]:
        """``{backend: "ok"}`` once the database answered a query (``/ok?check_db=1``)."""
        ...

    def fenced_checkpointer(self, run_id: str, attempt: int) -> BaseCheckpointSaver[Any]:
        """The checkpointer for attempt ``attempt`` of a run: its writes (checkpoints and
        pending writes) are saved only while that attempt holds the run, checked in the
        transaction that saves them; otherwise they raise LeaseLost and save nothing."""
        ...

    async def requeue_running(self) -> int:
        """Put every running run back to pending: at start-up, when this process is the only
        one that can hold runs (``exclusive``), every lease is stale."""
        ...

    async def renew_leases(
        self, owner: str, held: Sequence[tuple[str, int]], lease: float
    ) -> dict[str, str | None]:
        """Extend ``owner``'s leases on ``held`` (run_id, attempt) by ``lease`` seconds;
        the runs it still holds (the others' attempts must stop), each with the cancel
        recorded for it, if any."""
        ...

    async def take_back_expired(self, limit: int = 100) -> list[Row]:
        """Put running runs whose lease ran out back to pending (the attempt stays
        counted); returns them (run_id, thread_id, attempt)."""
        ...

    async def requeue_run(self, run_id: str, attempt: int) -> bool:
        """Hand attempt ``attempt`` of a running run back to the queue at shutdown, without
        counting it; False when that attempt no longer holds the run."""
        ...

    async def finish_run(
        self,
        run_id: str,
        thread_id: str,
        attempt: int,
        status: str,
        *,
        thread_status: str,
        values: Any,
        interrupts: Row | None,
        error: Row | None,
        delete: bool = False,
        rollback: bool = False,
        webhook: WebhookDelivery | None = None,
    ) -> str | bool:
        """End attempt ``attempt`` of a running run and write its outcome to the thread
        (``thread_status`` is its resting status); ``delete`` drops a temporary thread,
        ``rollback`` drops the run and its checkpoints; ``webhook`` goes into the outbox in
        the same transaction. Only the attempt holding the run ends it, once: False otherwise
        (a run whose thread was deleted meanwhile still gets its webhook). When it ends the
        run: the thread's status after it (``busy`` when another of its runs is queued), or
        True when the thread went with the run."""
        ...

    async def roll_back_run(self, thread_id: str, run_id: str) -> None:
        """Remove what a running run wrote to its thread's checkpoints (the checkpoints it
        created, the writes it added to those it started from), before its state is read
        and its end recorded with ``finish_run(rollback=True)``."""
        ...

    async def cancel_runs(
        self,
        thread_id: str,
        run_ids: Sequence[str],
        action: str,
        *,
        webhook: WebhookFor | None = None,
    ) -> list[Cancelled]:
        """Cancel the thread's pending/running runs among ``run_ids`` with ``action``
        (interrupt or rollback), in one transaction; a run that ends here gets its
        ``webhook(run, status)`` delivery in the outbox in the same transaction."""
        ...

    # Crons
    async def create_cron(self, cron: Row) -> Row:
        """Insert a cron; NotFound when its assistant or thread does not exist."""
        ...

    async def get_cron(self, cron_id: str) -> Row | None: ...
    async def update_cron(self, cron_id: str, change: Callable[[Row], Row]) -> Row | None:
        """Apply ``change(current) -> changed fields`` in one transaction; None when missing."""
        ...

    async def delete_cron(self, cron_id: str) -> bool: ...
    async def search_crons(
        self,
        *,
        assistant_id: str | None,
        thread_id: str | None,
        enabled: bool | None,
        metadata: Row | None,
        limit: int,
        offset: int,
        sort_by: str,
        sort_order: str,
    ) -> tuple[list[Row], int]: ...
    async def count_crons(
        self, *, assistant_id: str | None, thread_id: str | None, metadata: Row | None
    ) -> int: ...
    async def due_crons(self, now: str, limit: int = 100) -> list[Row]:
        """Enabled crons whose ``next_run_date`` is at or before ``now``, earliest first."""
        ...

    async def claim_cron(self, cron_id: str, due: str, next_run_date: str | None) -> Row | None:
        """Compare-and-set ``next_run_date`` from ``due`` to the next firing: of all the
        schedulers that saw the same due tick, exactly one gets the row back."""
        ...

    async def next_cron_at(self) -> float | None:
        """Epoch seconds of the earliest next firing of an enabled cron."""
        ...

    # The webhook outbox (rows: delivery_id, run_id, url, payload, attempt)
    async def claim_webhooks(self, limit: int, lease: float) -> list[Row]:
        """Lease up to ``limit`` due deliveries for ``lease`` seconds, oldest due first,
        counting an attempt for each; a delivery leased by another sender is not due."""
        ...

    async def next_webhook_at(self) -> float | None:
        """Epoch seconds at which the earliest delivery is due (or its lease runs out)."""
        ...

    async def retry_webhook(self, delivery_id: str, delay: float, *, counted: bool = True) -> None:
        """Release a leased delivery, due again in ``delay`` seconds; ``counted=False`` hands
        its attempt back (cut short by a shutdown, not by the receiver)."""
        ...

    async def delete_webhook(self, delivery_id: str) -> None:
        """Drop a delivery: delivered, or given up."""
        ...

    async def requeue_webhooks(self) -> int:
        """At start-up: deliveries leased by a dead process are due now (embedded mode only,
        where one process owns the database; a shared one lets their leases run out)."""
        ...

    # Run events: the EventLog of the in-process broker (see agentd.broker.base), which keeps
    # resumable runs' events in the database
    async def append_events(
        self,
        events: Sequence[LoggedEvent],
        ends: Sequence[tuple[str, float]],
        *,
        max_events: int,
        max_bytes: int,
    ) -> None:
        """Append events (in id order) and record ends (run_id, expiry); trim each run's log
        to its newest ``max_events`` / ``max_bytes``."""
        ...

    async def read_events(
        self, run_id: str, after: tuple[int, int], *, limit: int, max_bytes: int
    ) -> tuple[list[StoredEvent], bool | None]:
        """A page of a run's kept events after ``after``, and whether its log has ended
        (None: no log, or expired)."""
        ...

    async def read_thread_events(
        self, thread_id: str, after: tuple[int, int], *, limit: int, max_bytes: int
    ) -> list[StoredEvent]:
        """A page of the kept events of a thread's runs after ``after``, in id order."""
        ...

    async def sweep_event_logs(self, ttl: float) -> int:
        """Delete expired logs (ending those a dead process left open); how many went."""
        ...

    async def last_event_key(self) -> tuple[int, int] | None:
        """The id of the newest kept event: new ids continue after it."""
        ...
