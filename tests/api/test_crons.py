"""Crons through the official Python client: CRUD, search, count, bad input, and firings
(every-second schedules use croniter's optional sixth field, seconds)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import httpx
import pytest
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient
from langgraph_sdk.errors import BadRequestError, NotFoundError, UnprocessableEntityError

from tests import db
from tests.server import Server

ECHO_ID = "046b5dc7-2108-582c-9c6c-31d556d138f0"  # uuid5 of the "echo" graph
YEARLY = "0 0 1 1 *"  # never fires during a test
EVERY_SECOND = "* * * * * *"
T = TypeVar("T")


@pytest.fixture
async def http(url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=url) as c:
        yield c


async def _until(
    probe: Callable[[], Awaitable[T]], ok: Callable[[T], bool], within: float = 15
) -> T:
    """Poll ``probe`` until ``ok`` holds for its value (the last value is returned)."""
    deadline = time.monotonic() + within
    while True:
        value = await probe()
        if ok(value) or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.1)


def _next_new_year(tz: str) -> datetime:
    now = datetime.now(ZoneInfo(tz))
    return datetime(now.year + 1, 1, 1, tzinfo=ZoneInfo(tz)).astimezone(UTC)


# ------------------------------------------------------------------ create, get, update, delete


async def test_thread_cron_crud(client: LangGraphClient, http: httpx.AsyncClient) -> None:
    tid = (await client.threads.create())["thread_id"]
    cron = await client.crons.create_for_thread(
        tid, "echo", schedule=YEARLY, input={"value": 1}, metadata={"owner": "ann"},
        timezone="America/New_York", multitask_strategy="enqueue",
    )  # fmt: skip
    assert set(cron) == {
        "cron_id", "assistant_id", "thread_id", "on_run_completed", "end_time", "schedule",
        "timezone", "created_at", "updated_at", "payload", "user_id", "next_run_date",
        "metadata", "enabled",
    }  # fmt: skip
    assert uuid.UUID(cron["cron_id"]).version == 7
    assert cron["assistant_id"] == ECHO_ID and cron["thread_id"] == tid
    assert cron["on_run_completed"] is None and cron["end_time"] is None
    assert cron["enabled"] is True and cron["metadata"] == {"owner": "ann"}
    assert cron["timezone"] == "America/New_York" and cron["schedule"] == YEARLY
    # Midnight on New Year's Day in New York, stored in UTC.
    assert datetime.fromisoformat(cron["next_run_date"]) == _next_new_year("America/New_York")
    assert cron["next_run_date"].endswith("+00:00")
    assert cron["payload"]["input"] == {"value": 1}
    assert cron["payload"]["assistant_id"] == ECHO_ID
    assert cron["payload"]["config"]["configurable"]["cron_id"] == cron["cron_id"]

    got = (await http.get(f"/runs/crons/{cron['cron_id']}")).json()
    assert got == cron

    end = datetime.now(UTC) + timedelta(days=30)
    updated = await client.crons.update(
        cron["cron_id"], schedule="30 8 * * *", timezone="Asia/Tokyo", end_time=end,
        metadata={"team": "x"}, input={"value": 2}, enabled=False,
    )  # fmt: skip
    assert updated["schedule"] == "30 8 * * *" and updated["timezone"] == "Asia/Tokyo"
    assert updated["metadata"] == {"owner": "ann", "team": "x"}
    assert updated["enabled"] is False and updated["payload"]["input"] == {"value": 2}
    assert datetime.fromisoformat(updated["end_time"]) == end
    tokyo = datetime.fromisoformat(updated["next_run_date"]).astimezone(ZoneInfo("Asia/Tokyo"))
    assert (tokyo.hour, tokyo.minute) == (8, 30)
    assert updated["updated_at"] > cron["updated_at"]
    assert updated["created_at"] == cron["created_at"]
    assert updated["payload"]["config"]["configurable"]["cron_id"] == cron["cron_id"]

    cleared = await client.crons.update(cron["cron_id"], end_time=None)
    assert cleared["end_time"] is None and cleared["schedule"] == "30 8 * * *"
    kept = await client.crons.update(cron["cron_id"], metadata={"n": 1})
    assert kept["end_time"] is None and kept["next_run_date"] == cleared["next_run_date"]

    await client.crons.delete(cron["cron_id"])
    assert (await http.get(f"/runs/crons/{cron['cron_id']}")).status_code == 404
    with pytest.raises(NotFoundError):
        await client.crons.delete(cron["cron_id"])
    with pytest.raises(NotFoundError):
        await client.crons.update(cron["cron_id"], enabled=True)


async def test_stateless_cron(client: LangGraphClient) -> None:
    cron = await client.crons.create("echo", schedule=YEARLY, input={"value": 1})
    try:
        assert cron["thread_id"] is None and cron["on_run_completed"] == "delete"
        assert cron["timezone"] is None
        assert datetime.fromisoformat(cron["next_run_date"]) == _next_new_year("UTC")
        kept = await client.crons.update(cron["cron_id"], on_run_completed="keep")
        assert kept["on_run_completed"] == "keep"
    finally:
        await client.crons.delete(cron["cron_id"])
    keep = await client.crons.create(
        ECHO_ID, schedule="@daily", on_run_completed="keep", timezone=ZoneInfo("Europe/Paris")
    )
    await client.crons.delete(keep["cron_id"])
    assert keep["on_run_completed"] == "keep" and keep["timezone"] == "Europe/Paris"
    paris = datetime.fromisoformat(keep["next_run_date"]).astimezone(ZoneInfo("Europe/Paris"))
    assert (paris.hour, paris.minute, paris.second) == (0, 0, 0)


async def test_search_and_count(client: LangGraphClient, http: httpx.AsyncClient) -> None:
    tag = str(uuid.uuid4())
    tid = (await client.threads.create())["thread_id"]
    made = [
        await client.crons.create_for_thread(
            tid, "echo", schedule=f"0 {i} * * *", metadata={"tag": tag, "i": i}
        )
        for i in range(3)
    ]
    made.append(
        await client.crons.create(
            "steps", schedule=YEARLY, metadata={"tag": tag, "i": 3}, enabled=False
        )
    )
    try:
        found = await client.crons.search(metadata={"tag": tag})
        assert [c["metadata"]["i"] for c in found] == [3, 2, 1, 0]  # created_at desc
        by_thread = await client.crons.search(thread_id=tid)
        assert {c["cron_id"] for c in by_thread} == {c["cron_id"] for c in made[:3]}
        by_graph = await client.crons.search(assistant_id="steps", metadata={"tag": tag})
        assert [c["metadata"]["i"] for c in by_graph] == [3]
        by_id = await client.crons.search(assistant_id=ECHO_ID, metadata={"tag": tag})
        assert len(by_id) == 3
        disabled = await client.crons.search(enabled=False, metadata={"tag": tag})
        assert [c["metadata"]["i"] for c in disabled] == [3]
        enabled = await client.crons.search(enabled=True, metadata={"tag": tag})
        assert len(enabled) == 3
        paged = await client.crons.search(
            metadata={"tag": tag}, sort_by="created_at", sort_order="asc", limit=2, offset=1
        )
        assert [c["metadata"]["i"] for c in paged] == [1, 2]
        by_next = await client.crons.search(thread_id=tid, sort_by="next_run_date",
                                            sort_order="asc", limit=3)  # fmt: skip
        dates = [c["next_run_date"] for c in by_next]
        assert dates == sorted(dates)
        selected = await client.crons.search(metadata={"tag": tag}, select=["cron_id"], limit=1)
        assert list(selected[0]) == ["cron_id"]
        assert await client.crons.search(thread_id=str(uuid.uuid4())) == []

        assert await client.crons.count(metadata={"tag": tag}) == 4
        assert await client.crons.count(thread_id=tid) == 3
        assert await client.crons.count(assistant_id="steps", metadata={"tag": tag}) == 1

        r = await http.post("/runs/crons/search", json={"metadata": {"tag": tag}, "limit": 3})
        assert r.headers["x-pagination-total"] == "4" and r.headers["x-pagination-next"] == "3"
        r = await http.post("/runs/crons/search",
                            json={"metadata": {"tag": tag}, "limit": 3, "offset": 3})  # fmt: skip
        assert r.headers["x-pagination-total"] == "4" and "x-pagination-next" not in r.headers
        assert len(r.json()) == 1
    finally:
        for c in made:
            await client.crons.delete(c["cron_id"])
    assert await client.crons.count(metadata={"tag": tag}) == 0


async def test_deleting_a_thread_deletes_its_crons(
    client: LangGraphClient, http: httpx.AsyncClient
) -> None:
    tid = (await client.threads.create())["thread_id"]
    cron = await client.crons.create_for_thread(tid, "echo", schedule=YEARLY)
    await client.threads.delete(tid)
    assert (await http.get(f"/runs/crons/{cron['cron_id']}")).status_code == 404
    assert await client.crons.count(thread_id=tid) == 0


# ------------------------------------------------------------------ bad input


def _bad_bodies(tid: str) -> list[tuple[str, str, dict[str, Any], int, str]]:
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    base = {"assistant_id": "echo", "schedule": YEARLY}
    thread = f"/threads/{tid}/runs/crons"
    return [
        ("POST", "/runs/crons", {**base, "schedule": "bad cron"}, 422, "Invalid cron schedule"),
        ("POST", thread, {**base, "schedule": "61 * * * *"}, 422, "Invalid cron schedule"),
        ("POST", "/runs/crons", {**base, "schedule": "0 0 30 2 *"}, 422, "never fires"),
        ("POST", "/runs/crons", {**base, "timezone": "Mars/Olympus"}, 422, "Invalid timezone"),
        ("POST", thread, {**base, "timezone": "../../etc/passwd"}, 422, "Invalid timezone"),
        ("POST", "/runs/crons", {**base, "end_time": past}, 422, "in the past"),
        ("POST", "/runs/crons", {**base, "end_time": "0001-01-01T00:00:00+05:00"}, 422,
         "out of range"),
        ("POST", "/runs/crons", {**base, "assistant_id": str(uuid.uuid4())}, 404, "not found"),
        ("POST", "/runs/crons", {**base, "assistant_id": "nope"}, 422, "Invalid assistant"),
        ("POST", f"/threads/{uuid.uuid4()}/runs/crons", base, 404, "not found"),
        ("POST", "/threads/not-a-uuid/runs/crons", base, 422, "Invalid thread ID"),
        ("POST", "/runs/crons", {"assistant_id": "echo"}, 422, "schedule"),
        ("POST", "/runs/crons", {**base, "on_run_completed": "archive"}, 422, "on_run_completed"),
        ("POST", "/runs/crons", {**base, "webhook": "http://127.0.0.1/hook"}, 422, "loopback"),
        ("POST", "/runs/crons", {**base, "stream_mode": "telepathy"}, 422, "stream_mode"),
        ("POST", "/runs/crons", {**base, "config": {"configurable": {"a": 1}},
                                 "context": {"b": 2}}, 400, "both configurable and context"),
        ("POST", "/runs/crons/search", {"sort_by": "schedule"}, 422, "sort_by"),
        ("POST", "/runs/crons/search", {"limit": -1}, 422, "limit"),
        ("POST", "/runs/crons/search", {"limit": 1001}, 422, "limit"),
        ("POST", "/runs/crons/search", {"offset": -1}, 422, "offset"),
        ("POST", "/runs/crons/search", {"select": ["bogus"]}, 422, "select"),
        ("POST", "/runs/crons/search", {"thread_id": "nope"}, 422, "Invalid thread ID"),
        ("POST", "/runs/crons/count", {"assistant_id": "nope"}, 422, "Invalid assistant ID"),
        ("GET", "/runs/crons/not-a-uuid", {}, 422, "Invalid cron ID"),
        ("GET", f"/runs/crons/{uuid.uuid4()}", {}, 404, "not found"),
        ("PATCH", f"/runs/crons/{uuid.uuid4()}", {"enabled": False}, 404, "not found"),
        ("PATCH", "/runs/crons/not-a-uuid", {"enabled": False}, 422, "Invalid cron ID"),
        ("DELETE", f"/runs/crons/{uuid.uuid4()}", {}, 404, "not found"),
        ("DELETE", "/runs/crons/not-a-uuid", {}, 422, "Invalid cron ID"),
    ]  # fmt: skip


async def test_bad_input_is_refused_and_nothing_stored(
    client: LangGraphClient, http: httpx.AsyncClient
) -> None:
    tid = (await client.threads.create())["thread_id"]
    before = await client.crons.count()
    for method, path, body, status, detail in _bad_bodies(tid):
        kwargs: dict[str, Any] = {"json": body} if method in ("POST", "PATCH") else {}
        r = await http.request(method, path, **kwargs)
        assert r.status_code == status, (method, path, body, r.text)
        assert detail.lower() in str(r.json()["detail"]).lower(), (path, body, r.text)
    assert await client.crons.count() == before


async def test_bad_updates_change_nothing(client: LangGraphClient, http: httpx.AsyncClient) -> None:
    tid = (await client.threads.create())["thread_id"]
    cron = await client.crons.create_for_thread(tid, "echo", schedule=YEARLY, metadata={"a": 1})
    path = f"/runs/crons/{cron['cron_id']}"
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    try:
        for body, status, detail in [
            ({}, 400, "Request body cannot be empty"),
            ({"schedule": "every day", "metadata": {"a": 2}}, 422, "Invalid cron schedule"),
            ({"timezone": "Nowhere/Else", "metadata": {"a": 2}}, 422, "Invalid timezone"),
            ({"end_time": past}, 422, "in the past"),
            ({"on_run_completed": "keep"}, 422, "stateless crons only"),
            ({"webhook": "http://10.0.0.1/hook"}, 422, "private"),
            ({"context": {"b": 2}, "config": {"configurable": {"c": 1}}}, 400, "both"),
            ({"enabled": "sometimes"}, 422, "enabled"),
        ]:
            r = await http.patch(path, json=body)
            assert r.status_code == status, (body, r.text)
            assert detail.lower() in str(r.json()["detail"]).lower(), (body, r.text)
        with pytest.raises(BadRequestError):
            await client.crons.update(cron["cron_id"])
        with pytest.raises(UnprocessableEntityError):
            await client.crons.update(cron["cron_id"], schedule="nope")
        assert (await http.get(path)).json() == cron
    finally:
        await client.crons.delete(cron["cron_id"])


# ------------------------------------------------------------------ firing


async def test_thread_cron_fires_runs_once_per_tick(client: LangGraphClient) -> None:
    tid = (await client.threads.create())["thread_id"]
    cron = await client.crons.create_for_thread(
        tid, "echo", schedule=EVERY_SECOND, input={"value": "tick"}, metadata={"from": "cron"}
    )
    try:
        runs = await _until(lambda: client.runs.list(tid, limit=100), lambda rs: len(rs) >= 3)
    finally:
        await client.crons.delete(cron["cron_id"])
    assert len(runs) >= 3
    for run in runs:
        assert run["assistant_id"] == ECHO_ID
        assert run["metadata"]["cron_id"] == cron["cron_id"]
        assert run["metadata"]["from"] == "cron"
        assert run["kwargs"]["config"]["configurable"]["cron_id"] == cron["cron_id"]
    # One run per second: no tick fired twice.
    seconds = [r["created_at"][:19] for r in runs]
    assert len(set(seconds)) == len(seconds), seconds
    await client.runs.join(tid, runs[0]["run_id"])
    assert (await client.threads.get_state(tid))["values"]["value"] == "tick"
    # Deleted: it fires no more.
    settled = len(await client.runs.list(tid, limit=100))
    await asyncio.sleep(1.5)
    assert len(await client.runs.list(tid, limit=100)) == settled


async def test_stateless_cron_keep_leaves_a_thread_per_firing(client: LangGraphClient) -> None:
    cron = await client.crons.create(
        "echo", schedule=EVERY_SECOND, input={"value": "kept"}, on_run_completed="keep"
    )
    mine = {"cron_id": cron["cron_id"]}
    try:
        threads = await _until(
            lambda: client.threads.search(metadata=mine, limit=100), lambda ts: len(ts) >= 2
        )
    finally:
        await client.crons.delete(cron["cron_id"])
    assert len(threads) >= 2 and len({t["thread_id"] for t in threads}) == len(threads)
    done = await _until(
        lambda: client.threads.search(metadata=mine, status="idle", limit=100),
        lambda ts: len(ts) >= 2,
    )
    assert all(t["values"]["value"] == "kept" for t in done)


async def test_stateless_cron_delete_removes_each_thread(
    client: LangGraphClient, tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    cron = await client.crons.create("steps", schedule=EVERY_SECOND, input={"marker": str(marker)})
    mine = {"cron_id": cron["cron_id"]}

    async def finished() -> int:
        return marker.read_text().count("c:end") if marker.exists() else 0

    try:
        count = await _until(finished, lambda n: n >= 2)
    finally:
        await client.crons.delete(cron["cron_id"])
    assert count >= 2  # it ran...
    left = await _until(
        lambda: client.threads.search(metadata=mine, limit=100), lambda ts: ts == []
    )
    assert left == []  # ...and each run's thread went with it


async def test_disabled_cron_does_not_fire_until_enabled(client: LangGraphClient) -> None:
    tid = (await client.threads.create())["thread_id"]
    cron = await client.crons.create_for_thread(
        tid, "echo", schedule=EVERY_SECOND, input={"value": 1}, enabled=False
    )
    try:
        await asyncio.sleep(2.5)
        assert await client.runs.list(tid) == []
        await client.crons.update(cron["cron_id"], enabled=True)
        runs = await _until(lambda: client.runs.list(tid), lambda rs: len(rs) >= 1)
        assert len(runs) >= 1
        await client.crons.update(cron["cron_id"], enabled=False)
        await asyncio.sleep(0.3)  # a firing claimed just before the update may still land
        settled = len(await client.runs.list(tid, limit=100))
        await asyncio.sleep(2)
        assert len(await client.runs.list(tid, limit=100)) == settled
    finally:
        await client.crons.delete(cron["cron_id"])


async def test_end_time_stops_firing(client: LangGraphClient, http: httpx.AsyncClient) -> None:
    tid = (await client.threads.create())["thread_id"]
    # Half a second past a whole second, so every tick before it is clearly before it.
    end = datetime.now(UTC).replace(microsecond=500_000) + timedelta(seconds=3)
    cron = await client.crons.create_for_thread(
        tid, "echo", schedule=EVERY_SECOND, input={"value": 1}, end_time=end
    )
    try:
        await asyncio.sleep(max(0.0, (end - datetime.now(UTC)).total_seconds()) + 1.5)
        runs = await client.runs.list(tid, limit=100)
        # One run per whole second between the cron's creation and end_time at most (a tick
        # the scheduler reaches late collapses into the next one, never adds a run).
        created = datetime.fromisoformat(cron["created_at"])
        ticks = int(end.timestamp()) - int(created.timestamp())
        assert 1 <= len(runs) <= ticks
        fired = [int(datetime.fromisoformat(r["created_at"]).timestamp()) for r in runs]
        assert len(set(fired)) == len(fired), "two runs for one tick"
        assert all(datetime.fromisoformat(r["created_at"]) < end for r in runs)
        after = (await http.get(f"/runs/crons/{cron['cron_id']}")).json()
        assert after["next_run_date"] is None  # no firing left before end_time
        await asyncio.sleep(1.2)
        assert len(await client.runs.list(tid, limit=100)) == len(runs)
    finally:
        await client.crons.delete(cron["cron_id"])


async def test_missed_ticks_fire_once_when_the_server_is_back(tmp_path: Path) -> None:
    server = Server(tmp_path / "data").start()
    try:
        client = get_client(url=server.url, api_key=None)
        tid = (await client.threads.create())["thread_id"]
        cron = await client.crons.create_for_thread(tid, "echo", schedule="0 * * * *",
                                                    input={"value": 1})  # fmt: skip
        await client.http.client.aclose()
        server.stop()
        # Down for three hours: three hourly ticks were missed.
        missed = (datetime.now(UTC) - timedelta(hours=3)).replace(minute=0, second=0,
                                                                  microsecond=0)  # fmt: skip
        changed = db.execute(server, "UPDATE crons SET next_run_date = ? WHERE cron_id = ?",
                             (missed.isoformat(), cron["cron_id"]))  # fmt: skip
        assert changed == 1
        server.start()
        client = get_client(url=server.url, api_key=None)
        runs = await _until(lambda: client.runs.list(tid), lambda rs: len(rs) >= 1)
        await asyncio.sleep(1)
        runs = await client.runs.list(tid)
        assert len(runs) == 1  # the missed window fires once, not three times
        got = await client.http.get(f"/runs/crons/{cron['cron_id']}")
        next_run = datetime.fromisoformat(got["next_run_date"])
        now = datetime.now(UTC)
        assert now < next_run <= now + timedelta(hours=1) and next_run.minute == 0
        await client.http.client.aclose()
    finally:
        server.stop()
