"""The store (long-term memory) through the official Python client: items, search with filters
and semantic queries, namespaces, TTL, graphs writing to it during runs, and bad input."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient

from agentd.config import ConfigError, load_settings
from tests import db, pg
from tests.server import AGENTD, ROOT, Server, free_port

GRAPHS = ROOT / "tests" / "graphs"
HAS_SQLITE_EXTENSIONS = hasattr(sqlite3.Connection, "enable_load_extension")
SQL_LIKE_KEY = "n') OR 1=1 --"


@pytest.fixture
async def http(url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        yield c


def _ns() -> list[str]:
    """A namespace of this test's own, so tests sharing the server do not see each other."""
    return ["t" + uuid.uuid4().hex]


async def test_put_get_delete(client: LangGraphClient) -> None:
    ns = [*_ns(), "prefs"]
    assert await client.store.get_item(ns, key="theme") is None  # 200 null, as the reference
    await client.store.put_item(ns, key="theme", value={"color": "dark", "n": 1})
    item = await client.store.get_item(ns, key="theme")
    assert item is not None
    assert item["namespace"] == ns and item["key"] == "theme"
    assert item["value"] == {"color": "dark", "n": 1}
    assert item["created_at"].endswith("+00:00") and item["updated_at"] >= item["created_at"]
    await client.store.put_item(ns, key="theme", value={"color": "light"})
    again = await client.store.get_item(ns, key="theme")
    assert again is not None and again["value"] == {"color": "light"}
    assert again["created_at"] == item["created_at"] or again["created_at"] >= item["created_at"]
    await client.store.delete_item(ns, key="theme")
    assert await client.store.get_item(ns, key="theme") is None
    await client.store.delete_item(ns, key="theme")  # deleting nothing is fine


async def test_get_with_repeated_namespace_params(client: LangGraphClient, url: str) -> None:
    ns = [*_ns(), "a"]
    await client.store.put_item(ns, key="k", value={"v": 1})
    async with httpx.AsyncClient(base_url=url) as http:
        r = await http.get("/store/items", params=[("namespace", ns[0]), ("namespace", "a"),
                                                    ("key", "k")])  # fmt: skip
        assert r.status_code == 200 and r.json()["value"] == {"v": 1}


async def test_search_filters_and_paging(client: LangGraphClient) -> None:
    root = _ns()
    for i in range(5):
        await client.store.put_item([*root, "docs"], key=f"d{i}",
                                    value={"i": i, "kind": "even" if i % 2 == 0 else "odd",
                                           "flag": i == 3, "tags": ["x", str(i)]})  # fmt: skip
    await client.store.put_item([*root, "other"], key="o", value={"i": 99, "kind": "even"})

    async def keys(**kwargs: Any) -> list[str]:
        found = await client.store.search_items(root, limit=kwargs.pop("limit", 10), **kwargs)
        return sorted(i["key"] for i in found["items"])

    assert await keys() == ["d0", "d1", "d2", "d3", "d4", "o"]
    assert await keys(filter={"kind": "even"}) == ["d0", "d2", "d4", "o"]
    assert await keys(filter={"kind": {"$eq": "odd"}}) == ["d1", "d3"]
    assert await keys(filter={"kind": {"$ne": "even"}}) == ["d1", "d3"]
    assert await keys(filter={"i": {"$gt": 2}}) == ["d3", "d4", "o"]
    assert await keys(filter={"i": {"$gte": 2, "$lt": 4}}) == ["d2", "d3"]
    assert await keys(filter={"i": {"$lte": 1}}) == ["d0", "d1"]
    assert await keys(filter={"flag": True}) == ["d3"]
    assert await keys(filter={"kind": "even", "i": {"$lt": 3}}) == ["d0", "d2"]
    found = await client.store.search_items([*root, "docs"])
    assert len(found["items"]) == 5 and all(i["score"] is None for i in found["items"])
    # Newest first, paged.
    first = await client.store.search_items([*root, "docs"], limit=2)
    rest = await client.store.search_items([*root, "docs"], limit=10, offset=2)
    assert len(first["items"]) == 2 and len(rest["items"]) == 3
    assert {i["key"] for i in first["items"]} | {i["key"] for i in rest["items"]} == {
        f"d{i}" for i in range(5)
    }
    assert await client.store.search_items(_ns()) == {"items": []}


