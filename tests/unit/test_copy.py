"""``agentd copy``: a SQLite deployment populated through the official SDK against a real server,
copied by the real command into a real PostgreSQL database, then served from there and checked
through the SDK; the command's refusals; and what the copy must keep that the API cannot show
(task paths and indexes of pending writes, every column of every table)."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.store.sqlite.base import VECTOR_MIGRATIONS
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient

from agentd.storage.copy import NOT_COPIED, TABLES
from agentd.storage.postgres import PostgresStorage
from agentd.storage.sqlite import SqliteStorage
from tests import pg
from tests.receiver import Receiver
from tests.server import AGENTD, ROOT, Server, free_port

GRAPHS = ROOT / "tests" / "graphs"
# A node that waits until a file exists: a run in it is `running` for as long as a test likes.
GATE = """
import asyncio, operator, os
from typing import Annotated, TypedDict
from langgraph.graph import START, StateGraph

class GateState(TypedDict, total=False):
    gate: str
    passed: Annotated[list[str], operator.add]

async def _wait(state: GateState) -> GateState:
    while not os.path.exists(state["gate"]):
        await asyncio.sleep(0.05)
    return {"passed": ["gate"]}

gate = StateGraph(GateState).add_node("wait", _wait).add_edge(START, "wait").compile()
"""
LANGGRAPH_TABLES = ("checkpoints", "checkpoint_blobs", "checkpoint_writes", "store")


def write_config(directory: Path) -> Path:
    """The graphs the deployment runs, and webhooks to loopback allowed (the receiver)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "gate.py").write_text(GATE)
    basic = GRAPHS / "basic.py"
    config = {
        "dependencies": [str(GRAPHS), str(directory)],
        "graphs": {
            **{name: f"{basic}:{name}" for name in ("echo", "steps", "ask", "review")},
            "nested_ask": f"{GRAPHS / 'memory.py'}:nested",
            "gate": f"{directory / 'gate.py'}:gate",
        },
        "webhooks": {"url": {"disable_loopback": False}},
    }
    path = directory / "langgraph.json"
    path.write_text(json.dumps(config))
    return path


def agentd_copy(source: Path | str, target: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AGENTD, "copy", "--from", str(source), "--to", target],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip


def copied(output: str) -> dict[str, tuple[int, int, int]]:
    """``name: read, copied, already there`` of each table (and the store) in the output."""
    found = re.findall(r"^([\w ]+): (\d+) \w+, (\d+) copied, (\d+) already there", output, re.M)
    return {name: (int(a), int(b), int(c)) for name, a, b, c in found}


def pg_counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return {
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]
            for table in [*(t.name for t in TABLES), *LANGGRAPH_TABLES]
        }


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    with Receiver() as r:
        yield r


async def wait_for(check: Any, seconds: float = 15) -> Any:
    deadline = time.monotonic() + seconds
    while not (result := await check()):
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)
    return result


async def snapshot(client: LangGraphClient, threads: list[str]) -> dict[str, Any]:
    """What the API shows of each thread: the thread, its state (with subgraphs) and its whole
    history, and its runs."""
    seen: dict[str, Any] = {}
    for tid in threads:
        thread = await client.threads.get(tid)
        seen[tid] = {
            "thread": {k: thread[k] for k in ("thread_id", "metadata", "status", "values",
                                              "interrupts", "created_at", "config")},
            "state": await client.threads.get_state(tid, subgraphs=True),
            "history": await client.threads.get_history(tid, limit=1000),
            "runs": await client.runs.list(tid, limit=100),
        }  # fmt: skip
    return seen


