"""What others may ask of a claimed run while it executes. Only its executor acts on a
request, at a safe point: nothing else cancels a run's task, so a request can never land on a
task that has not started, nor undo an end that is being recorded."""

from __future__ import annotations

import asyncio

CANCEL_ACTIONS = ("interrupt", "rollback")
SHUTDOWN = "shutdown"  # hand the run back to the queue: this process is stopping
LEASE_LOST = "lease_lost"  # another attempt may hold the run now: stop, record nothing


class RunControl:
    def __init__(self) -> None:
        self.action: str | None = None
        # Once the executor recorded the run's end: whether its thread has another run queued
        # (one to claim now). None when unknown: the worker then looks all the same.
        self.thread_queued: bool | None = None
        self._asked = asyncio.Event()

    def request(self, action: str) -> None:
        """Ask the run to stop: ``interrupt``/``rollback`` (a user's cancel), ``shutdown`` or
        ``lease_lost``. The first cancel wins; a cancel outranks a shutdown, so a run
        cancelled while its process stops is not queued again; a lost lease outranks all, as
        this attempt may no longer write anything."""
        if self.action == LEASE_LOST:
            pass
        elif action == LEASE_LOST or self.action is None or self.action == SHUTDOWN:
            self.action = action
        self._asked.set()

    @property
    def cancelled(self) -> bool:
        return self.action in CANCEL_ACTIONS

    async def wait(self) -> None:
        await self._asked.wait()