async def test_list_namespaces(client: LangGraphClient) -> None:
    root = _ns()[0]
    for ns in (["users", "u1", "prefs"], ["users", "u2", "prefs"], ["users", "u2", "notes"],
               ["teams", "t1"]):  # fmt: skip
        await client.store.put_item([root, *ns], key="k", value={"v": 1})
    listed = await client.store.list_namespaces(prefix=[root])
    assert listed == {"namespaces": [
        [root, "teams", "t1"], [root, "users", "u1", "prefs"], [root, "users", "u2", "notes"],
        [root, "users", "u2", "prefs"],
    ]}  # fmt: skip
    assert (await client.store.list_namespaces(prefix=[root], suffix=["prefs"]))["namespaces"] == [
        [root, "users", "u1", "prefs"], [root, "users", "u2", "prefs"]
    ]  # fmt: skip
    assert (await client.store.list_namespaces(prefix=[root], max_depth=2))["namespaces"] == [
        [root, "teams"], [root, "users"]
    ]  # fmt: skip
    page = await client.store.list_namespaces(prefix=[root], limit=2, offset=1)
    assert page["namespaces"] == [[root, "users", "u1", "prefs"], [root, "users", "u2", "notes"]]
    wildcard = await client.store.list_namespaces(prefix=[root, "users", "*", "notes"])
    assert wildcard["namespaces"] == [[root, "users", "u2", "notes"]]


async def test_graph_writes_through_runtime_store(client: LangGraphClient) -> None:
    ns = [*_ns(), "memories"]
    tid = (await client.threads.create())["thread_id"]
    result = await client.runs.wait(
        tid, "remember", input={"namespace": ns, "key": "fact", "value": {"likes": "tea"}}
    )
    assert result["seen"] == {"likes": "tea"}  # the graph read back what it wrote
    item = await client.store.get_item(ns, key="fact")
    assert item is not None and item["value"] == {"likes": "tea"}
    # And the other way: an item put through the API is what the graph's store holds.
    await client.store.put_item(ns, key="fact", value={"likes": "coffee"})
    found = await client.store.search_items(ns, filter={"likes": "coffee"})
    assert [i["key"] for i in found["items"]] == ["fact"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "/store/items", {"namespace": ["a.b"], "key": "k", "value": {}}),
        ("PUT", "/store/items", {"namespace": ["a", ""], "key": "k", "value": {}}),
        ("PUT", "/store/items", {"namespace": [], "key": "k", "value": {}}),
        ("PUT", "/store/items", {"namespace": ["langgraph"], "key": "k", "value": {}}),
        ("PUT", "/store/items", {"namespace": ["a"], "value": {}}),
        ("PUT", "/store/items", {"namespace": ["a"], "key": "", "value": {}}),
        ("PUT", "/store/items", {"namespace": ["a"], "key": "k", "value": [1]}),
        ("PUT", "/store/items", {"namespace": ["a"], "key": "k", "value": "x"}),
        ("PUT", "/store/items", {"namespace": ["a"], "key": "k", "value": {}, "ttl": -1}),
        ("PUT", "/store/items", {"namespace": ["a"], "key": "k", "value": {}, "index": True}),
        ("PUT", "/store/items", {"namespace": "a", "key": "k", "value": {}}),
        ("DELETE", "/store/items", {"namespace": ["a.b"], "key": "k"}),
        ("DELETE", "/store/items", {"namespace": ["a"]}),
        ("POST", "/store/items/search", {"limit": -1}),
        ("POST", "/store/items/search", {"offset": -1}),
        ("POST", "/store/items/search", {"namespace_prefix": ["a."]}),
        ("POST", "/store/items/search", {"filter": {"n": {"$regex": "x"}}}),
        ("POST", "/store/items/search", {"filter": {SQL_LIKE_KEY: 1}}),
        ("POST", "/store/namespaces", {"limit": -1}),
        ("POST", "/store/namespaces", {"max_depth": 0}),
        ("POST", "/store/namespaces", {"prefix": ["", "x"]}),
    ],
)
async def test_bad_input_is_422_and_stores_nothing(
    http: httpx.AsyncClient, backend: str, method: str, path: str, body: Any
) -> None:
    r = await http.request(method, path, json=body)
    if backend == "postgres" and body == {"filter": {SQL_LIKE_KEY: 1}}:
        # LangGraph's SQLite store refuses such a key; its PostgreSQL store passes filter keys
        # as parameters, so this is a key no item has.
        assert r.status_code == 200 and r.json() == {"items": []}, r.text
    else:
        assert r.status_code == 422, r.text
        assert r.json()["detail"]
    for namespace in ("a", "langgraph"):  # what a refused PUT would have written
        got = await http.get("/store/items", params={"namespace": namespace, "key": "k"})
        assert got.status_code == 200 and got.json() is None


