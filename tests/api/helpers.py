"""Small waits the API tests share."""

from __future__ import annotations

import asyncio
import time

from langgraph_sdk.client import LangGraphClient
from langgraph_sdk.schema import Run


async def wait_for_status(
    client: LangGraphClient, thread_id: str, run_id: str, status: str, limit: float = 15.0
) -> Run:
    """Poll a run until it reaches ``status``; fail with its last status after ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while True:
        run = await client.runs.get(thread_id, run_id)
        if run["status"] == status:
            return run
        assert time.monotonic() < deadline, f"run stayed {run['status']}, expected {status}"
        await asyncio.sleep(0.05)
