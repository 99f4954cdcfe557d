"""The walkthrough with the official JS client (@langchain/langgraph-sdk), run by Node."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

JS_DIR = Path(__file__).resolve().parents[1] / "js"


async def test_js_client_walkthrough(url: str) -> None:
    node = shutil.which("node")
    if node is None or not (JS_DIR / "node_modules" / "@langchain" / "langgraph-sdk").is_dir():
        pytest.fail("node and tests/js/node_modules are required: run `npm ci` in tests/js")
    proc = await asyncio.create_subprocess_exec(
        node, "walkthrough.mjs", url, cwd=JS_DIR,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, f"walkthrough.mjs failed:\n{err.decode()}\n{out.decode()}"
    report = json.loads(out)
    assert report["runs_before"] == []
    assert report["after_join"]["status"] == "success"
    types = [m["type"] for m in report["state"]["values"]["messages"]]
    assert types == ["human", "ai", "tool", "ai"]
