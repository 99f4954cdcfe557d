"""Side-by-side benchmark of agentd (on SQLite and on PostgreSQL) and the official LangGraph
dev server.

Starts each server under test as a subprocess on a free loopback port, measures run latency,
background throughput, time to first streamed event and memory, stops it, and writes
``bench/results/<UTC timestamp>-<label>.{json,md}``. See bench/README.md.

Run with the repo's virtualenv (stdlib + httpx + langgraph_sdk, and psycopg for agentd-pg):

    .venv/bin/python bench/run.py [--servers agentd,agentd-pg,reference] [-n 200]

agentd-pg serves from a fresh database created on ``--pg-url`` for the run and dropped after
it. All traffic goes to 127.0.0.1 (and to that PostgreSQL server). Every loop is bounded in
count, and every request, phase and database statement has a timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx
from langgraph_sdk import get_client
from lean_http import LeanClient  # beside this script

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
HOST = "127.0.0.1"
SERVER_NAMES = ("agentd", "agentd-pg", "reference")
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_CONNECT_TIMEOUT_S = 10
PG_STATEMENT_TIMEOUT_MS = 60_000  # CREATE / DROP DATABASE and the few admin queries
MAX_SSE_EVENTS = 200  # per stream; the bench graphs emit 2-3
OK_POLL_INTERVAL_S = 0.2
STOP_GRACE_S = 15.0
SLEEP_GRAPH_SECONDS = 0.2

JSON = dict[str, Any]

# Set by SIGTERM. The handler also raises SystemExit, but an exception raised inside a
# finalizer or callback can be swallowed, so every measurement loop checks the flag as well.
_stop_requested = False


def check_stop() -> None:
    if _stop_requested:
        raise SystemExit(143)


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    servers: list[str]
    n: int
    stream_n: int
    threads: int
    bursts: int
    warmup: int
    agentd_jobs: int | None
    reference_jobs: int
    pg_url: str
    startup_timeout: float
    request_timeout: float
    phase_timeout: float
    label: str
    out_dir: Path
    save: bool


@dataclass(frozen=True)
class BenchDatabase:
    """A database made for one server's run: where to serve from, and its admin URL."""

    name: str
    url: str
    admin_url: str
    server_version: str


@dataclass(frozen=True)
class ServerSpec:
    name: str
    executable: Path
    missing_hint: str
    # (port, workdir, database or None) -> argv
    build_args: Callable[[int, Path, BenchDatabase | None], list[str]]
    # A fresh database for the run, dropped when the server has stopped (agentd-pg only).
    database: Callable[[], contextlib.AbstractContextManager[BenchDatabase]] | None = None


def agentd_spec(jobs: int | None, pg_url: str | None = None) -> ServerSpec:
    """agentd on SQLite (a fresh --data-dir), or with ``pg_url`` on a fresh PostgreSQL
    database created through that admin URL (``--database-url``)."""
    exe = REPO_DIR / ".venv" / "bin" / "agentd"

    def build(port: int, workdir: Path, db: BenchDatabase | None) -> list[str]:
        where = ["--database-url", db.url] if db else ["--data-dir", str(workdir / "data")]
        return [
            str(exe), "serve",
            "--config", str(workdir / "langgraph.json"),
            "--host", HOST, "--port", str(port),
            *where,
        ] + (["--jobs", str(jobs)] if jobs is not None else [])  # fmt: skip

    hint = "install the repo first: python3 -m venv .venv && .venv/bin/pip install -e '.[test]'"
    if pg_url is None:
        return ServerSpec("agentd", exe, hint, build)
    return ServerSpec("agentd-pg", exe, hint, build, lambda: bench_database(pg_url))


def reference_spec(jobs: int) -> ServerSpec:
    exe = BENCH_DIR / ".venv-ref" / "bin" / "langgraph"

    def build(port: int, workdir: Path, _db: BenchDatabase | None) -> list[str]:
        return [
            str(exe), "dev", "--no-browser", "--no-reload",
            "--host", HOST, "--port", str(port),
            "--n-jobs-per-worker", str(jobs),
            "--config", str(workdir / "langgraph.json"),
        ]  # fmt: skip

    return ServerSpec("reference", exe, "run once: bash bench/setup-reference.sh", build)


def server_specs(opts: Options) -> list[ServerSpec]:
    table = {
        "agentd": agentd_spec(opts.agentd_jobs),
        "agentd-pg": agentd_spec(opts.agentd_jobs, opts.pg_url),
        "reference": reference_spec(opts.reference_jobs),
    }
    return [table[name] for name in opts.servers]


# --------------------------------------------------------------------------------------------
# PostgreSQL (agentd-pg)
# --------------------------------------------------------------------------------------------


class DatabaseUnavailable(RuntimeError):
    """The admin URL does not answer (or psycopg is missing): agentd-pg is skipped. (Also
    raised for any other service a server under test needs, such as distributed.py's Redis.)"""


