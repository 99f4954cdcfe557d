"""Redis for tests: the shared server with a key prefix per test, and throwaway servers.

The shared server is ``AGENTD_TEST_REDIS_URL`` (default: this machine's Redis on 6379); when it
does not answer, one throwaway server is started for the whole process instead (never a skip).
Every test uses keys under a prefix of its own (``new_prefix``) and deletes them afterwards
(``delete_prefix``): never FLUSHALL the shared server. Fault tests that kill, restart or flush
Redis start a ``RedisServer`` of their own.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType

import redis

from tests.server import free_port

SHARED_URL = os.environ.get("AGENTD_TEST_REDIS_URL") or "redis://127.0.0.1:6379/0"
_shared: RedisServer | None = None


def answers(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


def shared_url() -> str:
    """The shared server's URL; a throwaway one for this process when it does not answer."""
    global _shared
    if _shared is not None:
        return _shared.url
    if answers(SHARED_URL):
        return SHARED_URL
    base = Path(tempfile.mkdtemp(prefix="agentd-redis-"))
    _shared = RedisServer(base).start()
    atexit.register(_shared.close)
    atexit.register(shutil.rmtree, base, True)
    return _shared.url


def new_prefix() -> str:
    return f"agentd-test:{uuid.uuid4().hex}:"


def delete_prefix(url: str, prefix: str) -> int:
    """Delete every key under ``prefix``; returns how many there were."""
    assert prefix.startswith("agentd-test:"), prefix
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
        return len(keys)
    finally:
        client.close()


def keys(url: str, prefix: str) -> list[bytes]:
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
    try:
        return sorted(client.scan_iter(match=f"{prefix}*", count=1000))
    finally:
        client.close()


class RedisError(RuntimeError):
    pass


class RedisServer:
    """A redis-server of a test's own (no persistence), to kill -9, restart on the same port
    and flush at will. ``close()`` (or leaving the ``with`` block) stops it."""

    def __init__(self, base_dir: Path, *, binary: str | None = None) -> None:
        found = binary or shutil.which("redis-server")
        if found is None:
            raise RedisError("no redis-server on PATH to start a throwaway Redis")
        self.binary = found
        self.base_dir = Path(base_dir)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()  # fixed: the URL stays valid across restarts
        self.log_path = self.base_dir / f"redis-{self.port}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10) -> RedisServer:
        if self.running:
            raise RedisError("Redis is running already")
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.base_dir),
                "--logfile", str(self.log_path)]  # fmt: skip
        self._proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C meant for pytest must not stop it
        )
        deadline = time.monotonic() + timeout
        while not answers(self.url):
            if self._proc.poll() is not None:
                raise RedisError(f"redis-server exited ({self._proc.returncode}): {self.log()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RedisError(f"redis-server not ready within {timeout}s: {self.log()}")
            time.sleep(0.02)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL, as a crash would; returns once it is gone."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)

    def stop(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def flushall(self) -> None:
        client = redis.Redis.from_url(self.url, socket_timeout=5)
        try:
            client.flushall()
        finally:
            client.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.kill()

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
