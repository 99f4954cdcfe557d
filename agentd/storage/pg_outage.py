"""PostgreSQL lost and back, as one process sees it.

Without this, each transaction met by an outage waited for a connection the pool could not
make (5 s, 30 s on LangGraph's pool, several times per request), and after the outage psycopg's
pool reconnected only after its own backoff, which doubles without bound (a database back
after a minute was used again up to a minute later). Now the first failure that a fresh
connection confirms marks the database down: from then on transactions fail at once with
DatabaseUnavailable (a 503; a worker retries later), one probe reconnects with a capped backoff,
and the outage is logged once when it starts and once when it ends. The pools give up their own
reconnection attempts after ``RECONNECT_SECONDS`` and grow again on demand once the database is
back (their per-attempt warnings are left out of the logs: this module reports the outage)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable

import psycopg

from agentd.storage.base import DatabaseUnavailable

log = logging.getLogger("agentd.storage")
# How long a pool tries to replace a lost connection before it gives the slot up; a client
# waiting for a connection later makes it try again at once.
RECONNECT_SECONDS = 2.0
PROBE_CONNECT_TIMEOUT = 2  # seconds (libpq counts whole seconds)
BACKOFF_MIN, BACKOFF_MAX = 0.05, 2.0

logging.getLogger("psycopg.pool").setLevel(logging.ERROR)


def reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class Outage:
    """Whether the database answers; ``check`` before a transaction, ``confirm`` or ``lost``
    when one failed to reach it. Thread-safe: transactions run on threads."""

    def __init__(self, url: str, on_back: Callable[[], Awaitable[None]]) -> None:
        """``on_back``: called on the event loop once the database answers again after an
        outage, or after a connection broke while it stayed up (a restart between two
        transactions): the pools' other connections are dead too, and must go before a
        transaction (or a run's checkpoint write) gets one."""
        self.url = url
        self._on_back = on_back
        self._flushing: asyncio.Task[None] | None = None
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._reason = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._probe: asyncio.Task[None] | None = None
        self._confirming = False

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()

    async def stop(self) -> None:
        self._loop = None
        for task in (self._probe, self._flushing):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def check(self) -> None:
        """Raise DatabaseUnavailable at once while the database is known to be down."""
        if self._down_since is not None:
            raise DatabaseUnavailable(self._reason)

    def lost(self, exc: BaseException) -> DatabaseUnavailable:
        """The database could not be reached: it is down until the probe reconnects. Returns
        the error to raise."""
        with self._lock:
            if self._down_since is None:
                self._down_since = time.monotonic()
                self._reason = reason(exc)
                log.error("PostgreSQL is unreachable (%s): requests are answered 503 until it "
                          "is back", self._reason)  # fmt: skip
                if self._loop is not None and not self._loop.is_closed():
                    self._loop.call_soon_threadsafe(self._start_probe)
        return DatabaseUnavailable(reason(exc))

    def confirm(self, exc: BaseException) -> DatabaseUnavailable | None:
        """A pooled connection broke (``exc``): is the database itself gone, or only that
        connection (a restart already over, a session the server ended)? A fresh connection
        tells, at once; returns the error to raise when the database is gone. Blocking: call
        it on a storage thread."""
        if self._down_since is not None:
            return DatabaseUnavailable(self._reason)
        try:
            psycopg.connect(self.url, connect_timeout=PROBE_CONNECT_TIMEOUT).close()
        except psycopg.OperationalError as failed:
            return self.lost(failed)
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._flush)
        return None

    def suspect(self, exc: BaseException) -> None:
        """``confirm`` from the event loop, without waiting for it (LangGraph's saver and
        store met ``exc``)."""
        if self._down_since is not None or self._confirming or self._loop is None:
            return
        self._confirming = True

        def confirm() -> None:
            try:
                self.confirm(exc)
            finally:
                self._confirming = False

        self._loop.run_in_executor(None, confirm)

    def _flush(self) -> None:
        """Run ``on_back`` once at a time (many transactions may find dead connections)."""
        if (self._flushing is not None and not self._flushing.done()) or self._loop is None:
            return

        async def flush() -> None:
            try:
                await self._on_back()
            except Exception as exc:  # the database went again: the next failure tells
                log.debug("checking the pools' connections failed: %s", reason(exc))

        self._flushing = self._loop.create_task(flush(), name="agentd-pg-flush")

    def _start_probe(self) -> None:
        if self._loop is not None and (self._probe is None or self._probe.done()):
            self._probe = self._loop.create_task(self._reconnect(), name="agentd-pg-probe")

    async def _reconnect(self) -> None:
        delay = BACKOFF_MIN
        while True:
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.url, connect_timeout=PROBE_CONNECT_TIMEOUT
                )
            except psycopg.OperationalError:
                continue
            await conn.close()
            break
        with self._lock:
            down = time.monotonic() - (self._down_since or time.monotonic())
            self._down_since = None
        log.warning("PostgreSQL is back after %.1fs", down)
        self._flush()
