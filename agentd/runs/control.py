"""What others may ask of a claimed run while it executes. Only its executor acts on a
request, at a safe point: nothing else cancels a run's task, so a request can never land on a
task that has not started, nor undo an end that is being recorded."""

from __future__ import annotations

import asyncio

CANCEL_ACTIONS = ("interrupt", "rollback")
SHUTDOWN = "shutdown"  # hand the run back to the queue: this process is stopping


class RunControl:
    def __init__(self) -> None:
        self.action: str | None = None
        self._asked = asyncio.Event()

    def request(self, action: str) -> None:
        """Ask the run to stop: ``interrupt``/``rollback`` (a user's cancel) or ``shutdown``.
        The first cancel wins; a cancel outranks a shutdown, so a run cancelled while its
        process stops is not queued again."""
        if self.action is None or (self.action == SHUTDOWN and action != SHUTDOWN):
            self.action = action
        self._asked.set()

    @property
    def cancelled(self) -> bool:
        return self.action in CANCEL_ACTIONS

    async def wait(self) -> None:
        await self._asked.wait()
