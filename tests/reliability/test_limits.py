"""The run time limit (BG_JOB_TIMEOUT_SECS) ends a run as ``timeout``, not as an error."""

from __future__ import annotations

from pathlib import Path

from langgraph_sdk import get_client

from tests.server import Server


async def test_run_over_time_limit_ends_as_timeout(tmp_path: Path) -> None:
    server = Server(tmp_path / "data", env={"BG_JOB_TIMEOUT_SECS": "0.5"}).start()
    try:
        client = get_client(url=server.url, api_key=None)
        tid = (await client.threads.create())["thread_id"]
        result = await client.runs.wait(tid, "steps", input={"done": [], "delay": 0.3})
        # The last values before the limit; no __error__, as the official server does.
        assert result["done"] == ["a"] and "__error__" not in result
        run = (await client.runs.list(tid))[0]
        assert run["status"] == "timeout"
        thread = await client.threads.get(tid)
        assert thread["status"] == "error"
        assert thread["error"]["error"] == "TimeoutError"
        # A graph that raises TimeoutError itself fails as an error, not a timeout.
        result = await client.runs.wait(tid, "fail", input={"message": "x"}, raise_error=False)
        assert result["__error__"]["error"] == "ValueError"
        # Runs within the limit are unaffected.
        assert (await client.runs.wait(tid, "echo", input={"value": 1}))["value"] == 1
    finally:
        server.stop()
