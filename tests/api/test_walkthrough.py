"""The docs' background-run walkthrough, verbatim, with the official Python client."""

from __future__ import annotations

import uuid

from langgraph_sdk.client import LangGraphClient

WEATHER = {"messages": [{"role": "user", "content": "what's the weather in sf"}]}
AGENT_ID = str(uuid.uuid5(uuid.UUID("6ba7b821-9dad-11d1-80b4-00c04fd430c8"), "agent"))
RUN_KEYS = {"run_id", "thread_id", "assistant_id", "created_at", "updated_at", "metadata",
            "status", "kwargs", "multitask_strategy"}  # fmt: skip
KWARGS_KEYS = {"input", "config", "webhook", "temporary", "stream_mode", "feedback_keys",
               "interrupt_before", "interrupt_after"}  # fmt: skip


async def test_background_run_walkthrough(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    assert {"thread_id", "created_at", "updated_at", "metadata", "status", "config", "values"} <= (
        thread.keys()
    )
    assert thread["metadata"] == {} and thread["status"] == "idle"
    assert thread["config"] == {} and thread["values"] is None
    uuid.UUID(thread["thread_id"])
    assert thread["created_at"].endswith("+00:00")

    assert await client.runs.list(thread["thread_id"]) == []

    run = await client.runs.create(thread["thread_id"], "agent", input=WEATHER)
    assert RUN_KEYS <= run.keys()
    assert run["status"] == "pending"
    assert run["assistant_id"] == AGENT_ID == "fe096781-5601-53d2-b2f6-0d3403f7e9ca"
    assert run["thread_id"] == thread["thread_id"]
    assert KWARGS_KEYS <= run["kwargs"].keys()
    assert run["kwargs"]["input"] == WEATHER
    assert run["kwargs"]["stream_mode"] == ["values"]
    assert run["kwargs"]["temporary"] is False
    configurable = run["kwargs"]["config"]["configurable"]
    assert configurable == {
        "run_id": run["run_id"],
        "user_id": "",
        "graph_id": "agent",
        "thread_id": thread["thread_id"],
        "assistant_id": AGENT_ID,
        "checkpoint_id": None,
    }
    assert "metadata" in run["kwargs"]["config"]
    assert run["multitask_strategy"] in ("enqueue", "reject", "interrupt", "rollback")

    polled = await client.runs.get(thread["thread_id"], run["run_id"])
    assert polled["status"] in ("pending", "running", "success")
    assert polled["run_id"] == run["run_id"]

    joined = await client.runs.join(thread["thread_id"], run["run_id"])
    assert [m["type"] for m in joined["messages"]] == ["human", "ai", "tool", "ai"]

    done = await client.runs.get(thread["thread_id"], run["run_id"])
    assert done["status"] == "success"
    assert (await client.runs.list(thread["thread_id"]))[0]["run_id"] == run["run_id"]

    state = await client.threads.get_state(thread["thread_id"])
    messages = state["values"]["messages"]
    assert [m["type"] for m in messages] == ["human", "ai", "tool", "ai"]
    human, call, tool, answer = messages
    assert human["content"] == "what's the weather in sf"
    for message in messages:
        assert {"content", "additional_kwargs", "response_metadata", "type", "name", "id"} <= (
            message.keys()
        )
    assert call["tool_calls"][0]["name"] == "search_weather"
    assert {"tool_calls", "invalid_tool_calls", "usage_metadata"} <= call.keys()
    assert call["usage_metadata"]["total_tokens"] > 0
    assert tool["tool_call_id"] == call["tool_calls"][0]["id"]
    assert "foggy" in tool["content"] and "foggy" in answer["content"]
    assert answer["tool_calls"] == []
    assert joined == state["values"]

    assert state["next"] == [] and state["tasks"] == []
    metadata = state["metadata"]
    assert metadata["step"] == 3 and metadata["source"] == "loop"
    assert metadata["run_id"] == run["run_id"]
    assert metadata["graph_id"] == "agent"
    assert metadata["thread_id"] == thread["thread_id"]
    assert metadata["assistant_id"] == AGENT_ID
    assert list(metadata["writes"]) == ["agent"]
    assert metadata["writes"]["agent"]["messages"][0]["id"] == answer["id"]
    assert state["checkpoint_id"] == state["checkpoint"]["checkpoint_id"]
    assert state["parent_checkpoint_id"] == state["parent_checkpoint"]["checkpoint_id"]
    assert state["checkpoint"]["thread_id"] == thread["thread_id"]
    assert state["created_at"].endswith("+00:00")

    # The thread now carries its graph and its final values.
    thread = await client.threads.get(thread["thread_id"])
    assert thread["status"] == "idle"
    assert thread["metadata"]["graph_id"] == "agent"
    assert thread["values"] == state["values"]


async def test_assistant_by_uuid_runs_the_same_graph(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    result = await client.runs.wait(thread["thread_id"], AGENT_ID, input=WEATHER)
    assert [m["type"] for m in result["messages"]] == ["human", "ai", "tool", "ai"]
