"""The thread TTL sweeper: a background task that applies the TTL of expired threads (delete
them, or keep only their latest checkpoint), so storage does not grow without bound."""

from __future__ import annotations

import asyncio
import logging

from agentd.storage.base import Storage

log = logging.getLogger("agentd.sweeper")


class ThreadSweeper:
    def __init__(self, storage: Storage, interval_minutes: float, limit: int):
        self.storage = storage
        self.interval = interval_minutes * 60
        self.limit = limit
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="thread-ttl-sweeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            # gather, not suppress(CancelledError): a cancel aimed at our caller still lands.
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def sweep(self) -> int:
        """One sweep: batches of ``limit`` threads until none is left; returns how many."""
        total = 0
        while True:
            deleted, pruned = await self.storage.sweep_threads(self.limit)
            total += len(deleted) + len(pruned)
            if deleted or pruned:
                log.info("thread TTL: deleted %d, pruned %d", len(deleted), len(pruned))
            if len(deleted) + len(pruned) < self.limit:
                return total

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.sweep()
            except Exception:  # the next sweep tries again; the server keeps serving
                log.exception("thread TTL sweep failed")