async def test_bad_get_input(http: httpx.AsyncClient) -> None:
    r = await http.get("/store/items", params={"namespace": "a"})
    assert r.status_code == 422 and r.json()["detail"] == "Key is required"
    r = await http.get("/store/items", params={"namespace": "a..b", "key": "k"})
    assert r.status_code == 422 and "Namespace label" in r.json()["detail"]


async def test_namespace_labels_are_checked_by_the_client_too(client: LangGraphClient) -> None:
    with pytest.raises(ValueError):
        await client.store.put_item(["a.b"], key="k", value={})


# ------------------------------------------------------------------ TTL (own server)


@pytest.fixture(scope="module")
def ttl_server(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("agentd-store-ttl")
    srv = Server(data, config=GRAPHS / "ttl.json", backend=backend).start()
    yield srv
    srv.stop()


@pytest.fixture
async def ttl_client(ttl_server: Server) -> AsyncIterator[LangGraphClient]:
    c = get_client(url=ttl_server.url, api_key=None)
    yield c
    await c.http.client.aclose()


async def test_item_ttl_expires_and_reads_refresh_it(ttl_client: LangGraphClient) -> None:
    ns = _ns()
    await ttl_client.store.put_item(ns, key="short", value={"v": 1}, ttl=0.02)  # ~1 s
    await ttl_client.store.put_item(ns, key="kept", value={"v": 2})  # no default TTL here
    await ttl_client.store.put_item(ns, key="read", value={"v": 3}, ttl=0.05)  # 3 s
    started = time.monotonic()
    while time.monotonic() - started < 6:  # reads (refresh_on_read) keep "read" alive
        assert await ttl_client.store.get_item(ns, key="read") is not None
        await asyncio.sleep(0.5)
    assert await ttl_client.store.get_item(ns, key="short") is None
    assert await ttl_client.store.get_item(ns, key="kept") is not None
    # A read that does not refresh lets it expire.
    deadline = time.monotonic() + 20
    while await ttl_client.store.get_item(ns, key="read", refresh_ttl=False) is not None:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.5)
    found = await ttl_client.store.search_items(ns)
    assert [i["key"] for i in found["items"]] == ["kept"]


# ------------------------------------------------------------------ semantic search


# Semantic search is tested on SQLite only: on PostgreSQL it needs pgvector, which this machine's
# PostgreSQL does not have (so there, the start-up error that names it is tested instead).
NEEDS_SQLITE_VEC = pytest.mark.sqlite_only("store.index on PostgreSQL needs pgvector, not here")


