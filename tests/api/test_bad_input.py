"""Bad input is a 4xx with a clear detail, never a 500 and never stored; memory stays bounded
whatever the size of the body."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.server import Server

MIB = 1024 * 1024
DEFAULT_LIMIT = 8 * MIB
BIG_LIMIT = 12 * MIB  # room for 250,001 thread ids (~9.8 MB)
TOO_DEEP = "Invalid JSON in request body: arrays and objects nested more than 128 levels deep"
JSON_HEADERS = {"Content-Type": "application/json"}


@pytest.fixture
async def http(url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def big_server(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[Server]:
    """A server whose body limit is raised (HTTP_MAX_REQUEST_BODY_BYTES)."""
    env = {"HTTP_MAX_REQUEST_BODY_BYTES": str(BIG_LIMIT)}
    srv = Server(tmp_path_factory.mktemp("big"), env=env, backend=backend).start()
    yield srv
    srv.stop()


def _memory(server: Server) -> dict[str, int]:
    """The server process's resident memory now and at its peak, in bytes."""
    assert server.proc is not None
    status = Path(f"/proc/{server.proc.pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines())
    return {key: int(fields[key].split()[0]) * 1024 for key in ("VmRSS", "VmHWM")}


def _chunks(body: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def _padded(size: int) -> bytes:
    """A valid search body of exactly ``size`` bytes (unknown fields are accepted)."""
    head, tail = b'{"limit": 1, "pad": "', b'"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


# ------------------------------------------------------------------ body size


def test_oversized_body_is_413_and_memory_stays_bounded(tmp_path: Path) -> None:
    server = Server(tmp_path / "data").start()  # its own process: its memory is ours to read
    try:
        with httpx.Client(base_url=server.url, timeout=120) as http:
            body = b'{"metadata": {"marker": "' + b"x" * 50_000_000 + b'"}}'
            assert http.post("/threads", json={}).status_code == 200  # warm up the routes
            before = _memory(server)
            for content in (body, _chunks(body)):  # Content-Length, then chunked
                r = http.post("/threads", content=content, headers=JSON_HEADERS)
                assert r.status_code == 413, r.text
                assert r.json() == {
                    "detail": f"Request body too large (limit: {DEFAULT_LIMIT} bytes)"
                }
            after = _memory(server)
            # Never more than the limit is held (a chunked body is read up to it); a server
            # that buffered the body would have grown by 50 MB or more.
            assert after["VmHWM"] - before["VmHWM"] < DEFAULT_LIMIT + 8 * MIB, (before, after)
            assert after["VmRSS"] - before["VmRSS"] < 8 * MIB, (before, after)
            assert http.post("/threads/count", json={}).json() == 1  # only the warm-up
            assert http.get("/ok").status_code == 200  # the connection and server are fine
    finally:
        server.stop()


def test_body_limit_setting_is_exact(big_server: Server) -> None:
    with httpx.Client(base_url=big_server.url, timeout=120) as http:
        for framing in ("content-length", "chunked"):
            for size, status in ((BIG_LIMIT, 200), (BIG_LIMIT + 1, 413)):
                body = _padded(size)
                content = body if framing == "content-length" else _chunks(body)
                r = http.post("/threads/search", content=content, headers=JSON_HEADERS)
                assert r.status_code == status, (framing, size, r.text[:200])
                if status == 413:
                    assert r.json() == {
                        "detail": f"Request body too large (limit: {BIG_LIMIT} bytes)"
                    }


# ------------------------------------------------------------------ ids past SQLite's limits


def test_thread_ids_past_the_sqlite_parameter_limit(big_server: Server) -> None:
    with httpx.Client(base_url=big_server.url, timeout=120) as http:
        kept = http.post("/threads", json={}).json()["thread_id"]
        gone = http.post("/threads", json={}).json()["thread_id"]
        # 250,000 is the most parameters SQLite takes in one statement (PostgreSQL: 65,535).
        others = [str(uuid.uuid4()) for _ in range(250_001)]
        r = http.post("/threads/search", json={"ids": [*others, kept, gone], "limit": 10})
        assert r.status_code == 200, r.text[:300]
        assert {t["thread_id"] for t in r.json()} == {kept, gone}
        assert r.headers["x-pagination-total"] == "2"
        r = http.post("/threads/prune", json={"thread_ids": [*others, gone]})
        assert r.status_code == 200, r.text[:300]
        assert r.json() == {"pruned_count": 1}
        assert http.get(f"/threads/{gone}").status_code == 404
        assert http.get(f"/threads/{kept}").status_code == 200


# ------------------------------------------------------------------ JSON itself


def _nested(levels: int) -> Any:
    value: Any = "leaf"
    for _ in range(levels):
        value = [value]
    return value


async def test_json_nested_too_deeply_is_422(http: httpx.AsyncClient) -> None:
    marker = str(uuid.uuid4())
    tid = (await http.post("/threads", json={})).json()["thread_id"]
    endpoints = ["/threads", f"/threads/{tid}/runs", "/runs/wait", "/threads/search",
                 "/assistants", "/runs/crons"]  # fmt: skip
    # 100,000 levels: refused before parsing, so no recursion limit is met.
    deep = (b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
            b"[" * 100_000)  # fmt: skip
    for body in deep:
        for path in endpoints:
            r = await http.post(path, content=body, headers=JSON_HEADERS)
            assert r.status_code == 422, (path, r.text[:200])
            assert r.json() == {"detail": TOO_DEEP}
    # {"metadata": {"m": [[...]]}}: the body is 2 levels deeper than the value.
    r = await http.post("/threads", json={"metadata": {"marker": marker, "m": _nested(127)}})
    assert r.status_code == 422 and r.json() == {"detail": TOO_DEEP}
    assert (await http.post("/threads/count", json={"metadata": {"marker": marker}})).json() == 0
    # 128 levels are accepted, and come back out of every place they are kept.
    deepest = _nested(126)
    r = await http.post("/threads", json={"metadata": {"marker": marker, "m": deepest}})
    assert r.status_code == 200, r.text[:200]
    thread = r.json()
    assert thread["metadata"]["m"] == deepest
    r = await http.post(
        f"/threads/{thread['thread_id']}/runs/wait",
        json={"assistant_id": "echo", "input": {"value": _nested(125)}, "stream_mode": "debug"},
    )
    assert r.status_code == 200 and r.json()["value"] == _nested(125)
    tid = thread["thread_id"]
    for path in (f"/threads/{tid}", f"/threads/{tid}/state", f"/threads/{tid}/runs",
                 f"/threads/{tid}/history?limit=5"):  # fmt: skip
        assert (await http.get(path)).status_code == 200, path


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"metadata": {"s": "\\ud800"}}', "surrogate"),  # a lone escaped surrogate
        (b'{"metadata": {"\\udc00": 1}}', "surrogate"),  # in a key
        (b'{"metadata": {"s": "\xed\xa0\x80"}}', "surrogates not allowed"),  # raw, as UTF-8
        (b'{"metadata": {"s": "\xff"}}', "not UTF-8"),
        (b'{"metadata": {"n": 1e400}}', "number 1e400 is out of range"),
        (b'{"metadata": {"n": -1e400}}', "number -1e400 is out of range"),
        (b'{"metadata": {"n": 18446744073709551615}}', "does not fit in 64 bits"),
    ],
)
async def test_unstorable_json_is_422(http: httpx.AsyncClient, raw: bytes, reason: str) -> None:
    before = (await http.post("/threads/count", json={})).json()
    for path in ("/threads", "/assistants/search", "/store/items/search"):
        r = await http.post(path, content=raw, headers=JSON_HEADERS)
        assert r.status_code == 422, (path, r.text)
        detail = r.json()["detail"]
        assert detail.startswith("Invalid JSON in request body: ") and reason in detail, detail
    assert (await http.post("/threads/count", json={})).json() == before


