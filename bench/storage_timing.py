"""Where a request's time goes in agentd's storage, on SQLite and on PostgreSQL side by side.

    .venv/bin/python bench/storage_timing.py [--backends sqlite,postgres] [-n 100]

Serves the bench graphs from ``agentd serve`` in a child process whose storage calls are timed
(nothing in agentd/ is changed: the child wraps the methods before it starts the server), then
drives ``run.py``'s scenarios against it one at a time. After each scenario the child dumps
what it timed since the last dump (SIGUSR1); the report lists, per scenario and backend:

- ``await <method>``: a storage method as its caller awaits it (thread hop, connection, every
  statement, commit), e.g. ``await create_run``;
- ``tx <method>``: the transaction's own function on the storage thread (PostgreSQL: from taking
  a pooled connection to COMMIT; SQLite: the group commit's batch or an inline lookup), so
  ``await`` minus ``tx`` is time spent queued for a thread or a connection;
- ``saver <method>``: LangGraph's checkpointer (``aput``, ``aput_writes``, ``aget_tuple``...).

PostgreSQL gets a fresh database on ``--pg-url`` (dropped afterwards), as in run.py. Every
request, scenario and statement is bounded in time, as in run.py. Diagnostic only: nothing is
saved unless ``--out`` is given.

``--experiment`` tries a change on the PostgreSQL server without touching agentd/ (each is a
patch applied in the child, or a setting of the throwaway database):

- ``saver-pool``: LangGraph's ``AsyncPostgresSaver`` takes an instance-wide ``asyncio.Lock``
  around every operation, even on a connection pool (langgraph issue #7259, PR #7269), so one
  checkpoint read or write runs at a time in the whole process. This replaces the lock with a
  semaphore as wide as the pool, the workaround given in that issue.
- ``async-commit``: ``ALTER DATABASE ... SET synchronous_commit = off``: a commit returns
  before its WAL is flushed (a crash of the machine may lose the last few hundred ms of
  commits, never corrupts), which is what SQLite's ``synchronous = NORMAL`` in WAL mode, agentd's
  default, also gives.
- ``switch-interval``: ``sys.setswitchinterval(0.0005)`` in the server (Python's default is
  5 ms). agentd's PostgreSQL transactions run psycopg's blocking calls on threads; each round
  trip gives up the GIL and must take it back from a busy event loop, which may hold it for up
  to the switch interval. If transactions get faster with a shorter interval, that hand-off is
  where their time goes.

``--pg-stats`` (a PostgreSQL server with ``pg_stat_statements`` loaded, e.g. a throwaway cluster:
the shared one does not preload it) adds, per scenario, the server's side: the statements by
total execution time, the commits, and the WAL flushes (``pg_stat_wal``, with
``track_wal_io_timing = on`` for their time).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import inspect
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import run  # beside this script

# ------------------------------------------------------------------------------ child side

_samples: dict[str, list[float]] = defaultdict(list)
_samples_lock = threading.Lock()


def _record(name: str, started: float) -> None:
    elapsed = (time.perf_counter() - started) * 1000
    with _samples_lock:
        _samples[name].append(elapsed)


def _wrap_async(cls: type, name: str, label: str) -> None:
    original = cls.__dict__[name]

    @functools.wraps(original)
    async def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await original(*args, **kwargs)
        finally:
            _record(label, started)

    setattr(cls, name, timed)


def _wrap_sync(cls: type, name: str, label_of: Any) -> None:
    original = cls.__dict__[name]

    @functools.wraps(original)
    def timed(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(self, fn, *args, **kwargs)
        finally:
            _record(label_of(fn), started)

    setattr(cls, name, timed)


def _method_of(fn: Any) -> str:
    """``RelationalStorage.claim_runs.<locals>.tx`` -> ``claim_runs``."""
    parts = getattr(fn, "__qualname__", repr(fn)).split(".")
    return parts[1] if len(parts) > 2 and parts[2] == "<locals>" else parts[-1]


def _dump(path: Path) -> None:
    with _samples_lock:
        taken = {name: list(values) for name, values in _samples.items()}
        _samples.clear()
    summary = {
        name: {
            "calls": len(v),
            "total_ms": round(sum(v), 1),
            "mean_ms": round(statistics.fmean(v), 3),
            "p50_ms": round(statistics.median(v), 3),
            "max_ms": round(max(v), 2),
        }
        for name, v in taken.items()
    }
    with path.open("a") as out:
        out.write(json.dumps(summary) + "\n")


EXPERIMENTS = ("saver-pool", "async-commit", "switch-interval")


def child_main(stats_path: Path, agentd_argv: list[str], experiments: list[str]) -> None:
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

    from agentd import cli
    from agentd.storage import postgres, relational, sqlite
    from agentd.storage.checkpointer import SqliteCheckpointer

    for name, member in list(vars(relational.RelationalStorage).items()):
        if not name.startswith("_") and inspect.iscoroutinefunction(member):
            _wrap_async(relational.RelationalStorage, name, f"await {name}")
    for cls in (postgres.PostgresStorage, sqlite.SqliteStorage):
        for name, member in list(vars(cls).items()):
            if not name.startswith("_") and inspect.iscoroutinefunction(member):
                _wrap_async(cls, name, f"await {name}")
    _wrap_sync(postgres.PostgresStorage, "_transact", lambda fn: f"tx {_method_of(fn)}")

    def batch_label(batch: Any) -> str:
        return f"tx group commit ({len(batch)} writes)" if len(batch) > 1 else "tx one write"

    _wrap_sync(sqlite.SqliteStorage, "_commit_batch", batch_label)
    for cls in (AsyncPostgresSaver, SqliteCheckpointer):
        for name in ("aput", "aput_writes", "aget_tuple", "alist"):
            if name in vars(cls):
                _wrap_async(cls, name, f"saver {name}")
    if "saver-pool" in experiments:
        opened = postgres.PostgresStorage.open

        async def open_with_saver_pool(self: Any) -> None:
            await opened(self)
            self.checkpointer.lock = asyncio.Semaphore(postgres.POOL_SIZE)

        postgres.PostgresStorage.open = open_with_saver_pool
    if "switch-interval" in experiments:
        sys.setswitchinterval(0.0005)
    signal.signal(signal.SIGUSR1, lambda *_: _dump(stats_path))
    sys.exit(cli.main(agentd_argv))


# ------------------------------------------------------------------------------ driver side

SCENARIOS = ("warm-up", "wait_stateless", "wait_thread", "stream", "burst_echo", "burst_sleep")


def timed_spec(
    backend: str, opts: run.Options, stats_path: Path, experiments: list[str]
) -> run.ServerSpec:
    agentd = run.agentd_spec(None, opts.pg_url if backend == "postgres" else None)

    def build(port: int, workdir: Path, db: run.BenchDatabase | None) -> list[str]:
        argv = agentd.build_args(port, workdir, db)[1:]  # without the agentd executable
        tried = ",".join(experiments) or "-"
        script = str(Path(__file__).resolve())
        return [sys.executable, script, "--child", str(stats_path), tried, *argv]

    database = agentd.database
    if database is not None and "async-commit" in experiments:
        make = database

        @contextlib.contextmanager
        def database_async_commit() -> Any:
            with make() as db:
                from psycopg import sql

                with run.pg_admin_connect(db.admin_url) as conn:
                    conn.execute(
                        sql.SQL("ALTER DATABASE {} SET synchronous_commit = off").format(
                            sql.Identifier(db.name)
                        )
                    )
                yield db

        database = database_async_commit
    return run.ServerSpec(backend, Path(sys.executable), "", build, database)


def pg_stats_reset(db: run.BenchDatabase) -> None:
    with run.pg_admin_connect(db.admin_url) as conn:
        conn.execute("SELECT pg_stat_statements_reset()")
        conn.execute("SELECT pg_stat_reset_shared('wal')")
        conn.execute("SELECT pg_stat_reset()")  # this database's counters (admin database's)


def pg_stats_read(db: run.BenchDatabase) -> JSONish:
    """The server's side of a scenario: statements on the bench database, its commits, and
    the cluster's WAL writes and flushes (the bench database is the only busy one there)."""
    with run.pg_admin_connect(db.admin_url) as conn:
        statements = [
            {
                "query": " ".join(str(q).split())[:160],
                "calls": calls,
                "total_ms": round(total, 1),
                "mean_ms": round(mean, 3),
                "rows": rows,
            }
            for q, calls, total, mean, rows in conn.execute(
                "SELECT query, calls, total_exec_time, mean_exec_time, rows"
                " FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid"
                " WHERE d.datname = %s ORDER BY total_exec_time DESC",
                (db.name,),
            )
        ]
        wal = conn.execute(
            "SELECT wal_records, wal_bytes, wal_write, wal_sync, wal_write_time, wal_sync_time"
            " FROM pg_stat_wal"
        ).fetchone()
        xact = conn.execute(
            "SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = %s",
            (db.name,),
        ).fetchone()
    calls = sum(s["calls"] for s in statements)
    return {
        "statements": statements,
        "statement_calls": calls,
        "statement_exec_ms": round(sum(s["total_ms"] for s in statements), 1),
        "wal": dict(
            zip(
                ("records", "bytes", "writes", "syncs", "write_ms", "sync_ms"),
                (float(v) for v in wal),  # wal_bytes is numeric
                strict=True,
            )
        ),
        "commits": xact[0] if xact else None,
    }


