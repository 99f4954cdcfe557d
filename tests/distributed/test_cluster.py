"""agentd as many processes: two API servers and two workers on one PostgreSQL database and
one Redis, driven through the official SDK, requests alternating between the API servers; a
worker killed with -9 mid-run, and one frozen (SIGSTOP) past its lease."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from langgraph_sdk import get_client

from tests.cluster import Cluster

# Short leases, so that a dead or frozen worker's run is taken over within seconds.
LEASES = {"AGENTD_LEASE_SECONDS": "2", "AGENTD_HEARTBEAT_SECONDS": "0.4"}


async def _until(predicate: Callable[[], bool], limit: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def _holder(cluster: Cluster, run_id: str) -> str | None:
    with psycopg.connect(cluster.database_url) as conn:
        row = conn.execute("SELECT lease_owner FROM runs WHERE run_id = %s", (run_id,)).fetchone()
    return row[0] if row else None


def _worker_of(cluster: Cluster, owner: str) -> int:
    """Which worker process holds a lease: its identity is host:pid:random."""
    pid = int(owner.split(":")[1])
    [index] = [i for i, w in enumerate(cluster.workers) if w.proc and w.proc.pid == pid]
    return index


@pytest.fixture
def cluster(tmp_path: Path):
    started = Cluster(tmp_path, env=LEASES).start()
    try:
        yield started
    finally:
        started.stop()


async def test_any_api_server_serves_any_run(cluster: Cluster) -> None:
    a, b = (get_client(url=url, api_key=None) for url in cluster.urls)
    thread = await a.threads.create(metadata={"via": "a"})
    tid = thread["thread_id"]
    # Created through one server, run by some worker, waited for through the other.
    assert (await b.runs.wait(tid, "echo", input={"value": 1}))["value"] == 1
    assert (await a.threads.get_state(tid))["values"]["value"] == 1
    # A background run created on b, joined on a; streamed on a while b lists it.
    run = await b.runs.create(tid, "steps", input={"done": [], "delay": 0.2})
    assert (await a.runs.join(tid, run["run_id"]))["done"] == ["a", "b", "c"]
    chunks = [
        c
        async for c in a.runs.stream(
            tid, "echo", input={"value": 2}, stream_mode=["values", "updates"]
        )
    ]
    events = [c.event for c in chunks]
    assert events[0] == "metadata" and "values" in events and "updates" in events
    assert [r["status"] for r in await b.runs.list(tid)] == ["success"] * 3
    # A cancel through one server reaches the worker running the run.
    long = await a.runs.create(tid, "steps", input={"done": [], "delay": 5})
    await _until(lambda: _holder(cluster, long["run_id"]) is not None, what="the claim")
    await b.runs.cancel(tid, long["run_id"], wait=True)
    assert (await a.runs.get(tid, long["run_id"]))["status"] == "interrupted"
    # Resumable events replay through the other server.
    resumable = await a.runs.create(
        tid, "echo", input={"value": 3}, stream_mode="values", stream_resumable=True
    )
    await b.runs.join(tid, resumable["run_id"])
    replayed = [
        c.event async for c in b.runs.join_stream(tid, resumable["run_id"], last_event_id="-1")
    ]
    assert "values" in replayed
    # Each worker logged who it is.
    assert all("worker" in w.log() and "run slots" in w.log() for w in cluster.workers)


async def test_a_killed_workers_run_is_taken_over_and_resumed(
    cluster: Cluster, tmp_path: Path
) -> None:
    marker = tmp_path / "ledger.log"
    marker.touch()
    a, b = (get_client(url=url, api_key=None) for url in cluster.urls)
    tid = (await a.threads.create())["thread_id"]
    run = await a.runs.create(tid, "steps", input={"done": [], "delay": 1.0, "marker": str(marker)})
    await _until(lambda: "b:start" in marker.read_text(), what="node b")
    owner = _holder(cluster, run["run_id"])
    assert owner is not None
    victim = _worker_of(cluster, owner)
    cluster.workers[victim].kill()
    started = time.monotonic()
    result = await b.runs.join(tid, run["run_id"])
    took = time.monotonic() - started
    assert result["done"] == ["a", "b", "c"], cluster.logs()
    done = await b.runs.get(tid, run["run_id"])
    assert done["status"] == "success" and done["attempt"] == 2
    lines = marker.read_text().split()
    assert lines.count("a:end") == 1  # its checkpoint was kept: a did not run again
    assert lines.count("b:start") == 2 and lines.count("b:end") == 1
    assert lines.count("c:end") == 1
    assert took < 2 + 0.4 * 3 + 3 + 1.0 * 3, took  # the lease, heartbeats, b and c again
    survivor = cluster.workers[1 - victim]
    assert "took back 1 run(s) whose lease ran out" in survivor.log()


async def test_a_frozen_worker_past_its_lease_writes_nothing_when_it_wakes(
    cluster: Cluster, tmp_path: Path
) -> None:
    marker = tmp_path / "ledger.log"
    marker.touch()
    a, b = (get_client(url=url, api_key=None) for url in cluster.urls)
    tid = (await a.threads.create())["thread_id"]
    run = await a.runs.create(
        tid,
        "steps",
        input={"done": [], "delay": 1.5, "marker": str(marker)},
        stream_mode=["updates"],
    )
    # A client joined to the run's stream from its start, through the other server.
    seen: list[tuple[str, Any]] = []

    async def follow() -> None:
        async for part in b.runs.join_stream(tid, run["run_id"]):
            seen.append((part.event, part.data))

    joined = asyncio.create_task(follow())
    await _until(lambda: "b:start" in marker.read_text(), what="node b")
    owner = _holder(cluster, run["run_id"])
    assert owner is not None
    frozen = cluster.workers[_worker_of(cluster, owner)]
    frozen.signal(signal.SIGSTOP)
    try:
        # The other worker takes the run over (attempt 2, from node b); once it is in node c,
        # the frozen worker wakes up inside its node b, which ends, and is streamed.
        await _until(lambda: "c:start" in marker.read_text(), what="attempt 2 in node c")
    finally:
        frozen.signal(signal.SIGCONT)
    result = await b.runs.join(tid, run["run_id"])
    assert result["done"] == ["a", "b", "c"]
    await asyncio.wait_for(joined, 10)
    # The joined client saw no event of attempt 1 after attempt 2 started: each node's update
    # once, b and c by attempt 2 (the broker fences off the old attempt's events).
    attempts = [d["attempt"] for e, d in seen if e == "metadata"]
    assert attempts in ([1, 2], [2]), seen  # attempt 1's if the client joined before it
    takeover = seen.index(("metadata", {"run_id": run["run_id"], "attempt": 2}))
    after = [node for e, d in seen[takeover:] if e == "updates" for node in d]
    assert after == ["b", "c"], seen
    # The frozen attempt wakes up inside node b: it finishes the node, then cannot write.
    await _until(lambda: marker.read_text().split().count("b:end") == 2, what="the old b")
    await _until(lambda: "no longer holds the run" in frozen.log() or "lease" in frozen.log(),
                 what="the old attempt to stop")  # fmt: skip
    await asyncio.sleep(1.0)  # what it might still write would have landed by now
    history = await a.threads.get_history(tid, limit=50)
    attempts = {h["metadata"].get("run_attempt") for h in history}
    assert attempts <= {1, 2}
    # Node b's and c's checkpoints were written once, by attempt 2.
    writers = [
        h["metadata"].get("run_attempt") for h in history if h["metadata"].get("step", 0) >= 2
    ]
    assert writers and set(writers) == {2}, history
    assert (await b.runs.get(tid, run["run_id"]))["attempt"] == 2
    assert (await a.threads.get_state(tid))["values"]["done"] == ["a", "b", "c"]


async def test_ok_reports_the_database_and_redis(tmp_path: Path) -> None:
    """``/ok?check_db=1`` names both servers; with Redis gone it fails naming the broker, and
    answers again once Redis is back. (A throwaway Redis: the shared one is never stopped.)"""
    import httpx

    from tests import pg
    from tests.redisd import RedisServer
    from tests.server import Server

    with RedisServer(tmp_path / "redis") as redis_server:
        redis_server.start()
        url = pg.create_database(str(tmp_path / "ok"))
        env = {"REDIS_URI": redis_server.url, **LEASES}
        server = Server(tmp_path / "api", env=env, database_url=url).start()
        try:
            async with httpx.AsyncClient(base_url=server.url) as http:
                assert (await http.get("/ok")).json() == {"ok": True, "services": {}}
                checked = (await http.get("/ok", params={"check_db": 1})).json()
                assert checked == {"ok": True, "services": {"postgres": "ok", "redis": "ok"}}
                redis_server.kill()
                down = await http.get("/ok", params={"check_db": 1})
                assert down.status_code == 500
                body = down.json()
                assert body["ok"] is False and body["services"]["broker"] == "unavailable"
                assert body["detail"].startswith("The broker check failed: The event broker")
                assert (await http.get("/ok")).status_code == 200  # alive all the same
                redis_server.start()
                deadline = time.monotonic() + 15
                while (await http.get("/ok", params={"check_db": 1})).status_code != 200:
                    assert time.monotonic() < deadline, "Redis came back, /ok did not"
                    await asyncio.sleep(0.2)
        finally:
            server.stop()
