"""The in-process broker: run events fan out to local subscriber queues (per run and per
thread), each bounded in bytes; resumable runs' events are kept in an EventLog (through the
Journal) and replayed from there; wake-ups and cancel signals call the local worker directly.

Replays merge three sources with no gap and no duplicate: the log (read a page at a time),
the journal (events not committed yet) and live events. A run subscriber that replays is not
sent the run's kept events live: it reads them from the log and the journal until both are
exhausted, and becomes live in one synchronous step (nothing can be published meanwhile).
Events that are not kept (a run that is not resumable, the end of a run that never started
here) are held for it meanwhile. A thread subscriber replays the kept events up to the moment
it subscribed and queues everything after that live."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from agentd.broker.base import (
    BEFORE_FIRST,
    DONE,
    Event,
    EventKey,
    EventLog,
    StoredEvent,
    SubscriberDropped,
    format_event_id,
    parse_event_id,
)
from agentd.broker.journal import Journal

log = logging.getLogger("agentd.broker")
RESUMABLE_TTL_SECONDS = 600.0
RESUMABLE_MAX_EVENTS = 100_000
RESUMABLE_MAX_BYTES = 64 * 1024 * 1024
SUBSCRIBER_MAX_BYTES = 4 * 1024 * 1024
# What a queued event costs besides its data: the tuple, the id string, the queue's slot.
EVENT_OVERHEAD = 160
REPLAY_PAGE_EVENTS = 256
REPLAY_PAGE_BYTES = 1024 * 1024


def _size(item: Event) -> int:
    return len(item[2]) + EVENT_OVERHEAD


class MemorySubscription:
    def __init__(
        self,
        broker: MemoryBroker,
        key: str,
        kind: str,
        *,
        only: frozenset[str] | None = None,
        after: EventKey | None = None,
        until: EventKey | None = None,
    ) -> None:
        self._broker = broker
        self.key = key
        self.kind = kind  # "run" | "thread"
        self.only = only
        self.kept = False
        self.dropped = False
        self.closed = False
        # While replaying: the id of the last event handed over (None once live), and for a
        # thread subscriber the last id it replays (what came after is queued live).
        self.after = after
        self.until = until
        self._replayed: deque[Event] = deque()  # a page read back: small, not counted
        self._queue: deque[Event] = deque()  # live events, counted in `queued`
        self._held: list[tuple[EventKey, Event]] = []  # events not kept, while replaying
        self.queued = 0  # bytes of _queue and _held
        self._waiter: asyncio.Future[None] | None = None
        self._on_drop: list[Callable[[], None]] = []

    @property
    def replaying_run(self) -> bool:
        return self.after is not None and self.until is None

    async def get(self, wait: float | None = None) -> Event | None:
        while True:
            if self.dropped:
                raise SubscriberDropped(f"subscriber of {self.kind} {self.key} fell behind")
            if self._replayed:
                return self._replayed.popleft()
            if self.after is not None:
                await self._broker._replay(self)
                continue
            if self._queue:
                item = self._queue.popleft()
                self.queued -= _size(item)
                return item
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                if wait is None:
                    await self._waiter
                else:
                    try:
                        async with asyncio.timeout(wait):
                            await self._waiter
                    except TimeoutError:
                        return None
            finally:
                self._waiter = None

    def on_drop(self, callback: Callable[[], None]) -> None:
        self._on_drop.append(callback)

    def close(self) -> None:
        self.closed = True
        self._clear()
        self._broker._detach(self)

    def _put(self, item: Event) -> None:
        self._queue.append(item)
        self.queued += _size(item)
        self._wake()

    def _hold(self, key: EventKey, item: Event) -> None:
        self._held.append((key, item))
        self.queued += _size(item)

    def _hand_over(self, events: list[tuple[EventKey, Event]]) -> None:
        """Events read back, in id order: the cursor moves past them."""
        for key, item in events:
            if self.only is None or item[1] == DONE or item[1] in self.only:
                self._replayed.append(item)
            self.after = key

    def _go_live(self, events: list[tuple[EventKey, Event]]) -> None:
        self._hand_over(events)
        self.after = self.until = None
        self._held.clear()
        self.queued = sum(_size(item) for item in self._queue)

    def _drop(self) -> None:
        self.dropped = True
        self._clear()
        self._broker._detach(self)
        self._wake()
        callbacks, self._on_drop = self._on_drop, []
        for callback in callbacks:
            callback()

    def _clear(self) -> None:
        self._replayed.clear()
        self._queue.clear()
        self._held.clear()
        self.queued = 0

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


@dataclass
class _RunChannel:
    thread_id: str
    resumable: bool
    shown: frozenset[str]  # event names (before any "|ns") the thread's subscribers see
    attempt: int | None  # the attempt executing it: a lower one is fenced off


class MemoryBroker:
    def __init__(
        self,
        event_log: EventLog,
        *,
        resumable_ttl: float = RESUMABLE_TTL_SECONDS,
        resumable_max_events: int = RESUMABLE_MAX_EVENTS,
        resumable_max_bytes: int = RESUMABLE_MAX_BYTES,
        subscriber_max_bytes: int = SUBSCRIBER_MAX_BYTES,
    ) -> None:
        self._journal = Journal(
            event_log,
            ttl=resumable_ttl,
            max_events=resumable_max_events,
            max_bytes=resumable_max_bytes,
        )
        self._max_queued = subscriber_max_bytes
        self._run_subs: dict[str, set[MemorySubscription]] = {}
        self._thread_subs: dict[str, set[MemorySubscription]] = {}
        self._channels: dict[str, _RunChannel] = {}
        self._last: EventKey = (0, 0)
        self._on_wake: Callable[[float | None], None] | None = None
        self._on_cancel: Callable[[str, str], bool] | None = None

    async def start(self) -> None:
        last = await self._journal.start()
        if last is not None and last > self._last:
            self._last = last

    async def stop(self) -> None:
        await self._journal.stop()

    def _next_key(self) -> EventKey:
        ms = time.time_ns() // 1_000_000
        last_ms, seq = self._last
        self._last = (ms, 0) if ms > last_ms else (last_ms, seq + 1)
        return self._last

    # Run events ------------------------------------------------------------

    def open_run(
        self,
        run_id: str,
        thread_id: str,
        *,
        resumable: bool,
        shown: frozenset[str],
        attempt: int | None = None,
    ) -> None:
        if self._stale(run_id, attempt, opening=True):
            return
        # A new attempt (after a hand-back or a restart) appends to the same kept log.
        self._channels[run_id] = _RunChannel(thread_id, resumable, shown, attempt)

    def _stale(self, run_id: str, attempt: int | None, *, opening: bool = False) -> bool:
        """Whether ``attempt`` was overtaken: a newer attempt holds the run's channel, or
        (but for an open) the channel is gone: its run ended, or the attempt released it."""
        if attempt is None:
            return False
        channel = self._channels.get(run_id)
        if channel is None:
            return not opening
        return channel.attempt is not None and attempt < channel.attempt

    def listened(self, run_id: str) -> bool:
        if self._run_subs.get(run_id):
            return True
        channel = self._channels.get(run_id)
        return channel is not None and (
            channel.resumable or bool(self._thread_subs.get(channel.thread_id))
        )

    async def publish(
        self, run_id: str, event: str, data: bytes, *, attempt: int | None = None
    ) -> None:
        if self._stale(run_id, attempt):
            return
        if self._emit(run_id, event, data):
            await self._journal.room()  # only runs that keep events wait for the disk

    def _emit(self, run_id: str, event: str, data: bytes) -> bool:
        """Send an event to its subscribers and, if the run keeps it, to the journal."""
        key = self._next_key()
        item = (format_event_id(key), event, data)
        channel = self._channels.get(run_id)
        shown = kept = False
        if channel is not None:
            shown = event.split("|", 1)[0] in channel.shown
            # A resumable run keeps what its stream shows (not the values every run computes
            # for wait and join); its end is kept as the end of its log.
            kept = channel.resumable and (shown or event == DONE)
            if kept and event != DONE:
                self._journal.append((run_id, channel.thread_id, *key, event, data))
            if shown:
                for sub in tuple(self._thread_subs.get(channel.thread_id, ())):
                    self._deliver(sub, key, item, kept=kept)
        for sub in tuple(self._run_subs.get(run_id, ())):
            self._deliver(sub, key, item, kept=kept)
        return kept

    def _deliver(self, sub: MemorySubscription, key: EventKey, item: Event, *, kept: bool) -> None:
        name = item[1]
        if sub.only is not None and name != DONE and name not in sub.only:
            return
        if sub.replaying_run and kept:
            return  # it reads the event back from the journal or the log
        if name != DONE and sub.queued and sub.queued + _size(item) > self._max_queued:
            # Too far behind: free its queue now rather than buffer the run for it.
            log.info(
                "dropped a subscriber of %s %s: %d bytes queued (limit %d)",
                sub.kind, sub.key, sub.queued, self._max_queued,
            )  # fmt: skip
            sub._drop()
            return
        if sub.replaying_run:
            sub._hold(key, item)
        else:
            sub._put(item)

    async def end(
        self,
        run_id: str,
        status: str,
        thread_id: str | None = None,
        *,
        attempt: int | None = None,
    ) -> None:
        if self._stale(run_id, attempt):
            return
        channel = self._channels.get(run_id)
        self._emit(run_id, DONE, status.encode())
        # Closed in the same step as DONE went out: a replay switching to live sees both.
        self._channels.pop(run_id, None)
        if channel is None or channel.resumable:
            # Also ends a log an earlier process kept for a run that ends here unstarted.
            self._journal.end(run_id)
        thread_id = channel.thread_id if channel is not None else thread_id
        if thread_id is not None:
            payload = orjson.dumps({"status": "run_done", "run_id": run_id})
            await self.publish_thread(thread_id, "metadata", payload)

    def release(self, run_id: str, *, attempt: int | None = None) -> None:
        if not self._stale(run_id, attempt):
            self._channels.pop(run_id, None)

    async def subscribe(
        self,
        run_id: str,
        last_event_id: str | None = None,
        *,
        only: frozenset[str] | None = None,
    ) -> MemorySubscription:
        after = None
        if last_event_id is not None:
            after = parse_event_id(last_event_id) or BEFORE_FIRST
            channel = self._channels.get(run_id)
            if channel is not None and not channel.resumable:
                after = None  # nothing of it is kept: live only
        sub = MemorySubscription(self, run_id, "run", only=only, after=after)
        self._run_subs.setdefault(run_id, set()).add(sub)
        if after is not None:
            await self._replay(sub)  # the first page also tells whether anything is kept
        return sub

    # Thread events -----------------------------------------------------------

    async def subscribe_thread(
        self, thread_id: str, last_event_id: str | None = None
    ) -> MemorySubscription:
        after = None
        if last_event_id is not None:
            after = parse_event_id(last_event_id) or BEFORE_FIRST
        sub = MemorySubscription(
            self, thread_id, "thread", after=after, until=self._last if after is not None else None
        )
        self._thread_subs.setdefault(thread_id, set()).add(sub)
        return sub

    def has_thread_subscribers(self, thread_id: str) -> bool:
        return bool(self._thread_subs.get(thread_id))

    async def publish_thread(self, thread_id: str, event: str, data: bytes) -> None:
        key = self._next_key()
        item = (format_event_id(key), event, data)
        for sub in tuple(self._thread_subs.get(thread_id, ())):
            self._deliver(sub, key, item, kept=False)

    # Replay ------------------------------------------------------------------

    async def _replay(self, sub: MemorySubscription) -> None:
        """One step of a replay: a page from the log, or, once the log has nothing more,
        the journal's part and the switch to live."""
        after = sub.after
        assert after is not None
        journal = self._journal
        flushes = journal.flushes  # a commit after this may hold what the read misses
        page = dict(limit=REPLAY_PAGE_EVENTS, max_bytes=REPLAY_PAGE_BYTES)
        state: bool | None = None
        if sub.kind == "run":
            rows, state = await journal.log.read_events(sub.key, after, **page)
        else:
            rows = await journal.log.read_thread_events(sub.key, after, **page)
        if sub.closed or sub.dropped or sub.after != after:
            return
        if sub.kind == "run":
            channel = self._channels.get(sub.key)
            sub.kept |= (
                state is not None
                or (channel is not None and channel.resumable)
                or journal.holds(sub.key)
                or journal.ending(sub.key)
            )
        if sub.until is not None:
            within = [r for r in rows if (r[0], r[1]) <= sub.until]
            sub._hand_over(_events(within))
            if within and len(within) == len(rows):
                return  # perhaps more in the log
            if len(within) < len(rows):  # the log reached what this subscriber gets live
                sub._go_live([])
                return
        elif rows:
            sub._hand_over(_events(rows))
            return
        if flushes != journal.flushes:
            return  # a batch was committed meanwhile: read the log again
        # Whatever the log did not have is in the journal; nothing is published until this
        # returns, so the subscriber goes live with no gap.
        if sub.kind == "thread":
            assert sub.until is not None
            until = sub.until
            pending = [e for e in journal.pending_thread(sub.key, sub.after) if e[:2] <= until]
            sub._go_live(_events(pending))
            return
        last = sub.after
        events = _events(journal.pending(sub.key, last))
        events += [(key, item) for key, item in sub._held if key > last]
        events.sort(key=lambda e: e[0])
        ended = sub.key not in self._channels and (state is True or journal.ending(sub.key))
        if ended and not any(item[1] == DONE for _, item in events):
            events.append((last, (format_event_id(last), DONE, b"")))
        sub._go_live(events)

    def _detach(self, sub: MemorySubscription) -> None:
        table = self._run_subs if sub.kind == "run" else self._thread_subs
        subs = table.get(sub.key)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del table[sub.key]

    async def ping(self) -> dict[str, str]:
        return {}

    # Worker control ----------------------------------------------------------

    def attach_worker(
        self, on_wake: Callable[[float | None], None], on_cancel: Callable[[str, str], bool]
    ) -> None:
        self._on_wake, self._on_cancel = on_wake, on_cancel

    async def wake(self, due_at: float | None = None) -> None:
        if self._on_wake is not None:
            self._on_wake(due_at)

    async def cancel(self, run_id: str, action: str) -> None:
        if self._on_cancel is not None:
            self._on_cancel(run_id, action)


def _events(rows: list[StoredEvent]) -> list[tuple[EventKey, Event]]:
    return [((ms, seq), (f"{ms}-{seq}", name, data)) for ms, seq, name, data in rows]