async def drive(
    server: run.RunningServer, opts: run.Options, stats_path: Path, pg_stats: bool = False
) -> JSONish:
    """Each scenario in turn, the child's timings dumped after each; their wall times and
    results (the dumps are read by ``collect``)."""
    timeout = httpx.Timeout(opts.request_timeout, connect=10.0)
    limits = httpx.Limits(max_connections=opts.threads + 20)
    wall: dict[str, float] = {}
    async with httpx.AsyncClient(
        base_url=server.base_url, timeout=timeout, limits=limits, trust_env=False
    ) as client:
        work = {
            "warm-up": lambda: run.warm_up(client, opts.warmup),
            "wait_stateless": lambda: run.measure_wait_stateless(client, opts.n),
            "wait_thread": lambda: run.measure_wait_thread(client, opts.n),
            "stream": lambda: run.measure_stream(client, opts.stream_n),
            "burst_echo": lambda: run.measure_bursts(client, "echo", opts.threads, opts.bursts),
            "burst_sleep": lambda: run.measure_bursts(client, "sleep", opts.threads, opts.bursts),
        }
        results = {}
        server_side: dict[str, JSONish] = {}
        db = server.database if pg_stats else None
        for name in SCENARIOS:
            if db is not None:
                await asyncio.to_thread(pg_stats_reset, db)
            started = time.perf_counter()
            results[name] = await run.phase(name, work[name](), opts.phase_timeout)
            wall[name] = round((time.perf_counter() - started) * 1000, 1)
            if db is not None:
                server_side[name] = await asyncio.to_thread(pg_stats_read, db)
            lines_before = _line_count(stats_path)
            os.kill(server.proc.pid, signal.SIGUSR1)
            for _ in range(100):  # up to 5 s for the dump
                if _line_count(stats_path) > lines_before:
                    break
                await asyncio.sleep(0.05)
    return {
        name: {"wall_ms": wall[name], "result": results[name]}
        | ({"postgres": server_side[name]} if name in server_side else {})
        for name in results
    }


