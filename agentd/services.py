"""The parts of a running agentd, wired together once for the chosen backend."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass

from agentd.broker.base import Broker
from agentd.broker.memory import MemoryBroker
from agentd.config import Settings
from agentd.crons.scheduler import Scheduler
from agentd.crons.service import CronService
from agentd.embeddings import index_config
from agentd.graphs import GraphRegistry
from agentd.runs.executor import Executor
from agentd.runs.service import RunService
from agentd.runs.worker import Worker
from agentd.state import ThreadStates
from agentd.storage import open_storage
from agentd.storage.base import Storage
from agentd.sweeper import ThreadSweeper
from agentd.webhooks.sender import WebhookSender


@dataclass
class Services:
    settings: Settings
    storage: Storage
    broker: Broker
    graphs: GraphRegistry
    runs: RunService
    states: ThreadStates
    worker: Worker
    webhooks: WebhookSender
    crons: CronService
    scheduler: Scheduler


@asynccontextmanager
async def open_services(settings: Settings, graphs: GraphRegistry) -> AsyncIterator[Services]:
    # Sync graph nodes run on the loop's default executor (LangChain's run_in_executor): size
    # it for the slots, not for the CPU count, as their time is mostly blocking I/O.
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(
            max_workers=min(max(settings.jobs, 4), 64), thread_name_prefix="agentd-node"
        )
    )
    # With Redis, many processes share the database: runs, events and wake-ups travel
    # between them; without, this process serves it alone.
    shared = settings.redis_url is not None
    thread_ttl = settings.thread_ttl
    store_ttl = settings.store_ttl
    storage = open_storage(
        settings.storage_location,
        store_index=index_config(settings.store_index, settings.base_dir),
        # Always a TTL config, so items put with their own ``ttl`` are swept too.
        store_ttl={
            "refresh_on_read": store_ttl.refresh_on_read if store_ttl else True,
            "default_ttl": store_ttl.default_ttl if store_ttl else None,
            "sweep_interval_minutes": (store_ttl and store_ttl.sweep_interval_minutes) or 5,
        },
        default_thread_ttl=(
            (thread_ttl.strategy, thread_ttl.default_ttl)
            if thread_ttl and thread_ttl.default_ttl
            else None
        ),
        shared=shared,
    )
    await storage.open()
    try:
        await storage.sync_default_assistants(graphs.default_assistants())
        bounds = {
            "resumable_ttl": settings.resumable_ttl,
            "resumable_max_events": settings.resumable_max_events,
            "resumable_max_bytes": settings.resumable_max_bytes,
            "subscriber_max_bytes": settings.stream_subscriber_max_bytes,
        }
        broker: Broker
        if settings.redis_url is not None:
            from agentd.broker.redis import RedisBroker

            broker = RedisBroker(
                settings.redis_url,
                prefix=settings.redis_prefix,
                **bounds,  # type: ignore[arg-type]
            )
        else:
            # One process: events fan out in memory, resumable runs' events are kept in the
            # database.
            broker = MemoryBroker(storage, **bounds)  # type: ignore[arg-type]
        await broker.start()
        webhooks = WebhookSender(settings.webhooks, storage)
        executor = Executor(
            storage,
            broker,
            graphs,
            webhooks,
            timeout=settings.run_timeout,
            max_attempts=settings.max_attempts,
        )
        worker = Worker(
            storage,
            broker,
            executor,
            settings.jobs,
            lease=settings.lease_seconds,
            heartbeat=settings.heartbeat_seconds,
            drain=settings.drain_seconds,
        )
        runs = RunService(storage, broker, graphs, webhooks)
        scheduler = Scheduler(storage, runs)
        services = Services(
            settings=settings,
            storage=storage,
            broker=broker,
            graphs=graphs,
            runs=runs,
            states=ThreadStates(storage, graphs, max_history_bytes=settings.history_max_bytes),
            worker=worker,
            webhooks=webhooks,
            crons=CronService(storage, runs, scheduler.wake),
            scheduler=scheduler,
        )
        # Threads may carry their own TTL even when langgraph.json sets no default.
        sweeper = ThreadSweeper(
            storage,
            thread_ttl.sweep_interval_minutes if thread_ttl else 5,
            thread_ttl.sweep_limit if thread_ttl else 1000,
        )
        # Every process sends webhooks, fires crons and sweeps (each claimed once in the
        # database, whoever holds it); only those with run slots claim runs.
        await webhooks.start()  # before the worker: the sender is ready for the first end
        if settings.jobs > 0:
            await worker.start()
        await scheduler.start()
        await sweeper.start()
        assert storage.store is not None
        await storage.store.start_ttl_sweeper()
        # What start-up loaded (modules, graphs, the app: ~150k objects) lives as long as the
        # process: out of the collector's sight, a full collection costs milliseconds instead
        # of stalling every request for 100-300 ms whenever a burst of large states (history,
        # big runs) promotes enough objects to trigger one.
        gc.collect()
        gc.freeze()
        try:
            yield services
        finally:
            await storage.store.stop_ttl_sweeper(timeout=5)
            await sweeper.stop()
            await scheduler.stop()
            await worker.stop()
            await broker.stop()  # the events of runs just handed back are written first
            # Deliveries under way get a short grace; the rest stay in the outbox.
            await webhooks.stop()
    finally:
        await storage.close()
