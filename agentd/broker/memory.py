"""The in-process broker: run events fan out to local subscriber queues (per run and per
thread), resumable runs keep their events for late readers, and wake-ups and cancel signals
call the local worker directly."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

# An event is (id, name, JSON bytes); the end of a run is (id, DONE, status bytes).
Event = tuple[str, str, bytes]
DONE = "__done__"
# Event ids are "<epoch ms>-<seq>" (the shape of a Redis stream id): unique and increasing
# across runs and across restarts of the process, as long as the clock does not go backwards.
_EVENT_ID = re.compile(r"^(\d+)(?:-(\d+))?$")
RESUMABLE_TTL_SECONDS = 600.0


def parse_event_id(value: str) -> tuple[int, int] | None:
    """``(ms, seq)`` of an event id; ``-1`` (or ``-``) means before the first event."""
    if value in ("-1", "-", "0"):
        return (-1, -1)
    match = _EVENT_ID.match(value)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2) or 0)


class Subscription:
    def __init__(self, broker: MemoryBroker, key: str, kind: str):
        self._broker = broker
        self.key = key
        self.kind = kind  # "run" | "thread"
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self.replayed_end = False  # the kept events replayed at subscription include the end

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


@dataclass
class _RunChannel:
    thread_id: str
    resumable: bool
    shown: frozenset[str]  # event names (before any "|ns") the thread's subscribers see
    log: list[tuple[tuple[int, int], Event]] = field(default_factory=list)


class MemoryBroker:
    def __init__(self, *, resumable_ttl: float = RESUMABLE_TTL_SECONDS) -> None:
        self._run_subs: dict[str, set[Subscription]] = {}
        self._thread_subs: dict[str, set[Subscription]] = {}
        self._channels: dict[str, _RunChannel] = {}
        self._resumable_ttl = resumable_ttl
        self._last = (0, 0)
        self._on_wake: Callable[[float | None], None] | None = None
        self._on_cancel: Callable[[str, str], bool] | None = None

    def _next_id(self) -> tuple[str, tuple[int, int]]:
        ms = time.time_ns() // 1_000_000
        last_ms, seq = self._last
        self._last = (ms, 0) if ms > last_ms else (last_ms, seq + 1)
        return f"{self._last[0]}-{self._last[1]}", self._last

    # Run events ------------------------------------------------------------

    def open_run(
        self, run_id: str, thread_id: str, *, resumable: bool, shown: frozenset[str]
    ) -> None:
        """Called when a run starts executing: its thread, whether its events are kept, which
        of them its thread's subscribers see (the modes the run was asked to stream)."""
        channel = self._channels.get(run_id)
        if channel is None:
            self._channels[run_id] = _RunChannel(thread_id, resumable, shown)
        # A new attempt after a hand-back keeps appending to the same log.

    def subscribe(self, run_id: str, last_event_id: str | None = None) -> Subscription:
        """Events of one run from now on; with ``last_event_id``, first the kept events after
        it (resumable runs only)."""
        sub = Subscription(self, run_id, "run")
        channel = self._channels.get(run_id)
        if last_event_id is not None and channel is not None:
            after = parse_event_id(last_event_id) or (-1, -1)
            for key, event in channel.log:
                if key > after:
                    sub.queue.put_nowait(event)
                    sub.replayed_end |= event[1] == DONE
        self._run_subs.setdefault(run_id, set()).add(sub)
        return sub

    def subscribe_thread(self, thread_id: str, last_event_id: str | None = None) -> Subscription:
        """Events of every run on a thread, and its state updates, from now on; with
        ``last_event_id``, first the kept events (of resumable runs) after it."""
        sub = Subscription(self, thread_id, "thread")
        if last_event_id is not None:
            after = parse_event_id(last_event_id) or (-1, -1)
            kept = sorted(
                (key, event)
                for channel in self._channels.values()
                if channel.thread_id == thread_id
                for key, event in channel.log
                if key > after and event[1].split("|", 1)[0] in channel.shown
            )
            for _, event in kept:
                sub.queue.put_nowait(event)
        self._thread_subs.setdefault(thread_id, set()).add(sub)
        return sub

    def listened(self, run_id: str) -> bool:
        """Whether an event of this run would reach anyone: a subscriber of the run or of its
        thread, or the kept log of a resumable run."""
        if self._run_subs.get(run_id):
            return True
        channel = self._channels.get(run_id)
        return channel is not None and (
            channel.resumable or bool(self._thread_subs.get(channel.thread_id))
        )

    def _unsubscribe(self, sub: Subscription) -> None:
        table = self._run_subs if sub.kind == "run" else self._thread_subs
        subs = table.get(sub.key)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del table[sub.key]

    async def publish(self, run_id: str, event: str, data: bytes) -> None:
        self._emit(run_id, event, data)

    def _emit(self, run_id: str, event: str, data: bytes) -> str:
        event_id, key = self._next_id()
        item = (event_id, event, data)
        channel = self._channels.get(run_id)
        if channel is not None:
            if channel.resumable:
                channel.log.append((key, item))
            if event.split("|", 1)[0] in channel.shown:
                for sub in self._thread_subs.get(channel.thread_id, ()):
                    sub.queue.put_nowait(item)
        for sub in self._run_subs.get(run_id, ()):
            sub.queue.put_nowait(item)
        return event_id

    async def end(self, run_id: str, status: str, thread_id: str | None = None) -> None:
        """The run ended: its subscribers get DONE, its thread's a ``run_done`` metadata event."""
        self._emit(run_id, DONE, status.encode())
        channel = self._channels.get(run_id)
        thread_id = channel.thread_id if channel is not None else thread_id
        if thread_id is not None:
            self.publish_thread(
                thread_id, "metadata", orjson.dumps({"status": "run_done", "run_id": run_id})
            )
        if channel is not None:
            if channel.resumable and self._resumable_ttl > 0:
                asyncio.get_running_loop().call_later(
                    self._resumable_ttl, self._channels.pop, run_id, None
                )
            else:
                self._channels.pop(run_id, None)

    def release(self, run_id: str) -> None:
        """Forget a run's channel without ending it (its attempt was handed back)."""
        channel = self._channels.get(run_id)
        if channel is not None and not channel.resumable:
            self._channels.pop(run_id, None)

    def has_thread_subscribers(self, thread_id: str) -> bool:
        return bool(self._thread_subs.get(thread_id))

    def publish_thread(self, thread_id: str, event: str, data: bytes) -> None:
        """An event of the thread itself (not of a run): only its thread subscribers see it."""
        event_id, _ = self._next_id()
        for sub in self._thread_subs.get(thread_id, ()):
            sub.queue.put_nowait((event_id, event, data))

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
