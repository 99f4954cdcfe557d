"""The parts of a running agentd, wired together once for the chosen backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
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


@dataclass
class Services:
    settings: Settings
    storage: SqliteStorage
    broker: MemoryBroker
    graphs: GraphRegistry
    runs: RunService
    states: ThreadStates
    worker: Worker
    crons: CronService
    scheduler: Scheduler


@asynccontextmanager
async def open_services(settings: Settings, graphs: GraphRegistry) -> AsyncIterator[Services]:
    storage = SqliteStorage(settings.sqlite_path)
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
        runs = RunService(storage, broker, graphs)
        scheduler = Scheduler(storage, runs)
        services = Services(
            settings=settings,
            storage=storage,
            broker=broker,
            graphs=graphs,
            runs=runs,
            states=ThreadStates(storage, graphs),
            worker=worker,
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
    finally:
        await storage.close()