def collect(measured: JSONish, stats_path: Path) -> JSONish:
    dumps = [json.loads(line) for line in stats_path.read_text().splitlines()]
    for name, calls in zip(SCENARIOS, dumps, strict=False):
        measured[name]["calls"] = calls
    return measured


JSONish = dict[str, Any]
# The scenario's headline number in run.py's result.
HEADLINE = {
    "wait_stateless": ("p50", ("p50",)),
    "wait_thread": ("p50", ("p50",)),
    "stream": ("whole stream p50", ("total_ms", "p50")),
    "burst_echo": ("median burst s", ("total_s",)),
    "burst_sleep": ("median burst s", ("total_s",)),
}


def _line_count(path: Path) -> int:
    try:
        return len(path.read_text().splitlines())
    except OSError:
        return 0


def render(report: dict[str, JSONish], top: int) -> str:
    backends = list(report)
    lines = []
    for scenario in SCENARIOS:
        per = {b: report[b].get(scenario, {}) for b in backends}
        walls = " · ".join(f"{b} {per[b].get('wall_ms', '—')} ms" for b in backends)
        lines += ["", f"## {scenario} (scenario wall time: {walls})", ""]
        if scenario in HEADLINE:
            what, path = HEADLINE[scenario]
            values = [f"{b} {run.fmt(run.dig(per[b].get('result'), path))}" for b in backends]
            lines += [f"{what}: " + " · ".join(values), ""]
        names: set[str] = set()
        for b in backends:
            names |= set(per[b].get("calls", {}))

        def weight(name: str, per: JSONish = per) -> float:
            return max(per[b].get("calls", {}).get(name, {}).get("total_ms", 0) for b in backends)

        head = "| call | " + " | ".join(f"{b} calls | {b} mean ms | {b} total ms" for b in backends)
        lines += [head + " |", "| --- |" + " ---: |" * (3 * len(backends))]
        for name in sorted(names, key=weight, reverse=True)[:top]:
            cells = []
            for b in backends:
                c = per[b].get("calls", {}).get(name)
                cells += (
                    [str(c["calls"]), f"{c['mean_ms']:.2f}", f"{c['total_ms']:.0f}"]
                    if c
                    else ["—"] * 3
                )
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        for b in backends:
            if pg := per[b].get("postgres"):
                lines += render_pg(b, pg, top)
    return "\n".join(lines) + "\n"


