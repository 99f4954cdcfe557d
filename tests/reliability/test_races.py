"""Races on the run lifecycle, through a real server and the official client: double-texting,
cancels landing at random moments (before the claim, mid-run, as the run finishes), cancelled
resumes, deletes mid-run. Each race runs hundreds of randomized trials, then asserts that
nothing wedged (no thread left busy, no run left pending or running), nothing hung (every join
returned in bounded time), nothing ran twice, thread statuses agree with their state, and that
a restart afterwards runs nothing that was cancelled.

RACE_SEED=<n> replays a failing seed (each failure message names its seed)."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient
from langgraph_sdk.errors import NotFoundError

from tests.server import Server

JOIN_LIMIT = 30.0  # seconds a join may take once its race is over, on a loaded machine
SETTLE_LIMIT = 30.0


@pytest.fixture(scope="module")
def race_server(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[Server]:
    """A server of this module's own: the tests restart it."""
    server = Server(tmp_path_factory.mktemp("races"), backend=backend).start()
    yield server
    server.stop()


@pytest.fixture
async def client(race_server: Server) -> AsyncIterator[LangGraphClient]:
    c = get_client(url=race_server.url, api_key=None)
    yield c
    await c.http.client.aclose()


@pytest.fixture
def rng() -> random.Random:
    seed = int(os.environ.get("RACE_SEED", time.time_ns() % 10**9))
    r = random.Random(seed)
    r.seed_value = seed  # type: ignore[attr-defined]
    return r


def seed_of(rng: random.Random) -> str:
    return f"(RACE_SEED={rng.seed_value})"  # type: ignore[attr-defined]


class Ledger:
    """The lines the race graphs append: ``run_id node event pid time``."""

    def __init__(self, path: Path):
        self.path = path
        path.touch()

    def lines(self) -> list[list[str]]:
        return [line.split() for line in self.path.read_text().splitlines()]

    def starts(self) -> Counter[tuple[str, str]]:
        return Counter((r, n) for r, n, e, *_ in self.lines() if e == "start")


async def bounded(tasks: list[asyncio.Task[Any]], limit: float) -> list[asyncio.Task[Any]]:
    """Wait for ``tasks`` at most ``limit`` seconds; return those still running (hung)."""
    if not tasks:
        return []
    _, hung = await asyncio.wait(tasks, timeout=limit)
    for task in hung:
        task.cancel()
    return list(hung)


async def join(client: LangGraphClient, thread_id: str, run_id: str) -> Any:
    try:
        return await client.runs.join(thread_id, run_id)
    except (NotFoundError, httpx.HTTPStatusError) as exc:  # rolled back (deleted) before
        if isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code != 404:
            raise
        return None


async def settled(client: LangGraphClient, thread_ids: list[str]) -> dict[str, list[dict]]:
    """Wait until no thread is busy; return each thread's runs. Fails naming the wedged ones."""
    deadline = time.monotonic() + SETTLE_LIMIT
    while True:
        busy = []
        for tid in thread_ids:
            try:
                if (await client.threads.get(tid))["status"] == "busy":
                    busy.append(tid)
            except NotFoundError:
                pass
        if not busy:
            break
        if time.monotonic() > deadline:
            detail = {tid: [(r["run_id"], r["status"]) for r in await client.runs.list(tid)]
                      for tid in busy[:3]}  # fmt: skip
            pytest.fail(f"{len(busy)} thread(s) wedged busy, e.g. {detail}")
        await asyncio.sleep(0.1)
    runs: dict[str, list[dict]] = {}
    for tid in thread_ids:
        try:
            runs[tid] = await client.runs.list(tid, limit=1000)
        except NotFoundError:
            runs[tid] = []
    stuck = [r for rs in runs.values() for r in rs if r["status"] in ("pending", "running")]
    assert not stuck, f"runs left in flight on idle threads: {stuck[:3]}"
    return runs


async def restart_and_check(
    server: Server, client: LangGraphClient, ledger: Ledger, runs: dict[str, list[dict]]
) -> None:
    """Restart the server: nothing that ended (cancelled ones above all) runs again, and
    every run keeps its status."""
    before = ledger.path.read_text()
    server.stop()
    server.start()
    await asyncio.sleep(1.0)  # what a start-up requeued would run by now
    assert ledger.path.read_text() == before, "a run executed again after the restart"
    for tid, old in runs.items():
        try:
            now = {r["run_id"]: r["status"] for r in await client.runs.list(tid, limit=1000)}
        except NotFoundError:
            now = {}
        assert now == {r["run_id"]: r["status"] for r in old}, f"thread {tid} changed"