async def test_what_can_be_stored_is_accepted(http: httpx.AsyncClient) -> None:
    """Escaped surrogate pairs (Python's json.dumps writes them), a UTF-16 body, a byte order
    mark, big and tiny numbers, an escaped backslash before 'ud800': all stored as sent."""
    bodies = [
        (b'{"metadata": {"s": "\\ud83d\\ude00"}}', {"s": "\U0001f600"}),
        ('{"metadata": {"s": "caf\u00e9"}}'.encode("utf-16"), {"s": "caf\u00e9"}),
        (b'\xef\xbb\xbf{"metadata": {"s": "bom"}}', {"s": "bom"}),
        (b'{"metadata": {"s": "\\\\ud800"}}', {"s": "\\ud800"}),
        (b'{"metadata": {"n": 9223372036854775807, "m": -9223372036854775808, "f": 1e308, '
         b'"t": 5e-324, "id": "12345678901234567890123"}}',
         {"n": 2**63 - 1, "m": -(2**63), "f": 1e308, "t": 5e-324, "id": "12345678901234567890123"}),
        (b'{"metadata": {"s": "' + b"[" * 300 + b'"}}', {"s": "[" * 300}),  # brackets in text
    ]  # fmt: skip
    for raw, metadata in bodies:
        r = await http.post("/threads", content=raw, headers=JSON_HEADERS)
        assert r.status_code == 200, (raw[:40], r.text)
        assert r.json()["metadata"] == metadata
        got = await http.get(f"/threads/{r.json()['thread_id']}")
        assert got.json()["metadata"] == metadata


