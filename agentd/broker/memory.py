"""The in-process broker: run events fan out to local subscriber queues; wake-ups and
cancel signals call the local worker directly."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

# An event is (name, JSON bytes); the end of a run is (DONE, status bytes).
Event = tuple[str, bytes]
DONE = "__done__"


class Subscription:
    def __init__(self, broker: MemoryBroker, run_id: str):
        self._broker = broker
        self.run_id = run_id
        self.queue: asyncio.Queue[Event] = asyncio.Queue()

    async def get(self, wait: float | None = None) -> Event | None:
        """The next event, or None when ``wait`` seconds pass first."""
        if wait is None:
            return await self.queue.get()
        if not self.queue.empty():
            return self.queue.get_nowait()
        try:
            return await asyncio.wait_for(self.queue.get(), wait)
        except TimeoutError:
            return None

    def close(self) -> None:
        self._broker._unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class MemoryBroker:
    def __init__(self) -> None:
        self._subs: dict[str, set[Subscription]] = {}
        self._on_wake: Callable[[float | None], None] | None = None
        self._on_cancel: Callable[[str, str], bool] | None = None

    # Run events ------------------------------------------------------------

    def subscribe(self, run_id: str) -> Subscription:
        sub = Subscription(self, run_id)
        self._subs.setdefault(run_id, set()).add(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.run_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.run_id]

    async def publish(self, run_id: str, event: str, data: bytes) -> None:
        for sub in self._subs.get(run_id, ()):
            sub.queue.put_nowait((event, data))

    async def end(self, run_id: str, status: str) -> None:
        await self.publish(run_id, DONE, status.encode())

    # Worker control ----------------------------------------------------------

    def attach_worker(
        self, on_wake: Callable[[float | None], None], on_cancel: Callable[[str, str], bool]
    ) -> None:
        self._on_wake, self._on_cancel = on_wake, on_cancel

    async def wake(self, due_at: float | None = None) -> None:
        """A run was queued (due now, or at ``due_at`` epoch seconds)."""
        if self._on_wake is not None:
            self._on_wake(due_at)

    async def cancel(self, run_id: str, action: str) -> None:
        """Stop a running run wherever it runs; ``action`` is interrupt or rollback."""
        if self._on_cancel is not None:
            self._on_cancel(run_id, action)
