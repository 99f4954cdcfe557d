"""Deliver a finished run to its webhook: a background task per delivery, so the worker never
waits on a receiver; retried with exponential backoff and jitter on network errors, timeouts,
5xx and 429. Failures are logged, never raised: the run's outcome is already recorded."""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import datetime
from typing import Any

import httpx
import orjson

from agentd import __version__, serde
from agentd.config import WebhookSettings
from agentd.storage.base import Row
from agentd.webhooks.policy import (
    Resolver,
    Target,
    UrlPolicy,
    WebhookRefused,
    WebhookUnresolved,
    resolve,
)

log = logging.getLogger("agentd.webhooks")
ATTEMPTS = 3
BACKOFF = 1.0  # seconds; attempt n waits BACKOFF * 2**n plus up to BACKOFF of jitter
TIMEOUT = httpx.Timeout(30.0, connect=5.0)
SHUTDOWN_GRACE = 5.0
_RUN_KEYS = ("run_id", "thread_id", "assistant_id", "metadata", "kwargs", "multitask_strategy",
             "created_at", "attempt")  # fmt: skip


class WebhookSender:
    def __init__(self, settings: WebhookSettings, *, resolver: Resolver = resolve):
        self.settings = settings
        self.policy = UrlPolicy(settings.url, resolver=resolver)
        self._tasks: set[asyncio.Task[None]] = set()
        # No connection reuse: a pooled TLS connection to one host name must not carry a
        # request for another name that resolved to the same address. No proxies from the
        # environment either: the checked address is the one connected to.
        self._client = httpx.AsyncClient(
            timeout=TIMEOUT,
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    @property
    def pending(self) -> int:
        return len(self._tasks)

    async def check(self, url: str) -> None:
        """Refuse (``WebhookRefused``, a 422) a URL the policy does not allow, also when
        delivery is disabled: a run accepted with deliveries off must be accepted with them on."""
        await self.policy.check(url)

    def run_ended(
        self,
        run: Row,
        status: str,
        *,
        values: bytes | None = None,
        error: Row | None = None,
        started_at: datetime | None = None,
    ) -> None:
        """Queue the delivery of ``run``'s end, if it has a webhook; returns at once.
        ``values`` is the final state, already JSON-encoded."""
        url = (run.get("kwargs") or {}).get("webhook")
        if not url or not self.settings.enabled:
            return
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
        task = asyncio.create_task(self._deliver(url, payload), name=f"webhook-{run['run_id']}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Give deliveries under way ``grace`` seconds, then abandon the rest (logged)."""
        if self._tasks:
            _, unfinished = await asyncio.wait(set(self._tasks), timeout=grace)
            if unfinished:
                log.warning("shutting down: abandoned %d webhook deliver%s still under way",
                            len(unfinished), "y" if len(unfinished) == 1 else "ies")  # fmt: skip
                for task in unfinished:
                    task.cancel()
                await asyncio.gather(*unfinished, return_exceptions=True)
        await self._client.aclose()

    async def _deliver(self, url: str, payload: dict[str, Any]) -> None:
        try:
            await self._attempts(url, payload)
        except Exception:  # a bug here must not go unnoticed, nor reach the event loop
            log.exception("webhook for run %s failed", payload["run_id"])

    async def _attempts(self, url: str, payload: dict[str, Any]) -> None:
        run_id = payload["run_id"]
        reason = ""
        for attempt in range(ATTEMPTS):
            if attempt:
                await asyncio.sleep(BACKOFF * 2 ** (attempt - 1) + random.uniform(0, BACKOFF))
            try:
                target = await self.policy.check(url)  # again: DNS may have changed
            except WebhookUnresolved as exc:
                reason = exc.detail
                continue
            except WebhookRefused as exc:  # the policy or the config changed: never retried
                log.warning("webhook for run %s not sent: %s", run_id, exc.detail)
                return
            try:
                response = await self._post(target, payload)
            except httpx.HTTPError as exc:  # network errors and timeouts
                reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                continue
            where = _shown(target.url)
            if response.is_success:
                log.info("webhook for run %s delivered to %s (%d)", run_id, where,
                         response.status_code)  # fmt: skip
                return
            reason = f"{where} answered {response.status_code}"
            if response.status_code < 500 and response.status_code != 429:
                note = "; redirects are not followed" if response.is_redirect else ""
                log.warning("webhook for run %s failed: %s (not retried%s)", run_id, reason, note)
                return
        log.warning("webhook for run %s failed after %d attempts: %s", run_id, ATTEMPTS, reason)

    async def _post(self, target: Target, payload: dict[str, Any]) -> httpx.Response:
        body = {**payload, "webhook_sent_at": serde.now().isoformat()}
        if self.settings.allowed_fields is not None:
            body = {k: v for k, v in body.items() if k in self.settings.allowed_fields}
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"agentd/{__version__}",
            **dict(self.settings.headers),
            "Host": target.url.netloc.decode("ascii"),
        }
        extensions = {}
        if target.url.scheme == "https" and target.host != target.addresses[0]:
            extensions["sni_hostname"] = target.host  # TLS checks the name, not the address
        return await self._client.post(
            target.pinned(), content=serde.dumps(body), headers=headers, extensions=extensions
        )


def _shown(url: httpx.URL) -> str:
    """The URL for logs: no query string or credentials, which may hold secrets."""
    return str(url.copy_with(query=None, fragment=None, username=None, password=None))
