"""A real ``agentd serve`` process for tests: free port, own data dir, start/stop/kill, on
SQLite or PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
TEST_CONFIG = ROOT / "tests" / "graphs" / "langgraph.json"
AGENTD = [sys.executable, "-m", "agentd.cli"]
BACKENDS = ("sqlite", "postgres")

# The backend of a Server created without one: set for the length of each API and reliability
# test by the ``backend`` fixtures (tests/conftest.py); SQLite elsewhere.
_default_backend: str | None = None


@contextlib.contextmanager
def default_backend(backend: str) -> Iterator[None]:
    """Servers created without a backend inside the block use ``backend``."""
    global _default_backend
    assert backend in BACKENDS, backend
    previous, _default_backend = _default_backend, backend
    try:
        yield
    finally:
        _default_backend = previous


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(
        self,
        data_dir: Path,
        *,
        config: Path = TEST_CONFIG,
        jobs: int | None = None,
        env: dict[str, str] | None = None,
        backend: str | None = None,
        database_url: str | None = None,
    ):
        """``backend`` None: the default (above). On PostgreSQL the database is derived from
        ``data_dir`` unless ``database_url`` names one, so a server restarted on the same data
        dir serves the same database. The data dir keeps the log (and the SQLite file)."""
        if backend is None and database_url is not None:
            backend = "postgres" if database_url.startswith("postgres") else "sqlite"
        self.backend = backend or _default_backend or "sqlite"
        assert self.backend in BACKENDS, self.backend
        if self.backend == "postgres" and database_url is None:
            from tests import pg  # tests.pg imports this module

            database_url = pg.create_database(str(data_dir))
        self.data_dir = data_dir
        self.config = config
        self.jobs = jobs
        # No drain at SIGTERM unless a test asks for one: runs in flight are handed back at
        # once, so that stopping a server never waits for them.
        self.env = {"AGENTD_DRAIN_SECONDS": "0", **(env or {})}
        self.database_url = database_url
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / f"server-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> Server:
        """Spawn and wait until it answers ``/ok`` (imports alone take 10-20 s on a loaded
        2-core machine; PostgreSQL's migrations of a new database a few more)."""
        self.spawn()
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agentd exited at start-up:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/ok", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"agentd did not answer /ok within {timeout}s:\n{self.log()}")

    def spawn(self) -> Server:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [*AGENTD, "serve", "--config", str(self.config), "--port", str(self.port),
                "--data-dir", str(self.data_dir)]  # fmt: skip
        if self.jobs is not None:
            args += ["--jobs", str(self.jobs)]
        if self.database_url:  # the data dir still holds the log
            args += ["--database-url", self.database_url]
        log = open(self.log_path, "ab")  # the child process writes to it
        self.proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.env}, cwd=ROOT
        )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 15) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return self.kill()

    def kill(self) -> int | None:
        """``kill -9``: no shutdown code runs."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        return self.proc.wait()