async def test_copy_a_deployment_then_serve_it_from_postgresql(
    tmp_path: Path, receiver: Receiver
) -> None:
    config = write_config(tmp_path / "app")
    gate = tmp_path / "gate-open"
    sqlite_dir = tmp_path / "sqlite"
    url = pg.create_database("copy")
    hook_path = "/hang/1000/hook"  # every attempt hangs: the delivery stays in the outbox

    # ---- a SQLite deployment, populated through the SDK
    source = Server(sqlite_dir, config=config).start()
    client = get_client(url=source.url, api_key=None)
    assistant = await client.assistants.create("echo", name="first", config={"tags": ["a"]})
    aid = assistant["assistant_id"]
    await client.assistants.update(aid, name="second", metadata={"v": 2})
    steps = []
    for i in range(2):
        tid = (await client.threads.create(metadata={"kind": "steps", "i": i}))["thread_id"]
        await client.runs.wait(tid, "steps", input={"done": ["start"]})
        await client.runs.wait(tid, "steps", input={"done": ["again"]})
        steps.append(tid)
    ask = (await client.threads.create())["thread_id"]
    await client.runs.wait(ask, "ask", input={"question": "proceed?"})
    review = (await client.threads.create())["thread_id"]
    await client.runs.wait(review, "review", input={"draft": "x"})  # two interrupts, one step
    nested = (await client.threads.create())["thread_id"]
    await client.runs.wait(nested, "nested_ask", input={"topic": "owls"})  # in a subgraph
    with_ttl = (await client.threads.create(ttl={"strategy": "delete", "ttl": 60}))["thread_id"]
    await client.runs.wait(with_ttl, "echo", input={"value": "ttl"})
    later = (await client.threads.create())["thread_id"]
    delayed = await client.runs.create(later, "echo", input={"value": 1}, after_seconds=3600)
    cron = await client.crons.create("echo", schedule="0 0 1 1 *", input={"value": "cron"})
    await client.store.put_item(["copy", "items"], "plain", {"v": 1})
    await client.store.put_item(["copy", "items"], "expiring", {"v": 2}, ttl=60)
    hooked = (await client.threads.create())["thread_id"]
    hook_run = await client.runs.create(
        hooked, "echo", input={"value": "hook"}, webhook=receiver.url(hook_path)
    )
    await asyncio.to_thread(receiver.wait, hook_path, 1)
    # A run in flight (its node waits for the gate file) and one queued behind it.
    gated = (await client.threads.create())["thread_id"]
    running = await client.runs.create(gated, "gate", input={"gate": str(gate)})
    queued = await client.runs.create(
        gated, "gate", input={"gate": str(gate)}, multitask_strategy="enqueue"
    )

    async def is_running() -> bool:
        return (await client.runs.get(gated, running["run_id"]))["status"] == "running"

    await wait_for(is_running)
    threads = [*steps, ask, review, nested, with_ttl, later, hooked]
    before = await snapshot(client, threads)
    all_threads = {t["thread_id"] for t in await client.threads.search(limit=100)}
    versions = await client.assistants.get_versions(aid)
    assert len(versions) == 2
    crons = await client.crons.search()
    await client.http.client.aclose()
    source.kill()  # as a crash leaves it: a run `running`, a webhook attempt under way

    # ---- the copy
    started = time.monotonic()
    done = agentd_copy(sqlite_dir, url)
    took = time.monotonic() - started
    assert done.returncode == 0, done.stdout + done.stderr
    counts = copied(done.stdout)
    assert counts["threads"] == (len(all_threads), len(all_threads), 0), done.stdout
    assert counts["runs"][1] == counts["runs"][0] >= 12, done.stdout
    assert counts["crons"] == (1, 1, 0) and counts["webhook_outbox"] == (1, 1, 0), done.stdout
    assert counts["thread_ttl"] == (1, 1, 0) and counts["store"] == (2, 2, 0), done.stdout
    assert "not copied: resumable-stream events" in done.stdout
    assert "verify checkpoints: source" in done.stdout and "MISSING" not in done.stdout
    print(f"copy took {took:.1f}s\n{done.stdout}")

    # ---- served from PostgreSQL
    gate.touch()
    target = Server(tmp_path / "pg", config=config, database_url=url).start()
    try:
        client = get_client(url=target.url, api_key=None)
        assert {t["thread_id"] for t in await client.threads.search(limit=100)} == all_threads
        after = await snapshot(client, threads)
        for tid in threads:
            assert after[tid] == before[tid], tid
        # The interrupted threads resume and finish.
        result = await client.runs.wait(ask, "ask", command={"resume": "yes"})
        assert result == {"question": "proceed?", "answer": "yes"}
        state = await client.threads.get_state(review)
        by_check = {i["value"]["check"]: i["id"] for i in state["interrupts"]}
        result = await client.runs.wait(
            review, "review", command={"resume": {by_check["a"]: "yes", by_check["b"]: "fine"}}
        )
        assert result["approved"] == "yes"
        assert sorted(result["notes"]) == ["a", "b:fine", "published"]
        result = await client.runs.wait(nested, "nested_ask", command={"resume": "hoot"})
        assert result == {"topic": "owls", "answer": "hoot"}
        # The delayed run waits on; the run that was in flight runs again, then the queued one.
        assert (await client.runs.get(later, delayed["run_id"]))["status"] == "pending"
        await client.runs.join(gated, running["run_id"])
        await client.runs.join(gated, queued["run_id"])
        for run in (running, queued):
            assert (await client.runs.get(gated, run["run_id"]))["status"] == "success"
        assert (await client.threads.get_state(gated))["values"]["passed"] == ["gate", "gate"]
        # Crons, store items (the TTL kept), assistant versions, the thread's TTL.
        assert await client.crons.search() == crons
        assert cron["cron_id"] in {c["cron_id"] for c in crons}
        item = await client.store.get_item(["copy", "items"], "expiring")
        assert item is not None and item["value"] == {"v": 2}
        item = await client.store.get_item(["copy", "items"], "plain")
        assert item is not None and item["value"] == {"v": 1}
        with psycopg.connect(url) as conn:
            ttl = conn.execute("SELECT key, ttl_minutes FROM store ORDER BY key").fetchall()
        assert ttl == [("expiring", 60), ("plain", None)]
        assert await client.assistants.get_versions(aid) == versions
        async with httpx.AsyncClient(base_url=target.url) as http:
            got = (await http.get(f"/threads/{with_ttl}", params={"include": "ttl"})).json()
        assert got["ttl"]["strategy"] == "delete" and got["ttl"]["ttl_minutes"] == 60
        # The webhook still undelivered is attempted again from PostgreSQL.
        hooks = await asyncio.to_thread(receiver.wait, hook_path, 2)
        assert hooks[1].body["run_id"] == hook_run["run_id"]
        await client.http.client.aclose()
    finally:
        target.stop()

    # ---- again: nothing new, nothing duplicated
    before_counts = pg_counts(url)
    again = agentd_copy(sqlite_dir, url)
    assert again.returncode == 0, again.stdout + again.stderr
    assert {name: (a, b) for name, (a, b, _) in copied(again.stdout).items()} == {
        name: (a, 0) for name, (a, _, _) in counts.items()
    }, again.stdout
    assert pg_counts(url) == before_counts


