"""Crashes across processes: two API servers and three workers take 500 background runs of
mixed length (instant, or 0.2-1 s), five enqueued on each of 100 threads, created through both
API servers in turn; midway one worker holding runs and one API server are killed with -9.

Every acknowledged run (and every run the database holds: a create cut short may have been
committed) ends ``success`` in bounded time. The ledger every node execution appends to shows
that no node of a run ever executed in two places at once, that only the killed worker's runs
executed anything again, and that each thread's runs executed one at a time, in order. A
client streaming a run through the killed API server resumes it through the other one with
Last-Event-ID and gets the rest, nothing twice, to the end."""

from __future__ import annotations

import asyncio
import itertools
import re
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
from langgraph_sdk.client import LangGraphClient
from langgraph_sdk.schema import StreamPart

from tests.cluster import Cluster
from tests.distributed.support import Database, sdk, until

RUNS = 500
THREADS = 100  # five runs on each, enqueued
CREATING = 16  # creates in flight at once
NODES = ("a", "b", "c")  # the ledger graph's
# Short leases: the killed worker's runs come back within seconds. A little longer than
# test_cluster.py's, so that a live worker's heartbeat, late on a loaded 2-core machine, keeps
# its runs.
LEASES = {"AGENTD_LEASE_SECONDS": "3", "AGENTD_HEARTBEAT_SECONDS": "0.5"}
CREATE_LIMIT = 60.0
SETTLE_LIMIT = 40.0  # from the last create to every run's end
STREAM_LIMIT = 30.0


def _delay(i: int) -> float:
    """Per node: a third of the runs instant, the others 0.2-1 s over their three nodes."""
    return 0.0 if i % 3 == 0 else 0.07 + 0.26 * ((i * 37) % 100) / 100


