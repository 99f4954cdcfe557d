"""The Storage protocol on a relational database, written once for every backend.

Each method is a transaction: a plain function of a ``Tx`` (named queries, ``sql.py``) that a
backend's engine runs, with its own connections, threads and commit strategy
(``sqlite.py``: one writer thread and group commit; ``postgres.py``: a pool and row locks).
The rules (run creation and its multitask strategy, claims, the thread's status, cancels, cron
ticks, TTL, the webhook outbox, the event log) live here and nowhere else.

On a database where transactions really run side by side (PostgreSQL), every transaction that
reads a thread's runs to decide what to write first locks the thread's row
(``lock_thread``; a no-op on SQLite, whose one writer serializes them all), so a decision is
never made on a state another transaction is changing. Claims skip locked threads instead of
waiting for them."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from agentd.schemas import ApiError, Conflict, NotFound, Unprocessable
from agentd.storage.base import (
    LEASE_SECONDS,
    Cancelled,
    LoggedEvent,
    Row,
    StoredEvent,
    WebhookDelivery,
    WebhookFor,
)
from agentd.storage.rows import (
    CRON_MUTABLE,
    assistant_row,
    assistant_version_row,
    cron_row,
    run_row,
    thread_row,
)
from agentd.storage.sql import Dialect, Tx, Where, dumps, loads

T = TypeVar("T")
TxFn = Callable[[Tx], T]
EVENT_SWEEP_CHUNK = 5000
INFLIGHT = ("pending", "running")


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def at(seconds: float = 0.0) -> str:
    # Always with microseconds, so that stored strings sort in time order.
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat(timespec="microseconds")


def timestamp(value: str | None) -> float | None:
    return datetime.fromisoformat(value).timestamp() if value else None


class RelationalStorage:
    """A backend supplies the engine: ``_write`` (a transaction, durable when it returns),
    ``_read`` and ``_lookup`` (a point read), and ``dialect``."""

    dialect: Dialect

    def __init__(self, *, default_thread_ttl: tuple[str, float] | None = None):
        """``default_thread_ttl`` is the (strategy, minutes) every new thread gets."""
        if default_thread_ttl is not None:
            ttl_strategy(default_thread_ttl[0])
        self._default_thread_ttl = default_thread_ttl

    async def _write(self, fn: TxFn[T]) -> T:
        raise NotImplementedError

    async def _read(self, fn: TxFn[T]) -> T:
        raise NotImplementedError

    async def _lookup(self, fn: TxFn[T]) -> T:
        """A read of one row by key (a backend may serve it without a thread hop)."""
        return await self._read(fn)

    # ---------------------------------------------------------------- assistants

    async def sync_default_assistants(self, assistants: Sequence[Row]) -> None:
        """Create each graph's default assistant if missing. One never edited (still at a
        single version) follows its graph's name and description; one with versions made by
        a user keeps them."""

        def tx(tx: Tx) -> None:
            now = now_iso()
            system = dumps({"created_by": "system"})
            for a in assistants:
                ids = {"assistant_id": a["assistant_id"], "graph_id": a["graph_id"]}
                text = {"name": a["name"], "description": a["description"]}
                tx.run("insert_default_assistant", **ids, **text, metadata=system, now=now)
                tx.run("insert_first_assistant_version", assistant_id=a["assistant_id"])
                tx.run("resync_untouched_assistant", **ids, **text)
                tx.run("resync_untouched_assistant_version", **ids, **text)

        await self._write(tx)

    async def create_assistant(self, assistant: Row, if_exists: str) -> Row:
        """Insert an assistant and its version 1; an existing id is a Conflict, or with
        ``if_exists="do_nothing"`` the existing assistant unchanged."""

        def tx(tx: Tx) -> Row:
            row = tx.one("get_assistant", assistant_id=assistant["assistant_id"])
            if row is not None:
                if if_exists == "do_nothing":
                    return assistant_row(row)
                raise Conflict(f"Assistant {assistant['assistant_id']} already exists")
            now = now_iso()
            row = tx.one(
                "insert_assistant",
                assistant_id=assistant["assistant_id"],
                graph_id=assistant["graph_id"],
                config=dumps(assistant["config"]),
                context=dumps(assistant["context"]),
                metadata=dumps(assistant["metadata"]),
                name=assistant["name"],
                description=assistant["description"],
                version=1,
                now=now,
            )
            _insert_version(tx, row)
            return assistant_row(row)

        return await self._write(tx)

    async def get_assistant(self, assistant_id: str) -> Row | None:
        def q(tx: Tx) -> Row | None:
            row = tx.one("get_assistant", assistant_id=assistant_id)
            return assistant_row(row) if row else None

        return await self._lookup(q)

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
        """Make a new version from the latest one: None keeps a field, ``metadata`` is merged,
        and ``config.configurable`` always mirrors ``context``. None if there is no such
        assistant."""

        def tx(tx: Tx) -> Row | None:
            row = tx.one("lock_assistant", assistant_id=assistant_id)
            if row is None:
                return None
            current = assistant_row(row)
            new_context = context if context is not None else current["context"]
            new_config = {
                k: v
                for k, v in (config if config is not None else current["config"]).items()
                if k != "configurable"
            }
            if new_context:
                new_config["configurable"] = new_context
            latest = tx.one("latest_assistant_version", assistant_id=assistant_id)["version"]
            row = tx.one(
                "update_assistant",
                assistant_id=assistant_id,
                graph_id=graph_id or current["graph_id"],
                config=dumps(new_config),
                context=dumps(new_context),
                metadata=dumps({**current["metadata"], **(metadata or {})}),
                name=current["name"] if name is None else name,
                description=current["description"] if description is None else description,
                version=(latest or 0) + 1,
                now=now_iso(),
            )
            _insert_version(tx, row)
            return assistant_row(row)

        return await self._write(tx)

    async def set_latest_assistant_version(self, assistant_id: str, version: int) -> Row | None:
        """Make ``version`` the assistant's current one: the assistant takes all its fields.
        None if there is no such assistant; NotFound if it has no such version."""

        def tx(tx: Tx) -> Row | None:
            if tx.one("lock_assistant", assistant_id=assistant_id) is None:
                return None
            v = tx.one("get_assistant_version", assistant_id=assistant_id, version=version)
            if v is None:
                raise NotFound(f"Version {version} not found for assistant {assistant_id}")
            row = tx.one(
                "update_assistant",
                assistant_id=assistant_id,
                graph_id=v["graph_id"],
                config=_text(v["config"]),
                context=_text(v["context"]),
                metadata=_text(v["metadata"]),
                name=v["name"],
                description=v["description"],
                version=version,
                now=now_iso(),
            )
            return assistant_row(row)

        return await self._write(tx)

    async def delete_assistant(self, assistant_id: str) -> bool:
        """Delete an assistant and (by cascade) its versions."""
        return await self._write(
            lambda tx: tx.run("delete_assistant", assistant_id=assistant_id) > 0
        )

    async def assistant_inflight_runs(self, assistant_id: str) -> list[Row]:
        def q(tx: Tx) -> list[Row]:
            return [
                run_row(r) for r in tx.all("assistant_inflight_runs", assistant_id=assistant_id)
            ]

        return await self._read(q)

    async def assistant_thread_ids(self, assistant_id: str) -> list[str]:
        """Threads whose ``metadata.assistant_id`` names this assistant."""

        def q(tx: Tx) -> list[str]:
            where = Where()
            tx.dialect.json_equals(where, "metadata", "assistant_id", assistant_id)
            rows = tx.sql_all(f"SELECT thread_id FROM threads{where.clause()}", where.params)
            return [r["thread_id"] for r in rows]

        return await self._read(q)

    async def list_assistant_versions(
        self, assistant_id: str, *, metadata: Row | None, limit: int, offset: int
    ) -> list[Row]:
        """Versions, newest first."""

        def q(tx: Tx) -> list[Row]:
            where = Where()
            where.add(f"assistant_id = {where.param(assistant_id)}")
            _json_filter(tx.dialect, where, metadata)
            rows = tx.sql_all(
                f"SELECT * FROM assistant_versions{where.clause()} ORDER BY version DESC"
                f" LIMIT {where.param(limit)} OFFSET {where.param(offset)}",
                where.params,
            )
            return [assistant_version_row(r) for r in rows]

        return await self._read(q)

    async def get_assistant_version(self, assistant_id: str, version: int) -> Row | None:
        def q(tx: Tx) -> Row | None:
            row = tx.one("get_assistant_version", assistant_id=assistant_id, version=version)
            return assistant_version_row(row) if row else None

        return await self._read(q)

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
    ) -> tuple[list[Row], int]:
        """Assistants of the graphs in ``graph_ids`` (those served) matching the filters."""
        return await self._search(
            "assistants",
            lambda w, d: _assistant_filter(d, w, graph_ids, graph_id, metadata, name),
            sort_by, sort_order, limit, offset, assistant_row,
        )  # fmt: skip

    async def count_assistants(
        self,
        *,
        graph_ids: Sequence[str],
        graph_id: str | None,
        metadata: Row | None,
        name: str | None,
    ) -> int:
        return await self._count(
            "assistants", lambda w, d: _assistant_filter(d, w, graph_ids, graph_id, metadata, name)
        )

    # ---------------------------------------------------------------- threads

    async def create_thread(
        self,
        thread_id: str,
        metadata: Row,
        if_exists: str,
        ttl: tuple[str, float] | None = None,
    ) -> Row:
        """``ttl`` is (strategy, minutes); a thread that exists already is returned unchanged
        with ``if_exists="do_nothing"``."""

        def tx(tx: Tx) -> Row:
            row = self._insert_thread(tx, thread_id, metadata, "idle", ttl)
            if row is not None:
                return thread_row(row)
            if if_exists == "do_nothing":
                return thread_row(tx.one("get_thread", thread_id=thread_id))
            raise Conflict(f"Thread with ID {thread_id} already exists")

        return await self._write(tx)

    def _insert_thread(
        self, tx: Tx, thread_id: str, metadata: Row, status: str, ttl: tuple[str, float] | None
    ) -> Any:
        """Insert a thread with its TTL (the given one, else the default); None (and nothing
        written) if it exists."""
        now = now_iso()
        row = tx.one(
            "insert_thread", thread_id=thread_id, metadata=dumps(metadata), status=status, now=now
        )
        if row is not None and (ttl or self._default_thread_ttl):
            _set_ttl(tx, thread_id, ttl or self._default_thread_ttl)  # type: ignore[arg-type]
        return row

    async def get_thread(self, thread_id: str, *, with_values: bool = True) -> Row | None:
        """A thread; ``with_values=False`` leaves its values and interrupts out (``None``),
        for callers that only need its status, metadata or config: a long conversation's
        values are the bulk of the row."""
        name = "get_thread" if with_values else "get_thread_without_values"

        def q(tx: Tx) -> Row | None:
            row = tx.one(name, thread_id=thread_id)
            return thread_row(row) if row else None

        return await self._lookup(q)

    async def update_thread(
        self, thread_id: str, metadata: Row, ttl: tuple[str, float] | None = None
    ) -> Row | None:
        def tx(tx: Tx) -> Row | None:
            row = tx.one("lock_thread", thread_id=thread_id)
            if row is None:
                return None
            merged = {**loads(row["metadata"]), **metadata}
            row = tx.one(
                "update_thread_metadata", thread_id=thread_id, metadata=dumps(merged), now=now_iso()
            )
            if ttl is not None:
                _set_ttl(tx, thread_id, ttl)
            return thread_row(row)

        return await self._write(tx)

    async def delete_thread(self, thread_id: str) -> bool:
        def tx(tx: Tx) -> bool:
            found = tx.one("lock_thread", thread_id=thread_id) is not None
            # Checkpoints are in the same database: they go in the same transaction.
            _delete_threads(tx, [thread_id])
            return found

        return await self._write(tx)

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
    ) -> tuple[list[Row], int]:
        def build(where: Where, dialect: Dialect) -> None:
            if ids is not None:
                # Sorted: SQLite indexes the list before the search, several times faster so.
                dialect.in_list(where, "thread_id", sorted(set(ids)))
            _thread_filter(dialect, where, metadata, values, status)

        return await self._search("threads", build, sort_by, sort_order, limit, offset, thread_row)

    async def count_threads(
        self, *, metadata: Row | None, values: Row | None, status: str | None
    ) -> int:
        return await self._count(
            "threads", lambda w, d: _thread_filter(d, w, metadata, values, status)
        )

    async def copy_thread(self, thread_id: str, new_thread_id: str) -> Row | None:
        """A new thread with the metadata, state, TTL and every checkpoint and write of
        ``thread_id`` (None when it does not exist), in one transaction."""

        def tx(tx: Tx) -> Row | None:
            row = tx.one("copy_thread", thread_id=thread_id, new_thread_id=new_thread_id,
                         now=now_iso())  # fmt: skip
            if row is None:
                return None
            if self._default_thread_ttl:
                _set_ttl(tx, new_thread_id, self._default_thread_ttl)
            params = {"thread_id": thread_id, "new_thread_id": new_thread_id}
            tx.run("copy_thread_ttl", **params)
            tx.run("copy_thread_checkpoints", **params)
            return thread_row(row)

        return await self._write(tx)

    async def prune_threads(self, thread_ids: Sequence[str], strategy: str) -> int:
        """Delete the threads (``delete``) or all but their latest checkpoint
        (``keep_latest``) in one transaction; returns how many of them existed."""
        wanted = sorted(set(thread_ids))  # sorted: as in search, and a fixed lock order

        def tx(tx: Tx) -> int:
            found = [
                r["thread_id"] for r in tx.all("lock_threads", ids=tx.dialect.list_param(wanted))
            ]
            if strategy == "delete":
                _delete_threads(tx, found)
            else:
                busy = [t for t in found if _has_inflight_run(tx, t)]
                if busy:
                    # A pending run may fork from a checkpoint keep_latest would remove.
                    raise Conflict(
                        "keep_latest cannot prune threads with a pending or running run: "
                        f"{', '.join(busy)}"
                    )
                delta = [t for t in found if _uses_delta_channel(tx, t)]
                if delta:
                    raise Unprocessable(
                        "keep_latest cannot prune threads whose graph uses a DeltaChannel "
                        f"(their state is rebuilt from older checkpoints): {', '.join(delta)}"
                    )
                for thread_id in found:
                    _keep_latest(tx, thread_id)
            return len(found)

        return await self._write(tx) if thread_ids else 0

    async def get_thread_ttl(self, thread_id: str) -> Row | None:
        """The thread's TTL: strategy, minutes, and when it expires if nothing writes to it."""

        def q(tx: Tx) -> Row | None:
            row = tx.one("get_thread_ttl", thread_id=thread_id)
            if row is None:
                return None
            expires = datetime.fromisoformat(row["updated_at"]) + timedelta(
                minutes=row["ttl_minutes"]
            )
            return {"strategy": row["strategy"], "ttl_minutes": row["ttl_minutes"],
                    "expires_at": expires.isoformat()}  # fmt: skip

        return await self._read(q)

    async def sweep_threads(self, limit: int) -> tuple[list[str], list[str]]:
        """Apply the TTL of up to ``limit`` expired threads that have no pending or running run:
        returns the ids deleted and the ids pruned to their latest checkpoint."""

        def tx(tx: Tx) -> tuple[list[str], list[str]]:
            rows = tx.all("expired_threads", now=now_iso(), limit=limit)
            deleted = [r["thread_id"] for r in rows if r["strategy"] == "delete"]
            _delete_threads(tx, deleted)
            pruned = []
            for r in rows:
                if r["strategy"] != "keep_latest":
                    continue
                if not _uses_delta_channel(tx, r["thread_id"]):
                    _keep_latest(tx, r["thread_id"])
                    pruned.append(r["thread_id"])
                tx.run("mark_thread_swept", thread_id=r["thread_id"], swept_at=r["updated_at"])
            return deleted, pruned

        return await self._write(tx)

    async def set_thread_state(
        self, thread_id: str, values: Any, interrupts: Row, status: str
    ) -> None:
        def tx(tx: Tx) -> None:
            now = now_iso()
            if tx.one("lock_thread", thread_id=thread_id) is None:
                return
            tx.run("set_thread_state", thread_id=thread_id, values=dumps(values),
                   interrupts=dumps(interrupts), status=status, now=now)  # fmt: skip
            _settle_thread(tx, thread_id, now)

        await self._write(tx)

    async def _search(
        self,
        table: str,
        build: Callable[[Where, Dialect], None],
        sort_by: str,
        sort_order: str,
        limit: int,
        offset: int,
        convert: Callable[[Any], Row],
    ) -> tuple[list[Row], int]:
        # sort_by and sort_order are validated against fixed literals by the API schemas.
        order = "ASC" if sort_order == "asc" else "DESC"

        def q(tx: Tx) -> tuple[list[Row], int]:
            where = Where()
            build(where, tx.dialect)
            clause = where.clause()
            total = tx.sql_one(f"SELECT count(*) AS n FROM {table}{clause}", where.params)["n"]
            tie = tx.dialect.insertion_order
            rows = tx.sql_all(
                f"SELECT * FROM {table}{clause} ORDER BY {sort_by} {order}, {tie} {order}"
                f" LIMIT {where.param(limit)} OFFSET {where.param(offset)}",
                where.params,
            )
            return [convert(r) for r in rows], total

        return await self._read(q)

    async def _count(self, table: str, build: Callable[[Where, Dialect], None]) -> int:
        def q(tx: Tx) -> int:
            where = Where()
            build(where, tx.dialect)
            sql = f"SELECT count(*) AS n FROM {table}{where.clause()}"
            return int(tx.sql_one(sql, where.params)["n"])

        return await self._read(q)

    # ---------------------------------------------------------------- runs

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
        strategy, in one transaction: returns the run and the runs it cancelled (those that
        end here get their ``webhook`` delivery in the same transaction).

        With ``cron_tick`` (cron_id, due, next_run_date) the same transaction first claims
        that cron's tick: None when another scheduler has it. A run that cannot be created
        (its thread is gone, ``reject`` found it busy) still consumes the tick: the claim
        commits and the error is raised, so a crash can neither lose nor repeat a firing."""

        def tx(tx: Tx) -> tuple[Row, list[Cancelled]] | ApiError | None:
            if cron_tick is None:
                return self._insert_run(tx, run, thread_metadata, if_not_exists, webhook)
            if not _claim_cron(tx, *cron_tick):
                return None
            try:
                with tx.savepoint("run"):
                    return self._insert_run(tx, run, thread_metadata, if_not_exists, webhook)
            except ApiError as exc:
                return exc

        outcome = await self._write(tx)
        if isinstance(outcome, ApiError):
            raise outcome
        return outcome

    async def create_runs(self, items: Sequence[tuple[Row, Row]]) -> list[Row]:
        """Several ``create_run``s (run, options) in one transaction: all or none."""

        def tx(tx: Tx) -> list[Row]:
            return [self._insert_run(tx, run, **options)[0] for run, options in items]

        return await self._write(tx)

    def _insert_run(
        self,
        tx: Tx,
        run: Row,
        thread_metadata: Row,
        if_not_exists: str,
        webhook: WebhookFor | None = None,
    ) -> tuple[Row, list[Cancelled]]:
        """Insert a pending run and apply its multitask strategy to the thread's in-flight
        runs: ``reject`` refuses it (Conflict), ``interrupt``/``rollback`` cancel them,
        ``enqueue`` queues it behind them."""
        thread_id = run["thread_id"]
        now = now_iso()
        thread = tx.one("lock_thread", thread_id=thread_id)
        cancelled: list[Cancelled] = []
        if thread is None:
            if if_not_exists != "create":
                raise NotFound(f"Thread with ID {thread_id} not found")
            if self._insert_thread(tx, thread_id, thread_metadata, "busy", None) is None:
                # Created by a transaction that committed since ours looked: it is locked
                # now, and this run follows its strategy against that thread's runs.
                return self._insert_run(tx, run, thread_metadata, if_not_exists, webhook)
        else:
            inflight = [run_row(r) for r in tx.all("inflight_runs", thread_id=thread_id)]
            strategy = run["multitask_strategy"]
            if inflight and strategy == "reject":
                raise Conflict(
                    "Thread is already running a task. Wait for it to finish or choose a "
                    "different multitask strategy."
                )
            if inflight and strategy in ("interrupt", "rollback"):
                # In the same transaction as the new run: a crash cannot leave both to run.
                cancelled = _cancel(tx, inflight, strategy, webhook)
            if thread["status"] != "busy":  # a busy thread keeps the metadata its runs found
                metadata = {**loads(thread["metadata"]), **thread_metadata}
                tx.run("set_thread_metadata", thread_id=thread_id, metadata=dumps(metadata))
        row = tx.one(
            "insert_run",
            run_id=run["run_id"],
            thread_id=thread_id,
            assistant_id=run["assistant_id"],
            created_at=run["created_at"],
            updated_at=run["updated_at"],
            metadata=dumps(run["metadata"]),
            kwargs=dumps(run["kwargs"]),
            multitask_strategy=run["multitask_strategy"],
        )
        _settle_thread(tx, thread_id, now)
        return run_row(row), cancelled

    async def get_run(self, thread_id: str | None, run_id: str) -> Row | None:
        def q(tx: Tx) -> Row | None:
            if thread_id is None:
                row = tx.one("get_run", run_id=run_id)
            else:
                row = tx.one("get_thread_run", run_id=run_id, thread_id=thread_id)
            return run_row(row) if row else None

        return await self._lookup(q)

    async def list_runs(
        self, thread_id: str, *, limit: int, offset: int, status: str | None
    ) -> list[Row]:
        def q(tx: Tx) -> list[Row]:
            where = Where()
            where.add(f"thread_id = {where.param(thread_id)}")
            if status is not None:
                where.add(f"status = {where.param(status)}")
            tie = tx.dialect.insertion_order
            rows = tx.sql_all(
                f"SELECT * FROM runs{where.clause()} ORDER BY created_at DESC, {tie} DESC"
                f" LIMIT {where.param(limit)} OFFSET {where.param(offset)}",
                where.params,
            )
            return [run_row(r) for r in rows]

        return await self._read(q)

    async def inflight_runs(self, thread_id: str) -> list[Row]:
        def q(tx: Tx) -> list[Row]:
            return [run_row(r) for r in tx.all("inflight_runs", thread_id=thread_id)]

        return await self._read(q)

    async def inflight_run_ids(self, status: str | None) -> list[tuple[str, str]]:
        """(thread_id, run_id) of every run in ``status`` (pending or running; None: both)."""

        def q(tx: Tx) -> list[tuple[str, str]]:
            if status is None:
                rows = tx.all("inflight_run_ids")
            else:
                rows = tx.all("run_ids_in_status", status=status)
            return [(r["thread_id"], r["run_id"]) for r in rows]

        return await self._read(q)

    async def delete_run(self, thread_id: str, run_id: str) -> bool:
        def tx(tx: Tx) -> bool:
            if tx.one("lock_thread", thread_id=thread_id) is None:
                return False
            n = tx.run("delete_thread_run", run_id=run_id, thread_id=thread_id)
            if n:
                _delete_run_checkpoints(tx, thread_id, run_id)
            return n > 0

        return await self._write(tx)

    async def claim_runs(
        self, limit: int, *, owner: str = "agentd", lease: float = LEASE_SECONDS
    ) -> list[Row]:
        """Mark up to ``limit`` runnable runs ``running`` in one transaction, leased to
        ``owner`` for ``lease`` seconds: the oldest due pending run of each thread that has
        nothing running. Each claimed run carries ``resume`` (its thread's newest checkpoint
        is its own: a start cut short before) and ``cancel_action`` (a cancel asked of it
        before, to honour instead of running it)."""

        def tx(tx: Tx) -> list[Row]:
            now, until = now_iso(), at(lease)
            claimed: list[Row] = []
            for _ in range(limit):
                # Two statements: the thread (locked), then its run, decided on what is
                # committed once the lock is ours. Every transition of a thread's runs holds
                # that lock, so no other transaction changes them in between.
                thread = tx.one("claim_thread", now=now)
                if thread is None:
                    break
                row = tx.one(
                    "claim_thread_run", thread_id=thread["thread_id"], now=now, owner=owner,
                    until=until,
                )  # fmt: skip
                if row is None:
                    continue
                run = run_row(row)
                run["cancel_action"] = row["cancel_action"]
                # Its first claim ever (nothing noted, counted once): it has written nothing
                # of its own to resume from.
                first = row["start_writes"] is None and run["attempt"] == 1
                if row["start_writes"] is None:
                    _note_start_writes(tx, run)
                latest = (
                    None
                    if first
                    else tx.one("latest_checkpoint_run_id", thread_id=run["thread_id"])
                )
                run["resume"] = latest is not None and latest["run_id"] == run["run_id"]
                claimed.append(run)
            return claimed

        return await self._write(tx)

    async def run_cancel_action(self, run_id: str) -> str | None:
        """The cancel asked of a run (``interrupt``/``rollback``), if any: what its executor
        reads once it is ready to hear cancels, so one asked in between is not missed."""

        def q(tx: Tx) -> str | None:
            row = tx.one("run_cancel_action", run_id=run_id)
            return row["cancel_action"] if row else None

        return await self._lookup(q)

    async def next_due_at(self) -> float | None:
        def q(tx: Tx) -> float | None:
            return timestamp(tx.one("next_due_run", now=now_iso())["due"])

        return await self._read(q)

    async def ping(self) -> dict[str, str]:
        """The database answers (``/ok?check_db=1``); raises what a failed read raises."""
        await self._read(lambda tx: tx.one("ping"))
        return {self.dialect.name: "ok"}

    async def requeue_running(self) -> int:
        return await self._write(lambda tx: tx.run("requeue_running", now=now_iso()))

    async def renew_leases(
        self, owner: str, held: Sequence[tuple[str, int]], lease: float
    ) -> dict[str, str | None]:
        """Extend ``owner``'s leases on ``held`` runs (run_id, attempt) by ``lease`` seconds
        from now; returns those it still holds, each with the cancel recorded for it (the
        nudge through the broker may have been lost). A run missing from the answer was
        taken back (its lease ran out), ended, or deleted: its attempt must stop."""

        def tx(tx: Tx) -> dict[str, str | None]:
            tx.run("bounded_lock_wait")
            until = at(lease)
            kept = {}
            for run_id, attempt in held:
                row = tx.one(
                    "renew_lease", run_id=run_id, attempt=attempt, owner=owner, until=until
                )
                if row is not None:
                    kept[run_id] = row["cancel_action"]
            return kept

        return await self._write(tx) if held else {}

    async def take_back_expired(self, limit: int = 100) -> list[Row]:
        """Put running runs whose lease ran out back in the queue (their holder died or
        stalled; the attempt stays counted); returns them (run_id, thread_id, attempt)."""

        def tx(tx: Tx) -> list[Row]:
            now = at()
            taken = []
            for run in tx.all("expired_leases", now=now, limit=limit):
                # The thread's lock, as every transition of its runs takes (skipped while
                # another holds it); the lease is checked again under it, so a renewal that
                # won keeps the run.
                if tx.one("lock_thread_unless_busy", thread_id=run["thread_id"]) is None:
                    continue
                if tx.one("lock_expired_run", run_id=run["run_id"]) is None:
                    continue
                if tx.run("take_back_run", now=now, **run) > 0:
                    taken.append(dict(run))
            return taken

        # Cheap when nothing expired: a read first, the write only when there is work.
        if not await self._read(lambda tx: tx.all("expired_leases", now=at(), limit=1)):
            return []
        return await self._write(tx)

    async def requeue_run(self, run_id: str, attempt: int) -> bool:
        """Hand attempt ``attempt`` of a running run back to the queue (a shutdown), without
        counting it; False when that attempt no longer holds the run."""

        def tx(tx: Tx) -> bool:
            run = tx.one("get_run", run_id=run_id)
            if run is None or tx.one("lock_thread", thread_id=run["thread_id"]) is None:
                return False
            return tx.run("requeue_run", run_id=run_id, attempt=attempt, now=now_iso()) > 0

        return await self._write(tx)

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
        """Record the end of attempt ``attempt`` of a running run, write its outcome to the
        thread and put its ``webhook`` delivery in the outbox. Only the attempt that holds the
        run ends it, once: False when the run is no longer running under that attempt (or its
        thread was deleted meanwhile); else the thread's status after it (``busy``: another
        of its runs is queued, to claim now), or True when its thread went with it."""

        def tx(tx: Tx) -> str | bool:
            now = now_iso()
            if tx.one("lock_thread", thread_id=thread_id) is None:
                # Deleted while this run was still unwinding: the checkpoints it wrote after
                # the delete go too, or a thread re-created with the same id would see them.
                # The run ended all the same (cancelled by the delete): its webhook fires.
                _delete_threads(tx, [thread_id])
                _record_webhook(tx, webhook)
                return False
            if tx.one("held_run", run_id=run_id, attempt=attempt) is None:
                return False
            _record_webhook(tx, webhook)
            if delete:  # a temporary run's thread goes with it
                _delete_threads(tx, [thread_id])
                return True
            if rollback:
                _roll_back(tx, thread_id, run_id)  # again: a write may have landed since
                tx.run("delete_run", run_id=run_id)
            else:
                tx.run("set_run_status", run_id=run_id, status=status, now=now)
            params = {"thread_id": thread_id, "status": thread_status,
                      "error": dumps(error) if error else None}  # fmt: skip
            if values is None:
                tx.run("set_thread_outcome", **params)
            else:
                tx.run("set_thread_outcome_and_state", **params, values=dumps(values),
                       interrupts=dumps(interrupts or {}), now=now)  # fmt: skip
            return _settle_thread(tx, thread_id, now) or True

        return await self._write(tx)

    async def roll_back_run(self, thread_id: str, run_id: str) -> None:
        """Remove what a run wrote to its thread's checkpoints: the checkpoints it created
        and the writes it added to those it started from. The run itself stays (running)
        until ``finish_run(rollback=True)``, so its thread's state can be read in between."""

        def tx(tx: Tx) -> None:
            if tx.one("lock_thread", thread_id=thread_id) is not None:
                _roll_back(tx, thread_id, run_id)

        await self._write(tx)

    async def cancel_runs(
        self,
        thread_id: str,
        run_ids: Sequence[str],
        action: str,
        *,
        webhook: WebhookFor | None = None,
    ) -> list[Cancelled]:
        """Cancel the thread's in-flight runs among ``run_ids`` (see ``Cancelled``); a run that
        ends here gets its ``webhook(run, status)`` delivery in the same transaction."""

        def tx(tx: Tx) -> list[Cancelled]:
            if tx.one("lock_thread", thread_id=thread_id) is None:
                return []
            wanted = set(run_ids)
            rows = [
                run_row(r)
                for r in tx.all("inflight_runs", thread_id=thread_id)
                if r["run_id"] in wanted
            ]
            cancelled = _cancel(tx, rows, action, webhook)
            if cancelled:
                _settle_thread(tx, thread_id, now_iso())
            return cancelled

        return await self._write(tx)

    # ---------------------------------------------------------------- crons

    async def create_cron(self, cron: Row) -> Row:
        """Insert a cron; NotFound when its assistant or thread does not exist."""

        def tx(tx: Tx) -> Row:
            if tx.one("get_assistant", assistant_id=cron["assistant_id"]) is None:
                raise NotFound(f"Assistant {cron['assistant_id']} not found")
            thread_id = cron["thread_id"]
            if thread_id is not None and tx.one("lock_thread", thread_id=thread_id) is None:
                raise NotFound(f"Thread with ID {cron['thread_id']} not found")
            row = tx.one(
                "insert_cron",
                **{k: cron[k] for k in (
                    "cron_id", "assistant_id", "thread_id", "user_id", "schedule", "timezone",
                    "end_time", "on_run_completed", "next_run_date", "created_at", "updated_at",
                )},
                payload=dumps(cron["payload"]),
                metadata=dumps(cron["metadata"]),
                enabled=bool(cron["enabled"]),
            )  # fmt: skip
            return cron_row(row)

        return await self._write(tx)

    async def get_cron(self, cron_id: str) -> Row | None:
        def q(tx: Tx) -> Row | None:
            row = tx.one("get_cron", cron_id=cron_id)
            return cron_row(row) if row else None

        return await self._read(q)

    async def update_cron(self, cron_id: str, change: Callable[[Row], Row]) -> Row | None:
        """Apply ``change(current) -> changed fields`` in one transaction; None when missing.

        ``change`` runs inside the transaction, so it sees the row no one else is writing."""

        def tx(tx: Tx) -> Row | None:
            row = tx.one("lock_cron", cron_id=cron_id)
            if row is None:
                return None
            fields = change(cron_row(row))
            where = Where()
            sets = []
            for name in CRON_MUTABLE:
                if name in fields:
                    value = fields[name]
                    if name in ("payload", "metadata"):
                        value = dumps(value)
                    elif name == "enabled":
                        value = bool(value)
                    sets.append(f"{name} = {where.param(value)}")
            if not sets:
                return cron_row(row)
            where.add(f"cron_id = {where.param(cron_id)}")
            row = tx.sql_one(
                f"UPDATE crons SET {', '.join(sets)}{where.clause()} RETURNING *", where.params
            )
            return cron_row(row)

        return await self._write(tx)

    async def delete_cron(self, cron_id: str) -> bool:
        return await self._write(lambda tx: tx.run("delete_cron", cron_id=cron_id) > 0)

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
    ) -> tuple[list[Row], int]:
        return await self._search(
            "crons",
            lambda w, d: _cron_filter(d, w, assistant_id, thread_id, enabled, metadata),
            sort_by, sort_order, limit, offset, cron_row,
        )  # fmt: skip

    async def count_crons(
        self, *, assistant_id: str | None, thread_id: str | None, metadata: Row | None
    ) -> int:
        return await self._count(
            "crons", lambda w, d: _cron_filter(d, w, assistant_id, thread_id, None, metadata)
        )

    async def due_crons(self, now: str, limit: int = 100) -> list[Row]:
        """Enabled crons whose ``next_run_date`` is at or before ``now``, earliest first."""
        return await self._read(
            lambda tx: [cron_row(r) for r in tx.all("due_crons", now=now, limit=limit)]
        )

    async def claim_cron(self, cron_id: str, due: str, next_run_date: str | None) -> Row | None:
        """Claim the firing due at ``due``: move ``next_run_date`` from ``due`` to the next one.

        One conditional UPDATE (compare-and-set): of all the schedulers that saw the same due
        tick, exactly one gets the row back; the others get None. The same statement is safe
        under PostgreSQL's READ COMMITTED, where a second updater re-checks the WHERE clause
        after the first commits."""

        def tx(tx: Tx) -> Row | None:
            row = tx.one("claim_cron", cron_id=cron_id, due=due, next_run_date=next_run_date)
            return cron_row(row) if row else None

        return await self._write(tx)

    async def next_cron_at(self) -> float | None:
        """Epoch seconds of the earliest next firing of an enabled cron."""
        return await self._read(lambda tx: timestamp(tx.one("next_cron")["due"]))

    # ---------------------------------------------------------------- webhook outbox

    async def claim_webhooks(self, limit: int, lease: float) -> list[Row]:
        """Lease up to ``limit`` due deliveries for ``lease`` seconds, counting an attempt each.

        The lease is the due time moved forward: a delivery being sent is not due, and one
        whose sender died is due again when the lease runs out."""

        def tx(tx: Tx) -> list[Row]:
            rows = tx.all("claim_webhooks", until=at(lease), now=at(), limit=limit)
            return [{**dict(r), "payload": bytes(r["payload"])} for r in rows]

        return await self._write(tx)

    async def next_webhook_at(self) -> float | None:
        return await self._read(lambda tx: timestamp(tx.one("next_webhook")["due"]))

    async def retry_webhook(self, delivery_id: str, delay: float, *, counted: bool = True) -> None:
        def tx(tx: Tx) -> None:
            uncount = 0 if counted else 1
            tx.run("retry_webhook", delivery_id=delivery_id, due=at(delay), uncount=uncount)

        await self._write(tx)

    async def delete_webhook(self, delivery_id: str) -> None:
        await self._write(lambda tx: tx.run("delete_webhook", delivery_id=delivery_id))

    async def requeue_webhooks(self) -> int:
        """Deliveries leased by a dead process are due now: one process serves the database,
        so at start-up every lease is an orphan (the attempt it counted stays counted)."""
        return await self._write(lambda tx: tx.run("requeue_webhooks", now=at()))

    # ---------------------------------------------------------------- run events
    # The EventLog of the in-process broker (agentd.broker.base): resumable runs' events,
    # appended in batches, capped per run, expired after the run.

    async def append_events(
        self,
        events: Sequence[LoggedEvent],
        ends: Sequence[tuple[str, float]],
        *,
        max_events: int,
        max_bytes: int,
    ) -> None:
        def tx(tx: Tx) -> None:
            by_run: dict[str, list[LoggedEvent]] = {}
            for event in events:
                by_run.setdefault(event[0], []).append(event)
            for run_id, batch in by_run.items():
                _append_run_events(tx, run_id, batch, max_events, max_bytes)
            tx.many(
                "end_event_log",
                [{"run_id": run_id, "expires_at": expires_at} for run_id, expires_at in ends],
            )

        await self._write(tx)

    async def read_events(
        self, run_id: str, after: tuple[int, int], *, limit: int, max_bytes: int
    ) -> tuple[list[StoredEvent], bool | None]:
        def q(tx: Tx) -> tuple[list[StoredEvent], bool | None]:
            log_ = tx.one("get_event_log", run_id=run_id)
            expires_at = log_["expires_at"] if log_ else None
            if log_ is None or (expires_at is not None and expires_at <= time.time()):
                return [], None
            rows = tx.all("read_run_events", run_id=run_id, ms=after[0], seq=after[1],
                          limit=limit, max_bytes=max_bytes)  # fmt: skip
            return _event_page(rows, max_bytes), expires_at is not None

        return await self._read(q)

    async def read_thread_events(
        self, thread_id: str, after: tuple[int, int], *, limit: int, max_bytes: int
    ) -> list[StoredEvent]:
        def q(tx: Tx) -> list[StoredEvent]:
            rows = tx.all("read_thread_events", thread_id=thread_id, ms=after[0],
                          seq=after[1], now=time.time(), limit=limit,
                          max_bytes=max_bytes)  # fmt: skip
            return _event_page(rows, max_bytes)

        return await self._read(q)

    async def sweep_event_logs(self, ttl: float) -> int:
        now = time.time()

        def expired(tx: Tx) -> list[str]:
            # A log still open whose run is no longer in flight lost its end with a process.
            tx.run("expire_orphan_event_logs", expires_at=now + ttl)
            return [r["run_id"] for r in tx.all("expired_event_logs", now=now)]

        run_ids = await self._write(expired)
        for run_id in run_ids:
            # In chunks, so that other writes are not held up behind a long delete.
            while (
                await self._write(
                    lambda tx, run_id=run_id: tx.run(
                        "delete_run_events_chunk", run_id=run_id, limit=EVENT_SWEEP_CHUNK
                    )
                )
                == EVENT_SWEEP_CHUNK
            ):
                pass
            await self._write(
                lambda tx, run_id=run_id: tx.run("forget_event_log", run_id=run_id, now=now)
            )
        return len(run_ids)

    async def last_event_key(self) -> tuple[int, int] | None:
        def q(tx: Tx) -> tuple[int, int] | None:
            row = tx.one("last_event_key")
            return (row["ms"], row["seq"]) if row else None

        return await self._read(q)