def no_node_twice(ledger: Ledger) -> None:
    twice = [key for key, n in ledger.starts().items() if n > 1]
    assert not twice, f"nodes executed twice for one run: {twice[:5]}"


async def run_trials(
    n: int, concurrency: int, trial: Callable[[int], Awaitable[None]], limit: float
) -> None:
    """``n`` trials, ``concurrency`` at a time, each bounded by ``limit`` seconds."""
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            await asyncio.wait_for(trial(i), limit)

    await asyncio.gather(*(one(i) for i in range(n)))


@pytest.mark.parametrize("strategy", ["interrupt", "rollback"])
async def test_double_texting_never_wedges(
    race_server: Server, client: LangGraphClient, tmp_path: Path, rng: random.Random, strategy: str
) -> None:
    """20 threads x 6 concurrent texts 0-50 ms apart, 4 rounds: the newest run of each thread
    ends success, every other one ends interrupted (or success if it had finished; rolled
    back: deleted), no thread stays busy, every join returns."""
    ledger = Ledger(tmp_path / "ledger")
    threads = [(await client.threads.create())["thread_id"] for _ in range(20)]
    joins: list[asyncio.Task[Any]] = []

    async def texts(tid: str) -> None:
        for _ in range(6):
            await asyncio.sleep(rng.uniform(0, 0.05))
            run = await client.runs.create(
                tid, "ledger", input={"ledger": str(ledger.path), "delay": 0.01},
                multitask_strategy=strategy,
            )  # fmt: skip
            joins.append(asyncio.create_task(join(client, tid, run["run_id"])))

    for _ in range(4):
        await asyncio.gather(*(texts(tid) for tid in threads))
        runs = await settled(client, threads)
    hung = await bounded(joins, JOIN_LIMIT)
    assert not hung, f"{len(hung)} of {len(joins)} joins hung {seed_of(rng)}"
    for tid, thread_runs in runs.items():
        newest, *older = thread_runs  # newest first
        assert newest["status"] == "success", (tid, newest, seed_of(rng))
        allowed = {"success"} if strategy == "rollback" else {"success", "interrupted"}
        assert {r["status"] for r in older} <= allowed, (tid, older, seed_of(rng))
        assert (await client.threads.get(tid))["status"] == "idle"
    ends = Counter((r, n) for r, n, e, *_ in ledger.lines() if e == "end")
    for thread_runs in runs.values():
        for run in thread_runs:
            if run["status"] == "success":  # it ran whole, each step once
                assert all(ends[(run["run_id"], n)] == 1 for n in "abc"), run
    no_node_twice(ledger)
    await restart_and_check(race_server, client, ledger, runs)


async def test_cancel_landing_as_the_run_finishes(
    race_server: Server, client: LangGraphClient, tmp_path: Path, rng: random.Random
) -> None:
    """300 runs due in 0.3 s, each with a join open, cancelled at 0.27-0.36 s: the cancel
    lands before the claim, mid-run or as the run finishes. Every join returns; each run ends
    once, interrupted or success (a cancel answered 404 found it finished)."""
    ledger = Ledger(tmp_path / "ledger")
    threads: list[str] = []
    outcomes: list[tuple[dict, int, str]] = []

    async def trial(_: int) -> None:
        tid = (await client.threads.create())["thread_id"]
        threads.append(tid)
        run = await client.runs.create(
            tid, "ledger", input={"ledger": str(ledger.path)}, after_seconds=0.3
        )
        start = time.monotonic()
        joined = asyncio.create_task(join(client, tid, run["run_id"]))
        await asyncio.sleep(max(0.0, rng.uniform(0.27, 0.36) - (time.monotonic() - start)))
        try:
            await client.runs.cancel(tid, run["run_id"])
            said = 202
        except NotFoundError:
            said = 404
        hung = await bounded([joined], JOIN_LIMIT)
        assert not hung, f"join of {run['run_id']} hung after a cancel ({said}) {seed_of(rng)}"
        final = await client.runs.get(tid, run["run_id"])
        outcomes.append((run, said, final["status"]))

    await run_trials(300, 50, trial, JOIN_LIMIT + 30)
    runs = await settled(client, threads)
    for run, said, status in outcomes:
        assert status in ("interrupted", "success"), (run["run_id"], said, status)
        if said == 404:
            assert status == "success", (run["run_id"], status)
    statuses = Counter(status for _, _, status in outcomes)
    assert statuses["interrupted"] and statuses["success"], f"no race happened: {statuses}"
    no_node_twice(ledger)
    await restart_and_check(race_server, client, ledger, runs)


