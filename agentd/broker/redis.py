"""The broker of many processes: run and thread events on Redis Streams, so that any API
server serves any run's stream (and its Last-Event-ID replay), and wake-ups and cancels on
Redis pub/sub, so that they reach every worker.

Writes: ``publish``/``end``/``publish_thread`` queue an operation; one flusher sends what is
queued as a pipeline of calls to one Lua script (redis_write.lua), which gives the event an id
(``<ms>-<seq>``, increasing in every stream it goes to), appends it to its run's stream and,
when the run's stream modes show it, to its thread's, trims each to its caps and sets TTLs.
Kept events (what a resumable run's stream shows, and its end) always go in; other events only
while some process has a subscriber (a registry key per run and thread, refreshed while
subscribed), so a background run nobody watches writes nothing it does not keep.

Reads: one reader task per process follows every stream it has subscribers for with one
``XREAD BLOCK`` (bounded), from the position of the last entry it delivered, and fans entries
out to local queues bounded in bytes. A subscriber with a Last-Event-ID first reads the stream
itself a page at a time (``XRANGE``), then joins the reader's live delivery in one synchronous
step: it skips live entries while it replays, and reads again if any came since its last page
was asked for; so nothing falls between the two and nothing comes twice.

Redis holds nothing that cannot be rebuilt: PostgreSQL has every run's state. When Redis is
lost, publishing drops events (logged once) instead of failing the run, subscribing raises
BrokerUnavailable (a 503), subscribers already attached get nothing until it is back (the
API's keep-alive status checks end them when their run ends), and everything reconnects by
itself; subscribers that may have missed events are then dropped (their registry vanished)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from agentd.broker.base import (
    BEFORE_FIRST,
    DONE,
    BrokerStartupError,
    BrokerUnavailable,
    Event,
    EventKey,
    SubscriberDropped,
    format_event_id,
    parse_event_id,
)

log = logging.getLogger("agentd.broker")

RESUMABLE_TTL_SECONDS = 600.0
RESUMABLE_MAX_EVENTS = 100_000
RESUMABLE_MAX_BYTES = 64 * 1024 * 1024
SUBSCRIBER_MAX_BYTES = 4 * 1024 * 1024
# A run's keys live this long after its last event while it runs (a dead process's leftovers
# go by themselves); at its end, the resumable TTL (kept) or LIVE_TTL takes over.
OPEN_TTL_SECONDS = 24 * 3600.0
# What is not kept stays this long after the run's end, for readers still catching up.
LIVE_TTL_SECONDS = 60.0
# Caps of a stream holding nothing kept (a run that is not resumable): the reader of each
# process drains it at once, so only a stalled process falls this far behind.
LIVE_MAX_EVENTS = 10_000
LIVE_MIN_BYTES = 8 * 1024 * 1024
# A process's subscriptions are registered for this long, refreshed every third of it.
REGISTRY_TTL_SECONDS = 30.0
PING_TIMEOUT = 2.0  # /ok?check_db=1 answers within it whatever Redis does
POOL_SIZE = 64  # connections per process for commands (the reader has its own)
BLOCK_MS = 1000  # longest XREAD wait: a stop or a new stream never waits longer
READ_COUNT = 64  # entries per stream per XREAD: bounds what one reply holds
REPLAY_PAGE = 128
FLUSH_OPS = 256  # operations per pipeline
MAX_QUEUED_BYTES = 8 * 1024 * 1024  # publishers wait while this much waits to be sent
END_WAIT_SECONDS = 5.0  # end() waits this long at most for its DONE to be written
EVENT_OVERHEAD = 160  # what a queued event costs besides its data
BACKOFF_MIN, BACKOFF_MAX = 0.05, 2.0

_SCRIPT = (Path(__file__).parent / "redis_write.lua").read_bytes()
_SHA = hashlib.sha1(_SCRIPT).hexdigest()
# What says Redis is out of reach (a refused command is not).
_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)


def _size(item: Event) -> int:
    return len(item[2]) + EVENT_OVERHEAD


def _key(entry_id: bytes | str) -> EventKey:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


def _reason(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel until done: on Python 3.11 a cancel can be lost inside redis-py's
    ``asyncio.wait_for`` (it lands as the inner call completes), so one is not enough."""
    deadline = time.monotonic() + 10  # each loop also ends by itself within a blocking read
    while (pending := [t for t in tasks if not t.done()]) and time.monotonic() < deadline:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=0.2)
    if pending:
        log.error("%d broker task(s) did not stop", len(pending))