def redact_url(url: str) -> str:
    """``url`` without its password, for reports and logs."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}"
    netloc += f":{parts.port}" if parts.port else ""
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def with_database(url: str, name: str) -> str:
    """``url`` naming database ``name`` instead of its own (host, user and query kept)."""
    return urllib.parse.urlunsplit(urllib.parse.urlsplit(url)._replace(path="/" + name))


def pg_admin_connect(admin_url: str) -> Any:
    """An autocommit connection on the admin URL, every statement bounded in time."""
    try:
        import psycopg  # agentd's dependency, in .venv; only agentd-pg needs it
    except ImportError as exc:
        raise DatabaseUnavailable(f"psycopg is not installed in this Python ({exc})") from None
    try:
        return psycopg.connect(
            admin_url,
            autocommit=True,
            connect_timeout=PG_CONNECT_TIMEOUT_S,
            options=f"-c statement_timeout={PG_STATEMENT_TIMEOUT_MS}",
        )
    except psycopg.OperationalError as exc:
        reason = " ".join(line.strip() for line in str(exc).splitlines())
        raise DatabaseUnavailable(
            f"cannot connect to {redact_url(admin_url)}: {reason}; start PostgreSQL or pass "
            "--pg-url (or AGENTD_BENCH_PG_URL)"
        ) from None


@contextlib.contextmanager
def _pg_errors(what: str) -> Iterator[None]:
    """psycopg's errors as RuntimeError (a failed server), with ``what`` in front."""
    import psycopg

    try:
        yield
    except psycopg.Error as exc:
        raise RuntimeError(f"{what}: {type(exc).__name__}: {exc}".strip()) from exc


def drop_database(admin_url: str, name: str) -> None:
    from psycopg import sql

    with pg_admin_connect(admin_url) as conn:
        # FORCE ends whatever session is still connected (a server that did not stop cleanly).
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@contextlib.contextmanager
def bench_database(admin_url: str) -> Iterator[BenchDatabase]:
    """Create ``agentd_bench_<timestamp>`` on ``admin_url``, yield it, and drop it afterwards,
    whether the run succeeded, failed or was interrupted (SIGTERM unwinds through here)."""
    from psycopg import sql

    name = "agentd_bench_" + datetime.now(UTC).strftime("%Y%m%d_%H%M%S_%f")
    with pg_admin_connect(admin_url) as conn, _pg_errors("cannot create the bench database"):
        version = str(conn.execute("SHOW server_version").fetchone()[0])
        stale = [
            row[0]
            for row in conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE 'agentd\\_bench\\_%'"
                " ORDER BY datname"
            )
        ]
        if stale:
            print(
                f"[agentd-pg] note: {len(stale)} database(s) left by an earlier run that was "
                f"killed: {', '.join(stale[:5])}{' ...' if len(stale) > 5 else ''} "
                "(not touched; DROP DATABASE them by hand)",
                flush=True,
            )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    print(f"[agentd-pg] created database {name} on {redact_url(admin_url)}", flush=True)
    try:
        yield BenchDatabase(name, with_database(admin_url, name), admin_url, version)
    finally:
        try:
            drop_database(admin_url, name)
            print(f"[agentd-pg] dropped database {name}", flush=True)
        except Exception as exc:  # say so, but do not hide the run's own outcome
            print(f"[agentd-pg] could not drop database {name}: {exc}", flush=True)


def pg_backends(db: BenchDatabase) -> JSON:
    """The PostgreSQL sessions on the bench database: how many, and their VmRSS. They are
    PostgreSQL's processes, not agentd's (and their RSS includes shared buffers they touched),
    so they are reported apart and never added to agentd's RSS."""
    try:
        with pg_admin_connect(db.admin_url) as conn:
            pids = [
                int(row[0])
                for row in conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = %s", (db.name,)
                )
            ]
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}
    return {
        "sessions": len(pids),
        "vmrss_mib_incl_shared": round(sum(rss_kib(pid) for pid in pids) / 1024, 1),
    }


# --------------------------------------------------------------------------------------------
# Process management
# --------------------------------------------------------------------------------------------


