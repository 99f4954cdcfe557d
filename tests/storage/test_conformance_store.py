"""Conformance: the backend's LangGraph store (``storage.store``), as graphs and /store see it:
items put, read, replaced, searched by filter, listed by namespace and deleted."""

from __future__ import annotations

from agentd.storage.base import Storage


async def test_the_store_keeps_items_by_namespace(storage: Storage) -> None:
    store = storage.store
    assert store is not None
    users = ("users", "ünï ✓", "it's")
    await store.aput(users, "a", {"kind": "x", "n": 1, "nested": {"k": [1, None]}})
    await store.aput(users, "b", {"kind": "y", "n": 2})
    await store.aput(("users", "other"), "a", {"kind": "x", "n": 3})
    await store.aput(("docs",), 'k.e\'y "q"', {"kind": "x", "n": 4})
    item = await store.aget(users, "a")
    assert item is not None and item.value == {"kind": "x", "n": 1, "nested": {"k": [1, None]}}
    assert item.namespace == users and item.key == "a"
    assert await store.aget(users, "missing") is None
    await store.aput(users, "a", {"kind": "y", "n": 5})  # replaced
    item = await store.aget(users, "a")
    assert item is not None and item.value == {"kind": "y", "n": 5}
    found = await store.asearch(("users",), filter={"kind": "y"}, limit=10)
    assert sorted((i.namespace, i.key) for i in found) == [(users, "a"), (users, "b")]
    assert len(await store.asearch(("users",), limit=10)) == 3
    assert [i.key for i in await store.asearch(("docs",), filter={"n": 4})] == ['k.e\'y "q"']
    spaces = await store.alist_namespaces(prefix=("users",))
    assert sorted(spaces) == [("users", "other"), users]
    await store.adelete(users, "a")
    assert await store.aget(users, "a") is None
    assert len(await store.asearch(("users",), limit=10)) == 2
