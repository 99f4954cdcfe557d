"""Run control through the official Python client: cancel many, batches, human in the loop,
breakpoints, time travel, multitask on stream and wait, run options, and their bad input."""

from __future__ import annotations

import httpx
import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command
from langgraph_sdk.client import LangGraphClient
from langgraph_sdk.errors import BadRequestError, ConflictError, NotFoundError

from tests.api.helpers import wait_for_status
from tests.graphs.basic import steps


async def test_cancel_many_by_ids(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    tid = thread["thread_id"]
    slow = await client.runs.create(tid, "steps", input={"done": [], "delay": 2})
    queued = await client.runs.create(tid, "echo", input={"value": 1})
    await wait_for_status(client, tid, slow["run_id"], "running")
    await client.runs.cancel_many(thread_id=tid, run_ids=[slow["run_id"], queued["run_id"]])
    for run in (slow, queued):
        assert (await wait_for_status(client, tid, run["run_id"], "interrupted"))["status"]
    assert (await client.threads.get(tid))["status"] in ("idle", "interrupted")
    # Nothing left to cancel: 404.
    with pytest.raises(NotFoundError):
        await client.runs.cancel_many(thread_id=tid, run_ids=[slow["run_id"]])


async def test_cancel_many_by_status(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    tid = thread["thread_id"]
    later = await client.runs.create(tid, "echo", input={"value": 1}, after_seconds=60)
    await client.runs.cancel_many(status="pending", action="rollback")
    with pytest.raises(NotFoundError):  # rolled back: deleted
        await client.runs.get(tid, later["run_id"])
    assert (await client.threads.get(tid))["status"] == "idle"


async def test_cancel_many_bad_input(url: str) -> None:
    async with httpx.AsyncClient(base_url=url) as http:
        for body in (
            {},
            {"status": "all", "thread_id": "00000000-0000-0000-0000-000000000000",
             "run_ids": ["00000000-0000-0000-0000-000000000001"]},
            {"thread_id": "00000000-0000-0000-0000-000000000000"},
            {"status": "finished"},
            {"thread_id": "nope", "run_ids": ["00000000-0000-0000-0000-000000000001"]},
        ):  # fmt: skip
            res = await http.post("/runs/cancel", json=body)
            assert res.status_code == 422, (body, res.text)
        res = await http.post("/runs/cancel", json={"status": "all"}, params={"action": "boom"})
        assert res.status_code == 422


async def test_batch_creates_stateless_runs(client: LangGraphClient) -> None:
    runs = await client.runs.create_batch(
        [{"assistant_id": "echo", "input": {"value": i}, "on_completion": "keep"} for i in range(3)]
    )
    assert len(runs) == 3 and len({r["thread_id"] for r in runs}) == 3
    for i, run in enumerate(runs):
        assert await client.runs.join(run["thread_id"], run["run_id"]) == {
            "value": i, "env": "from-langgraph-json",
        }  # fmt: skip


async def test_batch_is_all_or_nothing(client: LangGraphClient, url: str) -> None:
    marker = {"batch-marker": "all-or-nothing"}
    async with httpx.AsyncClient(base_url=url) as http:
        res = await http.post(
            "/runs/batch",
            json=[
                {"assistant_id": "echo", "input": {}, "metadata": marker, "on_completion": "keep"},
                {"assistant_id": "no-such-graph", "input": {}},
            ],
        )
        assert res.status_code == 422 and "no-such-graph" in res.json()["detail"]
        assert (await http.post("/runs/batch", json=[])).status_code == 422
        assert (await http.post("/runs/batch", json={"assistant_id": "echo"})).status_code == 422
    assert await client.threads.search(metadata=marker) == []


async def test_resume_several_interrupts_by_id(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    tid = thread["thread_id"]
    result = await client.runs.wait(tid, "review", input={"draft": "x"})
    interrupts = result["__interrupt__"]
    assert sorted(i["value"]["check"] for i in interrupts) == ["a", "b"]
    state = await client.threads.get_state(tid)
    assert (await client.threads.get(tid))["status"] == "interrupted"
    assert len(state["interrupts"]) == 2
    assert sorted(t["name"] for t in state["tasks"] if t["interrupts"]) == ["review_a", "review_b"]
    by_check = {i["value"]["check"]: i["id"] for i in interrupts}
    final = await client.runs.wait(
        tid, "review", command={"resume": {by_check["a"]: "yes", by_check["b"]: "fine"}}
    )
    assert final["approved"] == "yes"
    assert sorted(final["notes"]) == ["a", "b:fine", "published"]
    assert (await client.threads.get(tid))["status"] == "idle"


async def test_resume_with_update_and_goto(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    tid = thread["thread_id"]
    await client.runs.wait(tid, "steps", input={"done": []}, interrupt_before=["b"])
    state = await client.threads.get_state(tid)
    assert state["next"] == ["b"] and state["values"]["done"] == ["a"]
    command = {"update": {"done": ["b-skipped"]}, "goto": "c"}
    final = await client.runs.wait(tid, "steps", command=command)
    # The same steps through LangGraph in this process are the oracle: agentd must hand the
    # command to LangGraph unchanged.
    graph = steps.builder.compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "oracle"}}
    await graph.ainvoke({"done": []}, config, interrupt_before=["b"])
    expected = await graph.ainvoke(Command(update=command["update"], goto="c"), config)
    assert final == expected and "b-skipped" in final["done"]


async def test_interrupt_before_and_after_all_nodes(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    tid = thread["thread_id"]
    await client.runs.wait(tid, "steps", input={"done": []}, interrupt_after="*")
    thread_now = await client.threads.get(tid)
    assert thread_now["status"] == "interrupted" and thread_now["interrupts"] == {}
    assert (await client.threads.get_state(tid))["next"] == ["b"]
    # input None continues from the breakpoint.
    await client.runs.wait(tid, "steps", input=None, interrupt_before="*")
    state = await client.threads.get_state(tid)
    assert state["values"]["done"] == ["a", "b"] and state["next"] == ["c"]
    final = await client.runs.wait(tid, "steps", input=None)
    assert final["done"] == ["a", "b", "c"]


async def test_resume_without_interrupt_is_refused(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    tid = thread["thread_id"]
    await client.runs.wait(tid, "echo", input={"value": 1})
    with pytest.raises(BadRequestError) as err:
        await client.runs.create(tid, "echo", command={"resume": "yes"})
    assert "no pending interrupt" in str(err.value.body)
    with pytest.raises(BadRequestError):
        await client.runs.create(None, "echo", command={"resume": "yes"})
    assert len(await client.runs.list(tid)) == 1


async def test_fork_from_a_checkpoint(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    tid = thread["thread_id"]
    await client.runs.wait(tid, "steps", input={"done": []})
    history = await client.threads.get_history(tid, limit=10)
    after_a = next(h for h in history if h["values"].get("done") == ["a"])
    forked = await client.runs.wait(
        tid, "steps", input=None, checkpoint_id=after_a["checkpoint"]["checkpoint_id"]
    )
    # b and c ran again from the state after a; the original branch stays in history.
    assert forked["done"] == ["a", "b", "c"]
    new_history = await client.threads.get_history(tid, limit=20)
    assert len(new_history) > len(history)
    assert (
        new_history[0]["parent_checkpoint"]["checkpoint_id"]
        != history[0]["checkpoint"]["checkpoint_id"]
    )


async def test_fork_from_unknown_checkpoint_is_404(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    tid = thread["thread_id"]
    with pytest.raises(NotFoundError) as err:
        await client.runs.create(
            tid, "echo", input={}, checkpoint_id="1f0c0000-0000-6000-8000-000000000000"
        )
    assert "Checkpoint" in str(err.value.body)
    assert await client.runs.list(tid) == []


async def test_multitask_on_stream_and_wait(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    tid = thread["thread_id"]
    first = await client.runs.create(tid, "steps", input={"done": [], "delay": 1})
    await wait_for_status(client, tid, first["run_id"], "running")
    with pytest.raises(ConflictError):
        async for _ in client.runs.stream(
            tid, "echo", input={"value": 1}, multitask_strategy="reject"
        ):
            pass
    result = await client.runs.wait(tid, "echo", input={"value": 2}, multitask_strategy="interrupt")
    assert result["value"] == 2
    assert (await client.runs.get(tid, first["run_id"]))["status"] == "interrupted"


async def test_metadata_config_and_context_reach_the_run(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    tid = thread["thread_id"]
    result = await client.runs.wait(
        tid, "factory", input={"value": 1}, config={"configurable": {"model": "big"}},
        metadata={"team": "blue"},
    )  # fmt: skip
    assert result["model"] == "big"
    run = (await client.runs.list(tid))[0]
    assert run["metadata"]["team"] == "blue"
    history = await client.threads.get_history(tid, limit=1)
    assert history[0]["metadata"]["team"] == "blue"
    with_context = await client.runs.wait(None, "factory", input={"value": 2}, context={"x": 1})
    assert with_context["value"] == 2


async def test_durability_exit_writes_only_the_final_checkpoint(client: LangGraphClient) -> None:
    full = await client.threads.create()
    await client.runs.wait(full["thread_id"], "steps", input={"done": []}, durability="sync")
    lean = await client.threads.create()
    await client.runs.wait(lean["thread_id"], "steps", input={"done": []}, durability="exit")
    full_history = await client.threads.get_history(full["thread_id"], limit=50)
    lean_history = await client.threads.get_history(lean["thread_id"], limit=50)
    assert len(lean_history) < len(full_history)
    assert lean_history[0]["values"] == full_history[0]["values"] == {"done": ["a", "b", "c"]}


async def test_bad_run_options_are_422(url: str) -> None:
    async with httpx.AsyncClient(base_url=url) as http:
        tid = (await http.post("/threads", json={})).json()["thread_id"]
        for body in (
            {"assistant_id": "echo", "after_seconds": -1},
            {"assistant_id": "echo", "durability": "forever"},
            {"assistant_id": "echo", "multitask_strategy": "shout"},
            {"assistant_id": "echo", "on_disconnect": "explode"},
            {"assistant_id": "echo", "interrupt_before": "b"},
            {"assistant_id": "echo", "checkpoint_id": "not-a-uuid"},
        ):
            res = await http.post(f"/threads/{tid}/runs", json=body)
            assert res.status_code == 422, (body, res.text)
        assert (await http.get(f"/threads/{tid}/runs")).json() == []


async def test_assistant_breakpoints_apply_to_its_runs(client: LangGraphClient) -> None:
    assistant = await client.assistants.create(
        "steps", config={"interrupt_before": ["b"]}, name="reviewed steps"
    )
    thread = await client.threads.create()
    tid = thread["thread_id"]
    await client.runs.wait(tid, assistant["assistant_id"], input={"done": []})
    state = await client.threads.get_state(tid)
    assert state["next"] == ["b"] and state["values"]["done"] == ["a"]
    # A run's own breakpoints take precedence over the assistant's (here: none).
    other = await client.threads.create()
    final = await client.runs.wait(
        other["thread_id"], assistant["assistant_id"], input={"done": []}, interrupt_before=[]
    )
    assert final["done"] == ["a", "b", "c"]
