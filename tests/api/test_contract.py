"""Property-based fuzzing of the whole OpenAPI document: no request, however malformed,
makes the server answer 5xx."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.server import Server


def test_no_generated_request_yields_a_server_error(tmp_path: Path) -> None:
    server = Server(tmp_path / "data").start()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "schemathesis.cli", "run", f"{server.url}/openapi.json",
             "--checks", "not_a_server_error", "--max-examples", "8",
             "--phases", "coverage,fuzzing", "--seed", "1", "--no-color"],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    finally:
        server.stop()
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "failed" not in result.stdout.split("SUMMARY")[-1]
    assert "unhandled error" not in server.log()