def render_pg(backend: str, pg: JSONish, top: int) -> list[str]:
    wal = pg["wal"]
    lines = [
        "",
        f"{backend}, PostgreSQL's side: {pg['statement_calls']} statements executing "
        f"{pg['statement_exec_ms']} ms in all, {pg['commits']} commits; WAL: {wal['syncs']:.0f} "
        f"flushes taking {wal['sync_ms']:.0f} ms, {wal['writes']:.0f} writes, "
        f"{wal['records']:.0f} records, {wal['bytes']:.0f} bytes",
        "",
        "| statement | calls | mean ms | total ms |",
        "| --- | ---: | ---: | ---: |",
    ]
    for st in pg["statements"][:top]:
        query = st["query"].replace("|", "\\|")
        lines.append(f"| `{query}` | {st['calls']} | {st['mean_ms']:.3f} | {st['total_ms']:.0f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child_main(Path(argv[1]), argv[3:], [e for e in argv[2].split(",") if e != "-"])
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backends", default="sqlite,postgres")
    p.add_argument("-n", type=int, default=100)
    p.add_argument("--threads", type=int, default=100)
    p.add_argument("--bursts", type=int, default=3)
    p.add_argument("--top", type=int, default=12, help="calls listed per scenario")
    p.add_argument("--pg-url", default=os.environ.get("AGENTD_BENCH_PG_URL") or run.DEFAULT_PG_URL)
    p.add_argument("--out", type=Path, default=None, help="write the JSON here")
    p.add_argument(
        "--pg-stats",
        action="store_true",
        help="per scenario, pg_stat_statements and pg_stat_wal (the server must preload it)",
    )
    p.add_argument(
        "--experiment",
        action="append",
        default=[],
        help=f"for postgres: {', '.join(EXPERIMENTS)} (comma list; repeatable)",
    )
    a = p.parse_args(argv)
    experiments = [e.strip() for x in a.experiment for e in x.split(",") if e.strip()]
    if unknown := sorted(set(experiments) - set(EXPERIMENTS)):
        p.error(f"--experiment: unknown {unknown}; choose from {', '.join(EXPERIMENTS)}")
    opts = run.parse_args(
        ["-n", str(a.n), "--threads", str(a.threads), "--bursts", str(a.bursts),
         "--pg-url", a.pg_url, "--phase-timeout", "600", "--no-save"]
    )  # fmt: skip
    report: dict[str, JSONish] = {}
    for label in [b.strip() for b in a.backends.split(",") if b.strip()]:
        # "postgres" as is, "postgres+" with the experiments: both can run in one invocation.
        backend, tried = label.rstrip("+"), experiments if label.endswith("+") else []
        if backend not in ("sqlite", "postgres"):
            p.error(f"--backends: unknown {label!r}; sqlite, postgres or postgres+")
        with contextlib.ExitStack() as stack:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="storage-timing-"))
            stats_path = Path(tmp) / "stats.jsonl"
            print(f"[{label}] {tried or ''} load average {run.load_average()}", flush=True)
            spec = timed_spec(backend, opts, stats_path, tried)
            server = stack.enter_context(run.running_server(spec, opts))
            pg_stats = a.pg_stats and backend == "postgres"
            measured = asyncio.run(drive(server, opts, stats_path, pg_stats))
            report[label] = collect(measured, stats_path)
    text = render(report, a.top)
    print(text)
    if a.out:
        a.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