async def test_cancelled_queued_resume_keeps_the_thread_interrupted(
    client: LangGraphClient, tmp_path: Path
) -> None:
    ledger = str(tmp_path / "ledger")
    tid = (await client.threads.create())["thread_id"]
    await client.runs.wait(tid, "slow_ask", input={"ledger": ledger})
    assert (await client.threads.get(tid))["status"] == "interrupted"
    resume = await client.runs.create(tid, "slow_ask", command={"resume": "yes"}, after_seconds=5)
    assert (await client.threads.get(tid))["status"] == "busy"
    await client.runs.cancel(tid, resume["run_id"])
    assert (await client.runs.get(tid, resume["run_id"]))["status"] == "interrupted"
    thread = await client.threads.get(tid)
    assert thread["status"] == "interrupted" and thread["interrupts"]
    assert (await client.threads.get_state(tid))["next"] == ["ask"]
    # Still waiting at its interrupt: a new resume is accepted and completes.
    result = await client.runs.wait(tid, "slow_ask", command={"resume": "again"})
    assert result["answer"] == "again" and result["steps"] == ["work"]
    assert (await client.threads.get(tid))["status"] == "idle"


async def test_rolled_back_resume_waits_at_its_interrupt_again(
    client: LangGraphClient, tmp_path: Path
) -> None:
    """A resume rolled back mid-work leaves no trace: not the checkpoint it made, nor the
    writes it added to the one it resumed (its answer), so the next resume's answer is used."""
    ledger = Ledger(tmp_path / "ledger")
    tid = (await client.threads.create())["thread_id"]
    await client.runs.wait(tid, "slow_ask", input={"ledger": str(ledger.path), "delay": 2})
    before = await client.threads.get_state(tid)
    resume = await client.runs.create(tid, "slow_ask", command={"resume": "yes"})
    deadline = time.monotonic() + 15
    while not any(line[1] == "work" for line in ledger.lines()):  # working, after the answer
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    await client.runs.cancel(tid, resume["run_id"], action="rollback", wait=True)
    with pytest.raises(NotFoundError):
        await client.runs.get(tid, resume["run_id"])
    thread = await client.threads.get(tid)
    state = await client.threads.get_state(tid)
    assert thread["status"] == "interrupted" and state["next"] == ["ask"]
    assert state["checkpoint_id"] == before["checkpoint_id"] and "answer" not in state["values"]
    result = await client.runs.wait(tid, "slow_ask", command={"resume": "again"},
                                    config={"recursion_limit": 10})  # fmt: skip
    assert result["answer"] == "again"


async def test_cancelled_resumes_leave_status_and_state_in_agreement(
    race_server: Server, client: LangGraphClient, tmp_path: Path, rng: random.Random
) -> None:
    """100 resumes of paused threads, each cancelled at a random moment (queued, resuming,
    working, finished): the thread's status always agrees with its state (interrupted exactly
    when the graph waits at a node), and a thread left interrupted accepts a new resume."""
    ledger = Ledger(tmp_path / "ledger")
    threads: list[str] = []

    async def trial(_: int) -> None:
        tid = (await client.threads.create())["thread_id"]
        threads.append(tid)
        await client.runs.wait(tid, "slow_ask", input={"ledger": str(ledger.path), "delay": 0.1})
        resume = await client.runs.create(
            tid, "slow_ask", command={"resume": "yes"}, after_seconds=rng.uniform(0, 0.1),
            multitask_strategy="enqueue",
        )  # fmt: skip
        await asyncio.sleep(rng.uniform(0, 0.3))
        action = rng.choice(["interrupt", "rollback"])
        try:
            await client.runs.cancel(tid, resume["run_id"], action=action)
        except NotFoundError:
            pass
        await bounded([asyncio.create_task(join(client, tid, resume["run_id"]))], JOIN_LIMIT)
        await settled(client, [tid])
        thread = await client.threads.get(tid)
        state = await client.threads.get_state(tid)
        waiting = bool(state["next"])
        assert (thread["status"] == "interrupted") == waiting, (
            action, thread["status"], state["next"], state["values"],
            [(t["name"], t["interrupts"], t["result"]) for t in state["tasks"]],
            [(r["status"], r["kwargs"].get("command")) for r in await client.runs.list(tid)],
        )  # fmt: skip
        assert thread["status"] in ("interrupted", "idle"), thread["status"]
        if waiting:
            result = await client.runs.wait(tid, "slow_ask", command={"resume": "again"})
            assert result.get("answer") in ("again", "yes"), result
            assert (await client.threads.get(tid))["status"] == "idle"

    await run_trials(100, 25, trial, JOIN_LIMIT * 2)
    runs = await settled(client, threads)
    no_node_twice(ledger)
    await restart_and_check(race_server, client, ledger, runs)