class RedisSubscription:
    def __init__(
        self,
        broker: RedisBroker,
        kind: str,
        key: str,
        stream: str,
        *,
        only: frozenset[str] | None = None,
    ) -> None:
        self._broker = broker
        self.kind = kind  # "run" | "thread"
        self.key = key  # the run or thread id
        self.stream = stream
        self.only = only
        self.kept = False
        self.dropped = False
        self.closed = False
        # Where live delivery started: entries up to here are replayed only if kept.
        self.start: EventKey = BEFORE_FIRST
        # While replaying, the id of the last entry read (None once live); then the last
        # entry handed over, so that live entries a replay already read are skipped.
        self.after: EventKey | None = None
        self.last: EventKey = BEFORE_FIRST
        self.skipped = False  # a live entry went by while replaying
        self.ended = False  # a kept run that had ended when subscribed: a replay ends with DONE
        self.saw_done = False
        self._replayed: deque[Event] = deque()  # a page read back: small, not counted
        self._queue: deque[Event] = deque()  # live events, counted in `queued`
        self.queued = 0
        self._waiter: asyncio.Future[None] | None = None
        self._on_drop: list[Callable[[], None]] = []

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

    def _offer(self, key: EventKey, item: Event, limit: int) -> None:
        """A live entry from the reader."""
        if self.after is not None:
            self.skipped = True  # the replay reads it back
            return
        if key <= self.last:
            return  # the replay already had it
        self.last = key
        name = item[1]
        if self.only is not None and name != DONE and name not in self.only:
            return
        if name != DONE and self.queued and self.queued + _size(item) > limit:
            log.info(
                "dropped a subscriber of %s %s: %d bytes queued (limit %d)",
                self.kind, self.key, self.queued, limit,
            )  # fmt: skip
            self._drop()
            return
        self._queue.append(item)
        self.queued += _size(item)
        self._wake()

    def _hand_over(self, item: Event) -> None:
        if self.only is None or item[1] == DONE or item[1] in self.only:
            self._replayed.append(item)

    def _drop(self) -> None:
        if self.dropped or self.closed:
            return
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
        self.queued = 0

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


@dataclass
class _Tail:
    """A stream this process follows: the last entry its reader delivered, and to whom."""

    stream: str
    registry: str  # "some process subscribes": non-kept events are written while it lives
    cursor: EventKey
    subs: set[RedisSubscription] = field(default_factory=set)


@dataclass
class _Run:
    thread_id: str
    resumable: bool
    shown: frozenset[str]
    names: str  # shown, as the run's hash keeps it
    attempt: int | None  # the attempt executing it here


def _fence(attempt: int | None) -> dict[str, int]:
    """The script's parameter (absent, not null: cjson's null is not Lua's nil)."""
    return {} if attempt is None else {"attempt": attempt}


def _overtaken(run: _Run | None, attempt: int | None) -> bool:
    """A newer attempt of the run executes in this process: ``attempt`` is fenced off (the
    script fences attempts executing elsewhere)."""
    return (
        run is not None
        and attempt is not None
        and run.attempt is not None
        and attempt < run.attempt
    )


@dataclass
class _Op:
    params: dict[str, Any]
    data: bytes = b""
    extra: bytes = b""
    done: asyncio.Future[None] | None = None  # end() waits for its DONE to be written

    @property
    def size(self) -> int:
        return len(self.data) + len(self.extra) + EVENT_OVERHEAD