async def test_copy_refuses_a_served_end_and_an_unreachable_target(tmp_path: Path) -> None:
    url = pg.create_database("copy-refusals")
    served_dir, free_dir, other_dir = tmp_path / "served", tmp_path / "free", tmp_path / "other"
    for directory in (free_dir, other_dir):  # deployments no server holds (one per copy)
        free = SqliteStorage(directory / "agentd.sqlite")
        await free.open()
        await free.close()
    # Started side by side: a server on SQLite, another on the PostgreSQL database.
    servers = [Server(served_dir).spawn(), Server(tmp_path / "pg", database_url=url).spawn()]
    try:
        await asyncio.gather(*(asyncio.to_thread(wait_ready, s) for s in servers))
        cases = [
            (served_dir, url, "is in use by a running agentd"),
            (served_dir / "agentd.sqlite", url, "is in use by a running agentd"),
            (free_dir, url, "is served by a running agentd"),
            (other_dir, f"postgresql://postgres@127.0.0.1:{free_port()}/x", "cannot connect"),
            (tmp_path / "nowhere", url, "no such SQLite file"),
            (free_dir, "mysql://x/y", "--to must be a postgresql:// URL"),
        ]
        done = await asyncio.gather(*(asyncio.to_thread(agentd_copy, s, t) for s, t, _ in cases))
    finally:
        for server in servers:
            server.stop()
    for (_, _, says), result in zip(cases, done, strict=True):
        assert result.returncode == 2, result.stdout + result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("agentd copy: ") and says in lines[0], (
            result.stderr
        )
        assert result.stdout == ""
    assert agentd_copy(served_dir, url).returncode == 0  # both ends free now


