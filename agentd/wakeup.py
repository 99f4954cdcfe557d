"""How the background loops (the worker, the webhook sender, the cron scheduler) sleep: until
they are woken or their next due time comes, whichever is first; never by polling."""

from __future__ import annotations

import asyncio
import time


async def wait_until(wake: asyncio.Event, due_at: float | None) -> None:
    """Return once ``wake`` is set or at ``due_at`` (epoch seconds; None: no due time).

    asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancel that arrives
    with a wake-up, and whoever stops the loop would wait forever."""
    timeout = None if due_at is None else max(0.0, due_at - time.time())
    try:
        async with asyncio.timeout(timeout):
            await wake.wait()
    except TimeoutError:
        pass