# ------------------------------------------------------------------ sizes SQLite refuses


def _too_many_keys() -> dict[str, int]:
    return {f"k{i}": i for i in range(1_100)}


async def test_filters_with_too_many_keys_are_422(http: httpx.AsyncClient) -> None:
    tid = (await http.post("/threads", json={})).json()["thread_id"]
    aid = (await http.post("/assistants", json={"graph_id": "echo"})).json()["assistant_id"]
    cases = [
        ("/threads/search", "metadata"), ("/threads/search", "values"),
        ("/threads/count", "metadata"), ("/threads/count", "values"),
        ("/assistants/search", "metadata"), ("/assistants/count", "metadata"),
        (f"/assistants/{aid}/versions", "metadata"),
        ("/runs/crons/search", "metadata"), ("/runs/crons/count", "metadata"),
        (f"/threads/{tid}/history", "metadata"), ("/store/items/search", "filter"),
    ]  # fmt: skip
    for path, field in cases:
        r = await http.post(path, json={field: _too_many_keys()})
        assert r.status_code == 422, (path, field, r.text[:200])
        [error] = r.json()["detail"]
        assert error["loc"] == ["body", field] and "at most 256 items" in error["msg"], error
        # The most allowed, in both filters of a thread search at once, is answered.
        most = {f"k{i}": i for i in range(256)}
        body = {field: most, **({"values": most} if path.startswith("/threads/") else {})}
        assert (await http.post(path, json=body)).status_code == 200, (path, field)


async def test_filter_keys_holding_nul_are_422(http: httpx.AsyncClient) -> None:
    """Found by the schemathesis test: a JSON path holding NUL made SQLite fail the query."""
    await http.post("/threads", json={"metadata": {"k": {"a": 1}}})  # rows to filter
    tid = (await http.post("/threads", json={})).json()["thread_id"]
    for path, field in [
        ("/threads/search", "metadata"), ("/threads/count", "values"),
        ("/assistants/search", "metadata"), ("/runs/crons/search", "metadata"),
        (f"/threads/{tid}/history", "metadata"), ("/store/items/search", "filter"),
    ]:  # fmt: skip
        for value in ({}, [], 1, None, True):
            r = await http.post(path, json={field: {"k\u0000": value}})
            assert r.status_code == 422, (path, field, value, r.text[:200])
            assert "NUL" in r.json()["detail"][0]["msg"]


RUN_ENDPOINTS = ["/threads/{tid}/runs", "/threads/{tid}/runs/wait", "/threads/{tid}/runs/stream",
                 "/runs", "/runs/wait", "/runs/stream", "/runs/batch"]  # fmt: skip


@pytest.mark.parametrize("path", RUN_ENDPOINTS)
async def test_after_seconds_is_capped(http: httpx.AsyncClient, path: str) -> None:
    marker = str(uuid.uuid4())
    tid = (await http.post("/threads", json={})).json()["thread_id"]
    run = {"assistant_id": "echo", "metadata": {"marker": marker}, "after_seconds": 1e12}
    body: Any = [run] if path == "/runs/batch" else run
    r = await http.post(path.format(tid=tid), json=body)
    assert r.status_code == 422, r.text
    [error] = r.json()["detail"]
    assert error["loc"][-1] == "after_seconds" and "31536000" in error["msg"], error
    assert (await http.get(f"/threads/{tid}/runs")).json() == []
    assert (await http.post("/threads/count", json={"metadata": {"marker": marker}})).json() == 0


async def test_after_seconds_at_the_cap_is_accepted(http: httpx.AsyncClient) -> None:
    tid = (await http.post("/threads", json={})).json()["thread_id"]
    r = await http.post(
        f"/threads/{tid}/runs", json={"assistant_id": "echo", "after_seconds": 365 * 24 * 3600}
    )
    assert r.status_code == 200, r.text
    assert r.json()["created_at"][:4] > (await http.get(f"/threads/{tid}")).json()["created_at"][:4]
    r = await http.post(f"/threads/{tid}/runs/{r.json()['run_id']}/cancel?wait=true")
    assert r.status_code == 200 and r.json()["status"] == "interrupted"


