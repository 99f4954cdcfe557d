"""Deliver a finished run to its webhook, through an outbox.

The delivery is built here (``delivery``) and recorded by storage in the very transaction that
records the run's end, so a crash cannot lose it. A background loop claims due deliveries
(each with a lease, so two senders never send one at once) and sends them after the commit,
a bounded number at a time; the run's slot never waits for them. A network error, a timeout,
a 5xx or a 429 is retried with exponential backoff and jitter; a delivery is deleted once
delivered or given up. Each attempt is bounded in time and reads at most ``BODY_CAP`` bytes of
the answer. Failures are logged, never raised: the run's outcome is already recorded."""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from datetime import datetime
from typing import Any

import httpx
import orjson

from agentd import __version__, serde
from agentd.config import WebhookSettings
from agentd.storage.base import Row, Storage, WebhookDelivery
from agentd.wakeup import wait_until
from agentd.webhooks.policy import (
    DNS_TIMEOUT,
    Resolver,
    Target,
    UrlPolicy,
    WebhookRefused,
    WebhookUnresolved,
    resolve,
)

log = logging.getLogger("agentd.webhooks")
ATTEMPTS = 3
BACKOFF = 1.0  # seconds; after attempt n, wait BACKOFF * 2**(n-1) plus up to BACKOFF of jitter
CONNECT_TIMEOUT = 5.0
BODY_CAP = 64 * 1024  # bytes of an answer read at most: enough for an error page, never more
CONCURRENCY = 32  # deliveries under way at once per process
# Seconds a lease outlives the longest attempt (recording its outcome). On a shared database a
# dead process's deliveries are sent again when their leases run out.
LEASE_MARGIN = 10.0
SHUTDOWN_GRACE = 5.0
DELIVERY_HEADER = "X-Agentd-Delivery"
_RUN_KEYS = ("run_id", "thread_id", "assistant_id", "metadata", "kwargs", "multitask_strategy",
             "created_at", "attempt")  # fmt: skip


