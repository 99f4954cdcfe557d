"""Resumable runs' events on their way to the EventLog: buffered in memory for a few
milliseconds and written in batches (no transaction per token), capped per run, expired after
the run ends, and swept in the background.

A replay reads the log, then this buffer: an event leaves the buffer only once its batch is
committed, and ``flushes`` counts commits, so a reader that saw no new commit since its read
knows that everything it did not read is still here."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from agentd.broker.base import EventKey, EventLog, LoggedEvent, StoredEvent

log = logging.getLogger("agentd.broker")
FLUSH_SECONDS = 0.005  # longest an event waits in the buffer
FLUSH_EVENTS = 256  # or this many events, whichever comes first
# Publishers wait for the write behind when more than this is buffered: a run cannot outrun
# the disk by more.
MAX_BUFFERED_BYTES = 8 * 1024 * 1024
FLUSH_ATTEMPTS = 3
MAX_SWEEP_SECONDS = 60.0


class Journal:
    def __init__(
        self,
        log_: EventLog,
        *,
        ttl: float,
        max_events: int,
        max_bytes: int,
        flush_seconds: float = FLUSH_SECONDS,
        flush_events: int = FLUSH_EVENTS,
        max_buffered_bytes: int = MAX_BUFFERED_BYTES,
    ) -> None:
        self.log = log_
        self.ttl = ttl
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._flush_seconds = flush_seconds
        self._flush_events = flush_events
        self._max_buffered = max_buffered_bytes
        self._events: list[LoggedEvent] = []  # not yet handed to the log
        self._ends: list[tuple[str, float]] = []
        self._bytes = 0
        self._inflight: list[LoggedEvent] = []  # handed to the log, not yet committed
        self._inflight_ends: list[tuple[str, float]] = []
        self.flushes = 0  # batches finished (committed, or given up on)
        self._full = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._flushed: asyncio.Future[None] | None = None  # resolved at the next batch's end
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> EventKey | None:
        """Sweep what expired (or was left open by a dead process) and start sweeping in the
        background; returns the newest kept event's id."""
        await self.log.sweep_event_logs(self.ttl)
        self._sweeper = asyncio.create_task(self._sweep(), name="agentd-event-sweeper")
        return await self.log.last_event_key()

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        while self._flusher is not None and not self._flusher.done():
            self._full.set()
            await asyncio.gather(self._flusher, return_exceptions=True)

    # Writing -------------------------------------------------------------------

    def append(self, event: LoggedEvent) -> None:
        self._events.append(event)
        self._bytes += len(event[5])
        if len(self._events) >= self._flush_events:
            self._full.set()
        self._schedule()

    def end(self, run_id: str) -> None:
        """The run ended: its events expire ``ttl`` seconds from now (a no-op in the log for
        runs it keeps nothing of)."""
        self._ends.append((run_id, time.time() + self.ttl))
        self._schedule()

    async def room(self) -> None:
        """Wait while more than the buffer's limit waits to be written."""
        while self._bytes > self._max_buffered:
            self._full.set()
            if self._flushed is None:
                self._flushed = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._flushed)

    def _schedule(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(
                self._flush(), name="agentd-event-flusher"
            )

    async def _flush(self) -> None:
        while self._events or self._ends:
            if not self._full.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._flush_seconds):
                        await self._full.wait()
            self._full.clear()
            self._inflight, self._inflight_ends = self._events, self._ends
            self._events, self._ends, self._bytes = [], [], 0
            try:
                await self._write(self._inflight, self._inflight_ends)
            finally:
                self._inflight, self._inflight_ends = [], []
                self.flushes += 1
                if self._flushed is not None:
                    self._flushed.set_result(None)
                    self._flushed = None

    async def _write(self, events: list[LoggedEvent], ends: list[tuple[str, float]]) -> None:
        for attempt in range(FLUSH_ATTEMPTS):
            try:
                await self.log.append_events(
                    events, ends, max_events=self.max_events, max_bytes=self.max_bytes
                )
                return
            except Exception:
                if attempt == FLUSH_ATTEMPTS - 1:
                    # Live subscribers had them; only a later replay misses them.
                    log.exception("could not keep %d event(s) of resumable runs", len(events))
                    return
                await asyncio.sleep(0.1 * 2**attempt)

    # Reading what is not in the log yet ---------------------------------------

    def pending(self, run_id: str, after: EventKey) -> list[StoredEvent]:
        return [
            (e[2], e[3], e[4], e[5])
            for e in (*self._inflight, *self._events)
            if e[0] == run_id and (e[2], e[3]) > after
        ]

    def pending_thread(self, thread_id: str, after: EventKey) -> list[StoredEvent]:
        return [
            (e[2], e[3], e[4], e[5])
            for e in (*self._inflight, *self._events)
            if e[1] == thread_id and (e[2], e[3]) > after
        ]

    def holds(self, run_id: str) -> bool:
        """Whether an event of the run waits to be written."""
        return any(e[0] == run_id for e in (*self._inflight, *self._events))

    def ending(self, run_id: str) -> bool:
        """Whether the run's end waits to be written."""
        return any(r == run_id for r, _ in (*self._inflight_ends, *self._ends))

    # Expiry ----------------------------------------------------------------------

    async def _sweep(self) -> None:
        # Reads check expiry themselves; the sweep gives the disk space back.
        interval = min(MAX_SWEEP_SECONDS, max(self.ttl, 0.5))
        while True:
            await asyncio.sleep(interval)
            try:
                await self.log.sweep_event_logs(self.ttl)
            except Exception:
                log.exception("sweeping expired stream events failed; retrying")