@pytest.mark.parametrize("path", RUN_ENDPOINTS)
async def test_wrong_types_in_run_config_are_422(http: httpx.AsyncClient, path: str) -> None:
    marker = str(uuid.uuid4())
    tid = (await http.post("/threads", json={})).json()["thread_id"]
    for config, field in (({"metadata": "not an object"}, "metadata"),
                          ({"recursion_limit": 0}, "recursion_limit"),
                          ({"max_concurrency": "many"}, "max_concurrency"),
                          ({"run_name": ["a"]}, "run_name")):  # fmt: skip
        run = {"assistant_id": "echo", "metadata": {"marker": marker}, "config": config}
        r = await http.post(path.format(tid=tid), json=[run] if path == "/runs/batch" else run)
        assert r.status_code == 422, (config, r.text)
        assert r.json()["detail"][0]["loc"][-2:] == ["config", field], r.json()
    assert (await http.get(f"/threads/{tid}/runs")).json() == []
    assert (await http.post("/threads/count", json={"metadata": {"marker": marker}})).json() == 0


async def test_supersteps_graph_id_of_a_wrong_type_is_422(http: httpx.AsyncClient) -> None:
    steps = [{"updates": [{"values": {"value": 1}, "as_node": "echo"}]}]
    for graph_id in (["echo"], {"g": "echo"}, 3):
        body = {"metadata": {"graph_id": graph_id}, "supersteps": steps}
        r = await http.post("/threads", json=body)
        assert r.status_code == 422, r.text
        assert "supersteps need metadata.graph_id naming a served graph" in r.json()["detail"]


# ------------------------------------------------------------------ the store


async def test_nul_in_store_namespace_or_key_is_422(http: httpx.AsyncClient) -> None:
    ns = str(uuid.uuid4())
    label_detail = "must be a non-empty string without periods or NUL characters"
    requests = [
        ("PUT", "/store/items", {"namespace": [ns, "a\x00b"], "key": "k", "value": {}}, "label"),
        ("PUT", "/store/items", {"namespace": [ns], "key": "k\x00", "value": {}}, "key"),
        ("DELETE", "/store/items", {"namespace": [ns, "a\x00b"], "key": "k"}, "label"),
        ("DELETE", "/store/items", {"namespace": [ns], "key": "k\x00"}, "key"),
        ("POST", "/store/items/search", {"namespace_prefix": [ns, "\x00"]}, "label"),
        ("POST", "/store/namespaces", {"prefix": [ns, "a\x00"]}, "label"),
        ("POST", "/store/namespaces", {"suffix": ["a\x00"]}, "label"),
    ]
    for method, path, body, kind in requests:
        r = await http.request(method, path, json=body)
        assert r.status_code == 422, (method, path, r.text)
        detail = r.json()["detail"]
        assert (label_detail if kind == "label" else "must not contain NUL") in detail, detail
    for params in ({"namespace": f"{ns}.a\x00b", "key": "k"}, {"namespace": ns, "key": "k\x00"}):
        r = await http.get("/store/items", params=params)
        assert r.status_code == 422 and "NUL" in r.json()["detail"], r.text
    r = await http.post("/store/items/search", json={"namespace_prefix": [ns]})
    assert r.json() == {"items": []}


async def test_store_namespace_size_is_capped(http: httpx.AsyncClient) -> None:
    ns = str(uuid.uuid4())
    too_many = [ns, *(f"l{i}" for i in range(64))]
    too_long = [ns, "x" * 1025]
    for labels, reason in ((too_many, "at most 64 are allowed"),
                           (too_long, "at most 1024 are allowed")):  # fmt: skip
        for method, path, body in (
            ("PUT", "/store/items", {"namespace": labels, "key": "k", "value": {}}),
            ("DELETE", "/store/items", {"namespace": labels, "key": "k"}),
            ("POST", "/store/items/search", {"namespace_prefix": labels}),
            ("POST", "/store/namespaces", {"prefix": labels}),
        ):
            r = await http.request(method, path, json=body)
            assert r.status_code == 422 and reason in r.json()["detail"], (path, r.text[:200])
        r = await http.get("/store/items", params={"namespace": ".".join(labels), "key": "k"})
        assert r.status_code == 422 and reason in r.json()["detail"], r.text[:200]
    # The most allowed is stored, listed to any depth, and read back.
    most = [ns, *(f"l{i}" for i in range(62)), "x" * 1024]
    r = await http.put("/store/items", json={"namespace": most, "key": "k", "value": {"v": 1}})
    assert r.status_code == 204, r.text
    r = await http.post("/store/namespaces", json={"prefix": [ns], "max_depth": 2**62})
    assert r.json() == {"namespaces": [most]}
    r = await http.get("/store/items", params={"namespace": ".".join(most), "key": "k"})
    assert r.json()["value"] == {"v": 1}


