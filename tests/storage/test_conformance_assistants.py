"""Conformance: assistants and their versions, default assistants, assistant search."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from agentd.schemas import Conflict, NotFound
from agentd.storage.base import Row, Storage
from tests.storage.helpers import ensure_assistant, new_cron, new_id, now_iso, queue


def _assistant(graph_id: str = "g", name: str = "n", **fields: Any) -> Row:
    return {
        "assistant_id": new_id(),
        "graph_id": graph_id,
        "config": {"tags": ["t"]},
        "context": {},
        "metadata": {},
        "name": name,
        "description": None,
        **fields,
    }


async def test_an_assistant_is_created_once(storage: Storage) -> None:
    body = _assistant(metadata={"m": 1}, description="d", context={"c": 1})
    row = await storage.create_assistant(body, "raise")
    for field in (
        "assistant_id",
        "graph_id",
        "config",
        "context",
        "metadata",
        "name",
        "description",
    ):
        assert row[field] == body[field], field
    assert row["version"] == 1
    assert await storage.get_assistant(body["assistant_id"]) == row
    with pytest.raises(Conflict):
        await storage.create_assistant({**body, "name": "other"}, "raise")
    assert await storage.create_assistant({**body, "name": "other"}, "do_nothing") == row
    version = await storage.get_assistant_version(body["assistant_id"], 1)
    assert version is not None and version["version"] == 1
    assert {k: version[k] for k in ("graph_id", "config", "context", "metadata", "name")} == {
        k: body[k] for k in ("graph_id", "config", "context", "metadata", "name")
    }
    assert await storage.get_assistant(new_id()) is None
    assert await storage.get_assistant_version(body["assistant_id"], 2) is None


async def test_an_update_appends_a_version_and_makes_it_current(storage: Storage) -> None:
    body = _assistant(metadata={"keep": 1, "change": 1}, description="first")
    aid = body["assistant_id"]
    await storage.create_assistant(body, "raise")
    v2 = await storage.update_assistant(aid, name="renamed", metadata={"change": 2, "new": 3})
    assert v2 is not None and v2["version"] == 2
    assert v2["name"] == "renamed" and v2["description"] == "first"  # None keeps a field
    assert v2["metadata"] == {"keep": 1, "change": 2, "new": 3}  # merged
    assert v2["config"] == {"tags": ["t"]} and v2["graph_id"] == "g"
    v3 = await storage.update_assistant(
        aid, context={"model": "m"}, graph_id="g2", config={"recursion_limit": 5}, description=""
    )
    assert v3 is not None and v3["version"] == 3 and v3["graph_id"] == "g2"
    assert v3["context"] == {"model": "m"} and v3["description"] == ""
    # config.configurable mirrors the context.
    assert v3["config"] == {"recursion_limit": 5, "configurable": {"model": "m"}}
    assert await storage.get_assistant(aid) == v3
    versions = await storage.list_assistant_versions(aid, metadata=None, limit=10, offset=0)
    assert [v["version"] for v in versions] == [3, 2, 1]
    assert versions[1]["name"] == "renamed" and versions[2]["name"] == "n"
    page = await storage.list_assistant_versions(aid, metadata=None, limit=1, offset=1)
    assert [v["version"] for v in page] == [2]
    filtered = await storage.list_assistant_versions(
        aid, metadata={"change": 2}, limit=10, offset=0
    )
    assert [v["version"] for v in filtered] == [3, 2]
    assert await storage.update_assistant(new_id(), name="x") is None
    assert await storage.list_assistant_versions(new_id(), metadata=None, limit=10, offset=0) == []


async def test_an_older_version_can_be_made_current(storage: Storage) -> None:
    body = _assistant(metadata={"v": 1})
    aid = body["assistant_id"]
    await storage.create_assistant(body, "raise")
    await storage.update_assistant(aid, name="two", metadata={"v": 2}, context={"c": 2})
    back = await storage.set_latest_assistant_version(aid, 1)
    assert back is not None and back["version"] == 1
    assert (back["name"], back["metadata"], back["context"]) == ("n", {"v": 1}, {})
    assert await storage.get_assistant(aid) == back
    versions = await storage.list_assistant_versions(aid, metadata=None, limit=10, offset=0)
    assert [v["version"] for v in versions] == [2, 1]  # nothing appended
    v3 = await storage.update_assistant(aid, name="three")
    assert v3 is not None and v3["version"] == 3 and v3["metadata"] == {"v": 1}
    with pytest.raises(NotFound):
        await storage.set_latest_assistant_version(aid, 7)
    assert await storage.set_latest_assistant_version(new_id(), 1) is None


async def test_default_assistants_follow_their_graph_until_edited(storage: Storage) -> None:
    untouched, edited = new_id(), new_id()
    defaults = [
        {"assistant_id": untouched, "graph_id": "g1", "name": "g1", "description": None},
        {"assistant_id": edited, "graph_id": "g2", "name": "g2", "description": "two"},
    ]
    await storage.sync_default_assistants(defaults)
    await storage.sync_default_assistants(defaults)  # idempotent
    row = await storage.get_assistant(untouched)
    assert row is not None and row["version"] == 1 and row["name"] == "g1"
    assert row["metadata"] == {"created_by": "system"}
    assert (
        len(await storage.list_assistant_versions(untouched, metadata=None, limit=10, offset=0))
        == 1
    )
    await storage.update_assistant(edited, name="mine")
    renamed = [{**d, "name": d["name"] + "!", "description": "new"} for d in defaults]
    await storage.sync_default_assistants(renamed)
    row = await storage.get_assistant(untouched)
    assert row is not None and (row["name"], row["description"]) == ("g1!", "new")
    version = await storage.get_assistant_version(untouched, 1)
    assert version is not None and version["name"] == "g1!"
    row = await storage.get_assistant(edited)
    assert row is not None and (row["name"], row["description"], row["version"]) == (
        "mine",
        "two",
        2,
    )


async def test_deleting_an_assistant_deletes_its_versions_and_crons(storage: Storage) -> None:
    row = await ensure_assistant(storage)
    aid = row["assistant_id"]
    await storage.update_assistant(aid, name="two")
    cron = await storage.create_cron(new_cron(now_iso(60), assistant_id=aid))
    assert await storage.delete_assistant(aid)
    assert not await storage.delete_assistant(aid)
    assert await storage.get_assistant(aid) is None
    assert await storage.get_assistant_version(aid, 1) is None
    assert await storage.get_cron(cron["cron_id"]) is None


async def test_an_assistants_runs_and_threads_are_found(storage: Storage) -> None:
    mine, other = new_id(), new_id()
    tid = new_id()
    await storage.create_thread(tid, {"assistant_id": mine}, "raise")
    await storage.create_thread(new_id(), {"assistant_id": other}, "raise")
    run, _ = await queue(storage, tid, assistant_id=mine)
    await queue(storage, new_id(), assistant_id=other)
    assert [r["run_id"] for r in await storage.assistant_inflight_runs(mine)] == [run["run_id"]]
    assert await storage.assistant_thread_ids(mine) == [tid]
    [claimed] = [r for r in await storage.claim_runs(10) if r["run_id"] == run["run_id"]]
    assert [r["run_id"] for r in await storage.assistant_inflight_runs(mine)] == [run["run_id"]]
    await storage.finish_run(
        claimed["run_id"],
        tid,
        claimed["attempt"],
        "success",
        thread_status="idle",
        values=None,
        interrupts=None,
        error=None,
    )
    assert await storage.assistant_inflight_runs(mine) == []


async def _several(storage: Storage) -> list[Row]:
    made = []
    for graph_id, name in [
        ("g1", "Alpha"),
        ("g2", "beta"),
        ("g1", "100% real"),
        ("g3", "a_b"),
        ("g2", "ALPHABET"),
        ("g1", "ab"),
        ("g2", "ünï Name"),
    ]:
        made.append(await storage.create_assistant(_assistant(graph_id, name), "raise"))
    return made


async def _search(storage: Storage, **options: Any) -> tuple[list[str], int]:
    args: dict[str, Any] = dict(
        graph_ids=["g1", "g2", "g3"],
        graph_id=None,
        metadata=None,
        name=None,
        limit=100,
        offset=0,
        sort_by="created_at",
        sort_order="asc",
    )
    rows, total = await storage.search_assistants(**{**args, **options})
    count = await storage.count_assistants(
        **{
            k: v
            for k, v in {**args, **options}.items()
            if k in ("graph_ids", "graph_id", "metadata", "name")
        }
    )
    assert count == total
    return [r["name"] for r in rows], total


async def test_assistants_are_searched_by_graph_and_name(storage: Storage) -> None:
    await _several(storage)
    assert await _search(storage, graph_ids=["g2"]) == (["beta", "ALPHABET", "ünï Name"], 3)
    assert await _search(storage, graph_ids=[]) == ([], 0)  # none of them served
    assert await _search(storage, graph_ids=["g1", "g2"], graph_id="g3") == ([], 0)
    assert await _search(storage, graph_id="g1") == (["Alpha", "100% real", "ab"], 3)
    # A name matches as a substring, whatever the (ASCII) case; % and _ are no wildcards.
    assert await _search(storage, name="alpha") == (["Alpha", "ALPHABET"], 2)
    assert await _search(storage, name="AB") == (["ALPHABET", "ab"], 2)
    assert await _search(storage, name="%") == (["100% real"], 1)
    assert await _search(storage, name="_") == (["a_b"], 1)
    assert await _search(storage, name="a%b") == ([], 0)
    assert await _search(storage, name="ünï") == (["ünï Name"], 1)
    assert await _search(storage, name="'") == ([], 0)
    assert await _search(storage, graph_id="g2", name="alpha") == (["ALPHABET"], 1)


@pytest.mark.parametrize(
    "sort_by", ["assistant_id", "created_at", "updated_at", "name", "graph_id"]
)
async def test_assistants_are_sorted_and_paged(storage: Storage, sort_by: str) -> None:
    # Lower-case ASCII names: the same order under any collation.
    made = []
    for graph_id, name in [
        ("g2", "delta"),
        ("g1", "alpha"),
        ("g3", "echo"),
        ("g1", "charlie"),
        ("g2", "bravo"),
        ("g1", "foxtrot"),
        ("g3", "golf"),
    ]:
        made.append(await storage.create_assistant(_assistant(graph_id, name), "raise"))
    await storage.update_assistant(made[0]["assistant_id"], description="later")
    orders = {}
    for order in ("asc", "desc"):
        rows, total = await storage.search_assistants(
            graph_ids=["g1", "g2", "g3"],
            graph_id=None,
            metadata=None,
            name=None,
            limit=100,
            offset=0,
            sort_by=sort_by,
            sort_order=order,
        )
        assert total == len(made)
        keys = [
            datetime.fromisoformat(r[sort_by]) if sort_by.endswith("_at") else r[sort_by]
            for r in rows
        ]
        assert keys == sorted(keys, reverse=order == "desc")
        paged = []
        for offset in range(0, len(made), 2):
            page, _ = await storage.search_assistants(
                graph_ids=["g1", "g2", "g3"],
                graph_id=None,
                metadata=None,
                name=None,
                limit=2,
                offset=offset,
                sort_by=sort_by,
                sort_order=order,
            )
            paged += [r["assistant_id"] for r in page]
        assert paged == [r["assistant_id"] for r in rows]
        orders[order] = paged
    if sort_by != "graph_id":
        assert orders["desc"] == orders["asc"][::-1]
