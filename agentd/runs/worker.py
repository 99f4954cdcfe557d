"""The worker pool: claim runnable runs as soon as a slot is free, run each in its own task,
cancel on request, and hand unfinished runs back to the queue on shutdown."""

from __future__ import annotations

import asyncio
import logging
import time

from agentd.broker.base import Broker
from agentd.runs.executor import Executor
from agentd.storage.base import Row, Storage

log = logging.getLogger("agentd.worker")
EARLY_CANCEL_TTL = 60.0


class Worker:
    def __init__(self, storage: Storage, broker: Broker, executor: Executor, jobs: int):
        self.storage = storage
        self.broker = broker
        self.executor = executor
        self.jobs = jobs
        self._tasks: dict[str, asyncio.Task[str]] = {}
        self._wake = asyncio.Event()
        self._due_at: float | None = None
        self._loop_task: asyncio.Task[None] | None = None
        # Cancels that arrived between a claim's commit and its task's start: run_id -> action.
        self._early_cancels: dict[str, tuple[str, float]] = {}

    @property
    def active(self) -> int:
        return len(self._tasks)

    async def start(self) -> None:
        requeued = await self.storage.requeue_running()
        if requeued:
            log.warning("requeued %d run(s) left running by a previous process", requeued)
        self._due_at = await self.storage.next_due_at()
        self.broker.attach_worker(self.notify, self.cancel)
        self._wake.set()
        self._loop_task = asyncio.create_task(self._loop(), name="agentd-worker")

    async def stop(self) -> None:
        """Stop claiming, cancel running runs (they go back to pending), wait for them."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def notify(self, due_at: float | None = None) -> None:
        """A run was queued: claim now, or at ``due_at`` (epoch seconds) for delayed runs."""
        if due_at is not None and due_at > time.time():
            if self._due_at is None or due_at < self._due_at:
                self._due_at = due_at
        self._wake.set()

    def cancel(self, run_id: str, action: str) -> bool:
        task = self._tasks.get(run_id)
        if task is None:
            now = time.monotonic()
            self._early_cancels = {
                k: v for k, v in self._early_cancels.items() if now - v[1] < EARLY_CANCEL_TTL
            }
            self._early_cancels[run_id] = (action, now)
            return False
        if task.done():
            return False
        self.executor.cancel_actions[run_id] = action
        task.cancel()
        return True

    async def _loop(self) -> None:
        while True:
            timeout = None
            if self._due_at is not None:
                timeout = max(0.0, self._due_at - time.time())
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancel
                # that arrives with a wake-up, and stop() would wait forever.
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            if self._due_at is not None and self._due_at <= time.time():
                self._due_at = None
            try:
                await self._claim_while_free()
            except Exception:
                log.exception("claiming runs failed; retrying")
                await asyncio.sleep(1)
                self._wake.set()

    async def _claim_while_free(self) -> None:
        while len(self._tasks) < self.jobs:
            runs = await self.storage.claim_runs(self.jobs - len(self._tasks))
            if not runs:
                if self._due_at is None:
                    self._due_at = await self.storage.next_due_at()
                return
            for run in runs:
                self._start(run)

    def _start(self, run: Row) -> None:
        run_id = run["run_id"]
        task = asyncio.create_task(self.executor.execute(run), name=f"run-{run_id}")
        self._tasks[run_id] = task
        task.add_done_callback(lambda t, rid=run_id: self._finished(rid, t))
        early = self._early_cancels.pop(run_id, None)
        if early is not None:
            self.cancel(run_id, early[0])

    def _finished(self, run_id: str, task: asyncio.Task[str]) -> None:
        self._tasks.pop(run_id, None)
        self.executor.cancel_actions.pop(run_id, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("run %s crashed the executor", run_id, exc_info=task.exception())
        self._wake.set()  # a slot is free and the thread may have a next run
