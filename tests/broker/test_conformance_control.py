"""Conformance: wake-ups and cancels reach the worker attached (in another process, for the
distributed broker)."""

from __future__ import annotations

import asyncio
import time

from tests.broker.conftest import Pair
from tests.broker.helpers import SETTLE, eventually, new_id


async def test_wake_and_cancel_reach_the_worker(pair: Pair) -> None:
    wakes: list[float | None] = []
    cancels: list[tuple[str, str]] = []

    def on_cancel(run_id: str, action: str) -> bool:
        cancels.append((run_id, action))
        return False  # not held here: fine

    pair.sub.attach_worker(wakes.append, on_cancel)
    # A worker's subscription takes a moment to start; what is sent before it is lost (a
    # nudge: the worker also polls).
    deadline = time.monotonic() + SETTLE
    while not wakes:
        assert time.monotonic() < deadline, "no wake-up reached the worker"
        await pair.pub.wake()
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)
    wakes.clear()
    await pair.pub.wake()
    await eventually(lambda: wakes == [None])
    await pair.pub.wake(1_900_000_000.25)
    await eventually(lambda: wakes == [None, 1_900_000_000.25])
    run = new_id()
    await pair.pub.cancel(run, "rollback")
    await eventually(lambda: cancels == [(run, "rollback")])
