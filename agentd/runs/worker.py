"""The worker pool: claim runnable runs as soon as a slot is free, run each in its own task,
pass cancels to their executors, keep their leases, and have unfinished runs handed back on
shutdown.

Every run this worker holds is leased to it (``owner``). The heartbeat renews the leases;
a run whose renewal fails is no longer this worker's (it was taken back after a stall, or
ended or deleted meanwhile) and its attempt is stopped. A worker that cannot reach the
database for a whole lease stops its runs itself, since another may have taken them back.
The heartbeat also takes back whatever runs' leases ran out (their worker died), after this
worker renewed its own, so that it never takes back a run it still executes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time

from agentd.broker.base import Broker
from agentd.runs.control import LEASE_LOST, SHUTDOWN, RunControl
from agentd.runs.executor import Executor
from agentd.schemas import ServiceUnavailable
from agentd.storage.base import LEASE_SECONDS, Row, Storage
from agentd.wakeup import wait_until

log = logging.getLogger("agentd.worker")
# How long running runs get to unwind at shutdown after being asked to stop, before their tasks
# are cancelled outright (they are then left running, and the next start takes them back).
SHUTDOWN_GRACE = 10.0
# Claims retried while the database is unavailable: this long after the first failure, doubled
# each time up to the last (a stop cuts a pause short; wake-ups do not).
RETRY_MIN, RETRY_MAX = 0.2, 2.0


def worker_identity() -> str:
    """Who holds a run, as leases and logs name it: host, process, and a random part so that
    a restarted process with a recycled pid is someone else."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Worker:
    def __init__(
        self,
        storage: Storage,
        broker: Broker,
        executor: Executor,
        jobs: int,
        *,
        lease: float = LEASE_SECONDS,
        heartbeat: float = LEASE_SECONDS / 4,
        drain: float = 0.0,
        owner: str | None = None,
    ):
        self.storage = storage
        self.broker = broker
        self.executor = executor
        self.jobs = jobs
        self.lease = lease
        self.heartbeat = heartbeat
        self.drain = drain  # seconds runs get to finish at shutdown before they are handed back
        self.owner = owner or worker_identity()
        self._tasks: dict[str, asyncio.Task[str]] = {}
        self._controls: dict[str, RunControl] = {}
        self._held: dict[str, int] = {}  # run_id -> the attempt this worker holds
        self._renewed_at = time.monotonic()
        self._wake = asyncio.Event()
        # Whether the queue may hold a run this worker could claim: set by every wake-up and
        # by a claim that came back full, cleared by one that came back short. A run's end
        # looks at the queue only then, or when its thread has a run queued behind it.
        self._more = True
        self._due_at: float | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._stopped = asyncio.Event()
        self._unavailable_since: float | None = None  # the database's outage, as seen here

    @property
    def active(self) -> int:
        return len(self._tasks)

    async def start(self) -> None:
        self.executor.tasks.install(asyncio.get_running_loop())
        if self.storage.exclusive:  # no other process can hold a run: every lease is stale
            requeued = await self.storage.requeue_running()
            if requeued:
                log.warning("requeued %d run(s) left running by a previous process", requeued)
        else:
            await self._take_back_expired()
        self._due_at = await self.storage.next_due_at()
        self.broker.attach_worker(self.notify, self.cancel)
        self._wake.set()
        self._loop_task = asyncio.create_task(self._loop(), name="agentd-worker")
        self._heartbeat_task = asyncio.create_task(self._heartbeats(), name="agentd-heartbeat")
        log.info(
            "worker %s: %d run slots, leases of %g s renewed every %g s",
            self.owner, self.jobs, self.lease, self.heartbeat,
        )  # fmt: skip

    async def stop(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Stop claiming, let the runs under way finish for up to ``drain`` seconds, then ask
        the others to stop: each is handed back to the queue (its lease released, the attempt
        not counted) by its own executor. Tasks still unwinding after ``grace`` are
        cancelled."""
        # Not a cancel: a claim cancelled in flight may still commit, leaving runs running
        # with no task. The loop stops between claims; what it claimed last starts and is
        # asked to stop with the rest.
        self._stopping = True
        self._stopped.set()
        self._wake.set()
        if self._loop_task is not None:
            await asyncio.gather(self._loop_task, return_exceptions=True)
        if self._tasks and self.drain > 0:
            log.info("worker %s: draining %d run(s) for up to %g s", self.owner,
                     len(self._tasks), self.drain)  # fmt: skip
            await asyncio.wait(list(self._tasks.values()), timeout=self.drain)
            if self._tasks:
                log.info("worker %s: handing %d run(s) back", self.owner, len(self._tasks))
        for control in self._controls.values():
            control.request(SHUTDOWN)
        tasks = list(self._tasks.values())
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=grace)
            for task in late:
                log.warning("%s did not stop within %.0f s; cancelling it", task.get_name(), grace)
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        # Renewing until the runs are handed back: a slow unwind must not lose its lease.
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
            await asyncio.gather(self._heartbeat_task, return_exceptions=True)

    def notify(self, due_at: float | None = None) -> None:
        """A run was queued: claim now, or at ``due_at`` (epoch seconds) for delayed runs."""
        if due_at is not None and due_at > time.time():
            if self._due_at is None or due_at < self._due_at:
                self._due_at = due_at
        self._more = True
        self._wake.set()

    def cancel(self, run_id: str, action: str) -> bool:
        """Pass a cancel (already recorded in storage) to the run's executor, if it runs here.
        A run claimed but not yet registered reads the recorded cancel when it starts."""
        control = self._controls.get(run_id)
        if control is None:
            return False
        control.request(action)
        return True

    async def _loop(self) -> None:
        retry = RETRY_MIN
        while not self._stopping:
            await wait_until(self._wake, self._due_at)
            self._wake.clear()
            if self._stopping:
                return
            timer = self._due_at is not None and self._due_at <= time.time()
            if timer:
                self._due_at = None
            try:
                await self._claim_while_free()
                if timer and self._due_at is None:
                    # Delayed runs came due: when is the next one? (A run delayed since is
                    # notified with its time; one from another process, at a heartbeat.)
                    self._due_at = await self.storage.next_due_at()
            except ServiceUnavailable as exc:
                self._unavailable("claiming runs", exc)
                # Backing off: heartbeats and wake-ups would otherwise retry many times a
                # second; a stop cuts the pause short.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopped.wait(), retry)
                retry = min(retry * 2, RETRY_MAX)
                self._wake.set()
                continue
            except Exception:
                log.exception("claiming runs failed; retrying")
                await wait_until(self._wake, time.time() + 1)  # a stop cuts the pause short
                self._wake.set()
                continue
            retry = RETRY_MIN

    def _unavailable(self, what: str, exc: ServiceUnavailable) -> None:
        """The database did not answer: the first failure of an outage is logged (without a
        traceback: the storage logs why), the others until it answers again are not."""
        if self._unavailable_since is None:
            self._unavailable_since = time.monotonic()
            log.warning("worker %s: %s failed (%s); retrying until the database answers",
                        self.owner, what, exc.detail)  # fmt: skip
        else:
            log.debug("worker %s: %s failed (%s)", self.owner, what, exc.detail)

    def _available(self) -> None:
        if self._unavailable_since is not None:
            log.info("worker %s: the database answers again after %.1f s", self.owner,
                     time.monotonic() - self._unavailable_since)  # fmt: skip
            self._unavailable_since = None

    async def _claim_while_free(self) -> None:
        while len(self._tasks) < self.jobs and not self._stopping:
            want = self.jobs - len(self._tasks)
            self._more = False  # a wake-up from now on sets it again
            try:
                runs = await self.storage.claim_runs(want, owner=self.owner, lease=self.lease)
            except BaseException:
                self._more = True
                raise
            self._available()
            for run in runs:
                self._start(run)
            if len(runs) < want:
                return  # every thread with a runnable run got it: nothing more to claim
            self._more = True

    def _start(self, run: Row) -> None:
        run_id = run["run_id"]
        # Registered before the task exists: from here on a cancel reaches the executor.
        control = self._controls[run_id] = RunControl()
        self._held[run_id] = run["attempt"]
        task = asyncio.create_task(self.executor.execute(run, control), name=f"run-{run_id}")
        self._tasks[run_id] = task
        task.add_done_callback(lambda t, rid=run_id: self._finished(rid, t))

    def _finished(self, run_id: str, task: asyncio.Task[str]) -> None:
        # A run handed back is claimed again as soon as its hand-back commits, possibly by
        # this worker before this task is done: the entries are then the new execution's.
        control = None
        if self._tasks.get(run_id) is task:
            del self._tasks[run_id]
            control = self._controls.pop(run_id, None)
            self._held.pop(run_id, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("run %s crashed the executor", run_id, exc_info=task.exception())
        if self._more or control is None or control.thread_queued is not False:
            self._wake.set()  # a slot is free for a run queued meanwhile, or the thread's next

    # Leases ----------------------------------------------------------------

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            if await self._renew():
                # Only after this worker's own leases are renewed: a lease of its own that ran
                # out while the database was away is renewed, not taken back from under it.
                await self._take_back_expired()
            if not self.storage.exclusive:
                # A wake-up from another process can be lost (the broker only nudges): look
                # at the queue now and then all the same.
                await self._refresh_due_at()
                self.notify()

    async def _renew(self) -> bool:
        held = list(self._held.items())
        try:
            kept = await self.storage.renew_leases(self.owner, held, self.lease)
        except Exception as exc:
            silent = time.monotonic() - self._renewed_at
            if isinstance(exc, ServiceUnavailable):
                self._unavailable("renewing leases", exc)
            else:
                log.warning("worker %s: renewing leases failed (%s)", self.owner, exc)
            if silent >= self.lease:
                # Another worker may have taken these runs back by now: stop writing.
                for run_id, _ in held:
                    self._lose(run_id, f"its lease could not be renewed for {silent:.0f} s")
            return False
        self._renewed_at = time.monotonic()
        if held:  # else nothing was asked of the database
            self._available()
        for run_id, attempt in held:
            if run_id not in kept and self._held.get(run_id) == attempt:
                self._lose(run_id, "its lease was lost (taken back, ended or deleted)")
            elif (action := kept.get(run_id)) is not None:
                # The broker only nudges: a cancel sent while it was away is honoured here.
                control = self._controls.get(run_id)
                if control is not None and not control.cancelled:
                    log.info("run %s: a cancel (%s) read at the heartbeat", run_id, action)
                    control.request(action)
        return True

    async def _refresh_due_at(self) -> None:
        try:
            due = await self.storage.next_due_at()
        except ServiceUnavailable as exc:
            self._unavailable("reading when the next delayed run is due", exc)
            return
        except Exception as exc:
            log.warning("reading when the next delayed run is due failed (%s)", exc)
            return
        if due is not None:
            self.notify(due)

    def _lose(self, run_id: str, why: str) -> None:
        control = self._controls.get(run_id)
        if control is not None and control.action != LEASE_LOST:
            log.warning("run %s: stopping this attempt: %s", run_id, why)
            control.request(LEASE_LOST)

    async def _take_back_expired(self) -> None:
        try:
            taken = await self.storage.take_back_expired()
        except ServiceUnavailable as exc:
            self._unavailable("taking back runs whose lease ran out", exc)
            return
        except Exception as exc:
            log.warning("taking back runs whose lease ran out failed (%s)", exc)
            return
        if taken:
            log.warning(
                "took back %d run(s) whose lease ran out: %s",
                len(taken), ", ".join(r["run_id"] for r in taken),
            )  # fmt: skip
            self.notify()
            await self.broker.wake()
