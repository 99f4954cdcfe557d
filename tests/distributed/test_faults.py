"""Faults under a cluster (two API servers, two workers), each on throwaway servers of the
test's own: Redis restarted empty, and PostgreSQL stopped and started, while background runs
are in flight and queued. Meanwhile what needs the lost server answers 503 with a clear detail
(never a 500, never a hang); afterwards, with no manual step, every acknowledged run ends
``success`` (PostgreSQL is the source of truth: queued runs survive a Redis flush), a client
waiting on a run gets its result, and new runs work through every API server."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.cluster import Cluster
from tests.pg import PgCluster
from tests.redisd import RedisServer

# Two run slots per worker: four runs execute at once and the rest wait in PostgreSQL's queue.
SLOTS = {"N_JOBS_PER_WORKER": "2"}
# Redis: the default lease and heartbeat. A worker also looks at the queue at each heartbeat,
# which would hide a wake-up lost with Redis behind a quick one.
REDIS_ENV = {"AGENTD_LEASE_SECONDS": "20", "AGENTD_HEARTBEAT_SECONDS": "5", **SLOTS}
# PostgreSQL: short leases (as test_cluster.py's), so that they run out during the outage.
PG_ENV = {"AGENTD_LEASE_SECONDS": "2", "AGENTD_HEARTBEAT_SECONDS": "0.4", **SLOTS}
RUNS = 8
DELAY = 0.4  # per node of the ledger graph (three nodes): a run takes ~1.5 s
BROKER_DOWN = "The event broker is unavailable"
DATABASE_DOWN = "The database is unavailable"
TIMEOUT = httpx.Timeout(10.0)  # a request that hangs fails the test


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[PgCluster, RedisServer]]:
    with PgCluster(tmp_path / "pg") as pg, RedisServer(tmp_path / "redis") as redis:
        pg.init().start()
        with psycopg.connect(pg.url(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE agentd")
        redis.start()
        yield pg, redis


Started = tuple[Cluster, list[httpx.AsyncClient]]


@pytest.fixture
async def start_cluster(
    tmp_path: Path, servers: tuple[PgCluster, RedisServer]
) -> AsyncIterator[Callable[[dict[str, str]], Started]]:
    """Start the cluster on the throwaway servers with an environment; returns it and a client
    of each API server. Everything stops after the test."""
    pg, redis = servers
    started: list[Started] = []

    def start(env: dict[str, str]) -> Started:
        cluster = Cluster(
            tmp_path / "cluster", env=env, database_url=pg.url("agentd"), redis_url=redis.url
        ).start()
        clients = [httpx.AsyncClient(base_url=url, timeout=TIMEOUT) for url in cluster.urls]
        started.append((cluster, clients))
        return cluster, clients

    yield start
    for cluster, clients in started:
        for client in clients:
            await client.aclose()
        cluster.stop()


def _body(ledger: Path, **extra: Any) -> dict[str, Any]:
    return {"assistant_id": "ledger", "input": {"ledger": str(ledger), "delay": DELAY}, **extra}


async def _start_runs(apis: list[httpx.AsyncClient], ledger: Path, n: int) -> list[tuple[str, str]]:
    """``n`` background runs, each on a thread of its own, through alternating API servers:
    acknowledged means committed."""
    runs = []
    for i in range(n):
        api = apis[i % len(apis)]
        thread = (await api.post("/threads", json={})).json()["thread_id"]
        r = await api.post(f"/threads/{thread}/runs", json=_body(ledger))
        assert r.status_code == 200, r.text
        runs.append((thread, r.json()["run_id"]))
    return runs


def _ledger(ledger: Path) -> list[list[str]]:
    return [line.split() for line in ledger.read_text().splitlines()] if ledger.exists() else []


async def _until(
    check: Callable[[], Awaitable[bool]], limit: float, what: str, cluster: Cluster
) -> None:
    deadline = time.monotonic() + limit
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{cluster.logs()}"
        await asyncio.sleep(0.1)


async def _all_end(
    api: httpx.AsyncClient, runs: list[tuple[str, str]], cluster: Cluster, limit: float = 30
) -> list[dict[str, Any]]:
    """Wait until every run has ended (by PostgreSQL's account); returns them."""
    ended: dict[str, dict[str, Any]] = {}

    async def check() -> bool:
        for thread, run_id in runs:
            if run_id not in ended:
                r = await api.get(f"/threads/{thread}/runs/{run_id}")
                assert r.status_code == 200, r.text
                if r.json()["status"] not in ("pending", "running"):
                    ended[run_id] = r.json()
        return len(ended) == len(runs)

    await _until(check, limit, "every run to end", cluster)
    return [ended[run_id] for _, run_id in runs]


async def _joined(
    api: httpx.AsyncClient, thread: str, run_id: str
) -> asyncio.Task[tuple[int, Any]]:
    """A client waiting on a run (``join``): returns once its request is answered (the
    server subscribed and read the run), the task the status and body the client gets."""
    attached = asyncio.Event()

    async def join() -> tuple[int, Any]:
        url = f"/threads/{thread}/runs/{run_id}/join"
        async with api.stream("GET", url, timeout=60) as r:
            attached.set()
            return r.status_code, (await r.aread()).decode()

    task = asyncio.create_task(join())
    await asyncio.wait_for(attached.wait(), 10)
    return task


async def _result(joined: asyncio.Task[tuple[int, Any]]) -> dict[str, Any]:
    status, body = await asyncio.wait_for(joined, 30)
    assert status == 200, body
    return json.loads(body)


def _assert_unavailable(r: httpx.Response, detail: str) -> None:
    """A 503 with the lost server's detail, at once (not after waiting for it)."""
    assert r.status_code == 503, (r.status_code, r.text)
    assert r.json()["detail"].startswith(detail), r.text
    assert r.elapsed.total_seconds() < 3, f"a 503 took {r.elapsed}: {r.request.url}"


def _assert_ran_once_at_a_time(ledger: Path, runs: list[tuple[str, str]]) -> None:
    """Every node of every run ended; a node may run again after a fault cut it off (its
    checkpoint was not written), never twice at once."""
    lines = _ledger(ledger)
    ends = Counter((run_id, node) for run_id, node, event, *_ in lines if event == "end")
    assert {(run_id, node) for _, run_id in runs for node in "abc"} <= set(ends)
    running: Counter[tuple[str, str]] = Counter()
    for run_id, node, event, *_ in lines:
        running[run_id, node] += 1 if event == "start" else -1
        assert running[run_id, node] <= 1, f"{run_id} {node} ran twice at once"


async def _new_runs_work(
    apis: list[httpx.AsyncClient], ledger: Path, within: float | None = None
) -> None:
    """Wait and stream through every API server: each needs the broker and the database.
    A server notices the lost one is back within its probe's backoff (at most 2 s). With
    ``within``, each run must be done that soon: it was started by its wake-up, not found at
    a heartbeat."""
    for api in apis:
        thread = (await api.post("/threads", json={})).json()["thread_id"]
        body = _body(ledger)
        body["input"]["delay"] = 0
        deadline = time.monotonic() + 10
        while True:
            started = time.monotonic()
            r = await api.post(f"/threads/{thread}/runs/wait", json=body)
            if r.status_code != 503:
                break
            assert time.monotonic() < deadline, f"service did not resume: {r.text}"
            await asyncio.sleep(0.1)
        took = time.monotonic() - started
        assert r.status_code == 200, r.text
        assert r.json()["steps"] == ["a", "b", "c"], r.text
        started = time.monotonic()
        async with api.stream(
            "POST", f"/threads/{thread}/runs/stream", json={**body, "stream_mode": ["values"]}
        ) as stream:
            assert stream.status_code == 200
            text = (await stream.aread()).decode()
        took = max(took, time.monotonic() - started)
        assert "event: values" in text and '"steps":["a","b","c","a","b","c"]' in text, text
        assert within is None or took < within, f"a new run took {took:.1f}s: its wake-up lost?"


async def test_redis_restarted_empty_under_runs_in_flight(
    start_cluster: Callable[[dict[str, str]], Started],
    servers: tuple[PgCluster, RedisServer],
    tmp_path: Path,
) -> None:
    _, redis = servers
    cluster, apis = start_cluster(REDIS_ENV)
    ledger = tmp_path / "ledger.txt"
    a, b = apis
    # A long run, cancelled while Redis is down: the cancel must still reach its worker.
    thread = (await a.post("/threads", json={})).json()["thread_id"]
    long_run = _body(ledger, input={"ledger": str(ledger), "delay": 10})
    r = await a.post(f"/threads/{thread}/runs", json=long_run)
    doomed = [(thread, r.json()["run_id"])]
    doomed_thread, doomed_run = doomed[0]
    runs = await _start_runs(apis, ledger, RUNS)
    # A client waiting on the last queued run (through the other server than its creator's).
    waiter_thread, waiter_run = runs[-1]
    joined = await _joined(b, waiter_thread, waiter_run)

    async def some_started() -> bool:
        started = {run_id for run_id, *_ in _ledger(ledger)}
        return doomed_run in started and len(started) >= 2

    await _until(some_started, 20, "runs to start", cluster)

    redis.stop()  # and a fresh, empty one below: everything Redis held is gone
    outage = time.monotonic()
    thread = (await a.post("/threads", json={})).json()["thread_id"]
    for api in apis:
        # Whatever subscribes to a run's events needs Redis.
        _assert_unavailable(
            await api.post(f"/threads/{thread}/runs/wait", json=_body(ledger)), BROKER_DOWN
        )
        _assert_unavailable(
            await api.post(f"/threads/{thread}/runs/stream", json=_body(ledger)), BROKER_DOWN
        )
        _assert_unavailable(await api.post("/runs/wait", json=_body(ledger)), BROKER_DOWN)
        _assert_unavailable(
            await api.get(f"/threads/{waiter_thread}/runs/{waiter_run}/join"), BROKER_DOWN
        )
        _assert_unavailable(
            await api.get(f"/threads/{waiter_thread}/runs/{waiter_run}/stream"), BROKER_DOWN
        )
        _assert_unavailable(await api.get(f"/threads/{thread}/stream"), BROKER_DOWN)
    # What needs only PostgreSQL is served: reads, new background runs, a cancel (recorded).
    assert (await b.get(f"/threads/{thread}")).status_code == 200
    during = await _start_runs(apis, ledger, 2)
    r = await b.post(f"/threads/{doomed_thread}/runs/{doomed_run}/cancel")
    assert r.status_code == 202, r.text
    await asyncio.sleep(max(0.0, 1.5 - (time.monotonic() - outage)))
    redis.start()

    # Back by itself: every acknowledged run ends, the waiting client gets its result.
    ended = await _all_end(a, runs + during, cluster)
    assert [r["status"] for r in ended] == ["success"] * len(ended), ended
    cancelled = await _all_end(a, doomed, cluster, limit=10)  # read at a heartbeat
    assert cancelled[0]["status"] == "interrupted", cancelled
    assert (await _result(joined))["steps"] == ["a", "b", "c"]
    _assert_ran_once_at_a_time(ledger, runs + during)
    # ~0.05 s each here; a wake-up lost would wait for a heartbeat (0-5 s): caught 3 times in 5.
    await _new_runs_work(apis, ledger, within=2.0)


async def test_postgres_stopped_and_started_under_runs_in_flight(
    start_cluster: Callable[[dict[str, str]], Started],
    servers: tuple[PgCluster, RedisServer],
    tmp_path: Path,
) -> None:
    pg, _ = servers
    cluster, apis = start_cluster(PG_ENV)
    ledger = tmp_path / "ledger.txt"
    a, b = apis
    runs = await _start_runs(apis, ledger, RUNS)
    waiter_thread, waiter_run = runs[-1]
    joined = await _joined(b, waiter_thread, waiter_run)

    async def some_started() -> bool:
        return len({run_id for run_id, *_ in _ledger(ledger)}) >= 2

    await _until(some_started, 20, "runs to start", cluster)
    logged = {p.log_path: len(p.log()) for p in [*cluster.apis, *cluster.workers]}

    pg.stop("fast")
    outage = time.monotonic()
    thread, run_id = runs[0]
    for api in apis:
        _assert_unavailable(await api.post("/threads", json={}), DATABASE_DOWN)
        _assert_unavailable(await api.get(f"/threads/{thread}"), DATABASE_DOWN)
        _assert_unavailable(await api.get(f"/threads/{thread}/state"), DATABASE_DOWN)
        _assert_unavailable(await api.get(f"/threads/{thread}/runs/{run_id}"), DATABASE_DOWN)
        _assert_unavailable(await api.post("/threads/search", json={}), DATABASE_DOWN)
        _assert_unavailable(
            await api.post(f"/threads/{thread}/runs", json=_body(ledger)), DATABASE_DOWN
        )
        _assert_unavailable(
            await api.post(f"/threads/{thread}/runs/wait", json=_body(ledger)), DATABASE_DOWN
        )
        _assert_unavailable(await api.get(f"/threads/{thread}/runs/{run_id}/join"), DATABASE_DOWN)
    # Down past a lease and a keep-alive of the waiting client: the workers cannot renew, and
    # the waiter's check of its run's status fails meanwhile.
    await asyncio.sleep(max(0.0, 6.0 - (time.monotonic() - outage)))
    pg.start()
    down = time.monotonic() - outage
    for api in apis:  # back by itself, within the probe's backoff
        deadline = time.monotonic() + 10
        while (r := await api.post("/threads", json={})).status_code == 503:
            assert time.monotonic() < deadline, f"service did not resume: {r.text}"
            await asyncio.sleep(0.1)
        assert r.status_code == 200, r.text

    ended = await _all_end(a, runs, cluster)
    assert [r["status"] for r in ended] == ["success"] * len(ended), ended
    assert (await _result(joined))["steps"] == ["a", "b", "c"]
    _assert_ran_once_at_a_time(ledger, runs)
    await _new_runs_work(apis, ledger)

    # Retries back off: a process logs a few lines about the outage, not one per attempt.
    for process in [*cluster.apis, *cluster.workers]:
        text = process.log()[logged[process.log_path] :]
        lines = [line for line in text.splitlines() if re.match(r"^\S", line)]
        assert len(lines) <= 12 + down, (
            f"{process.log_path.name} logged {len(lines)} lines:\n{text}"
        )
