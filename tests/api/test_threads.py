"""Threads, their state and history, through the official Python client."""

from __future__ import annotations

import uuid

import pytest
from langgraph_sdk.client import LangGraphClient
from langgraph_sdk.errors import (
    BadRequestError,
    ConflictError,
    NotFoundError,
    UnprocessableEntityError,
)


async def test_thread_crud(client: LangGraphClient) -> None:
    tid = str(uuid.uuid4())
    thread = await client.threads.create(thread_id=tid, metadata={"owner": "ann", "n": 1})
    assert thread["thread_id"] == tid and thread["metadata"] == {"owner": "ann", "n": 1}
    with pytest.raises(ConflictError):
        await client.threads.create(thread_id=tid)
    same = await client.threads.create(thread_id=tid, if_exists="do_nothing")
    assert same["created_at"] == thread["created_at"]
    patched = await client.threads.update(tid, metadata={"n": 2, "tag": "x"})
    assert patched["metadata"] == {"owner": "ann", "n": 2, "tag": "x"}
    assert patched["updated_at"] >= thread["updated_at"]
    assert (await client.threads.get(tid))["metadata"] == patched["metadata"]
    await client.threads.delete(tid)
    with pytest.raises(NotFoundError):
        await client.threads.get(tid)
    with pytest.raises(NotFoundError):
        await client.threads.delete(tid)


async def test_delete_thread_removes_runs_and_checkpoints(client: LangGraphClient) -> None:
    tid = (await client.threads.create())["thread_id"]
    await client.runs.wait(tid, "echo", input={"value": 1})
    await client.threads.delete(tid)
    # Re-creating the same id starts empty: no runs, no state.
    await client.threads.create(thread_id=tid)
    assert await client.runs.list(tid) == []
    state = await client.threads.get_state(tid)
    assert state["values"] == {} and state["checkpoint"] is None


async def test_thread_search(client: LangGraphClient) -> None:
    tag = str(uuid.uuid4())
    made = [
        await client.threads.create(metadata={"tag": tag, "i": i, "even": i % 2 == 0})
        for i in range(5)
    ]
    found = await client.threads.search(metadata={"tag": tag}, limit=10)
    assert {t["thread_id"] for t in found} == {t["thread_id"] for t in made}
    assert [t["metadata"]["i"] for t in found] == [4, 3, 2, 1, 0]  # updated_at desc
    even = await client.threads.search(metadata={"tag": tag, "even": True})
    assert sorted(t["metadata"]["i"] for t in even) == [0, 2, 4]
    page = await client.threads.search(
        metadata={"tag": tag}, limit=2, offset=1, sort_by="created_at", sort_order="asc"
    )
    assert [t["metadata"]["i"] for t in page] == [1, 2]
    by_ids = await client.threads.search(ids=[made[0]["thread_id"], made[3]["thread_id"]])
    assert {t["metadata"]["i"] for t in by_ids} == {0, 3}
    await client.runs.wait(made[1]["thread_id"], "fail", input={}, raise_error=False)
    errored = await client.threads.search(metadata={"tag": tag}, status="error")
    assert [t["metadata"]["i"] for t in errored] == [1]
    selected = await client.threads.search(metadata={"tag": tag}, select=["thread_id"], limit=1)
    assert list(selected[0]) == ["thread_id"]


async def test_search_pagination_headers(url: str) -> None:
    import httpx

    tag = str(uuid.uuid4())
    async with httpx.AsyncClient(base_url=url) as http:
        for _ in range(3):
            await http.post("/threads", json={"metadata": {"tag": tag}})
        r = await http.post("/threads/search", json={"metadata": {"tag": tag}, "limit": 2})
        assert r.headers["x-pagination-total"] == "3"
        assert r.headers["x-pagination-next"] == "2"
        r = await http.post(
            "/threads/search", json={"metadata": {"tag": tag}, "limit": 2, "offset": 2}
        )
        assert r.headers["x-pagination-total"] == "3" and "x-pagination-next" not in r.headers


async def test_state_of_thread_that_never_ran(client: LangGraphClient) -> None:
    tid = (await client.threads.create())["thread_id"]
    state = await client.threads.get_state(tid)
    assert state == {
        "values": {}, "next": [], "tasks": [], "metadata": None, "created_at": None,
        "checkpoint": None, "parent_checkpoint": None, "interrupts": [],
        "checkpoint_id": None, "parent_checkpoint_id": None,
    }  # fmt: skip
    assert await client.threads.get_history(tid) == []
    with pytest.raises(BadRequestError):
        await client.threads.update_state(tid, {"value": 1})


async def test_history_newest_first_with_limit_and_before(
    client: LangGraphClient, backend: str
) -> None:
    tid = (await client.threads.create())["thread_id"]
    await client.runs.wait(tid, "steps", input={"done": []})
    history = await client.threads.get_history(tid, limit=10)
    steps = [h["metadata"]["step"] for h in history]
    assert steps == [3, 2, 1, 0, -1]
    assert history[0]["values"]["done"] == ["a", "b", "c"]
    assert history[0]["metadata"]["writes"] == {"c": {"done": ["c"]}}
    assert len(await client.threads.get_history(tid, limit=2)) == 2
    older = await client.threads.get_history(tid, limit=10, before=history[1]["checkpoint"])
    assert [h["metadata"]["step"] for h in older] == [1, 0, -1]
    inputs = await client.threads.get_history(tid, limit=10, metadata={"source": "input"})
    assert [h["metadata"]["step"] for h in inputs] == [-1]
    sql_like = {"x') OR 1=1 --": 1}
    if backend == "sqlite":  # LangGraph's SqliteSaver refuses such a key
        with pytest.raises(UnprocessableEntityError):
            await client.threads.get_history(tid, metadata=sql_like)
    else:  # its PostgresSaver passes it as a parameter: a key no checkpoint has
        assert await client.threads.get_history(tid, metadata=sql_like) == []
    at = await client.threads.get_state(tid, checkpoint_id=history[2]["checkpoint_id"])
    assert at["values"]["done"] == ["a"]
    with pytest.raises(NotFoundError):
        await client.threads.get_state(tid, checkpoint_id=str(uuid.uuid4()))


async def test_update_state_as_node(client: LangGraphClient) -> None:
    tid = (await client.threads.create())["thread_id"]
    await client.runs.wait(tid, "steps", input={"done": []})
    result = await client.threads.update_state(tid, {"done": ["manual"]}, as_node="c")
    checkpoint_id = result["checkpoint"]["checkpoint_id"]
    state = await client.threads.get_state(tid)
    assert state["checkpoint_id"] == checkpoint_id
    assert state["values"]["done"] == ["a", "b", "c", "manual"]
    assert state["metadata"]["source"] == "update"
    thread = await client.threads.get(tid)
    assert thread["values"]["done"][-1] == "manual"
    with pytest.raises(BadRequestError):
        await client.threads.update_state(tid, {"done": ["x"]}, as_node="no-such-node")


async def test_update_state_on_busy_thread_is_409(client: LangGraphClient) -> None:
    tid = (await client.threads.create())["thread_id"]
    run = await client.runs.create(tid, "steps", input={"done": [], "delay": 0.3})
    with pytest.raises(ConflictError):
        await client.threads.update_state(tid, {"done": ["x"]}, as_node="c")
    await client.runs.join(tid, run["run_id"])
