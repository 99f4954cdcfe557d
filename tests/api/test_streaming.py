"""Streaming through the official Python client: every stream mode, subgraph namespaces,
resumable streams with Last-Event-ID, joins, the thread stream, and client disconnects."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from langgraph_sdk.client import LangGraphClient
from langgraph_sdk.errors import NotFoundError, UnprocessableEntityError

from tests.api.helpers import wait_for_status


async def _events(stream) -> list[tuple[str, object]]:  # type: ignore[no-untyped-def]
    return [(c.event, c.data) async for c in stream]


async def test_messages_mode_sends_metadata_once_then_the_accumulated_message(
    client: LangGraphClient,
) -> None:
    thread = await client.threads.create()
    events = await _events(
        client.runs.stream(
            thread["thread_id"], "chat", input={"messages": [{"role": "user", "content": "hi"}]},
            stream_mode="messages",
        )
    )  # fmt: skip
    names = [e for e, _ in events]
    assert names[0] == "metadata"
    assert names.count("messages/metadata") == 1
    partials = [d[0] for e, d in events if e == "messages/partial"]  # type: ignore[index]
    # Each partial carries the whole message so far, growing to the final answer.
    contents = [p["content"] for p in partials]
    assert contents[-1] == "you said hi ok"
    assert all(contents[-1].startswith(c) for c in contents)
    assert contents == sorted(contents, key=len) and len(set(contents)) > 3
    assert {p["id"] for p in partials} == {partials[0]["id"]}
    metadata = next(d for e, d in events if e == "messages/metadata")
    assert metadata[partials[0]["id"]]["metadata"]["langgraph_node"] == "chat"  # type: ignore[index]
    assert "values" not in names and "messages" not in names


async def test_messages_and_messages_tuple_together(client: LangGraphClient) -> None:
    events = await _events(
        client.runs.stream(
            None, "chat", input={"messages": [{"role": "user", "content": "yo"}]},
            stream_mode=["messages-tuple", "messages", "values"],
        )
    )  # fmt: skip
    tuples = [d for e, d in events if e == "messages"]
    assert tuples and all(len(d) == 2 for d in tuples)  # type: ignore[arg-type]
    assert "".join(d[0]["content"] for d in tuples) == "you said yo ok"  # type: ignore[index]
    assert any(e == "messages/partial" for e, _ in events)
    assert [e for e, _ in events if e == "values"]


async def test_events_mode_streams_langchain_events(client: LangGraphClient) -> None:
    events = await _events(
        client.runs.stream(
            None, "chat", input={"messages": [{"role": "user", "content": "ev"}]},
            stream_mode=["events", "values"],
        )
    )  # fmt: skip
    kinds = [d["event"] for e, d in events if e == "events"]  # type: ignore[index]
    assert kinds[0] == "on_chain_start"
    assert "on_chat_model_stream" in kinds and "on_chat_model_end" in kinds
    tokens = [
        d["data"]["chunk"]["content"]  # type: ignore[index]
        for e, d in events
        if e == "events" and d["event"] == "on_chat_model_stream"  # type: ignore[index]
    ]
    assert "".join(tokens) == "you said ev ok"
    final = [d for e, d in events if e == "values"][-1]
    assert final["messages"][-1]["content"] == "you said ev ok"  # type: ignore[index]


async def test_custom_and_subgraph_namespaces(client: LangGraphClient) -> None:
    events = await _events(
        client.runs.stream(
            None, "nested", input={"done": []}, stream_mode=["custom", "updates"],
            stream_subgraphs=True,
        )
    )  # fmt: skip
    names = [e for e, _ in events]
    assert any(n.startswith("custom|child:") for n in names)
    assert any(n.startswith("updates|child:") for n in names)
    assert ("updates", {"after": {"done": ["after"]}}) in events
    custom = [d for e, d in events if e.startswith("custom")]
    assert custom == [{"progress": "inner"}]
    # Without stream_subgraphs the subgraph's own events are not sent.
    flat = await _events(
        client.runs.stream(None, "nested", input={"done": []}, stream_mode=["updates"])
    )
    assert not any("|" in e for e, _ in flat)


async def test_debug_tasks_and_checkpoints_modes(client: LangGraphClient) -> None:
    thread = await client.threads.create()  # checkpoints need a thread (stateless: none)
    events = await _events(
        client.runs.stream(
            thread["thread_id"], "steps", input={"done": []},
            stream_mode=["debug", "tasks", "checkpoints"],
        )
    )  # fmt: skip
    names = {e for e, _ in events}
    assert names == {"metadata", "debug", "tasks", "checkpoints"}
    debug_types = {d["type"] for e, d in events if e == "debug"}  # type: ignore[index]
    assert {"checkpoint", "task", "task_result"} <= debug_types
    task_names = [d["name"] for e, d in events if e == "tasks" and "input" in d]  # type: ignore[index,operator]
    assert task_names == ["a", "b", "c"]


async def test_events_arrive_as_the_graph_produces_them(client: LangGraphClient) -> None:
    arrivals: dict[str, float] = {}
    async for chunk in client.runs.stream(
        None, "steps", input={"done": [], "delay": 0.4}, stream_mode="updates"
    ):
        if chunk.event == "updates":
            arrivals[next(iter(chunk.data))] = time.monotonic()
    # Each node's update is sent when the node ends, not when the run ends.
    assert arrivals["b"] - arrivals["a"] > 0.3
    assert arrivals["c"] - arrivals["b"] > 0.3


async def test_resumable_stream_replays_exactly_after_last_event_id(url: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        thread = (await http.post("/threads", json={})).json()
        tid = thread["thread_id"]
        body = {
            "assistant_id": "steps", "input": {"done": []},
            "stream_mode": ["values", "updates"], "stream_resumable": True,
        }  # fmt: skip
        frames = await _sse(http, "POST", f"/threads/{tid}/runs/stream", json=body)
        ids = [f["id"] for f in frames]
        assert all(ids), "every event of a resumable run has an id"
        keys = [tuple(map(int, i.split("-"))) for i in ids]
        assert keys == sorted(keys) and len(set(keys)) == len(keys)
        run_id = frames[0]["data"]["run_id"]
        path = f"/threads/{tid}/runs/{run_id}/stream"
        # The run has ended: a late reader still replays it, from any point.
        for k in (0, 3, len(frames) - 2):
            replay = await _sse(http, "GET", path, headers={"Last-Event-ID": ids[k]})
            assert replay == frames[k + 1 :]
        assert await _sse(http, "GET", path, headers={"Last-Event-ID": "-1"}) == frames
        assert await _sse(http, "GET", path, headers={"Last-Event-ID": ids[-1]}) == []
        # stream_mode filters the replay.
        only_updates = await _sse(
            http, "GET", path, headers={"Last-Event-ID": "-1"}, params={"stream_mode": "updates"}
        )
        assert only_updates == [f for f in frames if f["event"] == "updates"]
        bad = await http.get(path, headers={"Last-Event-ID": "yesterday"})
        assert bad.status_code == 422 and "Last-Event-ID" in bad.json()["detail"]


async def test_non_resumable_stream_has_no_ids_and_no_replay(url: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        tid = (await http.post("/threads", json={})).json()["thread_id"]
        body = {"assistant_id": "echo", "input": {"value": 1}}
        frames = await _sse(http, "POST", f"/threads/{tid}/runs/stream", json=body)
        assert frames and all(f["id"] is None for f in frames)
        run_id = frames[0]["data"]["run_id"]
        path = f"/threads/{tid}/runs/{run_id}/stream"
        assert await _sse(http, "GET", path, headers={"Last-Event-ID": "-1"}) == []


async def test_sdk_join_stream_with_last_event_id(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    run = await client.runs.create(
        thread["thread_id"], "steps", input={"done": [], "delay": 0.2},
        stream_mode=["updates"], stream_resumable=True,
    )  # fmt: skip
    await client.runs.join(thread["thread_id"], run["run_id"])
    replay = [
        (c.event, c.data)
        async for c in client.runs.join_stream(
            thread["thread_id"], run["run_id"], last_event_id="-1"
        )
    ]
    assert replay[0] == ("metadata", {"run_id": run["run_id"], "attempt": 1})
    assert [d for e, d in replay if e == "updates"] == [
        {"a": {"done": ["a"]}}, {"b": {"done": ["b"]}}, {"c": {"done": ["c"]}},
    ]  # fmt: skip


async def test_join_stream_of_running_run_sees_the_rest(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    run = await client.runs.create(
        thread["thread_id"], "steps", input={"done": [], "delay": 0.3}, stream_mode="updates"
    )
    await wait_for_status(client, thread["thread_id"], run["run_id"], "running")
    joined = [
        (c.event, c.data)
        async for c in client.runs.join_stream(
            thread["thread_id"], run["run_id"], stream_mode=["updates"]
        )
    ]
    nodes = [next(iter(d)) for e, d in joined if e == "updates"]  # type: ignore[arg-type]
    assert nodes and nodes[-1] == "c"
    assert all(e == "updates" for e, _ in joined)  # the filter hides metadata too
    with pytest.raises(UnprocessableEntityError):
        async for _ in client.runs.join_stream(
            thread["thread_id"], run["run_id"], stream_mode="nonsense"
        ):
            pass


async def test_stream_with_unknown_mode_is_422_and_stores_nothing(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    with pytest.raises(UnprocessableEntityError):
        async for _ in client.runs.stream(thread["thread_id"], "echo", stream_mode="telepathy"):  # type: ignore[arg-type]
            pass
    assert await client.runs.list(thread["thread_id"]) == []


async def test_thread_stream_relays_every_run_and_its_end(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    tid = thread["thread_id"]
    seen: list[tuple[str, object]] = []

    async def listen() -> None:
        async for chunk in await client.threads.join_stream(tid):
            seen.append((chunk.event, chunk.data))

    listener = asyncio.create_task(listen())
    await asyncio.sleep(0.3)
    first = await client.runs.create(tid, "echo", input={"value": 1}, stream_mode="updates")
    second = await client.runs.create(tid, "echo", input={"value": 2}, stream_mode="values")
    await client.runs.join(tid, second["run_id"])
    await _until(lambda: ("metadata", {"status": "run_done", "run_id": second["run_id"]}) in seen)
    listener.cancel()
    assert ("metadata", {"run_id": first["run_id"], "attempt": 1}) in seen
    assert ("metadata", {"status": "run_done", "run_id": first["run_id"]}) in seen
    # Each run's events as that run streams them: updates for the first, values for the second.
    assert ("updates", {"echo": {"value": 1, "env": "from-langgraph-json"}}) in seen
    assert ("values", {"value": 2, "env": "from-langgraph-json"}) in seen
    assert ("values", {"value": 1, "env": "from-langgraph-json"}) not in seen


async def test_thread_stream_lifecycle_and_state_updates(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    tid = thread["thread_id"]
    seen: list[tuple[str, object]] = []

    async def listen() -> None:
        async for chunk in await client.threads.join_stream(
            tid, stream_mode=["lifecycle", "state_update"]
        ):
            seen.append((chunk.event, chunk.data))

    listener = asyncio.create_task(listen())
    await asyncio.sleep(0.3)
    run = await client.runs.wait(tid, "echo", input={"value": 5})
    assert run["value"] == 5
    await client.threads.update_state(tid, {"value": 6})
    await _until(lambda: any(e == "state_update" for e, _ in seen))
    listener.cancel()
    assert {e for e, _ in seen} == {"metadata", "state_update"}
    update = next(d for e, d in seen if e == "state_update")
    assert update["thread_id"] == tid and update["state"]["values"]["value"] == 6  # type: ignore[index]


async def test_thread_stream_replays_resumable_runs_after_last_event_id(url: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        tid = (await http.post("/threads", json={})).json()["thread_id"]
        body = {"assistant_id": "echo", "input": {"value": 3}, "stream_resumable": True,
                "stream_mode": "updates"}  # fmt: skip
        frames = await _sse(http, "POST", f"/threads/{tid}/runs/stream", json=body)
        assert [f["event"] for f in frames] == ["metadata", "updates"]
        path = f"/threads/{tid}/stream"
        replayed: list[dict] = []
        async with http.stream("GET", path, headers={"Last-Event-ID": "-1"}) as res:
            async for line in res.aiter_lines():
                if line.startswith("id: "):
                    replayed.append({"id": line[4:]})
                    if len(replayed) == len(frames):
                        break
        assert [r["id"] for r in replayed] == [f["id"] for f in frames]


async def test_thread_stream_errors(client: LangGraphClient, url: str) -> None:
    with pytest.raises(NotFoundError):
        async for _ in await client.threads.join_stream("00000000-0000-0000-0000-000000000000"):
            pass
    thread = await client.threads.create()
    async with httpx.AsyncClient(base_url=url) as http:
        path = f"/threads/{thread['thread_id']}/stream"
        bad_mode = await http.get(path, params={"stream_modes": "everything"})
        assert bad_mode.status_code == 422 and "everything" in bad_mode.json()["detail"]
        bad_id = await http.get(path, headers={"Last-Event-ID": "abc"})
        assert bad_id.status_code == 422
        assert (await http.get("/threads/not-a-uuid/stream")).status_code == 422


async def test_disconnect_with_on_disconnect_cancel_stops_the_run(
    client: LangGraphClient, url: str
) -> None:
    thread = await client.threads.create()
    tid = thread["thread_id"]
    body = {
        "assistant_id": "steps", "input": {"done": [], "delay": 1.0}, "on_disconnect": "cancel",
    }  # fmt: skip
    run_id = await _read_metadata_then_leave(url, f"/threads/{tid}/runs/stream", body)
    run = await wait_for_status(client, tid, run_id, "interrupted")
    assert run["status"] == "interrupted"
    # The thread is not left busy: a next run goes through.
    result = await client.runs.wait(tid, "echo", input={"value": "after"})
    assert result["value"] == "after"


async def test_disconnect_with_continue_lets_the_run_finish(
    client: LangGraphClient, url: str
) -> None:
    thread = await client.threads.create()
    tid = thread["thread_id"]
    body = {"assistant_id": "steps", "input": {"done": [], "delay": 0.3}}
    run_id = await _read_metadata_then_leave(url, f"/threads/{tid}/runs/stream", body)
    run = await wait_for_status(client, tid, run_id, "success")
    assert run["status"] == "success"
    state = await client.threads.get_state(tid)
    assert state["values"]["done"] == ["a", "b", "c"]


async def test_wait_disconnect_with_on_disconnect_cancel(client: LangGraphClient, url: str) -> None:
    thread = await client.threads.create()
    tid = thread["thread_id"]
    body = {"assistant_id": "steps", "input": {"done": [], "delay": 1.0}, "on_disconnect": "cancel"}
    async with httpx.AsyncClient(base_url=url, timeout=5) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post(f"/threads/{tid}/runs/wait", json=body, timeout=0.5)
    runs = await client.runs.list(tid)
    run = await wait_for_status(client, tid, runs[0]["run_id"], "interrupted")
    assert run["status"] == "interrupted"


# ---------------------------------------------------------------- helpers


async def _sse(http: httpx.AsyncClient, method: str, path: str, **kwargs) -> list[dict]:  # type: ignore[no-untyped-def]
    """The frames of one SSE response: event, parsed data and id (None without one)."""
    import orjson

    frames: list[dict] = []
    async with http.stream(method, path, **kwargs) as res:
        assert res.status_code == 200, await res.aread()
        text = (await res.aread()).decode()
    for block in text.split("\r\n\r\n"):
        if not block.strip() or block.startswith(":"):
            continue
        fields = dict(line.split(": ", 1) for line in block.split("\r\n"))
        frames.append(
            {"event": fields["event"], "data": orjson.loads(fields["data"]), "id": fields.get("id")}
        )
    return frames


async def _read_metadata_then_leave(url: str, path: str, body: dict) -> str:
    import orjson

    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        async with http.stream("POST", path, json=body) as res:
            async for line in res.aiter_lines():
                if line.startswith("data: "):
                    return orjson.loads(line[6:])["run_id"]
    raise AssertionError("no metadata event")


async def _until(predicate, limit: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)