class WebhookSender:
    def __init__(
        self,
        settings: WebhookSettings,
        storage: Storage,
        *,
        resolver: Resolver = resolve,
        concurrency: int = CONCURRENCY,
    ):
        self.settings = settings
        self.storage = storage
        self.policy = UrlPolicy(settings.url, resolver=resolver)
        self.concurrency = concurrency
        # An attempt takes at most the DNS check plus its own bound; the lease covers both.
        self.lease = DNS_TIMEOUT + settings.timeout + LEASE_MARGIN
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self._loop_task: asyncio.Task[None] | None = None
        # No connection reuse: a pooled TLS connection to one host name must not carry a
        # request for another name that resolved to the same address. No proxies from the
        # environment either: the checked address is the one connected to. The attempt's
        # bound in all is kept by _post; these are the per-phase limits inside it.
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.timeout, connect=CONNECT_TIMEOUT),
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    async def check(self, url: str) -> None:
        """Refuse (``WebhookRefused``, a 422) a URL the policy does not allow, also when
        delivery is disabled: a run accepted with deliveries off must be accepted with them on."""
        await self.policy.check(url)

    def delivery(
        self,
        run: Row,
        status: str,
        *,
        values: bytes | None = None,
        error: Row | None = None,
        started_at: datetime | None = None,
    ) -> WebhookDelivery | None:
        """The delivery of ``run``'s end as ``status``, or None (no webhook, or delivery
        disabled). Pure: storage calls it inside a transaction (``WebhookFor``).
        ``values`` is the final state, already JSON-encoded."""
        url = (run.get("kwargs") or {}).get("webhook")
        if not url or not self.settings.enabled:
            return None
        ended = serde.now().isoformat()
        payload: dict[str, Any] = {key: run.get(key) for key in _RUN_KEYS}
        payload.update(
            status=status,
            updated_at=ended,
            run_started_at=started_at.isoformat() if started_at else None,
            run_ended_at=ended,
            values=orjson.Fragment(values) if values is not None else None,
        )
        if error is not None:
            payload["error"] = error
        if self.settings.allowed_fields is not None:
            payload = {k: v for k, v in payload.items() if k in self.settings.allowed_fields}
        return WebhookDelivery(str(uuid.uuid4()), run["run_id"], url, serde.dumps(payload))

    # ---------------------------------------------------------------- the delivery loop

    async def start(self) -> None:
        if not self.settings.enabled:
            return  # http.disable_webhooks: what an earlier start left in the outbox waits
        # With the file to itself, every lease at start-up is an orphan; on a shared database
        # another process may be sending: its leases run out by themselves if it died.
        requeued = await self.storage.requeue_webhooks() if self.storage.exclusive else 0
        if requeued:
            log.warning("%d webhook deliver%s cut short by a previous process will be retried",
                        requeued, "y" if requeued == 1 else "ies")  # fmt: skip
        self._wake.set()  # whatever is due already
        self._loop_task = asyncio.create_task(self._loop(), name="agentd-webhooks")

    def wake(self) -> None:
        """Deliveries were recorded (a run ended): send what is due now."""
        self._wake.set()

    async def stop(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Stop claiming; give deliveries under way ``grace`` seconds, then hand the rest back
        to the outbox (uncounted), to be retried at the next start."""
        # Not a cancel: a claim cancelled in flight may still commit, leasing deliveries that
        # no task would send. The loop stops between claims instead.
        self._stopping = True
        self._wake.set()
        if self._loop_task is not None:
            await asyncio.gather(self._loop_task, return_exceptions=True)
        if self._tasks:
            _, unfinished = await asyncio.wait(set(self._tasks.values()), timeout=grace)
            if unfinished:
                abandoned = [d for d, task in self._tasks.items() if task in unfinished]
                log.warning("shutting down: abandoned %d webhook deliver%s still under way; "
                            "retried at the next start", len(abandoned),
                            "y" if len(abandoned) == 1 else "ies")  # fmt: skip
                for task in unfinished:
                    task.cancel()
                await asyncio.gather(*unfinished, return_exceptions=True)
                for delivery_id in abandoned:
                    try:
                        await self.storage.retry_webhook(delivery_id, 0.0, counted=False)
                    except Exception:  # the next start requeues it all the same (counted)
                        log.exception("could not hand webhook delivery %s back", delivery_id)
        await self._client.aclose()

    async def _loop(self) -> None:
        due_at: float | None = None
        while not self._stopping:
            await wait_until(self._wake, due_at)
            self._wake.clear()
            if self._stopping:
                return
            try:
                due_at = await self._claim_while_free()
            except Exception:
                log.exception("claiming webhook deliveries failed; retrying")
                due_at = time.time() + 1.0

    async def _claim_while_free(self) -> float | None:
        """Start every due delivery a slot is free for. Returns when to look again (epoch
        seconds), or None to wait for a wake-up (a delivery ending frees a slot)."""
        while (free := self.concurrency - len(self._tasks)) > 0 and not self._stopping:
            rows = await self.storage.claim_webhooks(free, self.lease)
            for row in rows:
                self._start(row)
            if len(rows) < free:  # nothing else is due now
                return await self.storage.next_webhook_at()
        return None

    def _start(self, row: Row) -> None:
        delivery_id = row["delivery_id"]
        task = asyncio.create_task(self._deliver(row), name=f"webhook-{delivery_id}")
        self._tasks[delivery_id] = task
        task.add_done_callback(lambda _, d=delivery_id: self._finished(d))

    def _finished(self, delivery_id: str) -> None:
        self._tasks.pop(delivery_id, None)
        self._wake.set()  # a slot is free, and a retry may be due soon

    async def _deliver(self, row: Row) -> None:
        """One attempt, then its outcome in the outbox: deleted, or due again later."""
        try:
            retry_in = await self._attempt(row)
            if retry_in is None:
                await self.storage.delete_webhook(row["delivery_id"])
            else:
                await self.storage.retry_webhook(row["delivery_id"], retry_in)
        except Exception:  # a bug here must not go unnoticed; the lease runs out, then a retry
            log.exception("webhook for run %s failed", row["run_id"])

    # ---------------------------------------------------------------- one attempt

    async def _attempt(self, row: Row) -> float | None:
        """Send once; None when the delivery is over, else the seconds until the next try."""
        run_id, attempt = row["run_id"], row["attempt"]
        if attempt > ATTEMPTS:  # the last ones were cut short by the process dying
            log.warning("webhook for run %s given up: %d attempts started, the last cut short",
                        run_id, attempt - 1)  # fmt: skip
            return None
        try:
            target = await self.policy.check(row["url"])  # again: DNS may have changed
        except WebhookUnresolved as exc:
            return self._failed(run_id, attempt, exc.detail)
        except WebhookRefused as exc:  # the policy or the config changed: never retried
            log.warning("webhook for run %s not sent: %s", run_id, exc.detail)
            return None
        try:
            status, head = await self._post(target, row["payload"], row["delivery_id"])
        except (httpx.HTTPError, TimeoutError) as exc:  # network errors and timeouts
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            return self._failed(run_id, attempt, reason)
        where = _shown(target.url)
        if 200 <= status < 300:
            log.info("webhook for run %s delivered to %s (%d)", run_id, where, status)
            return None
        reason = f"{where} answered {status}"
        if head:
            reason += f": {head[:200].decode(errors='replace')!r}"
        if status < 500 and status != 429:
            note = "; redirects are not followed" if 300 <= status < 400 else ""
            log.warning("webhook for run %s failed: %s (not retried%s)", run_id, reason, note)
            return None
        return self._failed(run_id, attempt, reason)

    def _failed(self, run_id: str, attempt: int, reason: str) -> float | None:
        if attempt >= ATTEMPTS:
            log.warning("webhook for run %s failed after %d attempts: %s", run_id, attempt, reason)
            return None
        return BACKOFF * 2 ** (attempt - 1) + random.uniform(0, BACKOFF)

    async def _post(self, target: Target, payload: bytes, delivery_id: str) -> tuple[int, bytes]:
        """POST within ``settings.timeout`` in all; the status and at most ``BODY_CAP`` bytes
        of the answer. Once the status is in, it decides: a body cut short by the bound (a
        drip) or by the peer does not undo a 2xx, nor make a 4xx retried."""
        fields = self.settings.allowed_fields
        if fields is None or "webhook_sent_at" in fields:
            payload = _with_sent_at(payload, serde.now().isoformat())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"agentd/{__version__}",
            **dict(self.settings.headers),
            DELIVERY_HEADER: delivery_id,
            "Host": target.url.netloc.decode("ascii"),
        }
        extensions = {}
        if target.url.scheme == "https" and target.host != target.addresses[0]:
            extensions["sni_hostname"] = target.host  # TLS checks the name, not the address
        status: int | None = None
        head = bytearray()
        try:
            async with asyncio.timeout(self.settings.timeout):
                async with self._client.stream(
                    "POST", target.pinned(), content=payload, headers=headers, extensions=extensions
                ) as response:
                    status = response.status_code
                    # Raw bytes: a compressed answer is not inflated. Reading what a small
                    # answer holds lets the connection close cleanly; past the cap, stop.
                    async for chunk in response.aiter_raw():
                        head += chunk[: BODY_CAP - len(head)]
                        if len(head) >= BODY_CAP:
                            break
        except (httpx.HTTPError, TimeoutError):
            if status is None:
                raise
        return status, bytes(head)


def _with_sent_at(payload: bytes, sent_at: str) -> bytes:
    """``payload`` (a JSON object) with ``webhook_sent_at`` as its last key, spliced in
    rather than decoding and encoding the run's values again for every attempt."""
    field = b'"webhook_sent_at":' + orjson.dumps(sent_at)
    return payload[:-1] + (b"," if payload != b"{}" else b"") + field + b"}"


def _shown(url: httpx.URL) -> str:
    """The URL for logs: no query string or credentials, which may hold secrets."""
    return str(url.copy_with(query=None, fragment=None, username=None, password=None))