class RedisBroker:
    def __init__(
        self,
        url: str,
        *,
        prefix: str = "agentd:",
        resumable_ttl: float = RESUMABLE_TTL_SECONDS,
        resumable_max_events: int = RESUMABLE_MAX_EVENTS,
        resumable_max_bytes: int = RESUMABLE_MAX_BYTES,
        subscriber_max_bytes: int = SUBSCRIBER_MAX_BYTES,
        registry_ttl: float = REGISTRY_TTL_SECONDS,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self._max_queued = subscriber_max_bytes
        self._registry_ms = int(registry_ttl * 1000)
        # What every write passes to the script besides its own facts.
        self._limits = {
            "prefix": prefix,
            "ttl": int(resumable_ttl * 1000),
            "open_ttl": int(max(OPEN_TTL_SECONDS, resumable_ttl) * 1000),
            "live_ttl": int(LIVE_TTL_SECONDS * 1000),
            "thread_max_events": resumable_max_events,
            "thread_max_bytes": resumable_max_bytes,
        }
        self._kept_caps = {"max_events": resumable_max_events, "max_bytes": resumable_max_bytes}
        self._live_caps = {
            "max_events": LIVE_MAX_EVENTS,
            "max_bytes": max(LIVE_MIN_BYTES, 2 * subscriber_max_bytes),
        }
        options: dict[str, Any] = dict(
            protocol=2,
            socket_connect_timeout=2.0,
            socket_keepalive=True,
            # One quick retry on a fresh connection, then the caller decides (503, drop).
            retry=Retry(ExponentialBackoff(cap=0.1, base=0.01), 1),
        )
        # A burst of subscribers waits for a connection rather than failing for want of one.
        pool = BlockingConnectionPool.from_url(
            url, max_connections=POOL_SIZE, timeout=5.0, socket_timeout=5.0, **options
        )
        self._redis: Redis = Redis(connection_pool=pool)
        # The reader's blocking XREAD holds a connection of its own.
        self._reader: Redis = Redis.from_url(
            url, socket_timeout=BLOCK_MS / 1000 + 5.0, single_connection_client=True, **options
        )
        self._runs: dict[str, _Run] = {}  # runs executing here
        self._tails: dict[str, _Tail] = {}
        # The reader wakes when its own stream gets an entry: a new tail is followed at once.
        self._poke_stream = f"{prefix}poke:{uuid.uuid4().hex}"
        self._poke_cursor = "0-0"
        self._reading: set[str] | None = None  # the streams of the XREAD under way
        self._poking = False
        self._ops: deque[_Op] = deque()
        self._ops_bytes = 0
        self._room: asyncio.Event = asyncio.Event()
        self._down_since: float | None = None
        self._up = asyncio.Event()
        self._dropped_events = 0
        self._on_wake: Callable[[float | None], None] | None = None
        self._on_cancel: Callable[[str, str], bool] | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._started = False

    def _k(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    # Life -----------------------------------------------------------------------

    async def start(self) -> None:
        try:
            await self._redis.ping()
            await self._redis.script_load(_SCRIPT)
        except _DOWN as exc:
            await self._close_clients()
            raise BrokerStartupError(
                f"Redis at {_redacted(self.url)} is unreachable: {_reason(exc)}"
            ) from None
        self._started = True
        self._up.set()
        self._room.set()
        self._spawn("reader", self._read())
        self._spawn("registry", self._keep_registered())
        if self._on_wake is not None:
            self._spawn("control", self._listen())

    async def stop(self) -> None:
        """Send what is queued (briefly: Redis may be gone), then stop every task."""
        if not self._started:
            return
        self._started = False  # nothing more is queued, loops end, a loss is not reported
        flusher = self._tasks.pop("flusher", None)
        await _cancel(list(self._tasks.values()))
        if flusher is not None:
            await asyncio.wait([flusher], timeout=END_WAIT_SECONDS)
            await _cancel([flusher])
        self._tasks.clear()
        self._abandon_ops()
        await self._close_clients()

    async def _close_clients(self) -> None:
        for client in (self._reader, self._redis):
            with contextlib.suppress(Exception):
                await client.aclose()

    def _spawn(self, name: str, coro: Any) -> None:
        self._tasks[name] = asyncio.get_running_loop().create_task(coro, name=f"agentd-{name}")

    # Redis lost and back ----------------------------------------------------------

    def _lost(self, exc: BaseException) -> None:
        if self._down_since is not None or not self._started:
            return
        self._down_since = time.monotonic()
        self._up.clear()
        log.error(
            "Redis at %s is unreachable (%s): run events are dropped and subscriptions "
            "refused until it is back", _redacted(self.url), _reason(exc),
        )  # fmt: skip
        self._abandon_ops()
        self._spawn("probe", self._probe())

    async def ping(self) -> dict[str, str]:
        try:
            await asyncio.wait_for(self._redis.ping(), PING_TIMEOUT)
        except (*_DOWN, TimeoutError) as exc:
            raise BrokerUnavailable(f"Redis does not answer: {type(exc).__name__}") from None
        return {"redis": "ok"}

    async def _probe(self) -> None:
        delay = BACKOFF_MIN
        while True:
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)
            if not self._started:
                return
            try:
                await self._redis.ping()
                await self._redis.script_load(_SCRIPT)  # a restarted Redis forgot it
            except _DOWN:
                continue
            break
        down = time.monotonic() - (self._down_since or time.monotonic())
        log.warning(
            "Redis at %s is back after %.1fs; %d event(s) were dropped meanwhile",
            _redacted(self.url), down, self._dropped_events,
        )  # fmt: skip
        self._down_since = None
        self._dropped_events = 0
        self._up.set()
        self._room.set()
        self._tasks.pop("probe", None)
        await self._refresh_registry()
        if self._on_wake is not None:
            self._on_wake(None)  # wake-ups sent meanwhile were lost

    def _abandon_ops(self) -> None:
        """Drop what waits to be sent (Redis is gone, or we stop): bounded memory, no waits."""
        while self._ops:
            op = self._ops.popleft()
            self._dropped_events += 1
            if op.done is not None and not op.done.done():
                op.done.set_result(None)
        self._ops_bytes = 0
        self._room.set()

    # Writes -----------------------------------------------------------------------

    def _send(
        self, params: dict[str, Any], data: bytes = b"", extra: bytes = b"", *, wait: bool = False
    ) -> asyncio.Future[None] | None:
        """Queue a write; with ``wait``, a future resolved once it is written (or dropped).
        None when it was dropped at once (Redis is gone)."""
        if self._down_since is not None or not self._started:
            self._dropped_events += 1
            return None
        op = _Op({**self._limits, **params}, data, extra)
        if wait:
            op.done = asyncio.get_running_loop().create_future()
        self._ops.append(op)
        self._ops_bytes += op.size
        if self._ops_bytes > MAX_QUEUED_BYTES:
            self._room.clear()
        if "flusher" not in self._tasks:
            self._spawn("flusher", self._flush())
        return op.done

    async def _flush(self) -> None:
        try:
            while self._ops:
                batch = [self._ops.popleft() for _ in range(min(FLUSH_OPS, len(self._ops)))]
                self._ops_bytes -= sum(op.size for op in batch)
                if self._ops_bytes <= MAX_QUEUED_BYTES:
                    self._room.set()
                try:
                    await self._write(batch)
                except _DOWN as exc:
                    self._dropped_events += len(batch)
                    self._lost(exc)
                except Exception:
                    log.exception("writing %d broker event(s) to Redis failed", len(batch))
                finally:
                    for op in batch:
                        if op.done is not None and not op.done.done():
                            op.done.set_result(None)
        finally:
            self._tasks.pop("flusher", None)

    async def _write(self, batch: list[_Op]) -> None:
        for attempt in range(2):
            async with self._redis.pipeline(transaction=False) as pipe:
                for op in batch:
                    pipe.evalsha(_SHA, 0, orjson.dumps(op.params), op.data, op.extra)
                results = await pipe.execute(raise_on_error=False)
            if attempt == 0 and any(isinstance(r, NoScriptError) for r in results):
                await self._redis.script_load(_SCRIPT)  # Redis restarted since start()
                continue
            refused = [r for r in results if isinstance(r, Exception)]
            if refused:  # e.g. Redis out of memory: those events are lost, the run goes on
                log.error("Redis refused %d broker write(s): %s", len(refused), _reason(refused[0]))
            return

    async def _wait_room(self) -> None:
        # Only a live Redis slows publishers down; a lost one drops (see _lost).
        while not self._room.is_set() and self._down_since is None and self._started:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._room.wait()

    # Run events ---------------------------------------------------------------------

    def open_run(
        self,
        run_id: str,
        thread_id: str,
        *,
        resumable: bool,
        shown: frozenset[str],
        attempt: int | None = None,
    ) -> None:
        if _overtaken(self._runs.get(run_id), attempt):
            return
        names = ",".join(sorted(shown))
        self._runs[run_id] = _Run(thread_id, resumable, shown, names, attempt)
        self._send(
            {
                "op": "open",
                "run": run_id,
                "thread": thread_id,
                "resumable": resumable,
                "names": names,
                **_fence(attempt),
            }
        )

    def listened(self, run_id: str) -> bool:
        # Subscribers may be in any process; asking Redis for every event would cost what
        # publishing costs. The script writes nothing nobody reads or keeps.
        return True

    async def publish(
        self, run_id: str, event: str, data: bytes, *, attempt: int | None = None
    ) -> None:
        run = self._runs.get(run_id)
        if _overtaken(run, attempt):
            return
        params: dict[str, Any] = {"op": "event", "run": run_id, "name": event, **_fence(attempt)}
        if run is not None:
            shown = event.split("|", 1)[0] in run.shown
            kept = run.resumable and shown
            params |= {
                "thread": run.thread_id,
                "resumable": run.resumable,
                "shown": shown,
                "kept": kept,
                "names": run.names,
                **(self._kept_caps if run.resumable else self._live_caps),
            }
        else:
            params |= {"shown": False, "kept": False, **self._live_caps}
        self._send(params, data)
        await self._wait_room()

    async def end(
        self,
        run_id: str,
        status: str,
        thread_id: str | None = None,
        *,
        attempt: int | None = None,
    ) -> None:
        if _overtaken(self._runs.get(run_id), attempt):
            return
        run = self._runs.pop(run_id, None)
        params: dict[str, Any] = {"op": "end", "run": run_id, **_fence(attempt)}
        if run is not None:
            params |= {"thread": run.thread_id, "resumable": run.resumable}
            params |= self._kept_caps if run.resumable else self._live_caps
        else:  # the script reads what the run's executor wrote
            params |= self._kept_caps
            if thread_id is not None:
                params["thread"] = thread_id
        payload = orjson.dumps({"status": "run_done", "run_id": run_id})
        written = self._send(params, status.encode(), payload, wait=True)
        if written is not None:  # subscribers elsewhere see the end before this returns
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(written), END_WAIT_SECONDS)

    def release(self, run_id: str, *, attempt: int | None = None) -> None:
        # Redis keeps the run open (its next attempt, anywhere, appends to the same stream).
        if not _overtaken(self._runs.get(run_id), attempt):
            self._runs.pop(run_id, None)

    async def subscribe(
        self,
        run_id: str,
        last_event_id: str | None = None,
        *,
        only: frozenset[str] | None = None,
    ) -> RedisSubscription:
        after = None
        if last_event_id is not None:
            after = parse_event_id(last_event_id) or BEFORE_FIRST
        base = self._k("run", run_id)
        sub = RedisSubscription(self, "run", run_id, f"{base}:events", only=only)
        resumable, ended = await self._attach(sub, f"{base}:subs", base)
        if after is not None:
            if resumable == b"0" and ended != b"1":
                return sub  # nothing of it is kept: live only
            sub.kept = resumable == b"1"
            sub.ended = sub.kept and ended == b"1"
            sub.after = after
        return sub

    # Thread events --------------------------------------------------------------------

    async def subscribe_thread(
        self, thread_id: str, last_event_id: str | None = None
    ) -> RedisSubscription:
        base = self._k("thread", thread_id)
        sub = RedisSubscription(self, "thread", thread_id, f"{base}:events")
        await self._attach(sub, f"{base}:subs", None)
        if last_event_id is not None:
            sub.after = parse_event_id(last_event_id) or BEFORE_FIRST
        return sub

    def has_thread_subscribers(self, thread_id: str) -> bool:
        # They may be in any process, and this must answer at once: the caller computes a
        # state it may not need, and the script writes it only if someone subscribes.
        return True

    async def publish_thread(self, thread_id: str, event: str, data: bytes) -> None:
        self._send({"op": "thread", "thread": thread_id, "name": event}, data)
        await self._wait_room()

    # Subscribing and reading ----------------------------------------------------------

    async def _attach(
        self, sub: RedisSubscription, registry: str, meta: str | None
    ) -> tuple[bytes | None, bytes | None]:
        """Register the subscription (so that what is published from now on is written),
        then follow the stream from its newest entry; returns the run's resumable and ended
        flags."""
        if self._down_since is not None or not self._started:
            raise BrokerUnavailable("Redis is unreachable")
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.set(registry, b"1", px=self._registry_ms)
                pipe.xrevrange(sub.stream, count=1)
                if meta is not None:
                    pipe.hmget(meta, "resumable", "ended")
                replies = await pipe.execute()
        except _DOWN as exc:
            self._lost(exc)
            raise BrokerUnavailable(_reason(exc)) from None
        newest = _key(replies[1][0][0]) if replies[1] else (0, 0)
        tail = self._tails.get(sub.stream)
        if tail is None:
            tail = self._tails[sub.stream] = _Tail(sub.stream, registry, newest)
            if self._reading is not None and sub.stream not in self._reading:
                self._poke()
        tail.subs.add(sub)
        # From now on: what the reader has not delivered yet but was there before this
        # subscription is not live for it (replayed only if kept).
        sub.start = sub.last = max(tail.cursor, newest)
        flags = replies[2] if meta is not None else [None, None]
        return flags[0], flags[1]

    def _detach(self, sub: RedisSubscription) -> None:
        tail = self._tails.get(sub.stream)
        if tail is not None:
            tail.subs.discard(sub)
            if not tail.subs:
                # The registry is left to expire: other processes may subscribe too.
                del self._tails[sub.stream]

    def _poke(self) -> None:
        if self._poking:
            return
        self._poking = True

        async def poke() -> None:
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.xadd(self._poke_stream, {"x": "1"}, maxlen=1)
                    pipe.pexpire(self._poke_stream, 60_000)
                    await pipe.execute()
            except _DOWN as exc:
                self._lost(exc)
            finally:
                self._poking = False
                self._tasks.pop("poke", None)

        self._spawn("poke", poke())

    async def _read(self) -> None:
        """Follow every stream this process has subscribers for."""
        while self._started:
            await self._up.wait()
            tails = dict(self._tails)
            streams = {stream: format_event_id(t.cursor) for stream, t in tails.items()}
            streams[self._poke_stream] = self._poke_cursor
            self._reading = set(streams)
            try:
                reply = await self._reader.xread(streams, count=READ_COUNT, block=BLOCK_MS)
            except _DOWN as exc:
                self._lost(exc)
                continue
            except Exception:  # e.g. a key of ours overwritten by something else
                log.exception("reading broker streams from Redis failed; retrying")
                await asyncio.sleep(1.0)
                continue
            finally:
                self._reading = None
            for stream_b, entries in reply or ():
                stream = stream_b.decode()
                if stream == self._poke_stream:
                    self._poke_cursor = entries[-1][0].decode()
                    continue
                tail = self._tails.get(stream)
                if tail is not None and tail is tails.get(stream):  # not replaced meanwhile
                    self._deliver(tail, entries)

    def _deliver(self, tail: _Tail, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        for entry_id, fields in entries:
            key = _key(entry_id)
            if key <= tail.cursor:
                continue
            previous = _key(fields.get(b"p", b"0-0"))
            if previous > tail.cursor:
                # Entries after this process's position were trimmed before it read them:
                # its live subscribers missed them. Replays read on from what is left.
                for sub in [s for s in tail.subs if s.after is None]:
                    log.info("dropped a subscriber of %s %s: its position was trimmed out of "
                             "the stream", sub.kind, sub.key)  # fmt: skip
                    sub._drop()
            tail.cursor = key
            item = (entry_id.decode(), fields[b"e"].decode(), fields[b"d"])
            for sub in tuple(tail.subs):
                sub._offer(key, item, self._max_queued)

    async def _replay(self, sub: RedisSubscription) -> None:
        """One page of a replay; once the stream has nothing more, and no live entry went
        by since the page was asked for, the subscriber goes live."""
        after = sub.after
        assert after is not None
        sub.skipped = False
        low = "-" if after == BEFORE_FIRST else f"({format_event_id(after)}"
        try:
            entries = await self._redis.xrange(sub.stream, min=low, max="+", count=REPLAY_PAGE)
            alive = await self._runs_alive(sub, entries) if sub.kind == "thread" else None
        except _DOWN as exc:
            self._lost(exc)
            log.info("dropped a subscriber of %s %s: Redis was lost while it replayed",
                     sub.kind, sub.key)  # fmt: skip
            sub._drop()
            return
        if sub.closed or sub.dropped or sub.after != after:
            return
        for entry_id, fields in entries:
            key = _key(entry_id)
            sub.after = key
            if key <= sub.start:
                # From before the subscription: only what is kept (and not expired).
                if fields.get(b"k") != b"1":
                    continue
                if alive is not None and fields.get(b"r") not in alive:
                    continue
            name = fields[b"e"].decode()
            sub.saw_done |= name == DONE
            sub._hand_over((entry_id.decode(), name, fields[b"d"]))
        if len(entries) == REPLAY_PAGE or sub.skipped:
            return  # more to read
        if sub.ended and not sub.saw_done:  # resumed after the end itself
            sub._replayed.append((format_event_id(sub.after), DONE, b""))
        sub.last = sub.after
        sub.after = None

    async def _runs_alive(
        self, sub: RedisSubscription, entries: list[tuple[bytes, dict[bytes, bytes]]]
    ) -> set[bytes]:
        """The runs whose kept events in a thread's stream have not expired with the run."""
        runs = {
            f[b"r"]
            for i, f in entries
            if f.get(b"k") == b"1" and b"r" in f and _key(i) <= sub.start
        }
        if not runs:
            return set()
        ordered = list(runs)
        async with self._redis.pipeline(transaction=False) as pipe:
            for run in ordered:
                pipe.exists(self._k("run", run.decode()))
            found = await pipe.execute()
        return {run for run, n in zip(ordered, found, strict=True) if n}

    async def _keep_registered(self) -> None:
        while self._started:
            await asyncio.sleep(self._registry_ms / 3000)
            await self._refresh_registry()

    async def _refresh_registry(self) -> None:
        """Extend this process's registrations; one that vanished (it expired while this
        process stalled, or Redis lost its data) means events may have been skipped: its
        subscribers are dropped, and it is registered again."""
        tails = list(self._tails.values())
        if not tails or self._down_since is not None:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for tail in tails:
                    pipe.pexpire(tail.registry, self._registry_ms)
                found = await pipe.execute()
            lost = [tail for tail, ok in zip(tails, found, strict=True) if not ok]
            if lost:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for tail in lost:
                        pipe.set(tail.registry, b"1", px=self._registry_ms)
                    await pipe.execute()
        except _DOWN as exc:
            self._lost(exc)
            return
        for tail in lost:
            for sub in tuple(tail.subs):
                log.info("dropped a subscriber of %s %s: events may have been lost",
                         sub.kind, sub.key)  # fmt: skip
                sub._drop()

    # Worker control ---------------------------------------------------------------------

    def attach_worker(
        self, on_wake: Callable[[float | None], None], on_cancel: Callable[[str, str], bool]
    ) -> None:
        self._on_wake, self._on_cancel = on_wake, on_cancel
        if self._started and "control" not in self._tasks:
            self._spawn("control", self._listen())

    async def wake(self, due_at: float | None = None) -> None:
        payload = b"" if due_at is None else repr(due_at).encode()
        if not await self._publish_control("wake", payload) and self._on_wake is not None:
            self._on_wake(due_at)  # Redis is gone: at least this process's worker

    async def cancel(self, run_id: str, action: str) -> None:
        payload = orjson.dumps([run_id, action])
        if not await self._publish_control("cancel", payload) and self._on_cancel is not None:
            self._on_cancel(run_id, action)

    async def _publish_control(self, channel: str, payload: bytes) -> bool:
        if self._down_since is not None or not self._started:
            return False
        try:
            await self._redis.publish(self._k(channel), payload)
        except _DOWN as exc:
            self._lost(exc)
            return False
        return True

    async def _listen(self) -> None:
        """Wake-ups and cancels for this process's worker, re-subscribed after a loss."""
        wake_channel, cancel_channel = self._k("wake").encode(), self._k("cancel").encode()
        while self._started:
            await self._up.wait()
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(wake_channel, cancel_channel)
                while self._started:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None or message.get("type") != "message":
                        continue
                    data: bytes = message["data"]
                    if message["channel"] == wake_channel and self._on_wake is not None:
                        self._on_wake(float(data) if data else None)
                    elif message["channel"] == cancel_channel and self._on_cancel is not None:
                        run_id, action = orjson.loads(data)
                        self._on_cancel(run_id, action)
            except _DOWN as exc:
                self._lost(exc)
            except Exception:
                log.exception("listening for wake-ups and cancels failed; retrying")
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
