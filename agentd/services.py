"""The parts of a running agentd, wired together once for the chosen backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from agentd.broker.memory import MemoryBroker
from agentd.config import Settings
from agentd.embeddings import index_config
from agentd.graphs import GraphRegistry
from agentd.runs.executor import Executor
from agentd.runs.service import RunService
from agentd.runs.worker import Worker
from agentd.state import ThreadStates
from agentd.storage.sqlite import SqliteStorage
from agentd.sweeper import ThreadSweeper


@dataclass
class Services:
    settings: Settings
    storage: SqliteStorage
    broker: MemoryBroker
    graphs: GraphRegistry
    runs: RunService
    states: ThreadStates
    worker: Worker


@asynccontextmanager
async def open_services(settings: Settings, graphs: GraphRegistry) -> AsyncIterator[Services]:
    thread_ttl = settings.thread_ttl
    store_ttl = settings.store_ttl
    storage = SqliteStorage(
        settings.sqlite_path,
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
    )
    await storage.open()
    try:
        await storage.sync_default_assistants(graphs.default_assistants())
        broker = MemoryBroker()
        executor = Executor(
            storage,
            broker,
            graphs,
            timeout=settings.run_timeout,
            max_attempts=settings.max_attempts,
        )
        worker = Worker(storage, broker, executor, settings.jobs)
        services = Services(
            settings=settings,
            storage=storage,
            broker=broker,
            graphs=graphs,
            runs=RunService(storage, broker, graphs),
            states=ThreadStates(storage, graphs),
            worker=worker,
        )
        # Threads may carry their own TTL even when langgraph.json sets no default.
        sweeper = ThreadSweeper(
            storage,
            thread_ttl.sweep_interval_minutes if thread_ttl else 5,
            thread_ttl.sweep_limit if thread_ttl else 1000,
        )
        await worker.start()
        await sweeper.start()
        assert storage.store is not None
        await storage.store.start_ttl_sweeper()
        try:
            yield services
        finally:
            await storage.store.stop_ttl_sweeper(timeout=5)
            await sweeper.stop()
            await worker.stop()
    finally:
        await storage.close()
