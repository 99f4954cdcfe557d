"""The store under load: its writes share the database with agentd's own (threads, runs,
checkpoints) and must never fail on a busy database."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from langgraph_sdk import get_client

from tests.server import Server


async def test_store_calls_never_fail_while_threads_and_runs_are_created(tmp_path: Path) -> None:
    # Reads refresh TTLs by default, so gets and searches write too; some items have a TTL.
    server = Server(tmp_path / "data").start()
    client = get_client(url=server.url, api_key=None, timeout=60)
    errors: list[str] = []
    calls = 0
    # What each key holds at the end, by worker (each worker owns its keys: no races).
    expected: dict[tuple[str, str], dict[str, Any] | None] = {}

    async def guard(what: str, call: Awaitable[Any]) -> Any:
        nonlocal calls
        calls += 1
        try:
            return await call
        except Exception as exc:
            errors.append(f"{what}: {type(exc).__name__}: {exc}")
            return None

    async def store_worker(w: int, rounds: int) -> None:
        rng = random.Random(w)
        ns = ["load", f"w{w}"]
        for i in range(rounds):
            key = f"k{rng.randrange(8)}"
            roll = rng.random()
            if roll < 0.35:
                value = {"w": w, "i": i, "tag": "even" if i % 2 == 0 else "odd"}
                ttl = 60 if i % 3 == 0 else None
                await guard("put", client.store.put_item(ns, key=key, value=value, ttl=ttl))
                expected[(f"w{w}", key)] = value
            elif roll < 0.6:
                await guard("get", client.store.get_item(ns, key=key))
            elif roll < 0.8:
                await guard(
                    "search", client.store.search_items(ns, filter={"tag": "even"}, limit=5)
                )
            elif roll < 0.9:
                await guard("delete", client.store.delete_item(ns, key=key))
                expected[(f"w{w}", key)] = None
            else:
                await guard("namespaces", client.store.list_namespaces(prefix=["load"]))

    async def graph_writer(n: int) -> None:
        for i in range(n):
            tid = await guard("thread", client.threads.create())
            if tid is None:
                continue
            value = {"i": i}
            result = await guard(
                "remember run",
                client.runs.wait(
                    tid["thread_id"],
                    "remember",
                    input={"namespace": ["graph"], "key": f"g{i}", "value": value},
                ),
            )
            if result is not None and result.get("seen") != value:
                errors.append(f"graph read back {result.get('seen')!r}, wrote {value!r}")

    async def thread_and_run_maker(n: int) -> None:
        for _ in range(n):
            await guard("thread", client.threads.create(metadata={"load": True}))
            await guard("run", client.runs.create(None, "echo", input={"value": 1}))
            await guard("steps", client.runs.create(None, "steps", input={"done": []}))

    async def in_parallel(fn: Callable[[int, int], Awaitable[None]], n: int, rounds: int) -> None:
        await asyncio.gather(*(fn(i, rounds) for i in range(n)))

    try:
        started = time.monotonic()
        await asyncio.wait_for(
            asyncio.gather(
                in_parallel(store_worker, 24, 100),
                asyncio.gather(*(graph_writer(40) for _ in range(4))),
                asyncio.gather(*(thread_and_run_maker(60) for _ in range(6))),
            ),
            timeout=240,
        )
        elapsed = time.monotonic() - started
        assert not errors, f"{len(errors)} of {calls} calls failed in {elapsed:.1f} s: {errors[:5]}"
        print(f"{calls} calls in {elapsed:.1f} s")
        assert calls > 3000
        for (owner, key), value in expected.items():
            item = await client.store.get_item(["load", owner], key=key)
            assert (item["value"] if item else None) == value, (owner, key)
        for i in range(40):
            assert (await client.store.get_item(["graph"], key=f"g{i}"))["value"] == {"i": i}
    finally:
        await client.http.client.aclose()
        server.stop()