async def test_killed_worker_and_api_server_lose_no_run(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    ledger.touch()
    cluster = Cluster(tmp_path, apis=2, workers=3, env=LEASES).start()
    clients = [sdk(url) for url in cluster.urls]
    try:
        async with Database(cluster) as db:
            await _crash(cluster, clients, db, ledger)
    finally:
        for client in clients:
            await client.http.client.aclose()
        cluster.stop()


async def _crash(
    cluster: Cluster, clients: list[LangGraphClient], db: Database, ledger: Path
) -> None:
    threads = [str(uuid.uuid4()) for _ in range(THREADS)]
    # run_id -> thread_id for every create answered 200, in the order of the answers
    acknowledged: dict[str, str] = {}
    serving = [0, 1]  # the API servers creates go to (a load balancer drops a dead one)
    killed_api: int | None = None
    cut_short: list[int] = []  # creates the killed API server never answered
    gate = asyncio.Semaphore(CREATING)

    async def fill(t: int) -> None:
        # A thread's runs one after the other (so the order they must run in is the order of
        # the answers), threads side by side, each create through the other API server.
        for k in range(RUNS // THREADS):
            i = k * THREADS + t
            async with gate:
                while True:
                    api = serving[i % len(serving)]
                    try:
                        run = await clients[api].runs.create(
                            threads[t], "ledger",
                            input={"ledger": str(ledger), "delay": _delay(i)},
                            multitask_strategy="enqueue", if_not_exists="create",
                        )  # fmt: skip
                    except httpx.TransportError:
                        # Only the killed server may fail to answer; the client goes to the
                        # other (what it asked may have been committed all the same).
                        assert api == killed_api, f"API server {api} did not answer"
                        cut_short.append(i)
                        continue
                    break
            acknowledged[run["run_id"]] = threads[t]

    creating = asyncio.ensure_future(asyncio.gather(*(fill(t) for t in range(THREADS))))
    try:
        await until(lambda: len(acknowledged) >= RUNS // 5, CREATE_LIMIT, "the creates")
        # A resumable run, followed through the API server about to be killed.
        streamed = await clients[0].runs.create(
            str(uuid.uuid4()), "ledger", input={"ledger": str(ledger), "delay": 1.0},
            stream_mode=["values", "updates"], stream_resumable=True, if_not_exists="create",
        )  # fmt: skip
        sid, stid = streamed["run_id"], streamed["thread_id"]
        seen: list[StreamPart] = []
        following = asyncio.ensure_future(_follow(clients[0], stid, sid, seen, "-1"))
        # Midway: creates under way, runs executing, the streamed run past its first node.
        await until(lambda: any(p.event == "updates" for p in seen), STREAM_LIMIT, "node a")
        assert not following.done(), "the streamed run ended before the kill"
        victim, owner = await _worker_holding_runs(cluster, db, but=sid)
        cluster.workers[victim].kill()
        killed_at, at_kill = time.time(), len(acknowledged)  # the victim writes nothing after this
        killed_api = 0
        serving.remove(0)
        cluster.apis[0].kill()
        # What the victim held: its leases are still there (they run out in 2 s).
        held = {r for (r,) in await db.rows("SELECT run_id::text FROM runs WHERE lease_owner = "
                                            "%s AND status = 'running'", owner)}  # fmt: skip
        assert held, "the killed worker held no run"

        # The stream through the dead server breaks; the client resumes it on the other.
        try:
            await asyncio.wait_for(following, STREAM_LIMIT)
            raise AssertionError("the stream through the killed API server went on")
        except httpx.TransportError:
            pass
        cut = len(seen)
        assert seen and seen[-1].id, "the resumable stream's events carry no ids"
        await asyncio.wait_for(_follow(clients[1], stid, sid, seen, seen[-1].id), STREAM_LIMIT)
        await asyncio.wait_for(creating, CREATE_LIMIT)
    finally:
        creating.cancel()
    all_created = time.monotonic()

    # Every run the database holds ends, and ends well: none lost, none stuck.
    statuses = await db.settle(len(acknowledged) + 1, SETTLE_LIMIT)
    settled = time.monotonic() - all_created
    assert set(statuses) == {"success"}, f"{statuses}\n{cluster.logs()}"
    ended = dict(await db.rows("SELECT run_id::text, status FROM runs"))
    assert all(ended.get(r) == "success" for r in acknowledged), "an acknowledged run was lost"
    assert not await db.rows("SELECT thread_id FROM threads WHERE status <> 'idle'")
    spans = _check_ledger(ledger, str(cluster.workers[victim].pid), killed_at, set(ended))
    _check_thread_order(spans, acknowledged)
    # Exactly the killed worker's runs started again, once.
    attempts = dict(await db.rows("SELECT run_id::text, attempt FROM runs WHERE attempt <> 1"))
    assert set(attempts) == held and set(attempts.values()) == {2}, (attempts, held)
    survivors = [w for i, w in enumerate(cluster.workers) if i != victim]
    taken = sum(int(n) for w in survivors for n in re.findall(r"took back (\d+) run", w.log()))
    assert taken == len(held)

    # The stream: the part before the kill and the rest after it are the whole stream, each
    # event once, in order, up to the run's end.
    whole: list[StreamPart] = []
    await asyncio.wait_for(_follow(clients[1], stid, sid, whole, "-1"), 10)
    assert 0 < cut < len(seen), f"nothing was left to resume ({cut} of {len(seen)} events)"
    ids = [p.id for p in seen]
    assert len(set(ids)) == len(ids), "an event came twice"
    assert [(p.id, p.event, p.data) for p in seen] == [(p.id, p.event, p.data) for p in whole]
    assert seen[-1].event == "values" and seen[-1].data["steps"] == list(NODES)
    assert (await clients[1].runs.get(stid, sid))["status"] == "success"
    print(f"\n{len(acknowledged)} runs acknowledged ({at_kill} at the kill, {len(cut_short)} "
          f"cut short, {len(ended) - len(acknowledged) - 1} of those committed); worker "
          f"{victim} killed holding {len(held)}; all ended {settled:.1f} s after the last "
          "create")  # fmt: skip


async def _follow(
    client: LangGraphClient, thread_id: str, run_id: str, parts: list[StreamPart], after: str
) -> None:
    """Join a run's stream after event ``after`` ("-1": from its start), appending what comes
    to ``parts`` until the stream ends."""
    async for part in client.runs.join_stream(thread_id, run_id, last_event_id=after):
        parts.append(part)


async def _worker_holding_runs(cluster: Cluster, db: Database, *, but: str) -> tuple[int, str]:
    """The worker holding the most running runs, other than the one running ``but``: its index
    and its lease owner name."""
    deadline = time.monotonic() + 10
    while True:
        [(spared,)] = await db.rows("SELECT lease_owner FROM runs WHERE run_id = %s", but)
        rows = await db.rows(
            "SELECT lease_owner, count(*) FROM runs WHERE status = 'running' AND lease_owner "
            "IS NOT NULL AND lease_owner <> %s GROUP BY lease_owner ORDER BY count(*) DESC",
            spared or "",
        )
        if rows:
            owner = rows[0][0]
            pid = int(owner.split(":")[1])  # host:pid:random
            [index] = [i for i, w in enumerate(cluster.workers) if w.pid == pid]
            return index, owner
        assert time.monotonic() < deadline, "no worker but the streamed run's holds runs"
        await asyncio.sleep(0.05)


def _check_ledger(
    ledger: Path, victim: str, killed_at: float, runs: set[str]
) -> dict[str, list[list[Any]]]:
    """Executions of one run's node (start to end, in the victim cut at its death) never
    overlap; a node executed again only after an execution in the killed worker; every node of
    every run ended somewhere. Returns each run's executions: [pid, start, end]."""
    executions: dict[tuple[str, str], list[list[Any]]] = defaultdict(list)
    finished: set[tuple[str, str]] = set()
    for line in ledger.read_text().splitlines():
        run_id, node, event, pid, at = line.split()
        key = (run_id, node)
        if event == "start":
            executions[key].append([pid, float(at), None])
        else:
            [started] = [e for e in executions[key] if e[0] == pid and e[2] is None]
            started[2] = float(at)
            finished.add(key)
    by_run: dict[str, list[list[Any]]] = defaultdict(list)
    for key, spans in executions.items():
        for span in spans:
            if span[2] is None:
                assert span[0] == victim, f"{key} started in process {span[0]}, never ended"
                span[2] = killed_at
        spans.sort(key=lambda span: span[1])
        for before, after in itertools.pairwise(spans):
            assert before[2] <= after[1], f"{key} executed twice at once: {before}, {after}"
        assert all(span[0] == victim for span in spans[:-1]), f"{key} executed again: {spans}"
        by_run[key[0]].extend(spans)
    unfinished = [(r, n) for r in runs for n in NODES if (r, n) not in finished]
    assert not unfinished, f"nodes of successful runs that never finished: {unfinished[:5]}"
    return by_run


def _check_thread_order(spans: dict[str, list[list[Any]]], acknowledged: dict[str, str]) -> None:
    """A thread's runs executed one at a time, in the order they were acknowledged: each
    one's first node started after everything of the one before had ended."""
    threads: dict[str, list[str]] = defaultdict(list)
    for run_id, thread_id in acknowledged.items():
        threads[thread_id].append(run_id)
    for thread_id, runs in threads.items():
        for before, after in itertools.pairwise(runs):
            ended = max(span[2] for span in spans[before])
            started = min(span[1] for span in spans[after])
            assert ended <= started, (
                f"thread {thread_id}: run {after} started before {before} ended"
            )