# ------------------------------------------------------------------ generated bad input

_HUGE = st.sampled_from(["x" * 200_000, "\x00", "a\x00b", "\u202e", "%s%n", "\U0001f600" * 500])
_EXTREME = st.one_of(
    _HUGE,
    st.sampled_from([2**63 - 1, -(2**63), -1, 0, 1e308, -1e308, 5e-324, True, None]),
    st.sampled_from([[], ["x"] * 50_000, list(range(50_000)), {}, {"a": {"b": [1, None]}}]),
    st.builds(lambda n: {f"k{i}": i for i in range(n)}, st.sampled_from([257, 5_000])),
    st.builds(_nested, st.integers(min_value=100, max_value=126)),
    st.text(max_size=20),
)
# A valid body per request model, and the fields (dotted paths) a generated value replaces.
_TARGETS: list[tuple[str, str, dict[str, Any], list[str]]] = [
    ("POST", "/threads/{tid}/runs", {"assistant_id": "echo", "input": {"value": 1}},
     ["assistant_id", "input", "input.value", "command", "command.resume", "command.goto",
      "command.update", "checkpoint", "checkpoint.checkpoint_id", "checkpoint_id", "metadata",
      "config", "config.tags", "config.configurable", "config.callbacks", "config.run_id",
      "context", "webhook", "interrupt_before", "stream_mode", "feedback_keys",
      "after_seconds", "durability", "multitask_strategy"]),
    ("POST", "/runs/wait", {"assistant_id": "echo", "input": {"value": 1}},
     ["input", "metadata", "config", "context", "on_completion", "checkpoint_during"]),
    ("POST", "/threads", {}, ["thread_id", "metadata", "ttl", "ttl.ttl", "supersteps"]),
    ("PATCH", "/threads/{tid}", {}, ["metadata", "ttl"]),
    ("POST", "/threads/search", {}, ["ids", "metadata", "values", "status", "limit", "offset",
                                     "select"]),
    ("POST", "/threads/{tid}/state", {"values": {"value": 2}},
     ["values", "values.value", "as_node", "checkpoint", "checkpoint_id"]),
    ("POST", "/threads/{tid}/history", {}, ["limit", "before", "metadata", "checkpoint"]),
    ("POST", "/threads/prune", {"thread_ids": []}, ["thread_ids", "strategy"]),
    ("PUT", "/store/items", {"namespace": ["fuzz"], "key": "k", "value": {}},
     ["namespace", "key", "value", "index", "ttl"]),
    ("POST", "/store/items/search", {}, ["namespace_prefix", "filter", "query", "limit"]),
    ("POST", "/store/namespaces", {}, ["prefix", "suffix", "max_depth", "limit", "offset"]),
    ("POST", "/assistants", {"graph_id": "echo"},
     ["assistant_id", "graph_id", "config", "context", "metadata", "name", "description"]),
    ("POST", "/assistants/search", {}, ["metadata", "graph_id", "name", "limit", "select"]),
    ("POST", "/runs/crons", {"assistant_id": "echo", "schedule": "0 0 1 1 *"},
     ["schedule", "timezone", "end_time", "input", "metadata", "config", "webhook"]),
    ("POST", "/runs/crons/search", {}, ["assistant_id", "thread_id", "metadata", "offset"]),
]  # fmt: skip


def _with(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    body = json.loads(json.dumps(body))
    *parents, last = path.split(".")
    node = body
    for key in parents:
        node = node.setdefault(key, {}) if isinstance(node.get(key), dict | None) else {}
    node[last] = value
    return body


@pytest.fixture(scope="module")
def fuzz_thread(url: str) -> str:
    return httpx.post(f"{url}/threads", json={}).json()["thread_id"]


@settings(
    max_examples=250,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(target=st.sampled_from(_TARGETS), data=st.data())
def test_no_extreme_value_is_a_server_error(
    url: str, fuzz_thread: str, target: tuple[str, str, dict[str, Any], list[str]], data: Any
) -> None:
    method, path, base, fields = target
    field = data.draw(st.sampled_from(fields), label="field")
    value = data.draw(_EXTREME, label="value")
    body = _with(base, field, value)
    r = httpx.request(method, url + path.format(tid=fuzz_thread), json=body, timeout=60)
    assert r.status_code < 500, (method, path, field, r.text[:300])
