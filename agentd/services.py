"""The parts of a running agentd, wired together once for the chosen backend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass

from agentd.broker.memory import MemoryBroker
from agentd.config import Settings
from agentd.crons.scheduler import Scheduler
from agentd.crons.service import CronService
from agentd.graphs import GraphRegistry
from agentd.runs.executor import Executor
from agentd.runs.service import RunService
from agentd.runs.worker import Worker
from agentd.state import ThreadStates
from agentd.storage.sqlite import SqliteStorage
from agentd.webhooks.sender import WebhookSender


@dataclass
class Services:
    settings: Settings
    storage: SqliteStorage
    broker: MemoryBroker
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
        ThreadPoolExecutor(max_workers=min(settings.jobs, 64), thread_name_prefix="agentd-node")
    )
    storage = SqliteStorage(settings.sqlite_path)
    await storage.open()
    try:
        await storage.sync_default_assistants(graphs.default_assistants())
        broker = MemoryBroker(resumable_ttl=settings.resumable_ttl)
        webhooks = WebhookSender(settings.webhooks)
        executor = Executor(
            storage,
            broker,
            graphs,
            webhooks,
            timeout=settings.run_timeout,
            max_attempts=settings.max_attempts,
        )
        worker = Worker(storage, broker, executor, settings.jobs)
        runs = RunService(storage, broker, graphs, webhooks)
        scheduler = Scheduler(storage, runs)
        services = Services(
            settings=settings,
            storage=storage,
            broker=broker,
            graphs=graphs,
            runs=runs,
            states=ThreadStates(storage, graphs),
            worker=worker,
            webhooks=webhooks,
            crons=CronService(storage, runs, scheduler.wake),
            scheduler=scheduler,
        )
        await worker.start()
        await scheduler.start()
        try:
            yield services
        finally:
            await scheduler.stop()
            await worker.stop()
            await webhooks.stop()  # deliveries under way get a short grace, then are abandoned
    finally:
        await storage.close()