async def test_cancel_racing_the_claim(
    race_server: Server, client: LangGraphClient, tmp_path: Path, rng: random.Random
) -> None:
    """300 runs cancelled (interrupt or rollback) 0-20 ms after their creation, as workers
    claim them: each ends once, nothing wedges or hangs, nothing cancelled runs later."""
    ledger = Ledger(tmp_path / "ledger")
    threads: list[str] = []
    outcomes: list[tuple[str, str, str, str | None]] = []

    async def trial(_: int) -> None:
        tid = (await client.threads.create())["thread_id"]
        threads.append(tid)
        run = await client.runs.create(
            tid, "ledger", input={"ledger": str(ledger.path), "delay": 0.005}
        )
        joined = asyncio.create_task(join(client, tid, run["run_id"]))
        await asyncio.sleep(rng.uniform(0, 0.02))
        action = rng.choice(["interrupt", "rollback"])
        try:
            await client.runs.cancel(tid, run["run_id"], action=action)
        except NotFoundError:
            pass
        hung = await bounded([joined], JOIN_LIMIT)
        assert not hung, f"join of {run['run_id']} hung {seed_of(rng)}"
        try:
            status = (await client.runs.get(tid, run["run_id"]))["status"]
        except NotFoundError:
            status = None
        outcomes.append((tid, run["run_id"], action, status))

    await run_trials(300, 50, trial, JOIN_LIMIT + 30)
    runs = await settled(client, threads)
    for tid, run_id, action, status in outcomes:
        allowed = {"success", None} if action == "rollback" else {"success", "interrupted"}
        assert status in allowed, (run_id, action, status)
        if status is None:  # rolled back: its checkpoints went with it
            assert (await client.threads.get_state(tid))["values"] == {}
    no_node_twice(ledger)
    await restart_and_check(race_server, client, ledger, runs)


async def test_thread_deleted_while_its_runs_race(
    client: LangGraphClient, tmp_path: Path, rng: random.Random
) -> None:
    """100 threads deleted at a random moment of a run with one queued behind it: every join
    returns, the thread is gone, and nothing of it runs after the delete."""
    ledger = Ledger(tmp_path / "ledger")

    async def trial(_: int) -> None:
        tid = (await client.threads.create())["thread_id"]
        runs = [
            await client.runs.create(tid, "ledger", input={"ledger": str(ledger.path),
                                                          "delay": 0.02})
            for _ in range(2)
        ]  # fmt: skip
        joins = [asyncio.create_task(join(client, tid, r["run_id"])) for r in runs]
        await asyncio.sleep(rng.uniform(0, 0.15))
        await client.threads.delete(tid)
        hung = await bounded(joins, JOIN_LIMIT)
        assert not hung, f"a join hung after its thread was deleted {seed_of(rng)}"
        with pytest.raises(NotFoundError):
            await client.threads.get(tid)
        for run in runs:
            with pytest.raises(NotFoundError):
                await client.runs.get(tid, run["run_id"])
        deleted_at = time.time()
        await asyncio.sleep(0.2)
        late = [line for line in ledger.lines()
                if line[0] in {r["run_id"] for r in runs} and line[2] == "start"
                and float(line[4]) > deleted_at]  # fmt: skip
        assert not late, f"a run of a deleted thread started after the delete: {late}"

    await run_trials(100, 25, trial, JOIN_LIMIT + 30)
    no_node_twice(ledger)
