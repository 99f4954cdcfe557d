"""PostgreSQL stopped and started under a serving agentd, on a throwaway cluster of the test's own:
requests meanwhile are 503 with a clear detail, no acknowledged run is lost, each ends once
(a run cut off mid-graph resumes from its last checkpoint), and service resumes by itself."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.pg import PgCluster
from tests.server import Server

RUNS = 12
DELAY = 0.6  # per node; three nodes: a run takes ~2 s, so the stop lands mid-graph


@pytest.mark.postgres_only("stops and starts a PostgreSQL cluster of its own")
async def test_postgres_stopped_and_started_under_runs_in_flight(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.txt"
    with PgCluster(tmp_path / "cluster") as cluster:
        cluster.init().start()
        with psycopg.connect(cluster.url(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE agentd")
        server = Server(tmp_path / "data", database_url=cluster.url("agentd")).start()
        try:
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
                body = {"assistant_id": "ledger",
                        "input": {"ledger": str(ledger), "delay": DELAY}}  # fmt: skip
                run_ids = []
                for _ in range(RUNS):
                    thread = (await http.post("/threads", json={})).json()["thread_id"]
                    r = await http.post(f"/threads/{thread}/runs", json=body)
                    assert r.status_code == 200, r.text
                    run_ids.append((thread, r.json()["run_id"]))
                await asyncio.sleep(DELAY * 1.5)  # every run is mid-graph

                cluster.stop("fast")
                r = await http.post("/threads", json={})
                assert r.status_code == 503, r.text
                assert r.json()["detail"].startswith("The database is unavailable")
                r = await http.get(f"/threads/{run_ids[0][0]}/runs/{run_ids[0][1]}")
                assert r.status_code == 503, r.text
                await asyncio.sleep(2)
                cluster.start()

                # Back by itself: new requests succeed and every run ends, once, successfully.
                deadline = time.monotonic() + 60
                while (await http.post("/threads", json={})).status_code != 200:
                    assert time.monotonic() < deadline, "service did not resume"
                    await asyncio.sleep(0.2)
                for thread, run_id in run_ids:
                    r = await http.get(f"/threads/{thread}/runs/{run_id}/join", timeout=90)
                    assert r.status_code == 200, r.text
                    run = (await http.get(f"/threads/{thread}/runs/{run_id}")).json()
                    assert run["status"] == "success", run
                    state = (await http.get(f"/threads/{thread}/state")).json()
                    assert state["values"]["steps"] == ["a", "b", "c"], state
        finally:
            server.stop()
    # A node may run again after the outage cut it off (its checkpoint was not written), but
    # never at the same time as itself, and every node of every run ended.
    lines = [line.split() for line in ledger.read_text().splitlines()]
    ends = Counter((run_id, node) for run_id, node, event, *_ in lines if event == "end")
    assert {(run_id, node) for _, run_id in run_ids for node in "abc"} <= set(ends)
    running: dict[tuple[str, str], int] = Counter()
    for run_id, node, event, *_ in lines:
        running[run_id, node] += 1 if event == "start" else -1
        assert running[run_id, node] <= 1, f"{run_id} {node} ran twice at once"