def wait_ready(server: Server, timeout: float = 60) -> None:
    """Server.start's wait, for a server spawned beside others."""
    assert server.proc is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.proc.poll() is None, server.log()
        try:
            if httpx.get(f"{server.url}/ok", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"agentd did not answer /ok:\n{server.log()}")


async def test_pending_writes_keep_their_task_path_and_index(tmp_path: Path) -> None:
    """Writes of two tasks, with task paths that sort unlike their ids, a special channel
    (its fixed negative index) beside ordinary ones, in a subgraph namespace too: the target's
    rows are the source's."""
    path = tmp_path / "data" / "agentd.sqlite"
    storage = SqliteStorage(path)
    await storage.open()
    saver = storage.checkpointer
    assert saver is not None
    for ns in ("", "child:1"):
        config: dict[str, Any] = {"configurable": {"thread_id": "t", "checkpoint_ns": ns}}
        for step in range(3):
            checkpoint = empty_checkpoint()
            checkpoint["channel_values"] = {"log": [f"{ns}{step}"], "n": step}
            checkpoint["channel_versions"] = {"log": f"{step + 1:032}.1", "n": f"{step + 1:032}.2"}
            config = await saver.aput(config, checkpoint, {"step": step}, {})
            await saver.aput_writes(config, [("log", "b1"), ("n", 2)], "task-b", "~0:1")
            await saver.aput_writes(config, [("__interrupt__", "stop")], "task-b", "~0:1")
            await saver.aput_writes(config, [("log", "a1")], "task-z", "~0:0")
            await saver.aput_writes(config, [("__error__", "boom")], "task-z", "~0:0")
    await storage.close()
    url = pg.create_database("copy-writes")
    done = agentd_copy(path, url)
    assert done.returncode == 0, done.stdout + done.stderr
    columns = "thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx, channel"
    with sqlite3.connect(path) as conn:
        source = sorted(conn.execute(f"SELECT {columns} FROM writes").fetchall())
        checkpoints = sorted(conn.execute(
            "SELECT checkpoint_ns, checkpoint_id, parent_checkpoint_id FROM checkpoints"
        ).fetchall())  # fmt: skip
    with psycopg.connect(url) as conn:
        target = sorted(conn.execute(f"SELECT {columns} FROM checkpoint_writes").fetchall())
        there = sorted(conn.execute(
            "SELECT checkpoint_ns, checkpoint_id, parent_checkpoint_id FROM checkpoints"
        ).fetchall())  # fmt: skip
    assert len(source) == 30 and target == source
    assert len(checkpoints) == 6 and there == checkpoints
    # Through the target saver: the same values, writes in the same order.
    storage_pg = PostgresStorage(url)
    await storage_pg.open()
    storage_sq = SqliteStorage(path)
    await storage_sq.open()
    try:
        assert storage_pg.checkpointer is not None and storage_sq.checkpointer is not None
        config = {"configurable": {"thread_id": "t"}}
        want = [t async for t in storage_sq.checkpointer.alist(config)]
        got = [t async for t in storage_pg.checkpointer.alist(config)]
        assert [(t.config, t.parent_config, t.pending_writes) for t in got] == [
            (t.config, t.parent_config, t.pending_writes) for t in want
        ]
        assert [t.checkpoint["channel_values"] for t in got] == [
            t.checkpoint["channel_values"] for t in want
        ]
    finally:
        await storage_pg.close()
        await storage_sq.close()


