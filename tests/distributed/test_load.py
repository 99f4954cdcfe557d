"""Load across processes: 2,000 runs on 200 threads, ten enqueued on each thread through both
API servers in turn, executed by two workers. Every run ends ``success``, once, and each
thread's runs ran one at a time in the order they were created (the ``append`` graph adds
each run's input to the thread's list)."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

from langgraph_sdk.client import LangGraphClient

from tests.cluster import Cluster
from tests.distributed.support import Database, sdk

THREADS = 200
PER_THREAD = 10
CREATING = 32  # requests in flight at once, over both API servers
CREATE_LIMIT = 60.0
SETTLE_LIMIT = 60.0


async def test_enqueued_runs_on_many_threads_all_succeed_in_order(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, apis=2, workers=2).start()
    clients = [sdk(url) for url in cluster.urls]
    try:
        async with Database(cluster) as db:
            await _load(cluster, clients, db)
    finally:
        for client in clients:
            await client.http.client.aclose()
        cluster.stop()


async def _load(cluster: Cluster, clients: list[LangGraphClient], db: Database) -> None:
    started = time.monotonic()
    threads = [str(uuid.uuid4()) for _ in range(THREADS)]
    gate = asyncio.Semaphore(CREATING)
    created: list[str] = []

    async def fill(t: int, tid: str) -> None:
        # A thread's runs one after the other (its order is the order of the answers), each
        # through the other API server than the one before; threads side by side.
        for i in range(PER_THREAD):
            async with gate:
                run = await clients[(t + i) % 2].runs.create(
                    tid, "append", input={"items": [i]},
                    multitask_strategy="enqueue", if_not_exists="create",
                )  # fmt: skip
            created.append(run["run_id"])

    await asyncio.wait_for(
        asyncio.gather(*(fill(t, tid) for t, tid in enumerate(threads))), CREATE_LIMIT
    )
    acknowledged = time.monotonic() - started
    statuses = await db.settle(THREADS * PER_THREAD, SETTLE_LIMIT)
    done = time.monotonic() - started
    assert statuses == {"success": THREADS * PER_THREAD}, cluster.logs()

    attempts = dict(await db.rows("SELECT run_id::text, attempt FROM runs"))
    assert set(attempts) == set(created)
    assert set(attempts.values()) == {1}, "runs started more than once"

    async def thread(tid: str) -> tuple[str, str, list[int] | None]:
        async with gate:
            got = await clients[0].threads.get(tid)
        return tid, got["status"], (got["values"] or {}).get("items")

    finals = await asyncio.gather(*(thread(tid) for tid in threads))
    wrong = [(tid, items) for tid, _, items in finals if items != list(range(PER_THREAD))]
    assert not wrong, f"{len(wrong)} thread(s) did not run their runs in order: {wrong[:3]}"
    assert {status for _, status, _ in finals} == {"idle"}
    print(f"\n{len(created)} runs on {THREADS} threads: acknowledged in {acknowledged:.1f} s, "
          f"all done in {done:.1f} s")  # fmt: skip
