"""Thread history of many large checkpoints: the response is bounded by a byte budget (clients
page with ``before``), the server's memory stays bounded, and it keeps answering meanwhile."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import subprocess
import time
from collections.abc import Awaitable
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path

import httpx

from tests.server import AGENTD, ROOT, Server

GRAPHS = ROOT / "tests" / "graphs"
CHECKPOINTS = 240  # of ~330 KB each; ~1 MB as history items (values, task result, writes)
BUDGET = 10 * 1024 * 1024  # AGENTD_HISTORY_MAX_BYTES's default
RSS_GROWTH_LIMIT = 100 * 1024 * 1024  # ~700 MiB when the whole history was built at once
OK_LATENCY_LIMIT = 0.3  # seconds; ~1 s when the whole history was built at once
WRITE_LATENCY_LIMIT = 0.5


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _sample(url: str, pid: int, stop: Event, out: Connection) -> None:
    """Peak RSS of the server and the slowest /ok while it serves history. In a process of
    its own: a thread of the test would wait for the GIL while the test decodes a page."""
    peak, slowest, oks = _rss(pid), 0.0, 0
    with httpx.Client(base_url=url, timeout=30) as http:
        while not stop.is_set():
            peak = max(peak, _rss(pid))
            started = time.monotonic()
            assert http.get("/ok").status_code == 200
            slowest = max(slowest, time.monotonic() - started)
            oks += 1
            stop.wait(0.01)
    out.send((peak, slowest, oks))


async def _timed(call: Awaitable[httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await call
    return response, time.monotonic() - started


async def test_history_is_bounded_and_does_not_stall_the_server(tmp_path: Path) -> None:
    server = Server(tmp_path / "data", config=GRAPHS / "history.json").start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as http:
            tid = (await http.post("/threads", json={})).json()["thread_id"]
            done = await http.post(
                f"/threads/{tid}/runs/wait",
                json={
                    "assistant_id": "bulky",
                    "input": {"steps": CHECKPOINTS, "kb": 300},
                    "config": {"recursion_limit": 10_000},
                },
            )
            assert done.status_code == 200 and done.json()["n"] == CHECKPOINTS
            await asyncio.sleep(0.5)  # let the run's memory settle before the baseline

            assert server.proc is not None
            baseline = _rss(server.proc.pid)
            spawn = multiprocessing.get_context("spawn")
            stop, (results, out) = spawn.Event(), spawn.Pipe(duplex=False)
            sampler = spawn.Process(target=_sample, args=(server.url, server.proc.pid, stop, out))
            sampler.start()
            pages: list[list[dict]] = []
            writes: list[float] = []
            before = None
            try:
                while True:
                    body: dict = {"limit": 1000}
                    if before:
                        body["before"] = before
                    # A write while the history is served: it must not wait behind it.
                    create = asyncio.create_task(_timed(http.post("/threads", json={})))
                    await asyncio.sleep(0.005)  # the history request is under way
                    response = await http.post(f"/threads/{tid}/history", json=body)
                    assert response.status_code == 200, response.text
                    created, took = await create
                    assert created.status_code == 200
                    writes.append(took)
                    page = response.json()
                    if not page:
                        break
                    # Within the budget, or a single item (always at least one).
                    assert len(response.content) <= BUDGET or len(page) == 1
                    pages.append(page)
                    before = page[-1]["checkpoint"]
            finally:
                stop.set()
                assert results.poll(30), "the sampler did not report"
                peak_rss, slowest_ok, oks = results.recv()
                sampler.join(10)

        growth = peak_rss - baseline
        print(
            f"RSS baseline {baseline / 2**20:.0f} MiB, peak +{growth / 2**20:.0f} MiB; "
            f"slowest /ok {slowest_ok * 1000:.0f} ms over {oks}; "
            f"{len(pages)} pages; slowest write meanwhile {max(writes) * 1000:.0f} ms"
        )
        steps = [item["metadata"]["step"] for page in pages for item in page]
        # Every checkpoint once, newest first: the input (-1), the start (0), one per step.
        assert steps == list(range(CHECKPOINTS, -2, -1))
        assert len(pages) > 5  # the budget cut the history into pages
        assert pages[0][0]["values"]["n"] == CHECKPOINTS
        assert pages[0][1]["metadata"]["writes"]["grow"]["n"] == CHECKPOINTS - 1
        assert growth < RSS_GROWTH_LIMIT, f"RSS grew {growth / 2**20:.0f} MiB"
        assert oks > 10
        assert slowest_ok < OK_LATENCY_LIMIT, f"/ok took {slowest_ok:.3f} s"
        assert max(writes) < WRITE_LATENCY_LIMIT, f"a write took {max(writes):.3f} s"
    finally:
        server.stop()


async def test_history_budget_is_a_setting(tmp_path: Path) -> None:
    budget = 6000  # one item of ~3.5 KB fits, two do not
    env = {"AGENTD_HISTORY_MAX_BYTES": str(budget)}
    server = Server(tmp_path / "data", config=GRAPHS / "history.json", env=env).start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            tid = (await http.post("/threads", json={})).json()["thread_id"]
            body = {"assistant_id": "bulky", "input": {"steps": 4, "kb": 1}}
            assert (await http.post(f"/threads/{tid}/runs/wait", json=body)).status_code == 200
            pages: list[list[int]] = []
            before = None
            while True:
                params = {"limit": 10, **({"before": before} if before else {})}
                response = await http.get(f"/threads/{tid}/history", params=params)
                page = response.json()
                if not page:
                    break
                assert len(response.content) <= budget
                pages.append([item["metadata"]["step"] for item in page])
                before = page[-1]["checkpoint_id"]
            # The four states with rows one by one; the small first two (no rows yet) together.
            assert pages == [[4], [3], [2], [1], [0, -1]]
        # A budget smaller than any item still gives one item.
        server.stop()
        env["AGENTD_HISTORY_MAX_BYTES"] = "1"
        server = Server(tmp_path / "data", config=GRAPHS / "history.json", env=env).start()
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            response = await http.get(f"/threads/{tid}/history", params={"limit": 10})
            assert [h["metadata"]["step"] for h in response.json()] == [4]
    finally:
        server.stop()


def test_a_bad_history_budget_is_one_start_up_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [*AGENTD, "serve", "--config", str(GRAPHS / "history.json"), "--port", "1",
         "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "AGENTD_HISTORY_MAX_BYTES": "10MB"},
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "agentd: AGENTD_HISTORY_MAX_BYTES must be a positive integer, got '10MB'"
    )


async def test_history_of_a_delta_channel_graph(tmp_path: Path) -> None:
    """A DeltaChannel's value is replayed from older checkpoints on every read (on the
    checkpointer's read threads): each state in the history has the entries of its step."""
    server = Server(tmp_path / "data", config=GRAPHS / "history.json").start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            tid = (await http.post("/threads", json={})).json()["thread_id"]
            body = {"assistant_id": "journal", "input": {"steps": 8}}
            done = await http.post(f"/threads/{tid}/runs/wait", json=body)
            assert done.json()["entries"] == [f"entry {i}" for i in range(8)]
            state = (await http.get(f"/threads/{tid}/state")).json()
            assert state["values"]["entries"] == [f"entry {i}" for i in range(8)]
            history = (await http.get(f"/threads/{tid}/history", params={"limit": 20})).json()
            by_step = {h["metadata"]["step"]: h["values"].get("entries", []) for h in history}
            assert by_step == {s: [f"entry {i}" for i in range(s)] for s in range(-1, 9)}
    finally:
        server.stop()