async def test_every_column_of_every_table_is_copied(tmp_path: Path) -> None:
    """The copy's column lists are both schemas' columns: a column or a table added to agentd's
    schema without the copy knowing fails here, not in a user's copy."""
    conn = sqlite3.connect(":memory:")
    conn.executescript((ROOT / "agentd/storage/sql/sqlite/schema.sql").read_text())
    sqlite_tables = {
        row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    }
    assert sqlite_tables == {t.name for t in TABLES} | set(NOT_COPIED)
    url = pg.create_database("copy-columns")
    storage = PostgresStorage(url)
    await storage.open()
    await storage.close()
    with psycopg.connect(url) as pg_conn:
        for table in TABLES:
            names = [name for name, _ in table.columns]
            in_sqlite = [row[1] for row in conn.execute(f"PRAGMA table_info({table.name})")]
            types = dict(pg_conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns"
                " WHERE table_name = %s AND column_name <> 'row_order'", (table.name,),
            ).fetchall())  # fmt: skip
            assert names == in_sqlite and set(names) == set(types), table.name
            for name, kind in table.columns:
                shown = {"timestamptz": "timestamp with time zone"}.get(kind, kind)
                assert types[name] == shown, (table.name, name)


async def test_what_postgresql_cannot_store_is_named_and_fails_the_copy(tmp_path: Path) -> None:
    """A thread, a checkpoint and a store item holding U+0000 (SQLite keeps it, jsonb cannot):
    the rest is copied, each refused one is named, the verification misses it, exit 1. Store
    vectors are counted, not copied; an expired store item is left behind."""
    path = tmp_path / "data" / "agentd.sqlite"
    storage = SqliteStorage(path)
    await storage.open()
    assert storage.checkpointer is not None and storage.store is not None
    await storage.create_thread("good", {"a": 1}, "raise")
    await storage.create_thread("bad", {"a": "nul\x00"}, "raise")
    config: Any = {"configurable": {"thread_id": "good", "checkpoint_ns": ""}}
    for value in ("fine", "nul\x00"):
        checkpoint = empty_checkpoint()
        checkpoint["channel_values"] = {"note": value}
        checkpoint["channel_versions"] = {"note": f"{value!r}"}
        config = await storage.checkpointer.aput(config, checkpoint, {}, {})
    await storage.store.aput(("docs",), "fine", {"text": "cats and dogs"})
    await storage.store.aput(("docs",), "nul", {"text": "nul\x00"})
    await storage.store.aput(("docs",), "gone", {"text": "expired"}, ttl=0.001)
    await storage.close()
    # The vectors LangGraph's store keeps for a semantic index (sqlite-vec needs a Python that
    # loads SQLite extensions, which this one may not: its table is made as LangGraph makes it).
    with sqlite3.connect(path) as conn:
        conn.execute(VECTOR_MIGRATIONS[0])
        conn.executemany(
            "INSERT INTO store_vectors (prefix, key, field_name, embedding) VALUES (?, ?, ?, ?)",
            [("docs", key, "text", b"\0" * 64) for key in ("fine", "nul", "gone")],
        )
    await asyncio.sleep(1.1)  # "gone" expires (SQLite's times are to the second)
    url = pg.create_database("copy-refused")
    done = agentd_copy(path, url)
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout
    assert "threads: 2 rows, 1 copied, 0 already there, 1 FAILED" in out
    assert "  threads bad not copied: PostgreSQL's jsonb cannot store the character U+0000" in out
    assert re.search(r"^checkpoints: 2 in 2 threads.*1 FAILED$", out, re.M), out
    assert re.search(r"^  checkpoints good//\S+ not copied: PostgreSQL's jsonb", out, re.M), out
    assert "store: 2 items, 1 copied, 0 already there (TTLs start again from now), 1 FAILED" in out
    assert "  store docs/nul not copied" in out
    assert "store: 3 vectors (semantic index) not copied" in out
    assert "verify threads: source 2, found in target 1 -- MISSING: bad" in out
    assert "verify checkpoints: source 2, found in target 1 -- MISSING: good//" in out
    assert "verify store: source 2, found in target 1 -- MISSING: docs/nul" in out
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("agentd copy: verification FAILED"), done.stderr