@dataclass
class RunningServer:
    name: str
    proc: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    startup_s: float = 0.0
    database: BenchDatabase | None = None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def prepare_workdir(workdir: Path) -> None:
    """Copy the bench graphs and config into a fresh directory.

    The dev server resolves graph paths against its cwd and persists its in-memory state in
    ``<cwd>/.langgraph_api``; a fresh copy keeps every run independent and bench/ clean.
    """
    shutil.copy2(BENCH_DIR / "langgraph.json", workdir / "langgraph.json")
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(BENCH_DIR / "graphs", workdir / "graphs", ignore=ignore)
    (workdir / "data").mkdir()


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)
    env.update(
        PYTHONUNBUFFERED="1",
        LANGGRAPH_CLI_NO_ANALYTICS="1",
        LANGSMITH_TRACING="false",
        LANGCHAIN_TRACING_V2="false",
        NO_PROXY="127.0.0.1,localhost",
    )
    return env


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def wait_until_ok(server: RunningServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=server.base_url, timeout=2.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                raise RuntimeError(f"exited with code {server.proc.returncode} before /ok")
            with contextlib.suppress(httpx.HTTPError):
                if client.get("/ok").status_code == 200:
                    return
            time.sleep(OK_POLL_INTERVAL_S)
    raise RuntimeError(f"GET /ok did not answer 200 within {timeout:.0f} s")


def spawn(
    argv: list[str], workdir: Path, log_path: Path, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    """Start a server process in ``workdir`` with its output in ``log_path``, in a session of
    its own, so that ``stop_process`` stops it with whatever it started."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            argv,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group, then SIGKILL it if it lingers."""
    if proc.poll() is not None:
        return
    for sig, grace in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


@contextlib.contextmanager
def running_server(spec: ServerSpec, opts: Options) -> Iterator[RunningServer]:
    # The database (if any) is made first and dropped last: after the server has stopped.
    database = spec.database() if spec.database else contextlib.nullcontext(None)
    with (
        database as db,
        tempfile.TemporaryDirectory(prefix=f"bench-{spec.name}-") as tmp,
    ):
        workdir = Path(tmp)
        prepare_workdir(workdir)
        port = free_port()
        log_path = workdir / "server.log"
        started = time.perf_counter()
        proc = spawn(spec.build_args(port, workdir, db), workdir, log_path, child_env())
        server = RunningServer(spec.name, proc, f"http://{HOST}:{port}", log_path, database=db)
        try:
            wait_until_ok(server, opts.startup_timeout)
            server.startup_s = time.perf_counter() - started
            yield server
        except Exception as exc:
            tail = log_tail(log_path)
            raise RuntimeError(f"{spec.name}: {exc}\n--- server log tail ---\n{tail}") from exc
        finally:
            stop_process(proc)


# --------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------


def parent_map() -> dict[int, int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Field 4 (ppid) follows the parenthesised command name, which may contain spaces.
        fields = stat[stat.rfind(")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
    return parents


def process_tree(root: int) -> list[int]:
    parents = parent_map()
    tree, frontier = [root], [root]
    for _ in range(64):  # depth bound
        frontier = [pid for pid, ppid in parents.items() if ppid in frontier]
        if not frontier:
            break
        tree.extend(frontier)
    return tree


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_mib(root: int) -> float:
    return round(sum(rss_kib(pid) for pid in process_tree(root)) / 1024, 1)


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


def percentile(sorted_values: list[float], pct: float) -> float:
    """Linear-interpolated percentile of an already sorted, non-empty list."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    rank = (len(sorted_values) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


def summarize(samples_ms: list[float], errors: int) -> JSON:
    out: JSON = {"n": len(samples_ms), "errors": errors}
    if not samples_ms:
        return out
    values = sorted(samples_ms)
    out.update(
        p50=percentile(values, 50),
        p90=percentile(values, 90),
        p99=percentile(values, 99),
        mean=statistics.fmean(values),
        min=values[0],
        max=values[-1],
    )
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in out.items()}


@dataclass
class Samples:
    values_ms: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None

    def fail(self, detail: str) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = detail[:500]

    def summary(self) -> JSON:
        out = summarize(self.values_ms, self.errors)
        if self.first_error:
            out["first_error"] = self.first_error
        return out


# --------------------------------------------------------------------------------------------
# HTTP helpers
# --------------------------------------------------------------------------------------------


def run_body(graph: str, value: Any, **extra: Any) -> JSON:
    return {"assistant_id": graph, "input": {"value": value}, **extra}


def check_echo(body: Any, value: Any) -> str | None:
    """Return an error description unless ``body`` is the echo graph's output for ``value``."""
    if body == {"value": value}:
        return None
    return f"unexpected body: {json.dumps(body)[:300]}"


async def create_thread(client: httpx.AsyncClient) -> str:
    resp = await client.post("/threads", json={})
    resp.raise_for_status()
    return str(resp.json()["thread_id"])


async def create_thread_retrying(client: httpx.AsyncClient) -> str:
    """``create_thread`` for a burst's untimed setup, once more on a transport error: a server
    may close an idle keep-alive connection just as the pool reuses it (a whole burst of the
    reference once failed so, with ``ReadError('')``). An extra thread is harmless."""
    try:
        return await create_thread(client)
    except httpx.TransportError:
        return await create_thread(client)


async def post_json(client: httpx.AsyncClient, path: str, body: JSON) -> Any:
    resp = await client.post(path, json=body)
    if resp.status_code != 200:
        raise RuntimeError(f"POST {path} -> {resp.status_code}: {resp.text[:300]}")
    return resp.json()


async def read_sse(
    resp: httpx.Response, started: float, max_events: int = MAX_SSE_EVENTS
) -> list[tuple[str, float, str]]:
    """Collect ``(event, seconds since started, data)`` for each SSE event of a response."""
    events: list[tuple[str, float, str]] = []
    name, data = "message", []
    async for line in resp.aiter_lines():
        if line.startswith(":"):
            continue
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif line == "" and (data or name != "message"):
            events.append((name, time.perf_counter() - started, "\n".join(data)))
            name, data = "message", []
            if len(events) >= max_events:
                break
    return events


# --------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------


async def timed_wait(client: httpx.AsyncClient, path: str, value: Any, samples: Samples) -> None:
    started = time.perf_counter()
    try:
        body = await post_json(client, path, run_body("echo", value))
    except (httpx.HTTPError, RuntimeError, ValueError) as exc:
        samples.fail(f"{type(exc).__name__}: {exc}")
        return
    samples.values_ms.append((time.perf_counter() - started) * 1000)
    if (problem := check_echo(body, value)) is not None:
        samples.fail(problem)


async def measure_wait_stateless(client: httpx.AsyncClient, n: int) -> JSON:
    samples = Samples()
    for i in range(n):
        check_stop()
        await timed_wait(client, "/runs/wait", {"i": i}, samples)
    return samples.summary()


async def measure_wait_thread(client: httpx.AsyncClient, n: int) -> JSON:
    """Sequential ``POST /threads/{id}/runs/wait``, each on a fresh thread made untimed."""
    samples = Samples()
    for i in range(n):
        check_stop()
        try:
            thread_id = await create_thread(client)
        except httpx.HTTPError as exc:
            samples.fail(f"create thread: {exc!r}")
            continue
        await timed_wait(client, f"/threads/{thread_id}/runs/wait", {"i": i}, samples)
    return samples.summary()


@dataclass
class StreamSamples:
    headers: Samples = field(default_factory=Samples)
    metadata: Samples = field(default_factory=Samples)
    first_event: Samples = field(default_factory=Samples)
    total: Samples = field(default_factory=Samples)


async def one_stream(client: httpx.AsyncClient, thread_id: str, i: int, out: StreamSamples) -> None:
    path = f"/threads/{thread_id}/runs/stream"
    body = run_body("echo", {"i": i}, stream_mode="values")
    started = time.perf_counter()
    async with client.stream("POST", path, json=body) as resp:
        if resp.status_code != 200:
            await resp.aread()
            out.total.fail(f"POST {path} -> {resp.status_code}: {resp.text[:300]}")
            return
        out.headers.values_ms.append((time.perf_counter() - started) * 1000)
        events = await read_sse(resp, started)
    out.total.values_ms.append((time.perf_counter() - started) * 1000)
    names = [name for name, _, _ in events]
    meta = next((t for name, t, _ in events if name == "metadata"), None)
    after = [(name, t, d) for name, t, d in events if name != "metadata"]
    if meta is None or not after:
        out.total.fail(f"expected metadata then another event, got {names}")
        return
    out.metadata.values_ms.append(meta * 1000)
    out.first_event.values_ms.append(after[0][1] * 1000)
    if after[0][0] == "error" or "error" in names:
        out.total.fail(f"error event in stream: {events}")


async def measure_stream(client: httpx.AsyncClient, n: int) -> JSON:
    """Time to the ``metadata`` event and to the first event after it, on fresh threads."""
    out = StreamSamples()
    for i in range(n):
        check_stop()
        try:
            thread_id = await create_thread(client)
            await one_stream(client, thread_id, i, out)
        except httpx.HTTPError as exc:
            out.total.fail(f"{type(exc).__name__}: {exc}")
    return {
        "headers_ms": out.headers.summary(),
        "metadata_ms": out.metadata.summary(),
        "first_event_ms": out.first_event.summary(),
        "total_ms": out.total.summary(),
    }


async def create_and_join(
    client: LeanClient, thread_id: str, graph: str, t0: float
) -> tuple[float, Any]:
    """Start a background run, then join it; return (seconds to accept, join body)."""
    resp = await client.post(f"/threads/{thread_id}/runs", json=run_body(graph, thread_id))
    if resp.status_code != 200:
        raise RuntimeError(f"create run -> {resp.status_code}: {resp.text[:300]}")
    accepted = time.perf_counter() - t0
    run_id = resp.json()["run_id"]
    joined = await client.get(f"/threads/{thread_id}/runs/{run_id}/join")
    if joined.status_code != 200:
        raise RuntimeError(f"join -> {joined.status_code}: {joined.text[:300]}")
    return accepted, joined.json()


async def measure_burst(client: httpx.AsyncClient, graph: str, count: int) -> JSON:
    """Start ``count`` background runs on ``count`` threads at once, then join them all.

    The burst itself goes through LeanClient: httpx's pool would be the bottleneck."""
    try:
        thread_ids = await asyncio.gather(*(create_thread_retrying(client) for _ in range(count)))
    except httpx.HTTPError as exc:
        return {"graph": graph, "runs": count, "errors": count, "first_error": repr(exc)}
    url = client.base_url
    lean = LeanClient(url.host, url.port or 80, timeout=client.timeout.read or 60.0)
    t0 = time.perf_counter()
    results = await asyncio.gather(
        *(create_and_join(lean, tid, graph, t0) for tid in thread_ids), return_exceptions=True
    )
    total = time.perf_counter() - t0
    samples = Samples()
    accepted: list[float] = []
    for tid, result in zip(thread_ids, results, strict=True):
        if isinstance(result, BaseException):
            samples.fail(f"{type(result).__name__}: {result}")
            continue
        accepted.append(result[0])
        if (problem := check_echo(result[1], tid)) is not None:
            samples.fail(problem)
    out: JSON = {
        "graph": graph,
        "runs": count,
        "errors": samples.errors,
        "total_s": round(total, 3),
        "all_accepted_s": round(max(accepted), 3) if accepted else None,
        "runs_per_s": round((count - samples.errors) / total, 1),
    }
    if samples.first_error:
        out["first_error"] = samples.first_error
    return out


async def measure_bursts(client: httpx.AsyncClient, graph: str, count: int, bursts: int) -> JSON:
    """``bursts`` bursts one after the other: the median burst, and the spread."""
    results = [await measure_burst(client, graph, count) for _ in range(bursts)]
    timed = sorted((r for r in results if "total_s" in r), key=lambda r: r["total_s"])
    if not timed:
        return results[0]
    median = dict(timed[(len(timed) - 1) // 2])
    median["errors"] = sum(r.get("errors", 0) for r in results)
    median["bursts"] = len(results)
    median["total_s_all"] = [r["total_s"] for r in results if "total_s" in r]
    median["total_s_min"] = timed[0]["total_s"]
    median["total_s_max"] = timed[-1]["total_s"]
    failed = [r for r in results if r.get("errors")]
    if failed:
        median["failed_bursts"] = len(failed)
        median["first_error"] = next((r["first_error"] for r in failed if "first_error" in r), "?")
    return median


async def sdk_check(base_url: str, request_timeout_s: float) -> JSON:
    """Round-trip through the official SDK: stateless wait plus a thread stream."""
    client = get_client(url=base_url, api_key=None, timeout=request_timeout_s)
    try:
        waited = await client.runs.wait(None, "echo", input={"value": "sdk"})
        thread = await client.threads.create()
        events = [
            part.event
            async for part in client.runs.stream(
                thread["thread_id"], "echo", input={"value": "sdk"}, stream_mode="values"
            )
        ]
        ok = waited == {"value": "sdk"} and events[:1] == ["metadata"] and "values" in events
        return {"ok": ok, "wait": waited, "stream_events": events}
    except Exception as exc:  # report any SDK incompatibility rather than abort the bench
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    finally:
        await client.aclose()


async def warm_up(client: httpx.AsyncClient, count: int) -> JSON:
    for i in range(count):
        check_stop()
        with contextlib.suppress(httpx.HTTPError, RuntimeError, ValueError):
            await post_json(client, "/runs/wait", run_body("echo", {"warmup": i}))
    with contextlib.suppress(httpx.HTTPError, RuntimeError, ValueError):
        await post_json(client, "/runs/wait", run_body("sleep", "warmup"))
    return await measure_stream(client, min(count, 2))


async def phase(name: str, coro: Awaitable[JSON], limit_s: float) -> JSON:
    print(f"    {name} ...", flush=True)
    started = time.perf_counter()
    try:
        result = await asyncio.wait_for(coro, limit_s)
    except TimeoutError:
        result = {"errors": 1, "first_error": f"phase timed out after {limit_s:.0f} s"}
    except Exception as exc:  # keep the other phases' numbers
        result = {"errors": 1, "first_error": f"{type(exc).__name__}: {exc}"[:500]}
    print(f"    {name} done in {time.perf_counter() - started:.1f} s", flush=True)
    return result


async def fetch_info(client: httpx.AsyncClient) -> JSON | None:
    with contextlib.suppress(httpx.HTTPError, ValueError):
        resp = await client.get("/info")
        if resp.status_code == 200:
            return resp.json()
    return None


async def measure_server(server: RunningServer, opts: Options) -> JSON:
    # Keep every burst connection alive, so a burst does not pay for new TCP connections.
    pool = opts.threads + 20
    limits = httpx.Limits(max_connections=pool, max_keepalive_connections=pool)
    timeout = httpx.Timeout(opts.request_timeout, connect=10.0)
    pid = server.proc.pid
    result: JSON = {"startup_s": round(server.startup_s, 2), "rss_idle_mib": tree_rss_mib(pid)}
    async with httpx.AsyncClient(
        base_url=server.base_url, timeout=timeout, limits=limits, trust_env=False
    ) as client:
        result["info"] = await fetch_info(client)
        pt = opts.phase_timeout
        result["sdk_check"] = await phase("sdk check", sdk_check(server.base_url, 60.0), pt)
        await phase("warm-up", warm_up(client, opts.warmup), pt)
        result["rss_warm_mib"] = tree_rss_mib(pid)
        result["wait_stateless_ms"] = await phase(
            f"{opts.n} x POST /runs/wait", measure_wait_stateless(client, opts.n), pt
        )
        result["wait_thread_ms"] = await phase(
            f"{opts.n} x POST /threads/{{id}}/runs/wait", measure_wait_thread(client, opts.n), pt
        )
        result["stream"] = await phase(
            f"{opts.stream_n} x POST /threads/{{id}}/runs/stream",
            measure_stream(client, opts.stream_n),
            pt,
        )
        for graph in ("echo", "sleep"):
            result[f"burst_{graph}"] = await phase(
                f"{opts.bursts} bursts of {opts.threads} {graph} runs",
                measure_bursts(client, graph, opts.threads, opts.bursts),
                pt,
            )
    result["rss_after_mib"] = tree_rss_mib(pid)
    if server.database is not None:
        result["postgres"] = {
            "database": server.database.name,
            "admin_url": redact_url(server.database.admin_url),
            "server_version": server.database.server_version,
            "backends_after": pg_backends(server.database),
        }
    return result


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

# (label, path into a server's result, higher_is_better)
ROWS: list[tuple[str, tuple[str, ...], bool]] = [
    ("POST /runs/wait p50 (ms)", ("wait_stateless_ms", "p50"), False),
    ("POST /runs/wait p90 (ms)", ("wait_stateless_ms", "p90"), False),
    ("POST /runs/wait p99 (ms)", ("wait_stateless_ms", "p99"), False),
    ("POST /runs/wait mean (ms)", ("wait_stateless_ms", "mean"), False),
    ("POST /threads/{id}/runs/wait p50 (ms)", ("wait_thread_ms", "p50"), False),
    ("POST /threads/{id}/runs/wait p90 (ms)", ("wait_thread_ms", "p90"), False),
    ("POST /threads/{id}/runs/wait p99 (ms)", ("wait_thread_ms", "p99"), False),
    ("POST /threads/{id}/runs/wait mean (ms)", ("wait_thread_ms", "mean"), False),
    ("stream: to response headers p50 (ms)", ("stream", "headers_ms", "p50"), False),
    ("stream: to `metadata` event p50 (ms)", ("stream", "metadata_ms", "p50"), False),
    ("stream: to first event after metadata p50 (ms)", ("stream", "first_event_ms", "p50"), False),
    ("stream: whole stream p50 (ms)", ("stream", "total_ms", "p50"), False),
    ("burst echo: all runs done, median burst (s)", ("burst_echo", "total_s"), False),
    ("burst echo: all runs done, best burst (s)", ("burst_echo", "total_s_min"), False),
    ("burst echo: runs/s", ("burst_echo", "runs_per_s"), True),
    ("burst echo: all creates accepted (s)", ("burst_echo", "all_accepted_s"), False),
    ("burst sleep 0.2 s: all runs done, median burst (s)", ("burst_sleep", "total_s"), False),
    ("burst sleep 0.2 s: all runs done, best burst (s)", ("burst_sleep", "total_s_min"), False),
    ("burst sleep 0.2 s: runs/s", ("burst_sleep", "runs_per_s"), True),
    ("RSS idle after start (MiB)", ("rss_idle_mib",), False),
    ("RSS after warm-up (MiB)", ("rss_warm_mib",), False),
    ("RSS after all phases (MiB)", ("rss_after_mib",), False),
    ("startup to GET /ok (s)", ("startup_s",), False),
]

ERROR_PATHS: list[tuple[str, tuple[str, ...]]] = [
    ("wait stateless", ("wait_stateless_ms", "errors")),
    ("wait thread", ("wait_thread_ms", "errors")),
    ("stream", ("stream", "total_ms", "errors")),
    ("burst echo", ("burst_echo", "errors")),
    ("burst sleep", ("burst_sleep", "errors")),
]


def dig(data: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.3g}"
    return str(value)


# The ratio columns: (numerator, denominator), shown when both servers are in the report.
RATIOS: list[tuple[str, str]] = [
    ("agentd-pg", "agentd"),
    ("agentd", "reference"),
    ("agentd-pg", "reference"),
]
PG_LATENCY_LIMIT = 2.0  # issue 13: PostgreSQL mode within 2x of SQLite on latency


def is_latency(path: tuple[str, ...]) -> bool:
    """The rows that time a request or a burst (not memory, throughput or start-up)."""
    return path[0] in ("wait_stateless_ms", "wait_thread_ms", "stream") or path[-1] in (
        "total_s",
        "total_s_min",
        "all_accepted_s",
    )


def as_ratio(a: Any, b: Any) -> float | None:
    if not isinstance(a, int | float) or not isinstance(b, int | float) or b == 0:
        return None
    return a / b


def target_lines(res: dict[str, Any]) -> list[str]:
    """Issue 13's targets, checked row by row: agentd-pg within 2x of agentd on every latency,
    and ahead of the reference wherever agentd is."""
    if not (res.get("agentd") and res.get("agentd-pg")):
        return []
    over = []
    for label, path, _ in ROWS:
        r = as_ratio(dig(res["agentd-pg"], path), dig(res["agentd"], path))
        if is_latency(path) and r is not None and r > PG_LATENCY_LIMIT:
            over.append(f"{label} {r:.2f}x")
    lines = [
        f"- agentd-pg/agentd above {PG_LATENCY_LIMIT:g}x on latency: "
        + ("; ".join(over) if over else "none"),
    ]
    if res.get("reference"):
        lost = []
        for label, path, higher_is_better in ROWS:
            if path[0].startswith("rss_"):
                continue  # memory: PostgreSQL's own processes are not counted (see below)
            sqlite_r = as_ratio(dig(res["agentd"], path), dig(res["reference"], path))
            pg_r = as_ratio(dig(res["agentd-pg"], path), dig(res["reference"], path))
            if sqlite_r is None or pg_r is None:
                continue
            sqlite_wins = sqlite_r > 1 if higher_is_better else sqlite_r < 1
            pg_wins = pg_r > 1 if higher_is_better else pg_r < 1
            if sqlite_wins and not pg_wins:
                lost.append(f"{label} ({ratio_text(pg_r)})")
        lines.append(
            "- rows where agentd beats the reference and agentd-pg does not: "
            + ("; ".join(lost) if lost else "none")
        )
    return lines


def ratio_text(r: float | None) -> str:
    if r is None:
        return "—"
    return f"{r:.2g}x" if r < 0.1 else f"{r:.2f}x"


def ratio(a: Any, b: Any) -> str:
    return ratio_text(as_ratio(a, b))


def render_markdown(report: JSON) -> str:
    meta = report["meta"]
    servers: dict[str, JSON] = report["servers"]
    shown = [name for name in SERVER_NAMES if name in servers]
    res = {name: servers.get(name, {}).get("result") for name in SERVER_NAMES}
    ratios = [(a, b) for a, b in RATIOS if a in shown and b in shown]
    opts = meta["options"]
    lines = [
        f"# agentd benchmark — {meta['timestamp']}",
        "",
        f"commit `{meta['git_commit']}` · {meta['nproc']} cores · {meta['platform']} · "
        f"n={opts['n']} stream_n={opts['stream_n']} "
        f"burst={opts['threads']} threads x {opts.get('bursts', 1)} · "
        f"run slots: agentd {opts['agentd_jobs'] or 'default'}, reference "
        f"{opts['reference_jobs']}",
    ]
    if meta.get("load_before") is not None:
        lines[-1] += f" · load average before: {meta['load_before']}"
    lines.append("")
    for name in shown:
        entry = servers[name]
        version = dig(entry, ("result", "info", "version"))
        reason = entry.get("reason")
        status = entry["status"] + (f" ({reason.splitlines()[0]})" if reason else "")
        line = f"- **{name}**: {status}" + (f", version {version}" if version else "")
        if load := entry.get("load_avg"):
            line += f", load average (1 min) {load['start'][0]} → {load['end'][0]}"
        if pg := dig(entry, ("result", "postgres")):
            line += f", PostgreSQL {pg.get('server_version')} (database {pg.get('database')})"
        lines.append(line)
    lines += [
        "",
        "Lower is better except runs/s. A ratio a/b below 1x means a's number is lower. "
        "agentd = SQLite, agentd-pg = PostgreSQL.",
        "",
        "| metric | " + " | ".join(shown) + "".join(f" | {a}/{b}" for a, b in ratios) + " |",
        "| --- |" + " ---: |" * (len(shown) + len(ratios)),
    ]
    for label, path, _ in ROWS:
        values = [fmt(dig(res[name], path)) for name in shown]
        rs = [ratio(dig(res[a], path), dig(res[b], path)) for a, b in ratios]
        lines.append(f"| {label} | " + " | ".join(values + rs) + " |")
    if targets := target_lines(res):
        lines += ["", "Issue 13's targets:", "", *targets]
    if pg := dig(res.get("agentd-pg"), ("postgres", "backends_after")):
        lines += [
            "",
            "RSS is the agentd process tree only. agentd-pg's PostgreSQL sessions are "
            "PostgreSQL's processes, not agentd's, and are not counted: after all phases "
            f"{pg.get('sessions', '?')} sessions on the bench database, "
            f"{fmt(pg.get('vmrss_mib_incl_shared'))} MiB VmRSS together "
            "(shared buffers included, so not comparable with agentd's).",
        ]
    errors = [
        f"{name} {what}: {dig(res[name], path)}"
        for name in shown
        for what, path in ERROR_PATHS
        if dig(res[name], path)
    ]
    sdk = [f"{name}: {dig(res[name], ('sdk_check', 'ok'))}" for name in shown if res[name]]
    lines += ["", "SDK round-trip ok: " + (", ".join(sdk) or "—")]
    lines += ["", "Errors: " + ("; ".join(errors) if errors else "none"), ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_DIR), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return out.stdout.strip() or "none"
    except (OSError, subprocess.SubprocessError):
        return "none"


def default_label() -> str:
    host = socket.gethostname().split(".")[0]
    cleaned = "".join(c if c.isalnum() or c in "-_" else "-" for c in host).strip("-")
    return cleaned[:40] or "run"


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages: how busy the shared machine was."""
    return [round(x, 2) for x in os.getloadavg()]


class Started(Protocol):
    """What a server under test (one process, or distributed.py's cluster) offers once up."""

    @property
    def base_url(self) -> str: ...

    @property
    def startup_s(self) -> float: ...


S = TypeVar("S", bound=Started)
Measure = Callable[[RunningServer, Options], Awaitable[JSON]]


def with_load_avg(entry_of: Callable[[], JSON]) -> JSON:
    """``entry_of()``, with the load average at its start and end (the machine is shared)."""
    load_start = load_average()
    entry = entry_of()
    entry["load_avg"] = {"start": load_start, "end": load_average()}
    return entry


def run_one(spec: ServerSpec, opts: Options, measure: Measure | None = None) -> JSON:
    return with_load_avg(lambda: run_server(spec, opts, measure or measure_server))


def run_server(spec: ServerSpec, opts: Options, measure: Measure | None = None) -> JSON:
    if not spec.executable.exists():
        print(f"[{spec.name}] SKIPPED: {spec.executable} not found; {spec.missing_hint}")
        return {"status": "skipped", "reason": f"{spec.executable} not found; {spec.missing_hint}"}
    print(f"[{spec.name}] starting {spec.executable.name} ...", flush=True)
    measure = measure or measure_server
    return run_started(
        spec.name, lambda: running_server(spec, opts), lambda server: measure(server, opts)
    )


def run_started(
    name: str,
    start: Callable[[], contextlib.AbstractContextManager[S]],
    measure: Callable[[S], Awaitable[JSON]],
) -> JSON:
    """Start a server under test, measure it, stop it: ``{"status": "ok", "result": ...}``, or
    ``skipped`` (a service it needs is missing) or ``failed`` (with the reason)."""
    try:
        with start() as server:
            print(f"[{name}] up at {server.base_url} in {server.startup_s:.1f} s", flush=True)
            result = asyncio.run(measure(server))
    except DatabaseUnavailable as exc:
        print(f"[{name}] SKIPPED: {exc}", flush=True)
        return {"status": "skipped", "reason": str(exc)}
    except RuntimeError as exc:
        print(f"[{name}] FAILED: {exc}", flush=True)
        return {"status": "failed", "reason": str(exc)}
    print(f"[{name}] done", flush=True)
    return {"status": "ok", "result": result}


def save_report(report: JSON, out_dir: Path, label: str, markdown: str) -> Path:
    """``<out_dir>/<timestamp>-<label>.json`` (every number) and ``.md`` (the table)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{report['meta']['timestamp']}-{label}"
    json_path = out_dir / f"{stem}.json"
    json_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out_dir / f"{stem}.md").write_text(markdown)
    return json_path


def write_report(report: JSON, opts: Options) -> Path:
    return save_report(report, opts.out_dir, opts.label, render_markdown(report))


def report_meta(started: datetime, options: JSON) -> JSON:
    """What every result file says about the run: when, which commit, which machine, how
    busy it was, with which options."""
    return {
        "timestamp": started.strftime("%Y%m%dT%H%M%SZ"),
        "git_commit": git_commit(),
        "nproc": os.cpu_count(),
        "platform": f"{platform.system()} {platform.machine()}, Python {platform.python_version()}",
        "hostname": socket.gethostname(),
        "run_id": str(uuid.uuid4()),
        "load_before": load_average(),
        "options": options,
    }


def parse_args(argv: list[str] | None = None) -> Options:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--servers",
        default=",".join(SERVER_NAMES),
        help=f"comma list of {','.join(SERVER_NAMES)} (default: all)",
    )
    p.add_argument("-n", "--n", type=int, default=200, help="sequential runs per latency test")
    p.add_argument("--stream-n", type=int, default=None, help="streams to time (default: n)")
    p.add_argument("--threads", type=int, default=100, help="threads/runs in each burst")
    p.add_argument("--bursts", type=int, default=5, help="bursts per graph (median reported)")
    p.add_argument("--warmup", type=int, default=5, help="warm-up runs before measuring")
    p.add_argument(
        "--agentd-jobs", type=int, default=None, help="agentd serve --jobs (default: not passed)"
    )
    p.add_argument(
        "--reference-jobs", type=int, default=10, help="langgraph dev --n-jobs-per-worker"
    )
    p.add_argument(
        "--pg-url",
        default=os.environ.get("AGENTD_BENCH_PG_URL") or DEFAULT_PG_URL,
        help="admin URL on which agentd-pg's database is created and dropped "
        f"(env AGENTD_BENCH_PG_URL; default {DEFAULT_PG_URL})",
    )
    p.add_argument("--startup-timeout", type=float, default=180.0, help="seconds to wait for /ok")
    p.add_argument("--request-timeout", type=float, default=60.0, help="per-request timeout (s)")
    p.add_argument("--phase-timeout", type=float, default=900.0, help="per-phase timeout (s)")
    p.add_argument("--label", default=default_label(), help="suffix of the result file names")
    p.add_argument("--out-dir", type=Path, default=BENCH_DIR / "results")
    p.add_argument("--no-save", action="store_true", help="print the table only")
    a = p.parse_args(argv)
    servers = [s.strip() for s in a.servers.split(",") if s.strip()]
    unknown = sorted(set(servers) - set(SERVER_NAMES))
    if unknown or not servers:
        p.error(f"--servers: unknown {unknown}; choose from {','.join(SERVER_NAMES)}")
    if urllib.parse.urlsplit(a.pg_url).scheme not in ("postgresql", "postgres"):
        p.error("--pg-url must be a postgresql://user@host:port/dbname URL")
    for name in ("n", "threads"):
        if not 1 <= getattr(a, name) <= 100_000:
            p.error(f"--{name} must be between 1 and 100000")
    return Options(
        servers=servers,
        n=a.n,
        stream_n=a.stream_n if a.stream_n is not None else a.n,
        threads=a.threads,
        bursts=max(1, a.bursts),
        warmup=max(0, a.warmup),
        agentd_jobs=a.agentd_jobs,
        reference_jobs=a.reference_jobs,
        pg_url=a.pg_url,
        startup_timeout=a.startup_timeout,
        request_timeout=a.request_timeout,
        phase_timeout=a.phase_timeout,
        label=a.label,
        out_dir=a.out_dir,
        save=not a.no_save,
    )


def on_sigterm(signum: int, _frame: object) -> None:
    global _stop_requested
    _stop_requested = True
    raise SystemExit(128 + signum)  # unwinds through running_server's cleanup


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    signal.signal(signal.SIGTERM, on_sigterm)
    started = datetime.now(UTC)
    options: JSON = {
        "servers": opts.servers,
        "n": opts.n,
        "stream_n": opts.stream_n,
        "threads": opts.threads,
        "bursts": opts.bursts,
        "warmup": opts.warmup,
        "agentd_jobs": opts.agentd_jobs,
        "reference_jobs": opts.reference_jobs,
        "pg_url": redact_url(opts.pg_url) if "agentd-pg" in opts.servers else None,
        "sleep_graph_seconds": SLEEP_GRAPH_SECONDS,
    }
    report: JSON = {"meta": report_meta(started, options), "servers": {}}
    for spec in server_specs(opts):
        report["servers"][spec.name] = run_one(spec, opts)
    report["meta"]["duration_s"] = round((datetime.now(UTC) - started).total_seconds(), 1)
    print()
    print(render_markdown(report))
    if opts.save:
        print(f"wrote {write_report(report, opts)} (and .md)")
    ok = any(entry["status"] == "ok" for entry in report["servers"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
