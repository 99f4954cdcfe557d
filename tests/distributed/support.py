"""What the crash and load tests share: an SDK client that fails fast on a dead server, reads
of the cluster's database, waiting with backoff until every run has ended."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
from langgraph_sdk.client import LangGraphClient

from tests.cluster import Cluster


def sdk(url: str) -> LangGraphClient:
    """The official client, as ``get_client`` builds it but for the transport's retries: its
    five retries of a refused connection would spend seconds on a killed server, where a
    client behind a load balancer goes to the other one at once."""
    return LangGraphClient(
        httpx.AsyncClient(
            base_url=url,
            transport=httpx.AsyncHTTPTransport(retries=0),
            timeout=httpx.Timeout(connect=5, read=60, write=60, pool=60),
        )
    )


async def until(predicate: Callable[[], bool], limit: float, what: str) -> None:
    """Wait, polling with backoff, until ``predicate()`` holds; fail after ``limit`` seconds."""
    deadline = time.monotonic() + limit
    pause = 0.01
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(pause)
        pause = min(pause * 1.5, 0.2)


class Database:
    """One connection to the cluster's database for the whole test: polling must not need a
    connection slot of its own each time, when the cluster's pools may hold most of them."""

    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def __aenter__(self) -> Database:
        self._conn = await psycopg.AsyncConnection.connect(
            self.cluster.database_url, autocommit=True
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._conn is not None:
            await self._conn.close()

    async def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        assert self._conn is not None
        return await (await self._conn.execute(sql, params or None)).fetchall()  # type: ignore[arg-type]

    async def settle(self, expected: int, limit: float) -> dict[str, int]:
        """Wait until at least ``expected`` runs exist and none is pending or running (polled
        with backoff); returns how many runs end in each status. Fails naming what is left."""
        deadline = time.monotonic() + limit
        pause = 0.05
        while True:
            rows = await self.rows("SELECT status, count(*) FROM runs GROUP BY status")
            statuses = {status: n for status, n in rows}
            if sum(statuses.values()) >= expected and not {"pending", "running"} & set(statuses):
                return statuses
            assert time.monotonic() < deadline, (
                f"runs still in flight after {limit:.0f} s: {statuses}\n{self.cluster.logs()}"
            )
            await asyncio.sleep(pause)
            pause = min(pause * 1.5, 1.0)
