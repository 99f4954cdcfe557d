"""The scheduler's exactly-once claim, with several schedulers on the same storage (as several
processes will have on one database), and the crons table's cascades."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agentd.config import load_settings
from agentd.crons.scheduler import Scheduler
from agentd.graphs import GraphRegistry
from agentd.schemas import CronCreate, ThreadCronCreate
from agentd.services import Services, open_services
from tests.server import TEST_CONFIG


@pytest.fixture
async def svc(tmp_path: Path) -> AsyncIterator[Services]:
    settings = load_settings(TEST_CONFIG, data_dir=tmp_path / "data")
    graphs = GraphRegistry(settings.graphs, settings.base_dir, settings.dependencies)
    graphs.load()
    async with open_services(settings, graphs) as services:
        yield services


async def _make_due(svc: Services, cron_id: str, when: datetime) -> str:
    """Move a cron's next firing to ``when`` (in the past: it is due now)."""
    due = when.isoformat()
    await svc.storage.update_cron(cron_id, lambda _: {"next_run_date": due})
    return due


async def test_concurrent_claims_of_one_tick_have_one_winner(svc: Services) -> None:
    thread = await svc.storage.create_thread("0190b2b4-0000-7000-8000-000000000001", {}, "raise")
    cron = await svc.crons.create(
        thread["thread_id"], ThreadCronCreate(assistant_id="echo", schedule="0 0 1 1 *")
    )
    await svc.scheduler.stop()  # this test claims by hand
    due = await _make_due(svc, cron["cron_id"], datetime.now(UTC) - timedelta(hours=1))
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    results = await asyncio.gather(
        *(svc.storage.claim_cron(cron["cron_id"], due, later) for _ in range(20))
    )
    assert sum(r is not None for r in results) == 1
    assert (await svc.storage.get_cron(cron["cron_id"]))["next_run_date"] == later
    # A tick that is no longer the cron's next one cannot be claimed again.
    assert await svc.storage.claim_cron(cron["cron_id"], due, later) is None


async def test_many_schedulers_fire_each_tick_once(svc: Services) -> None:
    thread = await svc.storage.create_thread("0190b2b4-0000-7000-8000-000000000002", {}, "raise")
    tid = thread["thread_id"]
    await svc.scheduler.stop()
    schedulers = [Scheduler(svc.storage, svc.runs) for _ in range(4)]
    # Four schedulers on one due tick, all ticking at the same moment.
    cron = await svc.crons.create(
        tid, ThreadCronCreate(assistant_id="echo", schedule="0 0 1 1 *", input={"v": 1})
    )
    await _make_due(svc, cron["cron_id"], datetime.now(UTC) - timedelta(minutes=5))
    fired = await asyncio.gather(*(s.tick() for s in schedulers))
    assert sorted(fired) == [0, 0, 0, 1]
    assert len(await svc.storage.list_runs(tid, limit=100, offset=0, status=None)) == 1
    await svc.storage.delete_cron(cron["cron_id"])
    # Then every second for a while, each scheduler's loop sleeping until the due time.
    for s in schedulers:
        await s.start()
    try:
        every = await svc.crons.create(
            tid, ThreadCronCreate(assistant_id="echo", schedule="* * * * * *", input={"v": 2})
        )
        for s in schedulers:
            s.wake()
        await asyncio.sleep(3.5)
        await svc.storage.delete_cron(every["cron_id"])
    finally:
        for s in schedulers:
            await s.stop()
    runs = await svc.storage.list_runs(tid, limit=100, offset=0, status=None)
    by_cron = [r for r in runs if r["metadata"].get("cron_id") == every["cron_id"]]
    seconds = [r["created_at"][:19] for r in by_cron]
    assert len(by_cron) >= 2
    assert len(set(seconds)) == len(seconds), seconds  # no tick fired twice


async def test_a_finished_cron_closes_without_firing(svc: Services) -> None:
    cron = await svc.crons.create(
        None,
        CronCreate(
            assistant_id="echo",
            schedule="0 * * * *",
            end_time=datetime.now(UTC) + timedelta(days=1),
        ),
    )
    await svc.scheduler.stop()
    # Its tick was due before end_time, but no scheduler was up until after end_time.
    long_ago = datetime.now(UTC) - timedelta(days=3)
    await _make_due(svc, cron["cron_id"], long_ago)
    await svc.storage.update_cron(
        cron["cron_id"], lambda _: {"end_time": (long_ago + timedelta(hours=1)).isoformat()}
    )
    assert await svc.scheduler.tick() == 0
    assert (await svc.storage.get_cron(cron["cron_id"]))["next_run_date"] is None
    assert await svc.storage.due_crons(datetime.now(UTC).isoformat()) == []


async def test_deleting_an_assistant_deletes_its_crons(tmp_path: Path) -> None:
    settings = load_settings(TEST_CONFIG, data_dir=tmp_path / "data")
    graphs = GraphRegistry(settings.graphs, settings.base_dir, settings.dependencies)
    graphs.load()
    async with open_services(settings, graphs) as svc:
        echo = await svc.crons.create(None, CronCreate(assistant_id="echo", schedule="@daily"))
        steps = await svc.crons.create(None, CronCreate(assistant_id="steps", schedule="@daily"))
    with sqlite3.connect(settings.sqlite_path) as db:
        db.execute("PRAGMA foreign_keys = ON")  # as agentd's own connection has it
        db.execute("DELETE FROM assistants WHERE assistant_id = ?", (echo["assistant_id"],))
        left = [r[0] for r in db.execute("SELECT cron_id FROM crons")]
    assert left == [steps["cron_id"]]
