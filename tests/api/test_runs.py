"""Runs through the official Python client: wait, stream, stateless, errors, queueing, cancel."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from langgraph_sdk.client import LangGraphClient
from langgraph_sdk.errors import ConflictError, NotFoundError
from langgraph_sdk.schema import Run


async def test_wait_returns_final_values(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    result = await client.runs.wait(thread["thread_id"], "echo", input={"value": 42})
    assert result == {"value": 42, "env": "from-langgraph-json"}
    runs = await client.runs.list(thread["thread_id"])
    assert [r["status"] for r in runs] == ["success"]


async def test_stateless_wait_leaves_nothing_behind(client: LangGraphClient) -> None:
    result = await client.runs.wait(None, "echo", input={"value": "x"})
    assert result["value"] == "x"
    # The temporary thread was deleted with its run.
    threads = await client.threads.search(metadata={"graph_id": "echo"}, limit=1000)
    assert all(t["values"] != result for t in threads)


async def test_stateless_wait_keep(client: LangGraphClient) -> None:
    chunks = [c async for c in client.runs.stream(None, "echo", input={"value": "kept"})]
    assert chunks[0].event == "metadata"
    run_id = chunks[0].data["run_id"]
    result = await client.runs.wait(None, "echo", input={"value": 7}, on_completion="keep")
    assert result["value"] == 7
    kept = await client.threads.search(values={"value": 7}, limit=1000)
    assert kept and kept[0]["status"] == "idle"
    assert run_id


async def test_stream_values_and_updates(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    events = [
        (c.event, c.data)
        async for c in client.runs.stream(
            thread["thread_id"], "steps", input={"done": []}, stream_mode=["values", "updates"]
        )
    ]
    names = [e for e, _ in events]
    assert names[0] == "metadata"
    assert events[0][1]["attempt"] == 1
    updates = [d for e, d in events if e == "updates"]
    assert updates == [{"a": {"done": ["a"]}}, {"b": {"done": ["b"]}}, {"c": {"done": ["c"]}}]
    values = [d for e, d in events if e == "values"]
    assert values[-1] == {"done": ["a", "b", "c"]}
    assert "error" not in names


async def test_stream_only_requested_modes(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    names = [
        c.event
        async for c in client.runs.stream(
            thread["thread_id"], "steps", input={"done": []}, stream_mode="updates"
        )
    ]
    assert names == ["metadata", "updates", "updates", "updates"]


async def test_stream_messages_tuple_of_weather_agent(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    events = [
        c
        async for c in client.runs.stream(
            thread["thread_id"],
            "agent",
            input={"messages": [{"role": "user", "content": "what's the weather in sf"}]},
            stream_mode="messages-tuple",
        )
    ]
    messages = [c.data for c in events if c.event == "messages"]
    assert messages, [c.event for c in events]
    chunk, metadata = messages[-1]
    assert metadata["langgraph_node"] in ("agent", "tools")
    assert "type" in chunk and "content" in chunk


async def test_stream_stateless_and_headers(url: str) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        async with http.stream(
            "POST", "/runs/stream", json={"assistant_id": "echo", "input": {"value": 1}}
        ) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            assert r.headers["location"].endswith("/stream")
            assert "/runs/" in r.headers["content-location"]
            raw = b"".join([b async for b in r.aiter_bytes()])
    assert raw.startswith(b"event: metadata\r\ndata: {")
    assert b'event: values\r\ndata: {"value":1' in raw


async def test_graph_error_is_reported_and_server_unharmed(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    with pytest.raises(Exception, match="ValueError"):
        await client.runs.wait(thread["thread_id"], "fail", input={"message": "boom here"})
    result = await client.runs.wait(
        thread["thread_id"], "fail", input={"message": "boom again"}, raise_error=False
    )
    assert result["__error__"] == {"error": "ValueError", "message": "boom again"}
    runs = await client.runs.list(thread["thread_id"])
    assert [r["status"] for r in runs] == ["error", "error"]
    thread = await client.threads.get(thread["thread_id"])
    assert thread["status"] == "error"
    assert thread["error"] == {"error": "ValueError", "message": "boom again"}
    joined = await client.runs.join(thread["thread_id"], runs[0]["run_id"])
    assert joined["__error__"]["message"] == "boom again"
    events = [
        (c.event, c.data)
        async for c in client.runs.stream(thread["thread_id"], "fail", input={"message": "x"})
    ]
    assert events[-1] == ("error", {"error": "ValueError", "message": "x"})
    # A later good run on the same thread works and clears the error.
    await client.runs.wait(thread["thread_id"], "echo", input={"value": 1})
    assert (await client.threads.get(thread["thread_id"]))["status"] == "idle"


async def test_enqueued_runs_run_in_order_one_at_a_time(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    tid = thread["thread_id"]
    runs = [
        await client.runs.create(tid, "steps", input={"done": [f"r{i}"], "delay": 0.05})
        for i in range(3)
    ]
    seen_running = set()
    for _ in range(200):
        # One list call reads every run in one query: a consistent snapshot.
        listed = {r["run_id"]: r["status"] for r in await client.runs.list(tid)}
        statuses = [listed[r["run_id"]] for r in runs]
        assert statuses.count("running") <= 1, statuses
        seen_running.update(i for i, s in enumerate(statuses) if s == "running")
        if all(s == "success" for s in statuses):
            break
        await asyncio.sleep(0.02)
    state = await client.threads.get_state(tid)
    assert state["values"]["done"] == [
        "r0", "a", "b", "c", "r1", "a", "b", "c", "r2", "a", "b", "c",
    ]  # fmt: skip
    assert seen_running


async def test_reject_when_thread_busy(client: LangGraphClient) -> None:
    tid = (await client.threads.create())["thread_id"]
    first = await client.runs.create(tid, "steps", input={"done": [], "delay": 0.2})
    assert (await client.threads.get(tid))["status"] == "busy"
    with pytest.raises(ConflictError):
        await client.runs.create(tid, "echo", input={"value": 1}, multitask_strategy="reject")
    await client.runs.join(tid, first["run_id"])
    assert len(await client.runs.list(tid)) == 1


async def test_runs_on_different_threads_run_concurrently(client: LangGraphClient) -> None:
    threads = [await client.threads.create() for _ in range(5)]
    start = time.monotonic()
    runs = [
        await client.runs.create(t["thread_id"], "steps", input={"done": [], "delay": 0.2})
        for t in threads
    ]
    await asyncio.gather(*(client.runs.join(r["thread_id"], r["run_id"]) for r in runs))
    # Three 0.2 s steps each; sequentially this would take at least 3 s.
    assert time.monotonic() - start < 2.5


async def test_if_not_exists_create(client: LangGraphClient) -> None:
    import uuid

    tid = str(uuid.uuid4())
    result = await client.runs.wait(tid, "echo", input={"value": 3}, if_not_exists="create")
    assert result["value"] == 3
    assert (await client.threads.get(tid))["metadata"]["graph_id"] == "echo"
    with pytest.raises(NotFoundError):
        await client.runs.create(str(uuid.uuid4()), "echo", input={"value": 3})


async def test_cancel_running_run(client: LangGraphClient) -> None:
    tid = (await client.threads.create())["thread_id"]
    run = await client.runs.create(tid, "steps", input={"done": [], "delay": 0.5})
    for _ in range(100):
        if (await client.runs.get(tid, run["run_id"]))["status"] == "running":
            break
        await asyncio.sleep(0.02)
    await client.runs.cancel(tid, run["run_id"], wait=True)
    assert (await client.runs.get(tid, run["run_id"]))["status"] == "interrupted"
    thread = await client.threads.get(tid)
    assert thread["status"] in ("idle", "interrupted")
    with pytest.raises(NotFoundError):  # already finished
        await client.runs.cancel(tid, run["run_id"])
    # The thread takes new runs afterwards.
    assert (await client.runs.wait(tid, "echo", input={"value": 5}))["value"] == 5


async def test_cancel_pending_run(client: LangGraphClient) -> None:
    tid = (await client.threads.create())["thread_id"]
    first = await client.runs.create(tid, "steps", input={"done": [], "delay": 0.2})
    second = await client.runs.create(tid, "echo", input={"value": 1})
    await client.runs.cancel(tid, second["run_id"])
    assert (await client.runs.get(tid, second["run_id"]))["status"] == "interrupted"
    await client.runs.join(tid, first["run_id"])
    assert (await client.runs.get(tid, first["run_id"]))["status"] == "success"
    assert (await client.runs.get(tid, second["run_id"]))["status"] == "interrupted"


async def test_delete_run(client: LangGraphClient) -> None:
    tid = (await client.threads.create())["thread_id"]
    await client.runs.wait(tid, "echo", input={"value": 1})
    run = (await client.runs.list(tid))[0]
    await client.runs.delete(tid, run["run_id"])
    assert await client.runs.list(tid) == []
    with pytest.raises(NotFoundError):
        await client.runs.get(tid, run["run_id"])


async def test_delete_running_run_is_refused(client: LangGraphClient) -> None:
    tid = (await client.threads.create())["thread_id"]
    run = await client.runs.create(tid, "steps", input={"done": [], "delay": 0.3})
    with pytest.raises(ConflictError):
        await client.runs.delete(tid, run["run_id"])
    await client.runs.join(tid, run["run_id"])


async def test_join_finished_run_returns_thread_values(client: LangGraphClient) -> None:
    tid = (await client.threads.create())["thread_id"]
    run = await client.runs.create(tid, "echo", input={"value": "j"})
    first = await client.runs.join(tid, run["run_id"])
    again = await client.runs.join(tid, run["run_id"])
    assert first == again == {"value": "j", "env": "from-langgraph-json"}


async def test_list_runs_pagination_and_status(client: LangGraphClient) -> None:
    tid = (await client.threads.create())["thread_id"]
    for i in range(3):
        await client.runs.wait(tid, "echo", input={"value": i})
    runs = await client.runs.list(tid)
    assert [r["kwargs"]["input"]["value"] for r in runs] == [2, 1, 0]  # newest first
    assert len(await client.runs.list(tid, limit=2)) == 2
    assert [r["kwargs"]["input"]["value"] for r in await client.runs.list(tid, offset=2)] == [0]
    assert len(await client.runs.list(tid, status="success")) == 3
    assert await client.runs.list(tid, status="error") == []


async def test_interrupt_leaves_thread_interrupted_and_resumes(client: LangGraphClient) -> None:
    tid = (await client.threads.create())["thread_id"]
    result = await client.runs.wait(tid, "ask", input={"question": "proceed?"})
    assert result["__interrupt__"][0]["value"] == {"question": "proceed?"}
    thread = await client.threads.get(tid)
    assert thread["status"] == "interrupted"
    assert next(iter(thread["interrupts"].values()))[0]["value"] == {"question": "proceed?"}
    assert (await client.runs.list(tid))[0]["status"] == "success"
    state = await client.threads.get_state(tid)
    assert state["next"] == ["ask"]
    assert state["tasks"][0]["interrupts"][0]["value"] == {"question": "proceed?"}
    result = await client.runs.wait(tid, "ask", command={"resume": "yes"})
    assert result["answer"] == "yes"
    assert (await client.threads.get(tid))["status"] == "idle"


async def test_graph_factory_gets_the_run_config(client: LangGraphClient) -> None:
    result = await client.runs.wait(
        None, "factory", input={"value": 1}, config={"configurable": {"model": "m2"}}
    )
    assert result == {"value": 1, "model": "m2"}
    result = await client.runs.wait(None, "uncompiled", input={"value": 2})
    assert result["value"] == 2


async def test_graph_factory_gets_the_server_runtime(client: LangGraphClient) -> None:
    tid = (await client.threads.create())["thread_id"]
    result = await client.runs.wait(
        tid, "runtime_factory", input={"value": 1}, config={"configurable": {"model": "m3"}}
    )
    assert result == {"value": 1, "access": "threads.create_run", "has_store": True,
                      "model": "m3"}  # fmt: skip
    # Reading state calls the factory too, for reading.
    state = await client.threads.get_state(tid)
    assert state["values"]["value"] == 1


async def test_after_seconds_delays_start(client: LangGraphClient) -> None:
    tid = (await client.threads.create())["thread_id"]
    start = time.monotonic()
    run = await client.runs.create(tid, "echo", input={"value": 1}, after_seconds=0.5)
    assert (await client.runs.get(tid, run["run_id"]))["status"] == "pending"
    await client.runs.join(tid, run["run_id"])
    assert time.monotonic() - start >= 0.45
    assert (await client.runs.get(tid, run["run_id"]))["status"] == "success"


def _marked(marker: Path, line: str) -> bool:
    return marker.exists() and line in marker.read_text().split()


async def _start_and_reach_node_b(client: LangGraphClient, tid: str, marker: Path) -> Run:
    """A slow ``steps`` run, returned once node a has finished and b is running."""
    run = await client.runs.create(
        tid, "steps", input={"done": ["first"], "delay": 0.3, "marker": str(marker)}
    )
    for _ in range(500):
        if _marked(marker, "b:start"):
            return run
        await asyncio.sleep(0.01)
    raise AssertionError("node b never started")


async def test_multitask_interrupt_keeps_the_first_runs_progress(
    client: LangGraphClient, tmp_path: Path
) -> None:
    tid = (await client.threads.create())["thread_id"]
    first = await _start_and_reach_node_b(client, tid, tmp_path / "marker")
    second = await client.runs.create(
        tid, "steps", input={"done": ["second"]}, multitask_strategy="interrupt"
    )
    await client.runs.join(tid, second["run_id"])
    statuses = {r["run_id"]: r["status"] for r in await client.runs.list(tid)}
    assert statuses == {first["run_id"]: "interrupted", second["run_id"]: "success"}
    state = await client.threads.get_state(tid)
    assert state["values"]["done"] == ["first", "a", "second", "a", "b", "c"]


async def test_multitask_rollback_erases_the_first_run(
    client: LangGraphClient, tmp_path: Path
) -> None:
    tid = (await client.threads.create())["thread_id"]
    first = await _start_and_reach_node_b(client, tid, tmp_path / "marker")
    second = await client.runs.create(
        tid, "steps", input={"done": ["second"]}, multitask_strategy="rollback"
    )
    await client.runs.join(tid, second["run_id"])
    assert [r["run_id"] for r in await client.runs.list(tid)] == [second["run_id"]]
    with pytest.raises(NotFoundError):
        await client.runs.get(tid, first["run_id"])
    state = await client.threads.get_state(tid)
    assert state["values"]["done"] == ["second", "a", "b", "c"]
    history = await client.threads.get_history(tid, limit=50)
    assert {h["metadata"]["run_id"] for h in history} == {second["run_id"]}
