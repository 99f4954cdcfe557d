"""What agentd sees of a broker, whichever carries the events: the Broker and Subscription
protocols, event ids, and the EventLog a broker may keep resumable runs' events in.

A broker moves a run's events from the process executing it to every subscriber (stream,
join, wait, the thread stream), keeps the events of resumable runs for Last-Event-ID replay,
and carries wake-ups and cancel signals to the worker."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Protocol

from agentd.schemas import ServiceUnavailable

# An event is (id, name, JSON bytes); the end of a run is (id, DONE, status bytes).
Event = tuple[str, str, bytes]
# An event id as numbers, (epoch ms, seq): ids compare in the order events were published.
EventKey = tuple[int, int]
DONE = "__done__"
BEFORE_FIRST: EventKey = (-1, -1)
# Event ids are "<epoch ms>-<seq>" (the shape of a Redis stream id): unique and increasing
# across runs and across restarts of the process.
_EVENT_ID = re.compile(r"^(\d+)(?:-(\d+))?$")


def parse_event_id(value: str) -> EventKey | None:
    """``(ms, seq)`` of an event id; ``-1`` (or ``-``, ``0``) means before the first event;
    None if it is not an event id."""
    if value in ("-1", "-", "0"):
        return BEFORE_FIRST
    match = _EVENT_ID.match(value)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2) or 0)


def format_event_id(key: EventKey) -> str:
    return f"{key[0]}-{key[1]}"


class SubscriberDropped(Exception):
    """The subscriber fell too far behind (more bytes queued for it than the broker allows):
    it was detached and its queue freed. A resumable stream's client reconnects with its
    Last-Event-ID and replays the rest."""


class BrokerUnavailable(ServiceUnavailable):
    """The broker's server could not be reached: a subscription cannot start (a 503); the
    same request may succeed once it is back. Publishing never raises it: a run goes on, and
    its events are lost meanwhile."""

    def __init__(self, reason: str):
        super().__init__(f"The event broker is unavailable ({reason}); retry later")


class BrokerStartupError(Exception):
    """A broker that cannot start as configured (its server unreachable): start-up stops with
    this one line."""


class Subscription(Protocol):
    # With a last_event_id: whether the run's events are kept (a resumable run within its
    # TTL), so that the replay reaches the run's end even when the run has already ended.
    kept: bool
    # Dropped for falling behind (get raises SubscriberDropped).
    dropped: bool

    async def get(self, wait: float | None = None) -> Event | None:
        """The next event, or None when ``wait`` seconds pass first. Raises
        SubscriberDropped once the subscriber has been dropped."""
        ...

    def on_drop(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (once, from the broker's side) if this subscriber is dropped."""
        ...

    def close(self) -> None: ...


