"""Durability: runs the API acknowledged survive ``kill -9`` of the server and end once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from langgraph_sdk import get_client

from tests.server import Server as _Server

# Short leases: on PostgreSQL a killed server's runs come back when their lease runs out
# (SQLite takes every running run back at start-up, whatever its lease).
LEASES = {"AGENTD_LEASE_SECONDS": "1.5", "AGENTD_HEARTBEAT_SECONDS": "0.3"}


def Server(data_dir: Path, *, env: dict[str, str] | None = None, **options: object) -> _Server:
    return _Server(data_dir, env={**LEASES, **(env or {})}, **options)  # type: ignore[arg-type]


async def _wait_for(predicate: Callable[[], bool], limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_running_run_resumes_from_checkpoint_after_kill_9(tmp_path: Path) -> None:
    marker = tmp_path / "executions.log"
    marker.touch()
    server = Server(tmp_path / "data").start()
    try:
        client = get_client(url=server.url, api_key=None)
        tid = (await client.threads.create())["thread_id"]
        run = await client.runs.create(
            tid, "steps", input={"done": [], "delay": 0.6, "marker": str(marker)}
        )
        # Kill while node b runs, once a's checkpoint is committed (with the default
        # `async` durability, b may start before that checkpoint is written).
        await _wait_for(lambda: "b:start" in marker.read_text())
        deadline = time.monotonic() + 10
        while (await client.threads.get_state(tid))["values"].get("done") != ["a"]:
            assert time.monotonic() < deadline and "b:end" not in marker.read_text()
            await asyncio.sleep(0.01)
        server.kill()
    finally:
        server.kill()

    restarted = Server(tmp_path / "data").start()
    try:
        client = get_client(url=restarted.url, api_key=None)
        result = await client.runs.join(tid, run["run_id"])
        assert result["done"] == ["a", "b", "c"]
        done = await client.runs.get(tid, run["run_id"])
        assert done["status"] == "success"
        assert done["attempt"] == 2
        lines = marker.read_text().split()
        # a ran once (its checkpoint was kept); b started twice and finished once; c once.
        assert lines.count("a:start") == 1 and lines.count("a:end") == 1
        assert lines.count("b:start") == 2 and lines.count("b:end") == 1
        assert lines.count("c:start") == 1 and lines.count("c:end") == 1
        assert [r["run_id"] for r in await client.runs.list(tid)] == [run["run_id"]]
        assert (await client.threads.get(tid))["status"] == "idle"
    finally:
        restarted.stop()
    if restarted.backend == "sqlite":  # exclusive: what was running at start-up was orphaned
        assert "requeued 1 run(s) left running by a previous process" in restarted.log()
    else:  # shared: the killed server's lease ran out
        assert "took back 1 run(s) whose lease ran out" in restarted.log()


async def test_pending_runs_survive_kill_9_and_run_in_order(tmp_path: Path) -> None:
    server = Server(tmp_path / "data", jobs=2).start()
    try:
        client = get_client(url=server.url, api_key=None)
        tid = (await client.threads.create())["thread_id"]
        queued = [
            await client.runs.create(tid, "steps", input={"done": [f"r{i}"], "delay": 0.3})
            for i in range(3)
        ]
        others = []
        for i in range(4):
            t = (await client.threads.create())["thread_id"]
            others.append(await client.runs.create(t, "echo", input={"value": i}, after_seconds=1))
        server.kill()  # the API has acknowledged every run above
    finally:
        server.kill()

    restarted = Server(tmp_path / "data", jobs=2).start()
    try:
        client = get_client(url=restarted.url, api_key=None)
        for run in queued + others:
            await client.runs.join(run["thread_id"], run["run_id"])
            assert (await client.runs.get(run["thread_id"], run["run_id"]))["status"] == "success"
        state = await client.threads.get_state(tid)
        assert state["values"]["done"] == [
            "r0", "a", "b", "c", "r1", "a", "b", "c", "r2", "a", "b", "c",
        ]  # fmt: skip
        for i, run in enumerate(others):
            assert (await client.threads.get(run["thread_id"]))["values"]["value"] == i
    finally:
        restarted.stop()


async def test_graceful_stop_requeues_running_run(tmp_path: Path) -> None:
    server = Server(tmp_path / "data").start()
    try:
        client = get_client(url=server.url, api_key=None)
        tid = (await client.threads.create())["thread_id"]
        run = await client.runs.create(tid, "steps", input={"done": [], "delay": 0.5})
        await asyncio.sleep(0.3)
        server.stop()  # SIGTERM: uvicorn shuts down, then re-raises the signal
        assert "Application shutdown complete" in server.log()
    finally:
        server.kill()
    restarted = Server(tmp_path / "data").start()
    try:
        client = get_client(url=restarted.url, api_key=None)
        result = await client.runs.join(tid, run["run_id"])
        assert result["done"] == ["a", "b", "c"]
        assert (await client.runs.get(tid, run["run_id"]))["status"] == "success"
    finally:
        restarted.stop()
    # The shutdown itself handed the run back: nothing was left running for start-up to fix.
    assert "requeued" not in restarted.log() and "took back" not in restarted.log()


async def test_second_server_on_same_data_dir_refuses_to_start(tmp_path: Path) -> None:
    # The same data dir is the same database on PostgreSQL too (tests/server.py).
    server = Server(tmp_path / "data").start()
    try:
        second = Server(tmp_path / "data")
        try:
            second.start()  # returns as soon as it exits; slow to import on a loaded machine
            raise AssertionError("a second server started on a data dir in use")
        except RuntimeError as exc:
            assert "in use by another agentd process" in str(exc)
        finally:
            second.kill()
    finally:
        server.stop()


async def test_run_that_keeps_killing_its_process_fails_after_max_attempts(
    tmp_path: Path,
) -> None:
    env = {"BG_JOB_MAX_RETRIES": "2"}
    server = Server(tmp_path / "data", env=env).start()
    client = get_client(url=server.url, api_key=None)
    tid = (await client.threads.create())["thread_id"]
    run = await client.runs.create(tid, "crash", input={"value": 1})
    assert server.proc is not None
    assert server.proc.wait(30) == -9  # attempt 1 took the server down
    server = Server(tmp_path / "data", env=env).spawn()  # it dies before it can answer
    assert server.proc is not None
    assert server.proc.wait(30) == -9  # attempt 2 as well
    server = Server(tmp_path / "data", env=env).start()
    try:
        client = get_client(url=server.url, api_key=None)
        result = await client.runs.join(tid, run["run_id"])
        assert result["__error__"]["error"] == "RunAttemptsExceeded"
        assert "exceeded max attempts (2)" in result["__error__"]["message"]
        done = await client.runs.get(tid, run["run_id"])
        assert done["status"] == "error" and done["attempt"] == 3
        assert (await client.threads.get(tid))["status"] == "error"
        # The server is healthy and takes new work.
        assert (await client.runs.wait(tid, "echo", input={"value": 2}))["value"] == 2
    finally:
        server.stop()


async def test_sigterm_drains_runs_then_hands_back_the_rest(tmp_path: Path) -> None:
    """A graceful stop lets a short run finish and hands a long one back, uncounted; the next
    start runs the long one to its end."""
    env = {"AGENTD_DRAIN_SECONDS": "3"}
    server = Server(tmp_path / "data", env=env).start()
    try:
        client = get_client(url=server.url, api_key=None)
        short_tid = (await client.threads.create())["thread_id"]
        long_tid = (await client.threads.create())["thread_id"]
        short = await client.runs.create(short_tid, "steps", input={"done": [], "delay": 0.4})
        long = await client.runs.create(long_tid, "steps", input={"done": [], "delay": 3})
        await asyncio.sleep(0.3)
        started = time.monotonic()
        assert server.stop(timeout=40) in (0, -15)
        took = time.monotonic() - started
    finally:
        server.kill()
    log = server.log()
    assert "draining 2 run(s) for up to 3 s" in log and "handing 1 run(s) back" in log
    assert 2.5 < took < 20, took
    restarted = Server(tmp_path / "data", env=env).start()
    try:
        client = get_client(url=restarted.url, api_key=None)
        done = await client.runs.get(short_tid, short["run_id"])
        assert done["status"] == "success" and done["attempt"] == 1  # finished in the drain
        assert (await client.runs.join(long_tid, long["run_id"]))["done"] == ["a", "b", "c"]
        again = await client.runs.get(long_tid, long["run_id"])
        assert again["status"] == "success" and again["attempt"] == 1  # the hand-back is free
    finally:
        restarted.stop()
