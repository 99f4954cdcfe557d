"""Assistants through the official Python client: create, update (versions), set latest,
delete, search and count; config, context and metadata reaching the graph; the graph drawn and
its schemas; default assistants across restarts and graphs leaving langgraph.json."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient
from langgraph_sdk.errors import (
    BadRequestError,
    ConflictError,
    NotFoundError,
    UnprocessableEntityError,
)

from tests.server import ROOT, TEST_CONFIG, Server

AGENT_ID = "fe096781-5601-53d2-b2f6-0d3403f7e9ca"
ECHO_ID = "046b5dc7-2108-582c-9c6c-31d556d138f0"
GRAPH_IDS = list(json.loads(TEST_CONFIG.read_text())["graphs"])
MISSING = str(uuid.uuid4())


@pytest.fixture
async def http(url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        yield c


def _tag() -> dict[str, str]:
    """Metadata unique to one test, so filters see only what that test made."""
    return {"tag": str(uuid.uuid4())}


# ------------------------------------------------------------------ defaults


async def test_default_assistants(client: LangGraphClient) -> None:
    agent = await client.assistants.get(AGENT_ID)
    assert agent["graph_id"] == "agent" and agent["metadata"] == {"created_by": "system"}
    assert agent["version"] == 1 and agent["config"] == {} and agent["context"] == {}
    system = {"created_by": "system"}
    found = await client.assistants.search(graph_id="echo", metadata=system)
    assert [a["assistant_id"] for a in found] == [ECHO_ID]
    defaults = await client.assistants.search(metadata=system, limit=100)
    assert sorted(a["graph_id"] for a in defaults) == sorted(GRAPH_IDS)
    assert len(await client.assistants.search(metadata=system, limit=3)) == 3
    assert await client.assistants.count(metadata=system) == len(GRAPH_IDS)
    assert await client.assistants.search(graph_id="nope") == []
    named = await client.assistants.search(name="ECH", metadata=system)
    assert [a["name"] for a in named] == ["echo"]
    # A compiled graph's own name (not LangGraph's default) names its default assistant.
    assert (await client.assistants.get("typed"))["name"] == "Typed"
    with pytest.raises(NotFoundError):
        await client.assistants.get(str(uuid.uuid4()))


async def test_graph_name_is_accepted_as_assistant_id(client: LangGraphClient) -> None:
    assert (await client.assistants.get("echo"))["assistant_id"] == ECHO_ID
    versions = await client.assistants.get_versions("echo")
    assert [v["assistant_id"] for v in versions] == [ECHO_ID]
    assert (await client.assistants.get_schemas("echo"))["graph_id"] == "echo"
    assert (await client.assistants.get_graph("echo"))["nodes"]
    assert await client.assistants.get_subgraphs("echo") == {}
    made = await client.assistants.create("echo", assistant_id="echo", if_exists="do_nothing")
    assert made["assistant_id"] == ECHO_ID and made["version"] == 1


# ------------------------------------------------------------------ create


async def test_create_and_get(client: LangGraphClient) -> None:
    tag = _tag()
    made = await client.assistants.create(
        "typed",
        config={"tags": ["t1"], "recursion_limit": 7},
        context={"model": "m1"},
        metadata=tag,
        name="Helper",
        description="helps",
    )
    assert uuid.UUID(made["assistant_id"]).version == 4
    assert made["graph_id"] == "typed" and made["version"] == 1
    # context and config.configurable are one setting: either sets both.
    assert made["config"] == {"tags": ["t1"], "recursion_limit": 7, "configurable": {"model": "m1"}}
    assert made["context"] == {"model": "m1"}
    assert made["metadata"] == tag
    assert (made["name"], made["description"]) == ("Helper", "helps")
    assert made["created_at"] == made["updated_at"]
    assert await client.assistants.get(made["assistant_id"]) == made

    by_configurable = await client.assistants.create("typed", config={"configurable": {"k": 1}})
    assert by_configurable["context"] == {"k": 1}
    assert by_configurable["config"] == {"configurable": {"k": 1}}
    bare = await client.assistants.create("echo")
    assert bare["name"] == "Untitled" and bare["description"] is None
    assert (bare["config"], bare["context"], bare["metadata"]) == ({}, {}, {})


async def test_create_if_exists(client: LangGraphClient) -> None:
    aid = str(uuid.uuid4())
    first = await client.assistants.create("echo", assistant_id=aid, name="first")
    assert first["assistant_id"] == aid
    with pytest.raises(ConflictError) as err:
        await client.assistants.create("typed", assistant_id=aid, name="second")
    assert err.value.response.json() == {"detail": f"Assistant {aid} already exists"}
    same = await client.assistants.create(
        "typed", assistant_id=aid, name="second", if_exists="do_nothing"
    )
    assert same == first
    with pytest.raises(ConflictError):  # a default assistant is there from the start
        await client.assistants.create("echo", assistant_id=ECHO_ID)


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"graph_id": "nope"}, 404, "Graph 'nope' not found. Expected one of: ["),
        ({}, 422, None),
        ({"graph_id": "echo", "if_exists": "overwrite"}, 422, None),
        ({"graph_id": "echo", "assistant_id": "not-a-uuid"}, 422, "Invalid assistant ID"),
        ({"graph_id": "echo", "metadata": []}, 422, None),
        ({"graph_id": "echo", "config": {"tags": "x"}}, 422, None),
        ({"graph_id": "echo", "context": "x"}, 422, None),
        (
            {"graph_id": "echo", "config": {"configurable": {"a": 1}}, "context": {"b": 2}},
            400,
            "Cannot specify both configurable and context",
        ),
    ],
)
async def test_create_bad_input(
    http: httpx.AsyncClient, body: dict[str, Any], status: int, detail: str | None
) -> None:
    tag = _tag()
    r = await http.post("/assistants", json={**body, "metadata": body.get("metadata", tag)})
    assert r.status_code == status, r.text
    assert r.json()["detail"]
    if detail:
        assert r.json()["detail"].startswith(detail)
    # Nothing stored.
    r = await http.post("/assistants/count", json={"metadata": tag})
    assert r.json() == 0


# ------------------------------------------------------------------ update and versions


async def test_update_makes_a_version_and_keeps_what_is_not_given(
    client: LangGraphClient,
) -> None:
    tag = _tag()
    made = await client.assistants.create(
        "typed",
        config={"tags": ["t1"]},
        context={"model": "m1"},
        metadata={**tag, "a": 1},
        name="v1",
        description="first",
    )
    aid = made["assistant_id"]
    v2 = await client.assistants.update(aid, metadata={"b": 2})
    assert v2["version"] == 2
    assert v2["metadata"] == {**tag, "a": 1, "b": 2}  # merged
    for key in ("graph_id", "config", "context", "name", "description", "created_at"):
        assert v2[key] == made[key], key
    assert v2["updated_at"] > made["updated_at"]

    v3 = await client.assistants.update(aid, context={"model": "m3"}, name="v3")
    assert v3["version"] == 3 and v3["name"] == "v3" and v3["description"] == "first"
    # The context changes configurable and leaves the rest of the config alone.
    assert v3["config"] == {"tags": ["t1"], "configurable": {"model": "m3"}}
    assert v3["context"] == {"model": "m3"}

    v4 = await client.assistants.update(aid, config={"recursion_limit": 5})
    # A config replaces the stored one; the context (and so configurable) stays.
    assert v4["config"] == {"recursion_limit": 5, "configurable": {"model": "m3"}}
    assert v4["context"] == {"model": "m3"}

    v5 = await client.assistants.update(aid, graph_id="echo", description="moved")
    assert (v5["graph_id"], v5["description"], v5["version"]) == ("echo", "moved", 5)
    assert await client.assistants.get(aid) == v5

    versions = await client.assistants.get_versions(aid)
    assert [v["version"] for v in versions] == [5, 4, 3, 2, 1]
    assert set(versions[0]) == {"assistant_id", "version", "graph_id", "config", "context",
                                "metadata", "name", "description", "created_at"}  # fmt: skip
    assert versions[-1]["name"] == "v1" and versions[-1]["context"] == {"model": "m1"}
    assert versions[2]["config"] == v3["config"]
    assert [v["version"] for v in await client.assistants.get_versions(aid, limit=2)] == [5, 4]
    page = await client.assistants.get_versions(aid, limit=2, offset=3)
    assert [v["version"] for v in page] == [2, 1]
    with_b = await client.assistants.get_versions(aid, metadata={"b": 2})
    assert [v["version"] for v in with_b] == [5, 4, 3, 2]
    assert await client.assistants.get_versions(aid, metadata={"b": 3}) == []


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"graph_id": "nope"}, 404, "Graph 'nope' not found"),
        ({"metadata": "x"}, 422, None),
        ({"config": {"recursion_limit": "many"}}, 422, None),
        ({"config": {"configurable": {"a": 1}}, "context": {"b": 2}}, 400, "Cannot specify"),
    ],
)
async def test_update_bad_input(
    http: httpx.AsyncClient, body: dict[str, Any], status: int, detail: str | None
) -> None:
    made = (await http.post("/assistants", json={"graph_id": "echo"})).json()
    r = await http.patch(f"/assistants/{made['assistant_id']}", json=body)
    assert r.status_code == status, r.text
    if detail:
        assert detail in r.json()["detail"]
    assert (await http.get(f"/assistants/{made['assistant_id']}")).json() == made
    r = await http.post(f"/assistants/{made['assistant_id']}/versions", json={})
    assert len(r.json()) == 1


async def test_set_latest(client: LangGraphClient, http: httpx.AsyncClient) -> None:
    made = await client.assistants.create(
        "typed", context={"model": "m1"}, metadata={"v": 1}, name="one"
    )
    aid = made["assistant_id"]
    await client.assistants.update(aid, context={"model": "m2"}, metadata={"v": 2}, name="two")
    await client.assistants.update(aid, graph_id="echo", name="three")
    back = await client.assistants.set_latest(aid, 1)
    assert back["version"] == 1
    # Every field of version 1 comes back, the context included (the reference keeps the
    # newer context here, out of step with config.configurable).
    for key in ("graph_id", "config", "context", "metadata", "name", "description"):
        assert back[key] == made[key], key
    assert back["updated_at"] > made["updated_at"]
    assert await client.assistants.get(aid) == back
    # The next update starts from the current version and gets a new number.
    v4 = await client.assistants.update(aid, metadata={"w": 4})
    assert v4["version"] == 4 and v4["name"] == "one" and v4["metadata"] == {"v": 1, "w": 4}
    assert v4["context"] == {"model": "m1"}
    assert [v["version"] for v in await client.assistants.get_versions(aid)] == [4, 3, 2, 1]

    # The spec's form: ?version= instead of a body.
    r = await http.post(f"/assistants/{aid}/latest", params={"version": 2})
    assert r.status_code == 200 and r.json()["name"] == "two"

    with pytest.raises(NotFoundError) as err:
        await client.assistants.set_latest(aid, 9)
    assert err.value.response.json() == {"detail": f"Version 9 not found for assistant {aid}"}
    for body in [{}, {"version": 0}, {"version": "two"}, {"version": -1}]:
        r = await http.post(f"/assistants/{aid}/latest", json=body)
        assert r.status_code == 422, (body, r.text)
    assert (await client.assistants.get(aid))["version"] == 2


# ------------------------------------------------------------------ delete


async def test_delete(client: LangGraphClient) -> None:
    made = await client.assistants.create("echo", metadata=_tag())
    aid = made["assistant_id"]
    await client.assistants.update(aid, name="again")
    tid = (await client.threads.create())["thread_id"]
    await client.runs.wait(tid, aid, input={"value": 1})
    await client.assistants.delete(aid)
    with pytest.raises(NotFoundError):
        await client.assistants.get(aid)
    with pytest.raises(NotFoundError):
        await client.assistants.get_versions(aid)
    with pytest.raises(NotFoundError):
        await client.assistants.delete(aid)
    with pytest.raises(NotFoundError):
        await client.runs.create(tid, aid, input={"value": 2})
    # The thread and its finished run stay (delete_threads was not asked for).
    assert (await client.threads.get(tid))["thread_id"] == tid
    assert [r["status"] for r in await client.runs.list(tid)] == ["success"]
    # The id is free again: a new assistant starts from version 1.
    again = await client.assistants.create("typed", assistant_id=aid)
    assert again["version"] == 1
    assert [v["version"] for v in await client.assistants.get_versions(aid)] == [1]


async def test_delete_cancels_runs_in_flight(client: LangGraphClient) -> None:
    aid = (await client.assistants.create("steps"))["assistant_id"]
    tid = (await client.threads.create())["thread_id"]
    running = await client.runs.create(tid, aid, input={"done": [], "delay": 2})
    queued = await client.runs.create(tid, aid, input={"done": []})
    for _ in range(100):
        if (await client.runs.get(tid, running["run_id"]))["status"] == "running":
            break
        await asyncio.sleep(0.05)
    await client.assistants.delete(aid)
    await client.runs.join(tid, running["run_id"])
    assert (await client.runs.get(tid, running["run_id"]))["status"] == "interrupted"
    assert (await client.runs.get(tid, queued["run_id"]))["status"] == "interrupted"
    assert (await client.threads.get(tid))["status"] != "busy"


async def test_delete_with_threads(client: LangGraphClient) -> None:
    aid = (await client.assistants.create("echo"))["assistant_id"]
    ran = (await client.threads.create())["thread_id"]
    await client.runs.wait(ran, aid, input={"value": 1})
    tagged = (await client.threads.create(metadata={"assistant_id": aid}))["thread_id"]
    other = (await client.threads.create())["thread_id"]
    await client.runs.wait(other, "echo", input={"value": 1})
    await client.assistants.delete(aid, delete_threads=True)
    for tid in (ran, tagged):
        with pytest.raises(NotFoundError):
            await client.threads.get(tid)
    assert (await client.threads.get(other))["values"] == {"value": 1, "env": "from-langgraph-json"}


async def test_default_assistant_cannot_be_deleted_or_moved(http: httpx.AsyncClient) -> None:
    for path in ("/assistants/echo", f"/assistants/{ECHO_ID}"):
        r = await http.delete(path)
        assert r.status_code == 409, r.text
        assert "default assistant of graph 'echo'" in r.json()["detail"]
    r = await http.patch("/assistants/echo", json={"graph_id": "steps"})
    assert r.status_code == 409 and "its graph cannot change" in r.json()["detail"]
    assert (await http.get("/assistants/echo")).json()["graph_id"] == "echo"
    r = await http.post("/threads/search", json={})  # the server is fine
    assert r.status_code == 200


# ------------------------------------------------------------------ search and count


async def test_search_and_count(client: LangGraphClient, http: httpx.AsyncClient) -> None:
    tag = _tag()
    names = ["Bravo", "alpha", "Charlie bravo", "delta"]
    made = [
        await client.assistants.create(
            "echo" if i % 2 else "typed", metadata={**tag, "i": i}, name=name
        )
        for i, name in enumerate(names)
    ]
    found = await client.assistants.search(metadata=tag)
    assert [a["name"] for a in found] == names[::-1]  # created_at desc by default
    assert await client.assistants.count(metadata=tag) == 4
    by_graph = await client.assistants.search(metadata=tag, graph_id="echo")
    assert sorted(a["name"] for a in by_graph) == ["alpha", "delta"]
    assert await client.assistants.count(metadata=tag, graph_id="echo") == 2
    bravo = await client.assistants.search(metadata=tag, name="BRAVO")
    assert sorted(a["name"] for a in bravo) == ["Bravo", "Charlie bravo"]
    assert await client.assistants.count(metadata=tag, name="bravo") == 2
    assert await client.assistants.count(metadata={**tag, "i": 2}) == 1
    by_name = await client.assistants.search(metadata=tag, sort_by="name", sort_order="asc")
    assert [a["name"] for a in by_name] == sorted(names)
    oldest = await client.assistants.search(
        metadata=tag, sort_by="created_at", sort_order="asc", limit=2, offset=1
    )
    assert [a["assistant_id"] for a in oldest] == [made[1]["assistant_id"],
                                                   made[2]["assistant_id"]]  # fmt: skip
    selected = await client.assistants.search(metadata=tag, select=["assistant_id", "version"])
    assert all(set(a) == {"assistant_id", "version"} for a in selected)
    # Updating moves an assistant to the front when sorting by updated_at.
    await client.assistants.update(made[0]["assistant_id"], metadata={"touched": True})
    recent = await client.assistants.search(metadata=tag, sort_by="updated_at", limit=1)
    assert recent[0]["assistant_id"] == made[0]["assistant_id"]
    paged = await client.assistants.search(metadata=tag, limit=3, response_format="object")
    assert len(paged["assistants"]) == 3 and paged["next"] == "3"

    r = await http.post("/assistants/search", json={"metadata": tag, "limit": 3})
    assert r.headers["x-pagination-total"] == "4" and r.headers["x-pagination-next"] == "3"
    r = await http.post("/assistants/search", json={"metadata": tag, "limit": 3, "offset": 3})
    assert r.headers["x-pagination-total"] == "4" and "x-pagination-next" not in r.headers
    r = await http.post("/assistants/count", content=b"", headers={})
    assert r.status_code == 200 and r.json() >= len(GRAPH_IDS) + 4


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/assistants/search", {"sort_by": "version"}),
        ("/assistants/search", {"sort_by": "nope"}),
        ("/assistants/search", {"sort_order": "up"}),
        ("/assistants/search", {"limit": -1}),
        ("/assistants/search", {"limit": 0}),
        ("/assistants/search", {"limit": 1001}),
        ("/assistants/search", {"offset": -1}),
        ("/assistants/search", {"select": ["secret"]}),
        ("/assistants/search", {"metadata": "x"}),
        ("/assistants/count", {"metadata": []}),
        ("/assistants/count", {"name": 3}),
        (f"/assistants/{ECHO_ID}/versions", {"limit": -1}),
        (f"/assistants/{ECHO_ID}/versions", {"offset": -1}),
        (f"/assistants/{ECHO_ID}/versions", {"metadata": 1}),
    ],
)
async def test_bad_search_bodies_are_422(
    http: httpx.AsyncClient, path: str, body: dict[str, Any]
) -> None:
    r = await http.post(path, json=body)
    assert r.status_code == 422, r.text
    assert r.json()["detail"]


# ------------------------------------------------------------------ ids


ENDPOINTS = [
    ("GET", "/assistants/{id}"),
    ("PATCH", "/assistants/{id}"),
    ("DELETE", "/assistants/{id}"),
    ("POST", "/assistants/{id}/versions"),
    ("POST", "/assistants/{id}/latest"),
    ("GET", "/assistants/{id}/graph"),
    ("GET", "/assistants/{id}/schemas"),
    ("GET", "/assistants/{id}/subgraphs"),
    ("GET", "/assistants/{id}/subgraphs/inner"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
async def test_malformed_and_unknown_ids(http: httpx.AsyncClient, method: str, path: str) -> None:
    body = {"version": 1} if path.endswith("latest") else {}
    r = await http.request(method, path.format(id="not-a-graph"), json=body)
    assert r.status_code == 422, r.text
    assert r.json() == {"detail": "Invalid assistant ID: must be a UUID"}
    r = await http.request(method, path.format(id=MISSING), json=body)
    assert r.status_code == 404, r.text
    assert MISSING in r.json()["detail"]


# ------------------------------------------------------------------ what the graph receives


async def test_config_context_and_metadata_reach_the_graph(client: LangGraphClient) -> None:
    made = await client.assistants.create(
        "typed",
        config={"tags": ["from-assistant"]},
        context={"model": "m1", "temperature": 0.5},
        metadata={"team": "blue"},
    )
    aid = made["assistant_id"]

    async def seen() -> dict[str, Any]:
        result = await client.runs.wait(None, aid, input={"question": "q"})
        return result["seen"]

    first = await seen()
    assert first["context"] == {"model": "m1", "temperature": 0.5}
    assert first["configurable"]["model"] == "m1"
    assert first["configurable"]["assistant_id"] == aid
    assert first["metadata"]["team"] == "blue" and first["metadata"]["assistant_id"] == aid
    assert "from-assistant" in first["tags"]

    await client.assistants.update(aid, context={"model": "m2"}, metadata={"team": "red"})
    second = await seen()
    assert second["context"] == {"model": "m2"} and second["configurable"]["model"] == "m2"
    assert second["metadata"]["team"] == "red"

    await client.assistants.set_latest(aid, 1)
    third = await seen()
    assert third["context"] == {"model": "m1", "temperature": 0.5}
    assert third["metadata"]["team"] == "blue"

    # A run's own context is merged over the assistant's.
    tid = (await client.threads.create())["thread_id"]
    result = await client.runs.wait(tid, aid, input={"question": "q"}, context={"model": "run"})
    assert result["seen"]["context"] == {"model": "run", "temperature": 0.5}
    # ...and the default assistant of the same graph gets none of it.
    plain = await client.runs.wait(None, "typed", input={"question": "q"})
    assert plain["seen"]["context"] == {} and "team" not in plain["seen"]["metadata"]


async def test_factory_gets_the_assistant_config(client: LangGraphClient) -> None:
    made = await client.assistants.create("typed_factory", context={"model": "m9"})
    result = await client.runs.wait(None, made["assistant_id"], input={})
    assert result["answer"] == "threads_create_run__m9"


# ------------------------------------------------------------------ graph, schemas, subgraphs


async def test_graph_drawing(client: LangGraphClient, http: httpx.AsyncClient) -> None:
    flat = await client.assistants.get_graph("typed")
    assert [n["id"] for n in flat["nodes"]] == ["__start__", "report", "inner", "__end__"]
    assert {(e["source"], e["target"]) for e in flat["edges"]} == {
        ("__start__", "report"), ("report", "inner"), ("inner", "__end__"),
    }  # fmt: skip
    assert flat["nodes"][1]["data"] == {"name": "report"}  # the class path (data.id) left out
    one = await client.assistants.get_graph("typed", xray=1)
    assert {n["id"] for n in one["nodes"]} >= {"inner:think", "inner:deep"}
    full = await client.assistants.get_graph("typed", xray=True)
    ids = {n["id"] for n in full["nodes"]}
    assert "inner:deep:deepest" in ids and "inner:deep" not in ids and "inner" not in ids
    assert ("inner:think", "inner:deep:deepest") in {(e["source"], e["target"])
                                                     for e in full["edges"]}  # fmt: skip
    assert await client.assistants.get_graph("typed", xray=False) == flat
    for bad in ("maybe", "-1", "1.5"):
        r = await http.get("/assistants/typed/graph", params={"xray": bad})
        assert r.status_code == 422 and "xray" in r.json()["detail"], r.text


async def test_factory_graph_is_built_for_reading(client: LangGraphClient) -> None:
    default = await client.assistants.get_graph("typed_factory")
    assert "assistants_read__default" in [n["id"] for n in default["nodes"]]
    made = await client.assistants.create("typed_factory", context={"model": "m7"})
    drawn = await client.assistants.get_graph(made["assistant_id"])
    assert "assistants_read__m7" in [n["id"] for n in drawn["nodes"]]
    schemas = await client.assistants.get_schemas(made["assistant_id"])
    assert schemas["input_schema"]["title"] == "InnerState"


async def test_schemas(client: LangGraphClient) -> None:
    schemas = await client.assistants.get_schemas("typed")
    assert set(schemas) == {"graph_id", "input_schema", "output_schema", "state_schema",
                            "config_schema", "context_schema"}  # fmt: skip
    assert schemas["graph_id"] == "typed"
    assert schemas["input_schema"] == {
        "title": "InputState", "type": "object", "required": ["question"],
        "properties": {"question": {"title": "Question", "type": "string"}},
    }  # fmt: skip
    assert schemas["output_schema"]["title"] == "OutputState"
    assert set(schemas["output_schema"]["properties"]) == {"answer", "seen"}
    context = {
        "title": "Context", "type": "object",
        "properties": {"model": {"title": "Model", "type": "string"},
                       "temperature": {"title": "Temperature", "type": "number"}},
    }  # fmt: skip
    assert schemas["context_schema"] == context
    assert schemas["config_schema"] == context  # configurable is the context since LangGraph 0.6
    state = schemas["state_schema"]
    assert state["title"] == "TypedState"
    assert set(state["properties"]) == {"question", "answer", "seen", "trail"}
    assert state["properties"]["trail"]["items"] == {"type": "string"}
    # A graph with no context schema has an empty config schema and no context schema.
    steps = await client.assistants.get_schemas("steps")
    assert steps["config_schema"] == {} and steps["context_schema"] is None
    assert set(steps["state_schema"]["properties"]) == {"done", "delay", "marker"}


async def test_subgraphs(client: LangGraphClient, http: httpx.AsyncClient) -> None:
    top = await client.assistants.get_subgraphs("typed")
    assert list(top) == ["inner"]
    assert top["inner"]["input_schema"]["title"] == "InnerState"
    assert set(top["inner"]) == {"input_schema", "output_schema", "state_schema",
                                 "config_schema", "context_schema"}  # fmt: skip
    every = await client.assistants.get_subgraphs("typed", recurse=True)
    assert list(every) == ["inner", "inner|deep"]
    assert every["inner|deep"]["output_schema"]["title"] == "DeepState"
    assert list(await client.assistants.get_subgraphs("typed", namespace="inner")) == ["inner"]
    nested = await client.assistants.get_subgraphs("typed", namespace="inner|deep", recurse=True)
    assert list(nested) == ["inner|deep"]
    assert await client.assistants.get_subgraphs("typed", namespace="nope") == {}
    r = await http.get("/assistants/typed/subgraphs", params={"recurse": "sometimes"})
    assert r.status_code == 422


# ------------------------------------------------------------------ restarts and config changes


def _config(path: Path, graphs: dict[str, Any]) -> Path:
    base = json.loads(TEST_CONFIG.read_text())
    deps = [str((TEST_CONFIG.parent / d).resolve()) for d in base["dependencies"]]
    path.write_text(json.dumps({"dependencies": deps, "graphs": graphs}))
    return path


def _graph(target: str, description: str | None = None) -> Any:
    path = str(ROOT / "tests" / "graphs" / target)
    return {"path": path, "description": description} if description else path


async def test_defaults_survive_restarts_and_graphs_leaving(tmp_path: Path) -> None:
    data = tmp_path / "data"
    srv = Server(data).start()
    user_typed = ""
    try:
        c = get_client(url=srv.url, api_key=None)
        await c.assistants.update("echo", metadata={"note": "mine"}, name="My echo")
        user_typed = (await c.assistants.create("typed", name="keep me"))["assistant_id"]
        await c.assistants.update(user_typed, metadata={"v": 2})
    finally:
        srv.stop()

    # Same config again: nothing duplicated, the user's edits and versions kept.
    srv = Server(data).start()
    try:
        c = get_client(url=srv.url, api_key=None)
        echo = await c.assistants.get("echo")
        assert (echo["version"], echo["name"]) == (2, "My echo")
        assert echo["metadata"] == {"created_by": "system", "note": "mine"}
        assert [v["version"] for v in await c.assistants.get_versions("echo")] == [2, 1]
        assert await c.assistants.count(graph_id="echo") == 1
        assert await c.assistants.count() == len(GRAPH_IDS) + 1
        assert (await c.assistants.get(user_typed))["version"] == 2
    finally:
        srv.stop()

    # Graphs leave langgraph.json; descriptions change.
    smaller = _config(tmp_path / "smaller.json", {
        "echo": _graph("basic.py:echo", "new echo text"),
        "steps": _graph("basic.py:steps", "three steps"),
    })  # fmt: skip
    srv = Server(data, config=smaller).start()
    try:
        c = get_client(url=srv.url, api_key=None)
        # A default never edited follows its graph's description; an edited one keeps its own.
        steps = await c.assistants.get("steps")
        assert (steps["description"], steps["version"]) == ("three steps", 1)
        assert (await c.assistants.get_versions("steps"))[0]["description"] == "three steps"
        assert (await c.assistants.get("echo"))["description"] is None
        # Assistants of graphs no longer served are hidden, not broken.
        with pytest.raises(NotFoundError):
            await c.assistants.get(user_typed)
        with pytest.raises(NotFoundError):
            await c.assistants.get_schemas(user_typed)
        with pytest.raises(httpx.HTTPStatusError) as err:
            await c.runs.wait(None, user_typed, input={})
        assert err.value.response.status_code == 404
        with pytest.raises(UnprocessableEntityError):
            await c.assistants.get("typed")  # no longer a graph name
        assert sorted(a["graph_id"] for a in await c.assistants.search()) == ["echo", "steps"]
        assert await c.assistants.count() == 2
        with pytest.raises(NotFoundError):
            await c.assistants.update(echo["assistant_id"], graph_id="typed")
        assert (await c.runs.wait(None, "echo", input={"value": 3}))["value"] == 3
    finally:
        srv.stop()

    # The graph comes back, and so do its assistants with their versions.
    srv = Server(data).start()
    try:
        c = get_client(url=srv.url, api_key=None)
        back = await c.assistants.get(user_typed)
        assert (back["name"], back["version"]) == ("keep me", 2)
        assert await c.assistants.count() == len(GRAPH_IDS) + 1
    finally:
        srv.stop()


async def test_bad_if_exists_and_bodies_are_not_500(http: httpx.AsyncClient) -> None:
    headers = {"Content-Type": "application/json"}
    for method, path in [("POST", "/assistants"), ("PATCH", "/assistants/echo"),
                         ("POST", "/assistants/count"), ("POST", "/assistants/echo/versions"),
                         ("POST", "/assistants/echo/latest")]:  # fmt: skip
        r = await http.request(method, path, content=b"{nope", headers=headers)
        assert r.status_code == 422, (path, r.text)
        assert r.json() == {"detail": "Invalid JSON in request body"}
    with pytest.raises(BadRequestError):
        await get_client(url=str(http.base_url), api_key=None).assistants.create(
            "echo", config={"configurable": {"a": 1}}, context={"b": 2}
        )
