"""The curl column of the docs, as raw HTTP: status codes, headers, bodies, error cases."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

WEATHER = {"messages": [{"role": "user", "content": "what's the weather in sf"}]}
MISSING = str(uuid.uuid4())


@pytest.fixture
async def http(url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        yield c


async def test_curl_walkthrough(http: httpx.AsyncClient) -> None:
    r = await http.post("/threads", content=b"{}", headers={"Content-Type": "application/json"})
    assert r.status_code == 200
    thread = r.json()
    tid = thread["thread_id"]

    r = await http.get(f"/threads/{tid}/runs")
    assert r.status_code == 200 and r.json() == []

    r = await http.post(f"/threads/{tid}/runs", json={"assistant_id": "agent", "input": WEATHER})
    assert r.status_code == 200
    run = r.json()
    assert run["status"] == "pending"
    assert r.headers["content-location"] == f"/threads/{tid}/runs/{run['run_id']}"

    r = await http.get(f"/threads/{tid}/runs/{run['run_id']}")
    assert r.status_code == 200 and r.json()["run_id"] == run["run_id"]

    r = await http.get(f"/threads/{tid}/runs/{run['run_id']}/join")
    assert r.status_code == 200
    assert [m["type"] for m in r.json()["messages"]] == ["human", "ai", "tool", "ai"]

    r = await http.get(f"/threads/{tid}/runs/{run['run_id']}")
    assert r.json()["status"] == "success"

    r = await http.get(f"/threads/{tid}/state")
    assert r.status_code == 200
    assert r.json()["values"]["messages"][-1]["content"].endswith("foggy.")


async def test_docs_run_without_input_errors_cleanly(http: httpx.AsyncClient) -> None:
    # The docs' curl creates a run with only an assistant: the graph gets no input and fails;
    # the failure is the run's, reported by join, and the server stays healthy.
    tid = (await http.post("/threads", json={})).json()["thread_id"]
    run = (await http.post(f"/threads/{tid}/runs", json={"assistant_id": "agent"})).json()
    r = await http.get(f"/threads/{tid}/runs/{run['run_id']}/join")
    assert r.status_code == 200
    assert r.json()["__error__"]["error"] == "EmptyInputError"
    assert (await http.get(f"/threads/{tid}/runs/{run['run_id']}")).json()["status"] == "error"
    assert (await http.get(f"/threads/{tid}")).json()["status"] == "error"
    assert (await http.get("/ok")).json() == {"ok": True, "services": {}}


async def test_empty_body_creates_a_thread(http: httpx.AsyncClient) -> None:
    r = await http.post("/threads")
    assert r.status_code == 200 and r.json()["status"] == "idle"


async def test_system_endpoints(http: httpx.AsyncClient) -> None:
    assert (await http.get("/ok")).json() == {"ok": True, "services": {}}
    checked = await http.get("/ok?check_db=1")
    assert checked.status_code == 200
    assert checked.json() in (
        {"ok": True, "services": {"sqlite": "ok"}},
        {"ok": True, "services": {"postgres": "ok"}},
    )
    info = (await http.get("/info")).json()
    assert info["version"] and info["langgraph_py_version"].startswith("1.")
    spec = (await http.get("/openapi.json")).json()
    assert "/threads/{thread_id}/runs" in spec["paths"]
    assert "/runs/wait" in spec["paths"]
    docs = await http.get("/docs")
    assert docs.status_code == 200 and "openapi.json" in docs.text


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/threads/{missing}"),
        ("PATCH", "/threads/{missing}"),
        ("DELETE", "/threads/{missing}"),
        ("GET", "/threads/{missing}/state"),
        ("POST", "/threads/{missing}/state"),
        ("GET", "/threads/{missing}/history"),
        ("POST", "/threads/{missing}/history"),
        ("GET", "/threads/{missing}/runs"),
        ("POST", "/threads/{missing}/runs"),
        ("POST", "/threads/{missing}/runs/wait"),
        ("POST", "/threads/{missing}/runs/stream"),
        ("GET", "/threads/{missing}/runs/{missing}"),
        ("DELETE", "/threads/{missing}/runs/{missing}"),
        ("GET", "/threads/{missing}/runs/{missing}/join"),
        ("GET", "/threads/{missing}/runs/{missing}/stream"),
        ("POST", "/threads/{missing}/runs/{missing}/cancel"),
        ("GET", "/assistants/{missing}"),
    ],
)
async def test_unknown_ids_are_404(http: httpx.AsyncClient, method: str, path: str) -> None:
    body = {"assistant_id": "echo", "metadata": {}, "values": {}}
    r = await http.request(method, path.format(missing=MISSING), json=body)
    assert r.status_code == 404, r.text
    assert isinstance(r.json()["detail"], str) and r.json()["detail"]


async def test_unknown_run_on_existing_thread_is_404(http: httpx.AsyncClient) -> None:
    tid = (await http.post("/threads", json={})).json()["thread_id"]
    for method, suffix in [("GET", ""), ("GET", "/join"), ("POST", "/cancel"), ("DELETE", "")]:
        r = await http.request(method, f"/threads/{tid}/runs/{MISSING}{suffix}")
        assert r.status_code == 404, (method, suffix, r.text)
        assert "not found" in r.json()["detail"]


@pytest.mark.parametrize(
    ("method", "path", "kind"),
    [
        ("GET", "/threads/nope", "thread"),
        ("GET", "/threads/nope/state", "thread"),
        ("GET", "/threads/nope/runs", "thread"),
        ("POST", "/threads/nope/runs", "thread"),
        ("GET", "/threads/{tid}/runs/nope", "run"),
        ("GET", "/threads/{tid}/runs/nope/join", "run"),
        ("GET", "/assistants/not-a-graph", "assistant"),
        ("GET", "/threads/{tid}/state/nope", "checkpoint"),
    ],
)
async def test_malformed_ids_are_422(
    http: httpx.AsyncClient, method: str, path: str, kind: str
) -> None:
    tid = (await http.post("/threads", json={})).json()["thread_id"]
    r = await http.request(method, path.format(tid=tid), json={"assistant_id": "echo"})
    assert r.status_code == 422, r.text
    assert r.json() == {"detail": f"Invalid {kind} ID: must be a UUID"}


async def test_invalid_json_is_422(http: httpx.AsyncClient) -> None:
    tid = (await http.post("/threads", json={})).json()["thread_id"]
    for path in ["/threads", f"/threads/{tid}/runs", "/runs/wait", "/threads/search"]:
        headers = {"Content-Type": "application/json"}
        r = await http.post(path, content=b"{not json", headers=headers)
        assert r.status_code == 422, (path, r.text)
        assert r.json() == {"detail": "Invalid JSON in request body"}


@pytest.mark.parametrize(
    "body",
    [
        {},  # no assistant_id
        {"assistant_id": "echo", "stream_mode": "bogus"},
        {"assistant_id": "echo", "multitask_strategy": "sometimes"},
        {"assistant_id": "echo", "after_seconds": -1},
        {"assistant_id": "echo", "metadata": "not an object"},
        {"assistant_id": "echo", "interrupt_before": "some"},
        {"assistant_id": "echo", "if_not_exists": "maybe"},
        {"assistant_id": "not-a-graph"},
        {"assistant_id": "echo", "checkpoint_id": "nope"},
        {"assistant_id": "echo", "webhook": "http://127.0.0.1:9/hook"},  # loopback: refused
        [],
    ],
)
async def test_invalid_run_bodies_are_422(http: httpx.AsyncClient, body: object) -> None:
    tid = (await http.post("/threads", json={})).json()["thread_id"]
    r = await http.post(f"/threads/{tid}/runs", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["detail"]
    # Nothing was stored: the thread has no run and is still idle.
    assert (await http.get(f"/threads/{tid}/runs")).json() == []
    assert (await http.get(f"/threads/{tid}")).json()["status"] == "idle"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"metadata": {"n": 58732340130068742144}}', "does not fit in 64 bits"),
        (b'{"metadata": {"n": NaN}}', "NaN is not a JSON number"),
        (b'{"metadata": {"n": -Infinity}}', "-Infinity is not a JSON number"),
    ],
)
async def test_unstorable_json_numbers_are_422(
    http: httpx.AsyncClient, raw: bytes, reason: str
) -> None:
    tid = (await http.post("/threads", json={"metadata": {"n": 1}})).json()["thread_id"]
    headers = {"Content-Type": "application/json"}
    for method, path in [("POST", "/threads"), ("PATCH", f"/threads/{tid}"),
                         ("POST", "/threads/search"), ("POST", "/assistants/search")]:  # fmt: skip
        r = await http.request(method, path, content=raw, headers=headers)
        assert r.status_code == 422, (path, r.text)
        assert r.json()["detail"].startswith("Invalid JSON in request body: ")
        assert reason in r.json()["detail"]
    assert (await http.get(f"/threads/{tid}")).json()["metadata"] == {"n": 1}


async def test_unknown_assistant_uuid_is_404(http: httpx.AsyncClient) -> None:
    tid = (await http.post("/threads", json={})).json()["thread_id"]
    r = await http.post(f"/threads/{tid}/runs", json={"assistant_id": MISSING})
    assert r.status_code == 404
    assert MISSING in r.json()["detail"]
    assert (await http.get(f"/threads/{tid}/runs")).json() == []


async def test_configurable_and_context_together_is_400(http: httpx.AsyncClient) -> None:
    r = await http.post(
        "/runs/wait",
        json={"assistant_id": "echo", "config": {"configurable": {"a": 1}}, "context": {"b": 2}},
    )
    assert r.status_code == 400 and "context" in r.json()["detail"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/threads", {"thread_id": "nope"}),
        ("/threads", {"metadata": []}),
        ("/threads", {"if_exists": "sometimes"}),
        ("/threads/search", {"limit": 0}),
        ("/threads/search", {"limit": 1001}),
        ("/threads/search", {"offset": -1}),
        ("/threads/search", {"offset": 58732340130068742144}),
        ("/assistants/search", {"offset": 2**64}),
        ("/threads/search", {"status": "sleeping"}),
        ("/threads/search", {"sort_by": "nope"}),
        ("/threads/search", {"ids": ["nope"]}),
        ("/assistants/search", {"limit": -5}),
        ("/assistants/search", {"sort_order": "sideways"}),
    ],
)
async def test_invalid_thread_and_search_bodies_are_422(
    http: httpx.AsyncClient, path: str, body: dict[str, object]
) -> None:
    r = await http.post(path, json=body)
    assert r.status_code == 422, r.text
    assert r.json()["detail"]


async def test_unknown_route_and_method(http: httpx.AsyncClient) -> None:
    r = await http.get("/nowhere")
    assert r.status_code == 404 and r.json() == {"detail": "Not Found"}
    r = await http.put("/threads")
    assert r.status_code == 405 and r.json() == {"detail": "Method Not Allowed"}
