"""agentd as many processes: API servers (``agentd serve --jobs 0``) and workers (``agentd
worker``) sharing one PostgreSQL database and one Redis, each a real process. Every cluster gets
a fresh database and a Redis key prefix of its own, so clusters of parallel tests share the
machine's Redis without seeing each other's keys. Fault tests pass the URLs of throwaway
servers of their own instead (``database_url``, ``redis_url``), to stop and restart at will."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import redis

from tests import pg
from tests.server import AGENTD, ROOT, TEST_CONFIG, Server

REDIS_URL = os.environ.get("AGENTD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


class WorkerProcess:
    """``agentd worker``: no port; started once its log says it holds run slots."""

    def __init__(self, data_dir: Path, *, config: Path, env: dict[str, str], name: str):
        self.data_dir = data_dir
        self.config = config
        self.env = env
        self.log_path = data_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> WorkerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [*AGENTD, "worker", "--config", str(self.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
            cwd=ROOT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agentd worker exited at start-up:\n{self.log()}")
            if "run slots" in self.log():
                return self
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"agentd worker did not start within {timeout}s:\n{self.log()}")

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 30) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return self.kill()

    def kill(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a stopped process must die too
            self.proc.send_signal(signal.SIGKILL)
        return self.proc.wait()


class Cluster:
    def __init__(
        self,
        base: Path,
        *,
        apis: int = 2,
        workers: int = 2,
        config: Path = TEST_CONFIG,
        env: dict[str, str] | None = None,
        database_url: str | None = None,
        redis_url: str = REDIS_URL,
    ):
        self.base = base
        self.database_url = database_url or pg.create_database(str(base))
        self.redis_url = redis_url
        self.prefix = f"agentd-test:{uuid.uuid4().hex[:12]}:"
        self.env = {
            "DATABASE_URI": self.database_url,
            "REDIS_URI": redis_url,
            "AGENTD_REDIS_PREFIX": self.prefix,
            **(env or {}),
        }
        self.apis = [
            Server(
                base / f"api{i}",
                config=config,
                jobs=0,
                env=self.env,
                database_url=self.database_url,
            )
            for i in range(apis)
        ]
        self.workers = [
            WorkerProcess(base / "workers", config=config, env=self.env, name=f"worker{i}")
            for i in range(workers)
        ]

    def start(self) -> Cluster:
        """Every process at once, each start waited for on a thread of its own: a cluster is
        up in the time of its slowest process (mostly imports), not of all of them in turn."""
        processes = [*self.workers, *self.apis]
        try:
            with ThreadPoolExecutor(max(1, len(processes))) as pool:
                for started in [pool.submit(process.start) for process in processes]:
                    started.result()
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def urls(self) -> list[str]:
        return [api.url for api in self.apis]

    def stop(self) -> None:
        """SIGTERM to every process at once, each waited for on a thread of its own."""
        processes = [*self.apis, *self.workers]
        with ThreadPoolExecutor(max(1, len(processes))) as pool:
            list(pool.map(lambda process: process.stop(), processes))
        if self.redis_url != REDIS_URL:
            return  # a throwaway server: its keys go with it (it may be down by now)
        client = redis.Redis.from_url(REDIS_URL)
        try:
            keys = list(client.scan_iter(match=f"{self.prefix}*", count=1000))
            if keys:
                client.delete(*keys)
        finally:
            client.close()

    def logs(self) -> str:
        return "\n".join(
            f"==== {p.log_path.name}\n{p.log()[-4000:]}" for p in [*self.apis, *self.workers]
        )