class Broker(Protocol):
    async def start(self) -> None:
        """Start background work (flushing and sweeping kept events)."""
        ...

    async def stop(self) -> None:
        """Flush what is buffered and stop background work."""
        ...

    # Run events
    #
    # Fencing: ``attempt`` is the executing attempt of the run (a fencing token, as in
    # storage). The broker keeps the highest attempt opened for each run, and ignores an
    # open_run, publish, end or release naming a lower one: an attempt whose run was taken
    # over (its worker froze past its lease) can no longer show events to the run's
    # subscribers, end the run for them, or close the newer attempt's channel. None: not
    # fenced (a process ending a run it did not execute, e.g. a cancel of a queued run).
    def open_run(
        self,
        run_id: str,
        thread_id: str,
        *,
        resumable: bool,
        shown: frozenset[str],
        attempt: int | None = None,
    ) -> None:
        """A run starts executing here: its thread, whether its events are kept, which of
        them its thread's subscribers see (event names before any "|namespace")."""
        ...

    def listened(self, run_id: str) -> bool:
        """Whether an event of this run would reach anyone (a subscriber, or the kept log of
        a resumable run): the executor skips encoding what nobody would see."""
        ...

    async def publish(
        self, run_id: str, event: str, data: bytes, *, attempt: int | None = None
    ) -> None:
        """Send one event; may wait while kept events are written behind (back-pressure)."""
        ...

    async def end(
        self,
        run_id: str,
        status: str,
        thread_id: str | None = None,
        *,
        attempt: int | None = None,
    ) -> None:
        """The run ended: its subscribers get DONE, its thread's a ``run_done`` metadata
        event; its kept events expire after the resumable TTL."""
        ...

    def release(self, run_id: str, *, attempt: int | None = None) -> None:
        """Forget a run's channel without ending it (its attempt was handed back)."""
        ...

    async def subscribe(
        self,
        run_id: str,
        last_event_id: str | None = None,
        *,
        only: frozenset[str] | None = None,
    ) -> Subscription:
        """Events of one run from now on; with ``last_event_id``, first the kept events
        after it. ``only``: the event names wanted (DONE always comes)."""
        ...

    # Thread events
    async def subscribe_thread(
        self, thread_id: str, last_event_id: str | None = None
    ) -> Subscription:
        """Events of every run on a thread (those each run's stream modes show) and the
        thread's own events, from now on; with ``last_event_id``, first the kept ones after
        it."""
        ...

    def has_thread_subscribers(self, thread_id: str) -> bool: ...

    async def publish_thread(self, thread_id: str, event: str, data: bytes) -> None:
        """An event of the thread itself (not of a run): only its subscribers see it."""
        ...

    async def ping(self) -> dict[str, str]:
        """The broker's servers and their state (``{}`` in process): ``/ok?check_db=1``.
        Raises BrokerUnavailable when one does not answer."""
        ...

    # Worker control
    def attach_worker(
        self, on_wake: Callable[[float | None], None], on_cancel: Callable[[str, str], bool]
    ) -> None: ...

    async def wake(self, due_at: float | None = None) -> None:
        """A run was queued (due now, or at ``due_at`` epoch seconds)."""
        ...

    async def cancel(self, run_id: str, action: str) -> None:
        """Stop a running run wherever it runs; ``action`` is interrupt or rollback."""
        ...


# An event of a resumable run as the log keeps it: (run_id, thread_id, ms, seq, name, data).
# A run keeps the events its stream shows, which are also those the thread stream shows.
LoggedEvent = tuple[str, str, int, int, str, bytes]
# An event read back: (ms, seq, name, data).
StoredEvent = tuple[int, int, str, bytes]


class EventLog(Protocol):
    """Where the in-process broker keeps resumable runs' events (the embedded storage
    implements it), so that they survive a restart and need no RAM."""

    async def append_events(
        self,
        events: Sequence[LoggedEvent],
        ends: Sequence[tuple[str, float]],
        *,
        max_events: int,
        max_bytes: int,
    ) -> None:
        """Append ``events`` (in id order), then mark the runs of ``ends`` ended, each
        ``(run_id, expires_at epoch seconds)``. Each run keeps at most ``max_events`` events
        and ``max_bytes`` bytes of data: its oldest are trimmed first (the newest is always
        kept). Durable when this returns."""
        ...

    async def read_events(
        self, run_id: str, after: EventKey, *, limit: int, max_bytes: int
    ) -> tuple[list[StoredEvent], bool | None]:
        """A run's kept events after ``after``, oldest first: at most ``limit`` of them,
        stopping once ``max_bytes`` are read (at least one); and the state of its log: None
        when nothing is kept (not resumable, or expired), False while open, True once ended."""
        ...

    async def read_thread_events(
        self, thread_id: str, after: EventKey, *, limit: int, max_bytes: int
    ) -> list[StoredEvent]:
        """The kept events of a thread's runs after ``after``, oldest first (limits as for
        read_events)."""
        ...

    async def sweep_event_logs(self, ttl: float) -> int:
        """Delete the logs that expired; give the logs still open whose run is no longer
        pending or running (its end was never recorded: a process died) ``ttl`` seconds
        from now. Returns the number of logs deleted."""
        ...

    async def last_event_key(self) -> EventKey | None:
        """The id of the newest kept event, so that new ids keep increasing after a restart
        even if the clock went back."""
        ...
