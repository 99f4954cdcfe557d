"""Threads beyond CRUD, through the official Python client: TTL and its sweeper, count, copy,
prune, supersteps, state (subgraphs, at a checkpoint, forks), history filters, bad input."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient
from langgraph_sdk.errors import BadRequestError, NotFoundError, UnprocessableEntityError

from agentd.config import ConfigError, load_settings
from tests.server import ROOT, Server

TTL_CONFIG = ROOT / "tests" / "graphs" / "ttl.json"  # default TTL 0.05 min, sweeps every 0.6 s
# Fixed, so that every xdist worker collects the same parametrized tests.
MISSING = "5b0c6a52-3f7e-4c39-9d43-0d5e2f1b7a10"
MISSING_CHECKPOINT = "1f0c6a52-3f7e-6c39-8d43-0d5e2f1b7a10"


@pytest.fixture
async def http(url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def ttl_server(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("agentd-ttl")
    srv = Server(data, config=TTL_CONFIG, backend=backend).start()
    yield srv
    srv.stop()


@pytest.fixture
async def ttl_client(ttl_server: Server) -> AsyncIterator[LangGraphClient]:
    c = get_client(url=ttl_server.url, api_key=None)
    yield c
    await c.http.client.aclose()


async def _until(check: Callable[[], Awaitable[bool]], within: float = 20) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.2)


async def _exists(client: LangGraphClient, thread_id: str) -> bool:
    try:
        await client.threads.get(thread_id)
    except NotFoundError:
        return False
    return True


# ------------------------------------------------------------------ ttl


async def test_create_with_ttl_and_read_it_back(client: LangGraphClient, url: str) -> None:
    thread = await client.threads.create(ttl={"strategy": "keep_latest", "ttl": 60})
    assert "ttl" not in thread
    async with httpx.AsyncClient(base_url=url) as http:
        got = (await http.get(f"/threads/{thread['thread_id']}", params={"include": "ttl"})).json()
        ttl = got["ttl"]
        assert ttl["strategy"] == "keep_latest" and ttl["ttl_minutes"] == 60
        expires = datetime.fromisoformat(ttl["expires_at"])
        assert expires - datetime.fromisoformat(got["updated_at"]) == timedelta(minutes=60)
        # The SDK's shorthand: minutes, strategy delete.
        short = await client.threads.create(ttl=30)
        r = await http.get(f"/threads/{short['thread_id']}?include=ttl")
        assert r.json()["ttl"]["strategy"] == "delete" and r.json()["ttl"]["ttl_minutes"] == 30
        # No TTL of its own and no default on this server: no ttl field.
        plain = await client.threads.create()
        r = await http.get(f"/threads/{plain['thread_id']}?include=ttl")
        assert "ttl" not in r.json()
        r = await http.get(f"/threads/{plain['thread_id']}?include=bogus")
        assert r.status_code == 422 and "include" in r.json()["detail"]


async def test_patch_sets_ttl_and_return_minimal(client: LangGraphClient, url: str) -> None:
    tid = (await client.threads.create(metadata={"a": 1}))["thread_id"]
    result = await client.threads.update(
        tid, metadata={"b": 2}, ttl={"strategy": "delete", "ttl": 5}, return_minimal=True
    )
    assert result is None
    async with httpx.AsyncClient(base_url=url) as http:
        got = (await http.get(f"/threads/{tid}?include=ttl")).json()
    assert got["metadata"] == {"a": 1, "b": 2}
    assert got["ttl"]["ttl_minutes"] == 5 and got["ttl"]["strategy"] == "delete"


@pytest.mark.parametrize(
    "ttl",
    [{"strategy": "forever", "ttl": 5}, {"strategy": "delete"}, {"ttl": -1}, {"ttl": 0}, 5],
)
async def test_bad_ttl_is_422_and_stores_nothing(http: httpx.AsyncClient, ttl: Any) -> None:
    tid = str(uuid.uuid4())
    r = await http.post("/threads", json={"thread_id": tid, "ttl": ttl})
    assert r.status_code == 422 and "ttl" in json.dumps(r.json()["detail"])
    assert (await http.get(f"/threads/{tid}")).status_code == 404
    made = (await http.post("/threads", json={})).json()["thread_id"]
    r = await http.patch(f"/threads/{made}", json={"metadata": {"x": 1}, "ttl": ttl})
    assert r.status_code == 422
    assert (await http.get(f"/threads/{made}")).json()["metadata"] == {}


async def test_default_ttl_deletes_idle_threads(ttl_client: LangGraphClient) -> None:
    thread = await ttl_client.threads.create(metadata={"kind": "default"})
    tid = thread["thread_id"]
    got = await ttl_client.threads.get(tid, include=["ttl"])
    assert got["ttl"]["strategy"] == "delete" and got["ttl"]["ttl_minutes"] == 0.05
    # A thread a run creates gets the default TTL too.
    made_by_run = str(uuid.uuid4())
    await ttl_client.runs.wait(made_by_run, "echo", input={"value": 1}, if_not_exists="create")
    assert (await ttl_client.threads.get(made_by_run, include=["ttl"]))["ttl"]["ttl_minutes"]
    await _until(lambda: _not(_exists(ttl_client, tid)))
    await _until(lambda: _not(_exists(ttl_client, made_by_run)))
    assert await ttl_client.threads.search(metadata={"kind": "default"}) == []


async def _not(value: Awaitable[bool]) -> bool:
    return not await value


async def test_ttl_clock_restarts_on_every_write(ttl_client: LangGraphClient) -> None:
    tid = (await ttl_client.threads.create(ttl={"strategy": "delete", "ttl": 0.05}))["thread_id"]
    started = time.monotonic()
    while time.monotonic() - started < 6:  # twice its 3 s TTL, written to every second
        await ttl_client.threads.update(tid, metadata={"touched": time.time()})
        assert await _exists(ttl_client, tid)
        await asyncio.sleep(1)
    await _until(lambda: _not(_exists(ttl_client, tid)))


async def test_ttl_never_deletes_a_thread_with_a_run_in_flight(
    ttl_client: LangGraphClient,
) -> None:
    tid = (await ttl_client.threads.create(ttl={"strategy": "delete", "ttl": 0.01}))["thread_id"]
    run = await ttl_client.runs.create(tid, "steps", input={"done": [], "delay": 1.5})
    # A pending run queued behind it keeps the thread too.
    queued = await ttl_client.runs.create(tid, "steps", input={"done": [], "delay": 0.5})
    await asyncio.sleep(3)  # five times its TTL, with sweeps every 0.6 s
    assert await _exists(ttl_client, tid)
    await ttl_client.runs.join(tid, run["run_id"])
    assert (await ttl_client.runs.join(tid, queued["run_id"]))["done"][-3:] == ["a", "b", "c"]
    await _until(lambda: _not(_exists(ttl_client, tid)))


async def test_keep_latest_ttl_prunes_history_and_keeps_the_thread(
    ttl_client: LangGraphClient,
) -> None:
    thread = await ttl_client.threads.create(ttl={"strategy": "keep_latest", "ttl": 0.01})
    tid = thread["thread_id"]
    await ttl_client.runs.wait(tid, "steps", input={"done": []})
    state = await ttl_client.threads.get_state(tid)

    async def pruned() -> bool:
        return len(await ttl_client.threads.get_history(tid, limit=10)) == 1

    await _until(pruned)
    await asyncio.sleep(1.5)  # later sweeps leave it alone
    assert await _exists(ttl_client, tid)
    after = await ttl_client.threads.get_state(tid)
    assert after["values"] == state["values"] == {"done": ["a", "b", "c"]}
    assert after["checkpoint_id"] == state["checkpoint_id"]
    assert after["parent_checkpoint"] is None
    # The thread keeps working, and a new write restarts its clock for the next prune.
    await ttl_client.runs.wait(tid, "steps", input={"done": ["again"]})
    assert (await ttl_client.threads.get_state(tid))["values"]["done"][-4:] == [
        "again", "a", "b", "c"
    ]  # fmt: skip
    await _until(pruned)


@pytest.mark.parametrize(
    ("ttl", "expected"),
    [
        ({"strategy": "sometimes"}, "checkpointer.ttl.strategy"),
        ({"default_ttl": -5}, "checkpointer.ttl.default_ttl"),
        ({"sweep_interval_minutes": "often"}, "checkpointer.ttl.sweep_interval_minutes"),
        ({"sweep_limit": 0}, "checkpointer.ttl.sweep_limit"),
        ({"defualt_ttl": 5}, "unknown key"),
        ("forever", "'checkpointer.ttl' must be an object"),
    ],
)
def test_invalid_checkpointer_ttl_is_refused(tmp_path: Path, ttl: Any, expected: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_settings(_config(tmp_path, ttl))


def test_invalid_checkpointer_ttl_is_one_start_up_line(tmp_path: Path) -> None:
    config = _config(tmp_path, {"strategy": "sometimes"})
    result = subprocess.run(
        [sys.executable, "-m", "agentd.cli", "serve", "--config", str(config), "--port", "1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "agentd: 'checkpointer.ttl.strategy' must be 'delete' or 'keep_latest', got 'sometimes'"
    ]


def _config(tmp_path: Path, ttl: Any) -> Path:
    config = tmp_path / "langgraph.json"
    graphs = {"echo": str(ROOT / "tests" / "graphs" / "basic.py") + ":echo"}
    config.write_text(json.dumps({"graphs": graphs, "checkpointer": {"ttl": ttl}}))
    return config


# ------------------------------------------------------------------ count, copy, prune


async def test_count(client: LangGraphClient) -> None:
    tag = str(uuid.uuid4())
    made = [await client.threads.create(metadata={"tag": tag, "i": i}) for i in range(3)]
    assert await client.threads.count(metadata={"tag": tag}) == 3
    assert await client.threads.count(metadata={"tag": tag, "i": 1}) == 1
    await client.runs.wait(made[0]["thread_id"], "echo", input={"value": tag})
    assert await client.threads.count(metadata={"tag": tag}, status="idle") == 3
    assert await client.threads.count(values={"value": tag}) == 1
    assert await client.threads.count(metadata={"tag": tag}, status="busy") == 0
    assert await client.threads.count() >= 3


async def test_copy_has_identical_history(client: LangGraphClient) -> None:
    source = await client.threads.create(metadata={"owner": "ann"})
    sid = source["thread_id"]
    await client.runs.wait(sid, "steps", input={"done": []})
    await client.threads.update_state(sid, {"done": ["edit"]}, as_node="c")
    copy = await client.threads.copy(sid)
    cid = copy["thread_id"]
    assert cid != sid and copy["metadata"] == (await client.threads.get(sid))["metadata"]
    assert copy["values"] == {"done": ["a", "b", "c", "edit"]} and copy["status"] == "idle"
    assert (await client.threads.get(cid))["thread_id"] == cid

    def strip(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = json.loads(json.dumps(history).replace(cid, "<id>").replace(sid, "<id>"))
        return out

    source_history = await client.threads.get_history(sid, limit=20)
    copy_history = await client.threads.get_history(cid, limit=20)
    assert len(copy_history) == len(source_history) == 6
    assert strip(copy_history) == strip(source_history)
    assert all(h["checkpoint"]["thread_id"] == cid for h in copy_history)
    # The copy lives on its own: a run on it leaves the source alone.
    await client.runs.wait(cid, "steps", input={"done": ["fork"]})
    assert (await client.threads.get_state(cid))["values"]["done"][-4:] == ["fork", "a", "b", "c"]
    assert (await client.threads.get_state(sid))["values"]["done"][-1] == "edit"
    assert len(await client.threads.get_history(sid, limit=20)) == 6
    with pytest.raises(NotFoundError):
        await client.threads.copy(MISSING)


async def test_prune_delete(client: LangGraphClient) -> None:
    idle = (await client.threads.create())["thread_id"]
    await client.runs.wait(idle, "echo", input={"value": 1})
    busy = (await client.threads.create())["thread_id"]
    run = await client.runs.create(busy, "steps", input={"done": [], "delay": 2})
    result = await client.threads.prune([idle, busy, MISSING, idle])
    assert result == {"pruned_count": 2}
    for tid in (idle, busy):
        assert not await _exists(client, tid)
    # The run that was running on it was stopped first.
    await client.threads.create(thread_id=busy)
    assert await client.runs.list(busy) == []
    with pytest.raises(NotFoundError):
        await client.runs.get(busy, run["run_id"])


async def test_prune_keep_latest(client: LangGraphClient) -> None:
    tid = (await client.threads.create())["thread_id"]
    await client.runs.wait(tid, "steps", input={"done": []})
    before = await client.threads.get_state(tid)
    assert len(await client.threads.get_history(tid, limit=10)) == 5
    assert await client.threads.prune([tid, MISSING], strategy="keep_latest") == {"pruned_count": 1}
    history = await client.threads.get_history(tid, limit=10)
    assert [h["checkpoint_id"] for h in history] == [before["checkpoint_id"]]
    assert history[0]["values"] == before["values"] and history[0]["parent_checkpoint"] is None
    await client.runs.wait(tid, "steps", input={"done": ["more"]})
    assert len(await client.threads.get_history(tid, limit=10)) == 6


async def test_prune_keep_latest_keeps_an_interrupted_subgraph(client: LangGraphClient) -> None:
    tid = (await client.threads.create())["thread_id"]
    await client.runs.wait(tid, "nested_ask", input={"topic": "owls"})
    await client.threads.prune([tid], strategy="keep_latest")
    state = await client.threads.get_state(tid, subgraphs=True)
    assert state["next"] == ["child"]
    assert state["tasks"][0]["state"]["next"] == ["inner_ask"]
    result = await client.runs.wait(tid, "nested_ask", command={"resume": "hoot"})
    assert result == {"topic": "owls", "answer": "hoot"}


# ------------------------------------------------------------------ supersteps


async def test_create_with_supersteps(client: LangGraphClient) -> None:
    thread = await client.threads.create(
        graph_id="steps",
        supersteps=[
            {"updates": [{"values": {"done": ["x"]}, "as_node": "a"}]},
            {"updates": [{"values": {"done": ["y"]}, "as_node": "b"}]},
        ],
    )
    tid = thread["thread_id"]
    assert thread["values"] == {"done": ["x", "y"]}
    assert thread["metadata"]["graph_id"] == "steps"
    state = await client.threads.get_state(tid)
    assert state["values"] == {"done": ["x", "y"]} and state["next"] == ["c"]
    history = await client.threads.get_history(tid, limit=10)
    assert [h["values"]["done"] for h in history] == [["x", "y"], ["x"]]
    # The thread continues from there.
    result = await client.runs.wait(tid, "steps", input=None)
    assert result["done"] == ["x", "y", "c"]


async def test_bad_supersteps_store_nothing(http: httpx.AsyncClient) -> None:
    step = [{"updates": [{"values": {"done": ["x"]}, "as_node": "a"}]}]
    for body, status in [
        ({"supersteps": step}, 422),  # no graph_id
        ({"supersteps": step, "metadata": {"graph_id": "nope"}}, 422),
        ({"supersteps": [{"updates": [{"values": {}}]}], "metadata": {"graph_id": "steps"}}, 422),
        ({"supersteps": [{"updates": [{"values": {"done": ["x"]}, "as_node": "zzz"}]}],
          "metadata": {"graph_id": "steps"}}, 400),
    ]:  # fmt: skip
        tid = str(uuid.uuid4())
        r = await http.post("/threads", json={"thread_id": tid, **body})
        assert r.status_code == status, r.text
        assert (await http.get(f"/threads/{tid}")).status_code == 404


# ------------------------------------------------------------------ state and history


async def test_state_with_subgraphs(client: LangGraphClient) -> None:
    tid = (await client.threads.create())["thread_id"]
    await client.runs.wait(tid, "nested_ask", input={"topic": "cats"})
    flat = await client.threads.get_state(tid)
    assert flat["next"] == ["child"] and flat["tasks"][0]["state"] is None
    sub_checkpoint = flat["tasks"][0]["checkpoint"]
    assert sub_checkpoint["checkpoint_ns"].startswith("child:")
    deep = await client.threads.get_state(tid, subgraphs=True)
    sub = deep["tasks"][0]["state"]
    assert sub["values"] == {"topic": "cats"} and sub["next"] == ["inner_ask"]
    assert sub["checkpoint"]["checkpoint_ns"].startswith("child:")
    assert sub["tasks"][0]["interrupts"][0]["value"] == {"question": "about cats?"}
    assert deep["interrupts"] == [] or deep["interrupts"][0]["value"]["question"]
    # The subgraph's own state, at its checkpoint (POST /state/checkpoint).
    at = await client.threads.get_state(tid, checkpoint=sub_checkpoint)
    assert at["values"] == {"topic": "cats"} and at["next"] == ["inner_ask"]
    async with httpx.AsyncClient(base_url=str(client.http.client.base_url)) as http:
        r = await http.get(f"/threads/{tid}/state", params={"subgraphs": "true"})
        assert r.json()["tasks"][0]["state"]["values"] == {"topic": "cats"}
        r = await http.get(f"/threads/{tid}/state/{flat['checkpoint_id']}?subgraphs=true")
        assert r.json()["tasks"][0]["state"]["next"] == ["inner_ask"]


async def test_update_state_at_a_checkpoint_forks(client: LangGraphClient) -> None:
    tid = (await client.threads.create())["thread_id"]
    await client.runs.wait(tid, "steps", input={"done": []})
    history = await client.threads.get_history(tid, limit=10)
    after_a = next(h for h in history if h["values"].get("done") == ["a"])
    result = await client.threads.update_state(
        tid, {"done": ["fork"]}, as_node="a", checkpoint_id=after_a["checkpoint_id"]
    )
    state = await client.threads.get_state(tid)
    assert state["checkpoint_id"] == result["checkpoint_id"]
    assert state["values"]["done"] == ["a", "fork"] and state["next"] == ["b"]
    assert state["parent_checkpoint"]["checkpoint_id"] == after_a["checkpoint_id"]
    # The same through a checkpoint object.
    result = await client.threads.update_state(
        tid, {"done": ["other"]}, as_node="a", checkpoint=after_a["checkpoint"]
    )
    assert (await client.threads.get_state(tid))["values"]["done"] == ["a", "other"]
    assert (await client.threads.get(tid))["values"]["done"] == ["a", "other"]
    with pytest.raises(NotFoundError):
        await client.threads.update_state(
            tid, {"done": ["x"]}, as_node="a", checkpoint_id=str(uuid.uuid4())
        )


async def test_history_filters(client: LangGraphClient, http: httpx.AsyncClient) -> None:
    tid = (await client.threads.create())["thread_id"]
    await client.runs.wait(tid, "steps", input={"done": []})
    full = await client.threads.get_history(tid, limit=10)
    assert [h["metadata"]["step"] for h in full] == [3, 2, 1, 0, -1]
    step2 = await client.threads.get_history(tid, limit=10, metadata={"step": 2})
    assert [h["values"]["done"] for h in step2] == [["a", "b"]]
    # At a checkpoint: LangGraph lists only that one (as the reference does).
    at = await client.threads.get_history(tid, limit=10, checkpoint=full[2]["checkpoint"])
    assert [h["metadata"]["step"] for h in at] == [1]
    r = await http.post(
        f"/threads/{tid}/history", json={"limit": 10, "before": full[1]["checkpoint_id"]}
    )
    assert [h["metadata"]["step"] for h in r.json()] == [1, 0, -1]
    r = await http.get(
        f"/threads/{tid}/history", params={"limit": 2, "before": full[0]["checkpoint_id"]}
    )
    assert [h["metadata"]["step"] for h in r.json()] == [2, 1]
    r = await http.get(f"/threads/{tid}/history")
    assert len(r.json()) == 1  # the default limit is 1, as the reference
    for params in ({"limit": -1}, {"limit": 0}, {"limit": 1001}, {"before": "nope"}):
        assert (await http.get(f"/threads/{tid}/history", params=params)).status_code == 422
    for body in ({"limit": -1}, {"metadata": "x"}, {"checkpoint": "x"}):
        assert (await http.post(f"/threads/{tid}/history", json=body)).status_code == 422


async def test_search_every_filter(client: LangGraphClient, http: httpx.AsyncClient) -> None:
    tag = str(uuid.uuid4())
    made = [(await client.threads.create(metadata={"tag": tag, "i": i}))["thread_id"]
            for i in range(4)]  # fmt: skip
    await client.runs.wait(made[2], "echo", input={"value": {"nested": tag}})
    await client.runs.wait(made[3], "ask", input={"question": "?"})
    by_values = await client.threads.search(values={"value": {"nested": tag}})
    assert [t["thread_id"] for t in by_values] == [made[2]]
    interrupted = await client.threads.search(metadata={"tag": tag}, status="interrupted")
    assert [t["thread_id"] for t in interrupted] == [made[3]]
    by_id = await client.threads.search(
        metadata={"tag": tag}, sort_by="thread_id", sort_order="asc", limit=10
    )
    assert [t["thread_id"] for t in by_id] == sorted(made)
    recent = await client.threads.search(metadata={"tag": tag}, sort_by="state_updated_at")
    assert recent[0]["thread_id"] == made[3]
    some = await client.threads.search(ids=made[:2], select=["thread_id", "metadata", "status"])
    assert {t["thread_id"] for t in some} == set(made[:2])
    assert all(set(t) == {"thread_id", "metadata", "status"} for t in some)
    r = await http.post("/threads/search", json={"metadata": {"tag": tag}, "limit": 1, "offset": 1})
    assert r.headers["x-pagination-total"] == "4" and r.headers["x-pagination-next"] == "2"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/threads/search", {"sort_by": "bogus"}),
        ("/threads/search", {"sort_order": "sideways"}),
        ("/threads/search", {"limit": -1}),
        ("/threads/search", {"offset": -1}),
        ("/threads/search", {"ids": ["nope"]}),
        ("/threads/search", {"status": "asleep"}),
        ("/threads/search", {"select": ["bogus"]}),
        ("/threads/count", {"status": "asleep"}),
        ("/threads/count", {"metadata": []}),
        ("/threads/prune", {"thread_ids": ["nope"]}),
        ("/threads/prune", {"thread_ids": [MISSING], "strategy": "shred"}),
        ("/threads/prune", {}),
        ("/threads", {"thread_id": "nope"}),
        ("/threads", {"if_exists": "overwrite"}),
        ("/threads", {"metadata": "x"}),
    ],
)
async def test_bad_input_is_422(http: httpx.AsyncClient, path: str, body: Any) -> None:
    before = int((await http.post("/threads/search", json={})).headers["x-pagination-total"])
    r = await http.post(path, json=body)
    assert r.status_code == 422, r.text
    assert r.json()["detail"]
    after = int((await http.post("/threads/search", json={})).headers["x-pagination-total"])
    assert after <= before  # nothing created (other tests may delete meanwhile)


_THREAD_ENDPOINTS = [
    ("GET", "/threads/{id}", None),
    ("PATCH", "/threads/{id}", {"metadata": {}}),
    ("DELETE", "/threads/{id}", None),
    ("POST", "/threads/{id}/copy", None),
    ("GET", "/threads/{id}/state", None),
    ("GET", "/threads/{id}/state/" + MISSING_CHECKPOINT, None),
    ("POST", "/threads/{id}/state/checkpoint", {"checkpoint": {"checkpoint_id": MISSING}}),
    ("POST", "/threads/{id}/state", {"values": {}}),
    ("GET", "/threads/{id}/history", None),
    ("POST", "/threads/{id}/history", {}),
]


@pytest.mark.parametrize(("method", "path", "body"), _THREAD_ENDPOINTS)
async def test_unknown_thread_is_404_and_malformed_id_422(
    http: httpx.AsyncClient, method: str, path: str, body: Any
) -> None:
    r = await http.request(method, path.format(id=MISSING), json=body)
    assert r.status_code == 404 and MISSING in r.json()["detail"]
    r = await http.request(method, path.format(id="not-a-uuid"), json=body)
    assert r.status_code == 422 and r.json()["detail"] == "Invalid thread ID: must be a UUID"


async def test_bad_update_state_input(client: LangGraphClient) -> None:
    tid = (await client.threads.create())["thread_id"]
    await client.runs.wait(tid, "steps", input={"done": []})
    with pytest.raises(UnprocessableEntityError):
        await client.threads.update_state(tid, {"done": ["x"]}, checkpoint_id="nope")
    with pytest.raises(BadRequestError):
        await client.threads.update_state(tid, {"done": ["x"]}, as_node="nowhere")
    assert len(await client.threads.get_history(tid, limit=10)) == 5  # nothing written


async def test_prune_keep_latest_refuses_a_thread_with_a_run_in_flight(
    client: LangGraphClient, http: httpx.AsyncClient
) -> None:
    tid = (await client.threads.create())["thread_id"]
    await client.runs.wait(tid, "steps", input={"done": []})
    pending = await client.runs.create(tid, "echo", input={"value": 1}, after_seconds=60)
    before = len(await client.threads.get_history(tid, limit=50))
    res = await http.post("/threads/prune", json={"thread_ids": [tid], "strategy": "keep_latest"})
    assert res.status_code == 409 and tid in res.json()["detail"]
    assert len(await client.threads.get_history(tid, limit=50)) == before  # nothing pruned
    await client.runs.cancel(tid, pending["run_id"])


async def test_deleting_a_thread_mid_run_leaves_no_checkpoints_behind(
    client: LangGraphClient,
) -> None:
    tid = str(uuid.uuid4())
    await client.threads.create(thread_id=tid)
    run = await client.runs.create(tid, "steps", input={"done": [], "delay": 0.3})
    deadline = time.monotonic() + 10
    while (await client.runs.get(tid, run["run_id"]))["status"] != "running":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    await client.threads.delete(tid)
    await asyncio.sleep(1.5)  # the cancelled run unwinds and records its end
    # The same id made again starts empty: nothing the old run wrote survived.
    await client.threads.create(thread_id=tid)
    assert await client.threads.get_history(tid, limit=10) == []
    assert (await client.threads.get_state(tid))["values"] == {}