@pytest.fixture(scope="module")
def semantic_server(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[Server]:
    if not HAS_SQLITE_EXTENSIONS:
        pytest.skip("this Python's sqlite3 cannot load extensions (sqlite-vec)")
    data = tmp_path_factory.mktemp("agentd-sem")
    srv = Server(data, config=GRAPHS / "semantic.json", backend=backend).start()
    yield srv
    srv.stop()


@pytest.mark.postgres_only("the pgvector check is PostgreSQL's")
@pytest.mark.xfail(
    not HAS_SQLITE_EXTENSIONS,
    strict=True,
    reason="agentd bug: store.index asks for SQLite extension loading on PostgreSQL too "
    "(agentd/embeddings.py index_config), so pgvector is never checked",
)
def test_semantic_index_without_pgvector_is_one_start_up_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [*AGENTD, "serve", "--config", str(GRAPHS / "semantic.json"), "--port", str(free_port()),
         "--data-dir", str(tmp_path), "--database-url", pg.create_database(str(tmp_path))],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("agentd: store.index") and "pgvector" in last, done.stderr[-2000:]


@NEEDS_SQLITE_VEC
async def test_semantic_search(semantic_server: Server) -> None:
    client = get_client(url=semantic_server.url, api_key=None)
    ns = _ns()
    docs = {
        "pets": "cats and dogs are friendly pets",
        "money": "stock market prices fell today",
        "food": "fresh bread and cheese for lunch",
    }
    for key, text in docs.items():
        await client.store.put_item([*ns, "docs"], key=key, value={"text": text, "key": key})
    await client.store.put_item([*ns, "docs"], key="hidden", value={"text": "dogs"}, index=False)
    await client.store.put_item(
        [*ns, "docs"], key="by-title", value={"text": "nothing", "title": "market"},
        index=["title"],
    )  # fmt: skip
    found = (await client.store.search_items(ns, query="dogs and cats", limit=3))["items"]
    assert found[0]["key"] == "pets"
    scores = [i["score"] for i in found]
    assert all(isinstance(s, float) for s in scores) and scores == sorted(scores, reverse=True)
    assert "hidden" not in [i["key"] for i in found]  # index=False: not embedded
    market = (await client.store.search_items(ns, query="market", limit=2))["items"]
    assert {i["key"] for i in market} == {"money", "by-title"}
    filtered = await client.store.search_items(ns, query="dogs", filter={"key": "food"})
    assert [i["key"] for i in filtered["items"]] == ["food"]
    # Without a query it lists, unscored.
    listed = await client.store.search_items(ns, limit=10)
    assert len(listed["items"]) == 5 and all(i["score"] is None for i in listed["items"])
    await client.http.client.aclose()


@NEEDS_SQLITE_VEC
async def test_semantic_index_follows_replaced_and_deleted_items(semantic_server: Server) -> None:
    """An item put again with ``index=False``, or deleted, leaves no vectors behind (LangGraph's
    own SQLite connection did not enforce the foreign key that deletes them)."""
    client = get_client(url=semantic_server.url, api_key=None)
    ns = _ns()
    await client.store.put_item(ns, key="a", value={"text": "dogs bark"})
    await client.store.put_item(ns, key="b", value={"text": "dogs run"})
    found = (await client.store.search_items(ns, query="dogs", limit=5))["items"]
    assert {i["key"] for i in found} == {"a", "b"}
    await client.store.put_item(ns, key="a", value={"text": "dogs bark"}, index=False)
    await client.store.delete_item(ns, key="b")
    assert (await client.store.search_items(ns, query="dogs", limit=5))["items"] == []
    listed = (await client.store.search_items(ns, limit=5))["items"]
    assert [i["key"] for i in listed] == ["a"]  # still stored, only unindexed
    left = db.query(semantic_server, "SELECT count(*) FROM store_vectors WHERE prefix = ?", [ns[0]])
    assert left == [(0,)]
    await client.http.client.aclose()


def _config(tmp_path: Path, store: Any) -> Path:
    config = tmp_path / "langgraph.json"
    graphs = {"echo": str(GRAPHS / "basic.py") + ":echo"}
    config.write_text(json.dumps({"graphs": graphs, "store": store}))
    return config


def _serve(tmp_path: Path, store: Any) -> subprocess.CompletedProcess[str]:
    config = _config(tmp_path, store)
    return subprocess.run(
        [sys.executable, "-m", "agentd.cli", "serve", "--config", str(config), "--port", "1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("store", "expected"),
    [
        ({"index": {"dims": 0, "embed": "./e.py:f"}}, "store.index.dims"),
        ({"index": {"dims": 4}}, "store.index.embed"),
        ({"index": {"dims": 4, "embed": "./e.py:f", "fields": []}}, "store.index.fields"),
        ({"index": {"dims": 4, "embed": "./e.py:f", "distance_type": "x"}}, "distance_type"),
        ({"ttl": {"default_ttl": 0}}, "store.ttl.default_ttl"),
        ({"ttl": {"refresh_on_read": "yes"}}, "store.ttl.refresh_on_read"),
        ({"ttl": {"sweep_interval_minutes": -1}}, "store.ttl.sweep_interval_minutes"),
        ({"ttl": {"forever": True}}, "unknown key"),
        ({"path": "./my_store.py:store"}, "store.path"),
        ("memory", "'store' must be an object"),
    ],
)
def test_invalid_store_config_is_refused(tmp_path: Path, store: Any, expected: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_settings(_config(tmp_path, store))


def test_unloadable_embedding_is_one_start_up_line(tmp_path: Path) -> None:
    (tmp_path / "emb.py").write_text("raise RuntimeError('no model here')\n")
    index = {"dims": 4, "embed": str(tmp_path / "emb.py") + ":embed"}
    result = _serve(tmp_path, {"index": index})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("agentd: store.index"), lines
    expected = "no model here" if HAS_SQLITE_EXTENSIONS else "extension loading"
    assert expected in lines[0]
