"""What the broker tests share: ids, a run opened on a broker, and readers of a subscription
that never wait forever."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

from agentd.broker.base import DONE, Broker, Event, EventKey, Subscription, parse_event_id

# Long enough for an event to cross Redis on a loaded 2-core CI machine.
SETTLE = 10.0
# How long a test waits to be sure nothing more comes.
QUIET = 0.3


def new_id() -> str:
    return str(uuid.uuid4())


def key(event: Event) -> EventKey:
    parsed = parse_event_id(event[0])
    assert parsed is not None, event
    return parsed


def names(events: list[Event]) -> list[str]:
    return [e[1] for e in events]


def datas(events: list[Event]) -> list[bytes]:
    return [bytes(e[2]) for e in events if e[1] != DONE]


def assert_increasing(events: list[Event]) -> None:
    """Strictly increasing ids. A DONE's id is not part of the contract (it is never sent to a
    client; a replay's DONE may repeat the last id, or have none)."""
    keys = [key(e) for e in events if e[1] != DONE]
    assert keys == sorted(set(keys)), f"ids not strictly increasing: {[e[0] for e in events]}"


async def until_done(sub: Subscription, within: float = SETTLE) -> list[Event]:
    """Every event up to and including DONE; fails if DONE does not come in time."""
    out: list[Event] = []
    deadline = time.monotonic() + within
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"no DONE within {within}s; got {names(out)}"
        item = await sub.get(left)
        if item is None:
            continue
        out.append(item)
        if item[1] == DONE:
            return out


async def take(sub: Subscription, n: int, within: float = SETTLE) -> list[Event]:
    """Exactly the next ``n`` events."""
    out: list[Event] = []
    deadline = time.monotonic() + within
    while len(out) < n:
        left = deadline - time.monotonic()
        assert left > 0, f"got {len(out)} of {n} events within {within}s: {names(out)}"
        item = await sub.get(left)
        if item is not None:
            out.append(item)
    return out


async def nothing_more(sub: Subscription, wait: float = QUIET) -> None:
    item = await sub.get(wait)
    assert item is None, f"unexpected event {item}"


async def eventually(check: Callable[[], bool], within: float = SETTLE) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def run_events(
    broker: Broker,
    run_id: str,
    thread_id: str,
    events: list[tuple[str, bytes]],
    *,
    resumable: bool = False,
    shown: frozenset[str] = frozenset({"values", "updates"}),
    status: str | None = "success",
) -> None:
    """Open a run, publish ``events``, and end it with ``status`` (None: leave it open)."""
    broker.open_run(run_id, thread_id, resumable=resumable, shown=shown)
    for name, data in events:
        await broker.publish(run_id, name, data)
    if status is not None:
        await broker.end(run_id, status, thread_id)


def numbered(
    n: int, name: str = "values", size: int = 0, start: int = 0
) -> list[tuple[str, bytes]]:
    return [(name, f"{i:06d}".encode() + b"x" * size) for i in range(start, start + n)]
