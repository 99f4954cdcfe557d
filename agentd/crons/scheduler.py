"""The cron scheduler: an asyncio task that sleeps until the earliest ``next_run_date`` (or until
a cron is created or changed), then fires every due cron once.

A firing is claimed with a compare-and-set of ``next_run_date`` (``Storage.claim_cron``) that
moves it to the next firing after now in the same statement, so however many schedulers see the
same due tick, one fires it. Ticks missed while no scheduler ran collapse into one firing when
a scheduler is back; the schedule then continues from now."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from datetime import datetime

from agentd import serde
from agentd.crons.schedule import iso, next_firing, zone
from agentd.crons.service import run_request
from agentd.runs.service import RunService
from agentd.schemas import ApiError, ServiceUnavailable
from agentd.storage.base import Row, Storage
from agentd.wakeup import wait_until

log = logging.getLogger("agentd.crons")
# A safety net, not a polling interval: a sleeping scheduler wakes at the due time or when a
# cron changes; this only bounds how long a clock step or a missed wake-up can delay it.
MAX_SLEEP = 60.0


class Scheduler:
    def __init__(self, storage: Storage, runs: RunService):
        self.storage = storage
        self.runs = runs
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="agentd-cron-scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def wake(self) -> None:
        """A cron was created or changed: look at the schedule again."""
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            self._wake.clear()  # before the tick, so a wake-up during it is not lost
            try:
                await self.tick()
                due_at = await self.storage.next_cron_at()
            except Exception:
                log.exception("cron scheduler tick failed; retrying")
                due_at = time.time() + 1
            await wait_until(self._wake, min(due_at or math.inf, time.time() + MAX_SLEEP))

    async def tick(self) -> int:
        """Fire every cron due now, each once; returns how many firings this scheduler won."""
        now = serde.now()
        fired = 0
        for cron in await self.storage.due_crons(now.isoformat()):
            if await self.fire(cron, now):
                fired += 1
        return fired

    async def fire(self, cron: Row, now: datetime) -> bool:
        """Claim ``cron``'s due tick and queue its run, in one transaction: a crash can neither
        lose the firing nor repeat it. False when another scheduler won the tick, or when the
        tick is consumed without a run."""
        end_time = datetime.fromisoformat(cron["end_time"]) if cron["end_time"] else None
        try:
            after = next_firing(cron["schedule"], zone(cron["timezone"]), now, end_time)
        except ApiError as exc:  # its time zone left the system's database: it stops here
            log.error("cron %s has no next firing: %s", cron["cron_id"], exc.detail)
            after = None
        tick = (cron["cron_id"], cron["next_run_date"], iso(after))
        if end_time is not None and now > end_time:
            # Its tick came before end_time, but no one was up to fire it then.
            await self.storage.claim_cron(*tick)
            return False
        try:
            run = await self.runs.create_for_tick(cron["thread_id"], run_request(cron), tick)
        except ServiceUnavailable:
            raise  # the database failed, not the run: the tick stays due and is tried again
        except ApiError as exc:
            # The thread was deleted meanwhile, a `reject` strategy found it busy...: this
            # tick is skipped (consumed here if the run was refused before its transaction),
            # the next one is scheduled.
            log.warning("cron %s did not fire: %s", cron["cron_id"], exc.detail)
            await self.storage.claim_cron(*tick)
            return False
        if run is None:
            return False
        log.debug("cron %s queued run %s", cron["cron_id"], run["run_id"])
        return True