# ---------------------------------------------------------------- the rules' parts


def _text(value: Any) -> str:
    """A JSON column's value as JSON text, whichever form the driver gave it in."""
    return value if isinstance(value, str) else dumps(loads(value))


def _insert_version(tx: Tx, row: Any) -> None:
    """Record an assistant row as its version ``row["version"]``."""
    tx.run(
        "insert_assistant_version",
        **{k: row[k] for k in ("assistant_id", "version", "graph_id", "name", "description")},
        config=_text(row["config"]), context=_text(row["context"]),
        metadata=_text(row["metadata"]), created_at=row["updated_at"],
    )  # fmt: skip


def _append_run_events(
    tx: Tx, run_id: str, batch: list[LoggedEvent], max_events: int, max_bytes: int
) -> None:
    """Append one run's events and trim its oldest past the caps."""
    row = tx.one("get_event_log", run_id=run_id)
    if row is None:
        tx.run("insert_event_log", run_id=run_id, thread_id=batch[0][1])
        count, size = 0, 0
    else:
        count, size = row["events"], row["bytes"]
    # Only the newest events of the batch that fit (at least one): older ones would be
    # trimmed at once.
    keep = keep_bytes = 0
    for event in reversed(batch):
        if keep and (keep + 1 > max_events or keep_bytes + len(event[5]) > max_bytes):
            break
        keep += 1
        keep_bytes += len(event[5])
    kept = batch[len(batch) - keep :]
    rows = [
        {"run_id": e[0], "thread_id": e[1], "ms": e[2], "seq": e[3], "event": e[4], "data": e[5]}
        for e in kept
    ]
    if tx.dialect.insert_events(tx, rows) == len(kept):
        # (else a batch written twice: its events are counted already)
        count, size = count + keep, size + keep_bytes
    if count > max_events or size > max_bytes:
        # Trim an eighth below the caps (as Redis's approximate MAXLEN ~ does): one larger
        # delete now and then costs far less than a few rows at every append. The cut is
        # the first old event by which enough events and bytes are counted, or all old ones.
        older = {"run_id": run_id, "ms": kept[0][2], "seq": kept[0][3]}
        cut = tx.one(
            "event_trim_point",
            **older,
            events=max(0, count - (max_events - max_events // 8)),
            bytes=max(0, size - (max_bytes - max_bytes // 8)),
        )
        if cut is None:
            cut = tx.one("events_before", **older)
            tx.run("delete_events_before", **older)
        else:
            tx.run("delete_events_through", run_id=run_id, ms=cut["ms"], seq=cut["seq"])
        count, size = count - cut["n"], size - cut["b"]
    tx.run("count_event_log", run_id=run_id, events=count, bytes=size)


def _event_page(rows: list[Any], max_bytes: int) -> list[StoredEvent]:
    """Rows up to ``max_bytes`` of data (at least one): the query read no more than that."""
    page: list[StoredEvent] = []
    size = 0
    for r in rows:
        data = bytes(r["data"])
        page.append((r["ms"], r["seq"], r["event"], data))
        size += len(data)
        if size >= max_bytes:
            break
    return page


def _cancel(tx: Tx, runs: list[Row], action: str, webhook: WebhookFor | None) -> list[Cancelled]:
    """Cancel in-flight runs (rows read in this transaction). A run that never started ends
    here (interrupted, or deleted on rollback). A run that is running, or that ran before
    and was handed back, is flagged: its executor ends it at a safe point, with the state
    its checkpoints left. The caller settles the thread's status."""
    now = now_iso()
    out: list[Cancelled] = []
    for run in runs:
        # A run handed back at a shutdown is pending at attempt 0 again, but it started:
        # its first claim noted start_writes.
        never_ran = (
            run["status"] == "pending"
            and run["attempt"] == 0
            and tx.one("run_start_writes", run_id=run["run_id"])["start_writes"] is None
        )
        if not never_ran:
            tx.run("flag_cancel", run_id=run["run_id"], action=action)
        elif action == "rollback":
            tx.run("delete_run", run_id=run["run_id"])
        else:
            tx.run("set_run_status", run_id=run["run_id"], status="interrupted", now=now)
        if never_ran and webhook is not None:  # it ends here: its webhook still fires
            status = "rollback" if action == "rollback" else "interrupted"
            _record_webhook(tx, webhook(run, status))
        out.append(Cancelled(run, action, ended=never_ran))
    return out


def _settle_thread(tx: Tx, thread_id: str, now: str) -> str | None:
    """The one place that writes a thread's status: ``busy`` while a run is pending or
    running, else its resting status (what its last run, cancel or state update left).
    Returns it (None when the thread is gone)."""
    row = tx.one("settle_thread", thread_id=thread_id, now=now)
    return row["status"] if row is not None else None


def _claim_cron(tx: Tx, cron_id: str, due: str, next_run_date: str | None) -> bool:
    return tx.one("claim_cron", cron_id=cron_id, due=due, next_run_date=next_run_date) is not None


def ttl_strategy(name: str) -> str:
    if name not in ("delete", "keep_latest"):
        raise ValueError(f"unknown thread TTL strategy {name!r}")
    return name


def _set_ttl(tx: Tx, thread_id: str, ttl: tuple[str, float]) -> None:
    tx.run(
        "set_thread_ttl", thread_id=thread_id, strategy=ttl_strategy(ttl[0]), minutes=float(ttl[1])
    )


def _delete_threads(tx: Tx, thread_ids: Sequence[str]) -> None:
    """Threads with their runs and TTL (cascades), checkpoints and writes."""
    for thread_id in thread_ids:
        tx.run("delete_thread", thread_id=thread_id)
        tx.run("delete_thread_checkpoints", thread_id=thread_id)


def _has_inflight_run(tx: Tx, thread_id: str) -> bool:
    return tx.one("has_inflight_run", thread_id=thread_id) is not None


# LangGraph's checkpoint tables. Their SQL is each backend's (``checkpoint_*`` queries, beside
# the saver whose tables they read), run in agentd's transactions so that a thread's rows and
# its checkpoints change together; tests/storage checks them against the savers themselves.


def _uses_delta_channel(tx: Tx, thread_id: str) -> bool:
    # A DeltaChannel leaves markers in checkpoint metadata (as LangGraph's own checkpointers
    # check before pruning): its value is rebuilt from older checkpoints.
    return tx.one("checkpoint_uses_delta_channel", thread_id=thread_id) is not None


def _keep_latest(tx: Tx, thread_id: str) -> None:
    """Keep only the newest checkpoint of each namespace (with its pending writes); the kept
    checkpoints lose their deleted parents. A subgraph call's namespace (``node:task``) is kept
    only when it belongs to the kept root checkpoint (an interrupted subgraph resumes from it)."""
    heads = tx.all("checkpoint_heads", thread_id=thread_id)
    root = next((h["checkpoint_id"] for h in heads if h["checkpoint_ns"] == ""), None)
    for h in heads:
        ns, head = h["checkpoint_ns"], h["checkpoint_id"]
        if ":" in ns:
            parent = tx.one("checkpoint_root_parent", thread_id=thread_id, checkpoint_ns=ns,
                            checkpoint_id=head)["parent"]  # fmt: skip
            if parent != root:
                head = None  # a finished call of an older root checkpoint: drop it all
        tx.run("checkpoint_keep_only", thread_id=thread_id, checkpoint_ns=ns, checkpoint_id=head)
    tx.run("checkpoint_drop_unused", thread_id=thread_id)


def _delete_run_checkpoints(tx: Tx, thread_id: str, run_id: str) -> None:
    tx.run("checkpoint_delete_run", thread_id=thread_id, run_id=run_id)
    tx.run("checkpoint_drop_unused", thread_id=thread_id)


def _note_start_writes(tx: Tx, run: Row) -> None:
    """Note the pending writes on the checkpoints ``run`` starts from (each namespace's
    newest, and the one it forks from): a resume or a fork adds its first writes to them."""
    thread_id = run["thread_id"]
    starts = {
        (h["checkpoint_ns"], h["checkpoint_id"])
        for h in tx.all("checkpoint_heads", thread_id=thread_id)
    }
    fork = ((run["kwargs"].get("config") or {}).get("configurable") or {}).get("checkpoint_id")
    if fork:
        configurable = run["kwargs"]["config"]["configurable"]
        starts.add((configurable.get("checkpoint_ns") or "", fork))
    noted = [
        [ns, cid, [[w["task_id"], w["idx"]] for w in tx.all(
            "checkpoint_writes_of", thread_id=thread_id, checkpoint_ns=ns, checkpoint_id=cid)]]
        for ns, cid in sorted(starts)
    ]  # fmt: skip
    tx.run("note_start_writes", run_id=run["run_id"], start_writes=dumps(noted))


def _roll_back(tx: Tx, thread_id: str, run_id: str) -> None:
    """Delete the checkpoints a run created and the writes it added to the checkpoints it
    started from (as noted at its first claim)."""
    _delete_run_checkpoints(tx, thread_id, run_id)
    row = tx.one("run_start_writes", run_id=run_id)
    for ns, checkpoint_id, kept in (
        loads(row["start_writes"]) if row and row["start_writes"] else ()
    ):
        keep = {(task_id, idx) for task_id, idx in kept}
        where = {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": checkpoint_id}
        for w in tx.all("checkpoint_writes_of", **where):
            if (w["task_id"], w["idx"]) not in keep:
                tx.run("checkpoint_delete_write", **where, task_id=w["task_id"], idx=w["idx"])


# ---------------------------------------------------------------- filters


def _json_filter(dialect: Dialect, where: Where, flt: Row | None, column: str = "metadata") -> None:
    """JSON containment of ``flt`` in ``column``: every key must match (objects compared whole)."""
    for key, value in (flt or {}).items():
        dialect.json_equals(where, column, str(key), value)


def _thread_filter(
    dialect: Dialect, where: Where, metadata: Row | None, values: Row | None, status: str | None
) -> None:
    if status is not None:
        where.add(f"status = {where.param(status)}")
    _json_filter(dialect, where, metadata)
    _json_filter(dialect, where, values, column='"values"')


def _assistant_filter(
    dialect: Dialect,
    where: Where,
    graph_ids: Sequence[str],
    graph_id: str | None,
    metadata: Row | None,
    name: str | None,
) -> None:
    dialect.in_list(where, "graph_id", list(graph_ids))
    if graph_id is not None:
        where.add(f"graph_id = {where.param(graph_id)}")
    if name is not None:
        dialect.contains_text(where, "name", name)
    _json_filter(dialect, where, metadata)


def _cron_filter(
    dialect: Dialect,
    where: Where,
    assistant_id: str | None,
    thread_id: str | None,
    enabled: bool | None,
    metadata: Row | None,
) -> None:
    for column, value in (("assistant_id", assistant_id), ("thread_id", thread_id)):
        if value is not None:
            where.add(f"{column} = {where.param(value)}")
    if enabled is not None:
        where.add(f"enabled = {where.param(enabled)}")
    _json_filter(dialect, where, metadata)


# ---------------------------------------------------------------- webhook outbox


def _record_webhook(tx: Tx, delivery: WebhookDelivery | None) -> None:
    """Put a delivery in the outbox, due now, in the caller's transaction. A run end recorded
    twice (a retried write whose first COMMIT did land) keeps one row."""
    if delivery is None:
        return
    now = at()
    tx.run("insert_webhook", delivery_id=delivery.delivery_id, run_id=delivery.run_id,
           url=delivery.url, payload=delivery.payload, now=now)  # fmt: skip
