"""Distributed measurements of agentd (issue 14): one API server (``agentd serve --jobs 0``) and
``agentd worker`` processes sharing one PostgreSQL database and one Redis.

Scenarios (``--scenarios``, default all three, in this order):

- ``scaling``: throughput of the ``sleep`` graph (awaits 0.2 s) with 1, 2 and 4 workers of
  ``--slots`` run slots each, in bursts large enough to keep every slot busy;
- ``compare``: echo latency and burst throughput of such a cluster beside agentd on SQLite,
  agentd on PostgreSQL (one process) and the reference dev server, one after the other;
- ``lease``: the worker holding a running run is killed with SIGKILL; the time until another
  worker has restarted the run (``attempt`` 2, its node started again), against the bound
  lease + heartbeat.

Servers, databases, measurements and result files are run.py's. See bench/README.md.

    .venv/bin/python bench/distributed.py [--scenarios scaling,compare,lease] [--no-save]

Every cluster gets a fresh database (dropped afterwards) and a Redis key prefix of its own
(its keys deleted afterwards), on every exit path but a SIGKILL of this script. Every loop is
bounded, every request and phase has a timeout, and all traffic goes to 127.0.0.1 (and to that
PostgreSQL server and Redis).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import run as bench  # beside this script: servers, databases, measurements, result files

JSON = dict[str, Any]

SCENARIOS = ("scaling", "compare", "lease")
COMPARE_SERVERS = ("agentd", "agentd-pg", "agentd-cluster", "reference")
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
REDIS_TIMEOUT_S = 10.0
AGENTD = bench.REPO_DIR / ".venv" / "bin" / "agentd"
INSTALL_HINT = "install the repo first: make .venv/bin/agentd"
WORKER_READY = "run slots"  # what a worker logs once it claims runs
# "worker <id>: 10 run slots, leases of 20 s renewed every 5 s": the settings in force.
LEASE_LINE = re.compile(r"leases of ([0-9.e+-]+) s renewed every ([0-9.e+-]+) s")
POLL_S = 0.05
CLK_TCK = os.sysconf("SC_CLK_TCK")
# The compare table: run.py's rows for what this scenario measures.
COMPARE_ROWS = [
    row
    for row in bench.ROWS
    if row[1][0] in ("wait_stateless_ms", "burst_echo", "startup_s") or row[1][0][:4] == "rss_"
]
COMPARE_RATIOS = [
    ("agentd-cluster", "agentd-pg"),
    ("agentd-cluster", "agentd"),
    ("agentd-cluster", "reference"),
]


@dataclass(frozen=True)
class Options:
    scenarios: list[str]
    workers: list[int]  # scaling: the cluster sizes measured
    slots: int  # scaling: run slots per worker
    scale_runs: int
    scale_bursts: int
    servers: list[str]  # compare
    cluster_workers: int  # compare: workers of agentd-cluster
    worker_jobs: int | None  # compare and lease: each worker's --jobs (None: agentd's default)
    lease_seconds: float | None  # None: agentd's default
    heartbeat_seconds: float | None
    lease_trials: int
    lease_run_seconds: float
    redis_url: str
    label: str
    out_dir: Path
    save: bool
    bench: bench.Options  # what run.py's helpers read: n, threads, bursts, timeouts, pg_url


# --------------------------------------------------------------------------------------------
# The cluster: one API server and N workers on a fresh database and Redis prefix
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def redis_prefix(url: str) -> Iterator[str]:
    """A fresh key prefix on the shared Redis, yielded, then every key under it deleted
    (never a flush: other deployments and test runs use the same Redis)."""
    try:
        import redis  # agentd's dependency, in .venv
    except ImportError as exc:
        raise bench.DatabaseUnavailable(f"redis is not installed in this Python ({exc})") from None
    client = redis.Redis.from_url(
        url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S
    )
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        client.close()
        raise bench.DatabaseUnavailable(
            f"cannot reach Redis at {bench.redact_url(url)}: {exc}; start it or pass "
            "--redis-url (or AGENTD_BENCH_REDIS_URL)"
        ) from None
    prefix = f"agentd-bench:{uuid.uuid4().hex[:12]}:"
    try:
        yield prefix
    finally:
        try:
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            for start in range(0, len(keys), 500):
                client.delete(*keys[start : start + 500])
            print(f"[redis] deleted {len(keys)} key(s) under {prefix}", flush=True)
        except (redis.RedisError, OSError) as exc:  # say so, but keep the run's own outcome
            print(f"[redis] could not delete the keys under {prefix}: {exc}", flush=True)
        finally:
            client.close()


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process so far (0 once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rfind(")") + 2 :].split()  # fields[0] is field 3 (state)
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime: fields 14 and 15


@dataclass
class WorkerProcess:
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def kill9(self) -> None:
        """What a crash looks like to the others: SIGKILL, no drain, no hand-back."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


@dataclass
class Cluster:
    name: str
    workdir: Path
    env: dict[str, str]
    database: bench.BenchDatabase
    redis_url: str
    redis_prefix: str
    worker_jobs: int | None
    api: bench.RunningServer | None = None
    workers: list[WorkerProcess] = field(default_factory=list)  # the dead ones too, for logs
    startup_s: float = 0.0

    @property
    def server(self) -> bench.RunningServer:
        assert self.api is not None, "the API server is started with the cluster"
        return self.api

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def alive(self) -> list[WorkerProcess]:
        return [w for w in self.workers if w.proc.poll() is None]

    def spawn_worker(self) -> WorkerProcess:
        argv = [
            str(AGENTD), "worker",
            "--config", str(self.workdir / "langgraph.json"),
            "--database-url", self.database.url,
            "--redis-url", self.redis_url,
        ] + (["--jobs", str(self.worker_jobs)] if self.worker_jobs is not None else [])  # fmt: skip
        log_path = self.workdir / f"worker{len(self.workers)}.log"
        worker = WorkerProcess(bench.spawn(argv, self.workdir, log_path, self.env), log_path)
        self.workers.append(worker)
        return worker

    def wait_ready(self, workers: list[WorkerProcess], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        waiting = list(workers)
        while waiting:
            for worker in waiting:
                if worker.proc.poll() is not None:
                    raise RuntimeError(f"a worker exited with code {worker.proc.returncode}")
            waiting = [w for w in waiting if WORKER_READY not in w.log()]
            if waiting and time.monotonic() > deadline:
                raise RuntimeError(f"{len(waiting)} worker(s) not ready within {timeout:.0f} s")
            time.sleep(0.1)

    def replace_dead_workers(self, timeout: float) -> None:
        dead = len(self.workers) - len(self.alive)
        self.wait_ready([self.spawn_worker() for _ in range(dead)], timeout)

    def worker_with_pid(self, pid: int) -> WorkerProcess | None:
        return next((w for w in self.alive if w.proc.pid == pid), None)

    def pids(self) -> list[int]:
        return [self.server.proc.pid, *(w.proc.pid for w in self.alive)]

    def rss_mib(self) -> float:
        return round(sum(bench.tree_rss_mib(pid) for pid in self.pids()), 1)

    def cpu(self) -> JSON:
        """CPU seconds so far: the API server, and each live worker."""
        return {
            "api": cpu_s(self.server.proc.pid),
            "workers": [cpu_s(w.proc.pid) for w in self.alive],
        }

    def lease_settings(self) -> JSON:
        """The lease and heartbeat in force, as the first worker logged them."""
        for worker in self.workers:
            if match := LEASE_LINE.search(worker.log()):
                return {"lease_s": float(match[1]), "heartbeat_s": float(match[2])}
        raise RuntimeError("no worker logged its lease settings")

    def log_tails(self, lines: int = 15) -> str:
        parts = []
        if self.api is not None:
            parts.append(f"--- api.log ---\n{bench.log_tail(self.api.log_path, lines)}")
        for worker in self.workers:
            parts.append(
                f"--- {worker.log_path.name} ---\n{bench.log_tail(worker.log_path, lines)}"
            )
        return "\n".join(parts)

    def stop(self) -> None:
        """The API server first (no new runs), then the workers (SIGTERM: each drains)."""
        if self.api is not None:
            bench.stop_process(self.api.proc)
        for worker in self.workers:
            bench.stop_process(worker.proc)


@contextlib.contextmanager
def running_cluster(
    name: str, workers: int, worker_jobs: int | None, opts: Options, env: dict[str, str]
) -> Iterator[Cluster]:
    """One ``agentd serve --jobs 0`` and ``workers`` ``agentd worker`` processes on a fresh
    database and Redis prefix, started at once; stopped (then the database dropped and the keys
    deleted) whatever happens, a SIGTERM of this script included."""
    if not AGENTD.exists():
        raise bench.DatabaseUnavailable(f"{AGENTD} not found; {INSTALL_HINT}")
    with (
        redis_prefix(opts.redis_url) as prefix,
        bench.bench_database(opts.bench.pg_url) as db,
        tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp,
    ):
        workdir = Path(tmp)
        bench.prepare_workdir(workdir)
        child_env = {**bench.child_env(), "AGENTD_REDIS_PREFIX": prefix, **env}
        port = bench.free_port()
        started = time.perf_counter()
        api_argv = [
            str(AGENTD), "serve",
            "--config", str(workdir / "langgraph.json"),
            "--host", bench.HOST, "--port", str(port),
            "--database-url", db.url, "--redis-url", opts.redis_url,
            "--jobs", "0",
        ]  # fmt: skip
        api_log = workdir / "api.log"
        cluster = Cluster(name, workdir, child_env, db, opts.redis_url, prefix, worker_jobs)
        try:
            timeout = opts.bench.startup_timeout
            first = [cluster.spawn_worker()]
            cluster.api = bench.RunningServer(
                name,
                bench.spawn(api_argv, workdir, api_log, child_env),
                f"http://{bench.HOST}:{port}",
                api_log,
                database=db,
            )
            rest = [cluster.spawn_worker() for _ in range(workers - 1)]
            cluster.wait_ready(first + rest, timeout)
            bench.wait_until_ok(cluster.api, timeout)
            cluster.startup_s = time.perf_counter() - started
            yield cluster
        except Exception as exc:
            raise RuntimeError(f"{name}: {exc}\n{cluster.log_tails()}") from exc
        finally:
            cluster.stop()


def http_client(base_url: str, opts: Options, pool: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=httpx.Timeout(opts.bench.request_timeout, connect=10.0),
        limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
        trust_env=False,
    )


def lease_env(opts: Options) -> dict[str, str]:
    env = {}
    if opts.lease_seconds is not None:
        env["AGENTD_LEASE_SECONDS"] = f"{opts.lease_seconds:g}"
    if opts.heartbeat_seconds is not None:
        env["AGENTD_HEARTBEAT_SECONDS"] = f"{opts.heartbeat_seconds:g}"
    return env


# --------------------------------------------------------------------------------------------
# Scenario 1: scaling
# --------------------------------------------------------------------------------------------


async def measure_scaling(cluster: Cluster, opts: Options, workers: int) -> JSON:
    slots = workers * opts.slots
    runs = opts.scale_runs
    pt = opts.bench.phase_timeout
    result: JSON = {"startup_s": round(cluster.startup_s, 2)}
    async with http_client(cluster.base_url, opts, max(runs, slots) + 20) as client:
        result["info"] = await bench.fetch_info(client)
        await bench.phase("warm-up", bench.warm_up(client, opts.bench.warmup), pt)
        # Every slot once, so that each worker has loaded the graph and filled its pools.
        await bench.phase(
            f"warm-up burst of {slots} sleep runs", bench.measure_burst(client, "sleep", slots), pt
        )
        cpu_before, client_before = cluster.cpu(), time.process_time()
        burst = await bench.phase(
            f"{opts.scale_bursts} bursts of {runs} sleep runs on {workers} worker(s)",
            bench.measure_bursts(client, "sleep", runs, opts.scale_bursts),
            pt,
        )
        cpu_after, client_after = cluster.cpu(), time.process_time()
    # Bursts of `runs` on `slots` slots take at least ceil(runs/slots) rounds of 0.2 s.
    floor_s = math.ceil(runs / slots) * bench.SLEEP_GRAPH_SECONDS
    total = burst.get("total_s")
    result.update(
        burst_sleep=burst,
        slots=slots,
        floor_s=round(floor_s, 3),
        floor_runs_per_s=round(runs / floor_s, 1),
        share_of_floor=round(floor_s / total, 2) if total else None,
        cpu_s={
            "api": round(cpu_after["api"] - cpu_before["api"], 2),
            "workers": [
                round(a - b, 2)
                for a, b in zip(cpu_after["workers"], cpu_before["workers"], strict=False)
            ],
            "client": round(client_after - client_before, 2),
        },
        rss_after_mib=cluster.rss_mib(),
    )
    return result


def scaling_point(opts: Options, workers: int) -> JSON:
    name = f"cluster-{workers}w"
    entry = bench.with_load_avg(
        lambda: bench.run_started(
            name,
            lambda: running_cluster(name, workers, opts.slots, opts, {}),
            lambda cluster: measure_scaling(cluster, opts, workers),
        )
    )
    entry["workers"] = workers
    return entry


def scaling(opts: Options) -> JSON:
    points = []
    for workers in opts.workers:
        bench.check_stop()
        points.append(scaling_point(opts, workers))
    rate = {p["workers"]: bench.dig(p, ("result", "burst_sleep", "runs_per_s")) for p in points}
    for point in points:
        if point["status"] == "ok":
            r = bench.as_ratio(rate[point["workers"]], rate.get(1))
            point["result"]["ratio_to_1"] = round(r, 3) if r is not None else None
    return {
        "slots_per_worker": opts.slots,
        "runs_per_burst": opts.scale_runs,
        "bursts": opts.scale_bursts,
        "points": points,
    }


# --------------------------------------------------------------------------------------------
# Scenario 2: compare (echo)
# --------------------------------------------------------------------------------------------


async def measure_echo(server: bench.Started, opts: Options, rss: Callable[[], float]) -> JSON:
    """run.py's stateless waits and echo bursts, and memory (every process of the server)."""
    pt = opts.bench.phase_timeout
    result: JSON = {"startup_s": round(server.startup_s, 2), "rss_idle_mib": rss()}
    async with http_client(server.base_url, opts, opts.bench.threads + 20) as client:
        result["info"] = await bench.fetch_info(client)
        await bench.phase("warm-up", bench.warm_up(client, opts.bench.warmup), pt)
        result["rss_warm_mib"] = rss()
        result["wait_stateless_ms"] = await bench.phase(
            f"{opts.bench.n} x POST /runs/wait",
            bench.measure_wait_stateless(client, opts.bench.n),
            pt,
        )
        result["burst_echo"] = await bench.phase(
            f"{opts.bench.bursts} bursts of {opts.bench.threads} echo runs",
            bench.measure_bursts(client, "echo", opts.bench.threads, opts.bench.bursts),
            pt,
        )
    result["rss_after_mib"] = rss()
    return result


def compare_one(opts: Options, name: str) -> JSON:
    if name == "agentd-cluster":
        workers = opts.cluster_workers
        return bench.with_load_avg(
            lambda: bench.run_started(
                name,
                lambda: running_cluster(name, workers, opts.worker_jobs, opts, {}),
                lambda cluster: measure_echo(cluster, opts, cluster.rss_mib),
            )
        )
    specs = {
        "agentd": bench.agentd_spec(opts.bench.agentd_jobs),
        "agentd-pg": bench.agentd_spec(opts.bench.agentd_jobs, opts.bench.pg_url),
        "reference": bench.reference_spec(opts.bench.reference_jobs),
    }

    async def measure(server: bench.RunningServer, _: bench.Options) -> JSON:
        return await measure_echo(server, opts, lambda: bench.tree_rss_mib(server.proc.pid))

    return bench.run_one(specs[name], opts.bench, measure)


def compare(opts: Options) -> JSON:
    servers = {}
    for name in opts.servers:
        bench.check_stop()
        servers[name] = compare_one(opts, name)
    return {"servers": servers}


# --------------------------------------------------------------------------------------------
# Scenario 3: lease expiry to restart
# --------------------------------------------------------------------------------------------


def marker_lines(path: Path) -> list[tuple[int, float]]:
    """The marked graph's node starts: (worker pid, epoch seconds), oldest first."""
    try:
        text = path.read_text()
    except OSError:
        return []
    starts = []
    for line in text.splitlines():
        pid, _, when = line.partition(" ")
        with contextlib.suppress(ValueError):
            starts.append((int(pid), float(when)))
    return starts


async def lease_trial(
    client: httpx.AsyncClient, cluster: Cluster, opts: Options, index: int, bound_s: float
) -> JSON:
    marker = cluster.workdir / f"marker-{index}.log"
    marker.touch()
    thread_id = await bench.create_thread(client)
    body = {
        "assistant_id": "marked",
        "input": {"value": index, "marker": str(marker), "seconds": opts.lease_run_seconds},
    }
    resp = await client.post(f"/threads/{thread_id}/runs", json=body)
    if resp.status_code != 200:
        raise RuntimeError(f"create run -> {resp.status_code}: {resp.text[:300]}")
    run_id = resp.json()["run_id"]
    run_path = f"/threads/{thread_id}/runs/{run_id}"
    deadline = time.monotonic() + opts.bench.request_timeout
    while not (starts := marker_lines(marker)):
        bench.check_stop()
        if time.monotonic() > deadline:
            raise RuntimeError(f"the run's node did not start in {opts.bench.request_timeout} s")
        await asyncio.sleep(POLL_S)
    holder_pid, started_at = starts[0]
    holder = cluster.worker_with_pid(holder_pid)
    if holder is None:
        raise RuntimeError(f"pid {holder_pid} runs the node but is none of the live workers")
    killed_at = time.time()
    holder.kill9()
    # Restart: the run's attempt 2 as the API shows it (polled), and the node's second start
    # (the marked graph's line, stamped by the worker). Both within the bound, or a failure.
    attempt2_s: float | None = None
    status_at_attempt2: str | None = None
    restart: tuple[int, float] | None = None
    deadline = time.monotonic() + bound_s + 30.0
    while attempt2_s is None or restart is None:
        bench.check_stop()
        if time.monotonic() > deadline:
            break
        if attempt2_s is None:
            got = await client.get(run_path)
            if got.status_code == 200 and (got.json().get("attempt") or 0) >= 2:
                attempt2_s = time.time() - killed_at
                status_at_attempt2 = got.json().get("status")
        if restart is None and len(starts := marker_lines(marker)) >= 2:
            restart = starts[1]
        await asyncio.sleep(POLL_S)
    out: JSON = {
        "run_id": run_id,
        "killed_pid": holder_pid,
        "run_age_at_kill_s": round(killed_at - started_at, 3),
        "kill_to_attempt2_s": round(attempt2_s, 3) if attempt2_s is not None else None,
        "status_at_attempt2": status_at_attempt2,
        "kill_to_restart_s": round(restart[1] - killed_at, 3) if restart else None,
        "restarted_by_pid": restart[0] if restart else None,
        "errors": 0,
    }
    if restart is None or attempt2_s is None:
        out.update(errors=1, first_error=f"no restart within {bound_s + 30:.0f} s of the kill")
        return out
    out["restart_minus_bound_s"] = round(restart[1] - killed_at - bound_s, 3)
    joined = await client.get(f"{run_path}/join")
    final = (await client.get(run_path)).json()
    out.update(final_status=final.get("status"), final_attempt=final.get("attempt"))
    problems = []
    if restart[0] == holder_pid:
        problems.append("restarted by the killed pid")
    if joined.status_code != 200 or joined.json().get("value") != index:
        problems.append(f"join -> {joined.status_code}: {joined.text[:200]}")
    if final.get("status") != "success" or final.get("attempt") != 2:
        problems.append(f"ended {final.get('status')} at attempt {final.get('attempt')}")
    if problems:
        out.update(errors=1, first_error="; ".join(problems))
    return out


async def measure_lease(cluster: Cluster, opts: Options) -> JSON:
    settings = cluster.lease_settings()
    lease_s, heartbeat_s = settings["lease_s"], settings["heartbeat_s"]
    # A lease runs out `lease` after its last renewal, at most a heartbeat before the kill; a
    # survivor's heartbeat takes the run back within one more heartbeat and claims it at once.
    # The kill comes as the node starts, just after the claim took a fresh lease: the slow
    # case, from about `lease` (less the run's age) to lease + heartbeat.
    bound_s = lease_s + heartbeat_s
    result: JSON = {
        **settings,
        "expected_about_s": lease_s,
        "expected_bound_s": bound_s,
        "workers": len(cluster.alive),
        "trials": [],
    }
    limit = bound_s + opts.lease_run_seconds + 2 * opts.bench.request_timeout + 30
    async with http_client(cluster.base_url, opts, 10) as client:
        result["info"] = await bench.fetch_info(client)
        await bench.phase("warm-up", bench.warm_up(client, opts.bench.warmup), limit)
        for index in range(opts.lease_trials):
            bench.check_stop()
            if index:  # two live workers again: the killed one is replaced
                await asyncio.to_thread(cluster.replace_dead_workers, opts.bench.startup_timeout)
            trial = await bench.phase(
                f"trial {index + 1}/{opts.lease_trials}: kill -9 the worker running a run",
                lease_trial(client, cluster, opts, index, bound_s),
                limit,
            )
            result["trials"].append(trial)
            print(
                f"      kill -> attempt 2 seen {bench.fmt(trial.get('kill_to_attempt2_s'))} s, "
                f"node restarted {bench.fmt(trial.get('kill_to_restart_s'))} s "
                f"(bound {bound_s:g} s)",
                flush=True,
            )
    restarts = [t["kill_to_restart_s"] for t in result["trials"] if t.get("kill_to_restart_s")]
    if restarts:
        result["kill_to_restart_max_s"] = max(restarts)
        result["all_within_bound"] = max(restarts) <= bound_s
    result["errors"] = sum(t.get("errors", 0) for t in result["trials"])
    return result


def lease(opts: Options) -> JSON:
    return bench.with_load_avg(
        lambda: bench.run_started(
            "lease",
            lambda: running_cluster("agentd-lease", 2, opts.worker_jobs, opts, lease_env(opts)),
            lambda cluster: measure_lease(cluster, opts),
        )
    )


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def entry_status(name: str, entry: JSON) -> str:
    reason = entry.get("reason")
    line = f"- **{name}**: {entry['status']}" + (f" ({reason.splitlines()[0]})" if reason else "")
    if version := bench.dig(entry, ("result", "info", "version")):
        line += f", version {version}"
    if load := entry.get("load_avg"):
        line += f", load average (1 min) {load['start'][0]} → {load['end'][0]}"
    return line


def render_scaling(data: JSON) -> list[str]:
    lines = [
        "## Scaling: the sleep graph (0.2 s) on 1 API server + N workers",
        "",
        f"{data['slots_per_worker']} run slots per worker, bursts of {data['runs_per_burst']} "
        f"runs (median of {data['bursts']}). Floor: ceil(runs / slots) x 0.2 s; of floor = floor "
        "/ median burst (1 = as fast as the slots allow). CPU s: during the timed bursts.",
        "",
        "| workers | slots | median burst (s) | best (s) | runs/s | x 1 worker | floor (s) "
        "| of floor | CPU s API | CPU s workers | CPU s client | errors |",
        "| ---: |" + " ---: |" * 11,
    ]
    for point in data["points"]:
        r = point.get("result")
        if point["status"] != "ok" or r is None:
            lines.append(f"| {point['workers']} | {point['status']} |" + " |" * 10)
            continue
        burst = r["burst_sleep"]
        cpu = r["cpu_s"]
        cells = [
            point["workers"],
            r["slots"],
            bench.fmt(burst.get("total_s")),
            bench.fmt(burst.get("total_s_min")),
            bench.fmt(burst.get("runs_per_s")),
            bench.ratio_text(r.get("ratio_to_1")),
            bench.fmt(r["floor_s"]),
            bench.fmt(r["share_of_floor"]),
            bench.fmt(cpu["api"]),
            " + ".join(f"{c:g}" for c in cpu["workers"]),
            bench.fmt(cpu["client"]),
            burst.get("errors", 0),
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += ["", *(entry_status(f"{p['workers']} worker(s)", p) for p in data["points"])]
    errors = [
        f"{p['workers']} worker(s): {p['result']['burst_sleep']['first_error']}"
        for p in data["points"]
        if bench.dig(p, ("result", "burst_sleep", "first_error"))
    ]
    return [*lines, "", "Errors: " + ("; ".join(errors) if errors else "none"), ""]


def render_compare(data: JSON, opts: JSON) -> list[str]:
    servers: dict[str, JSON] = data["servers"]
    shown = [name for name in COMPARE_SERVERS if name in servers]
    res = {name: servers[name].get("result") for name in shown}
    ratios = [(a, b) for a, b in COMPARE_RATIOS if a in shown and b in shown]
    lines = [
        "## Echo: the cluster beside one process",
        "",
        f"n={opts['n']} sequential waits, bursts of {opts['threads']} (median of "
        f"{opts['bursts']}). agentd = SQLite, agentd-pg = PostgreSQL (one process), "
        f"agentd-cluster = 1 API server + {opts['cluster_workers']} workers (run slots "
        f"{opts['worker_jobs'] or 'default'} each) on PostgreSQL + Redis; its RSS is all of "
        "its processes. Lower is better except runs/s.",
        "",
        "| metric | " + " | ".join(shown) + "".join(f" | {a}/{b}" for a, b in ratios) + " |",
        "| --- |" + " ---: |" * (len(shown) + len(ratios)),
    ]
    for label, path, _ in COMPARE_ROWS:
        values = [bench.fmt(bench.dig(res[name], path)) for name in shown]
        rs = [bench.ratio(bench.dig(res[a], path), bench.dig(res[b], path)) for a, b in ratios]
        lines.append(f"| {label} | " + " | ".join(values + rs) + " |")
    lines += ["", *(entry_status(name, servers[name]) for name in shown)]
    errors = [
        f"{name} {what}: {bench.dig(res[name], (key, 'first_error'))}"
        for name in shown
        for what, key in (("wait", "wait_stateless_ms"), ("burst", "burst_echo"))
        if bench.dig(res[name], (key, "errors"))
    ]
    return [*lines, "", "Errors: " + ("; ".join(errors) if errors else "none"), ""]


def render_lease(entry: JSON) -> list[str]:
    lines = ["## Lease expiry to restart: kill -9 the worker running a run", ""]
    r = entry.get("result")
    if entry["status"] != "ok" or r is None:
        return [*lines, entry_status("lease", entry), ""]
    lines += [
        f"AGENTD_LEASE_SECONDS {r['lease_s']:g}, AGENTD_HEARTBEAT_SECONDS {r['heartbeat_s']:g} "
        f"(as the workers logged them), {r['workers']} workers. The worker is killed as the "
        "run's node starts, its lease just taken: expected restart from about "
        f"{r['expected_about_s']:g} s (lease) to at most {r['expected_bound_s']:g} s (lease + "
        "heartbeat, the bound) after the kill. Node starts are stamped by the worker (the "
        f"marked graph); attempt 2 is polled through the API every {POLL_S * 1000:.0f} ms.",
        "",
        "| trial | run age at kill (s) | kill → attempt 2 seen (s) | kill → node restarted (s) "
        "| restart - bound (s) | final | errors |",
        "| ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for i, t in enumerate(r["trials"], 1):
        final = f"{t.get('final_status', '—')} (attempt {t.get('final_attempt', '—')})"
        err = t.get("first_error") or "none"
        cells = [
            i,
            bench.fmt(t.get("run_age_at_kill_s")),
            bench.fmt(t.get("kill_to_attempt2_s")),
            bench.fmt(t.get("kill_to_restart_s")),
            bench.fmt(t.get("restart_minus_bound_s")),
            final,
            err.replace("|", "\\|"),
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    within = r.get("all_within_bound")
    lines += [
        "",
        f"Slowest restart {bench.fmt(r.get('kill_to_restart_max_s'))} s: "
        + {True: "within the bound.", False: "OVER the bound.", None: "none restarted."}[within],
        "",
        entry_status("lease", entry),
        "",
    ]
    return lines


def render_markdown(report: JSON) -> str:
    meta = report["meta"]
    lines = [
        f"# agentd distributed benchmark — {meta['timestamp']}",
        "",
        f"commit `{meta['git_commit']}` · {meta['nproc']} cores · {meta['platform']} · "
        f"load average before: {meta['load_before']} · duration {meta.get('duration_s', '?')} s",
        "",
    ]
    if "scaling" in report:
        lines += render_scaling(report["scaling"])
    if "compare" in report:
        lines += render_compare(report["compare"], meta["options"])
    if "lease" in report:
        lines += render_lease(report["lease"])
    return "\n".join(lines)


def scenario_ok(report: JSON, scenario: str) -> bool:
    if scenario == "scaling":
        entries = report["scaling"]["points"]
    elif scenario == "compare":
        entries = list(report["compare"]["servers"].values())
    else:
        entries = [report["lease"]]
    return any(e["status"] == "ok" for e in entries)


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def comma_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_args(argv: list[str] | None = None) -> Options:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma list (default: all)")
    g = p.add_argument_group("scaling")
    g.add_argument("--workers", default="1,2,4", help="cluster sizes to measure (default 1,2,4)")
    g.add_argument("--slots", type=int, default=10, help="run slots per worker (--jobs; 10)")
    g.add_argument("--scale-runs", type=int, default=200, help="sleep runs per burst (200)")
    g.add_argument("--scale-bursts", type=int, default=3, help="bursts per size (median; 3)")
    g = p.add_argument_group("compare")
    g.add_argument("--servers", default=",".join(COMPARE_SERVERS), help="comma list (all)")
    g.add_argument("--cluster-workers", type=int, default=2, help="workers of agentd-cluster (2)")
    g.add_argument("-n", "--n", type=int, default=200, help="sequential POST /runs/wait (200)")
    g.add_argument("--threads", type=int, default=100, help="echo runs per burst (100)")
    g.add_argument("--bursts", type=int, default=5, help="echo bursts (median; 5)")
    g.add_argument("--agentd-jobs", type=int, default=None, help="agentd serve --jobs")
    g.add_argument("--reference-jobs", type=int, default=10, help="--n-jobs-per-worker (10)")
    g = p.add_argument_group("lease")
    g.add_argument(
        "--lease-seconds",
        type=float,
        default=None,
        help="AGENTD_LEASE_SECONDS (default: agentd's, 20)",
    )
    g.add_argument(
        "--heartbeat-seconds",
        type=float,
        default=None,
        help="AGENTD_HEARTBEAT_SECONDS (default: 5, at most lease/4)",
    )
    g.add_argument("--lease-trials", type=int, default=3, help="workers killed, one by one (3)")
    g.add_argument(
        "--lease-run-seconds",
        type=float,
        default=2.0,
        help="how long the killed run's node sleeps (2)",
    )
    g = p.add_argument_group("all")
    g.add_argument(
        "--worker-jobs",
        type=int,
        default=None,
        help="--jobs of compare's and lease's workers (default: agentd's)",
    )
    g.add_argument("--warmup", type=int, default=5, help="warm-up echo runs per server (5)")
    g.add_argument(
        "--pg-url",
        default=os.environ.get("AGENTD_BENCH_PG_URL") or bench.DEFAULT_PG_URL,
        help="admin URL where each server's database is created and dropped "
        "(env AGENTD_BENCH_PG_URL)",
    )
    g.add_argument(
        "--redis-url",
        default=os.environ.get("AGENTD_BENCH_REDIS_URL") or DEFAULT_REDIS_URL,
        help=f"the clusters' Redis (env AGENTD_BENCH_REDIS_URL; default {DEFAULT_REDIS_URL})",
    )
    g.add_argument("--startup-timeout", type=float, default=180.0, help="s to wait for start-up")
    g.add_argument("--request-timeout", type=float, default=60.0, help="per-request timeout (s)")
    g.add_argument("--phase-timeout", type=float, default=900.0, help="per-phase timeout (s)")
    g.add_argument(
        "--label",
        default=f"{bench.default_label()}-distributed",
        help="result file name suffix (default: <host>-distributed)",
    )
    g.add_argument("--out-dir", type=Path, default=bench.BENCH_DIR / "results")
    g.add_argument("--no-save", action="store_true", help="print the tables only")
    a = p.parse_args(argv)
    scenarios = comma_list(a.scenarios)
    if not scenarios or sorted(set(scenarios) - set(SCENARIOS)):
        p.error(f"--scenarios: choose from {','.join(SCENARIOS)}")
    servers = comma_list(a.servers)
    if not servers or sorted(set(servers) - set(COMPARE_SERVERS)):
        p.error(f"--servers: choose from {','.join(COMPARE_SERVERS)}")
    try:
        workers = [int(w) for w in comma_list(a.workers)]
    except ValueError:
        workers = []
    if not workers or not all(1 <= w <= 64 for w in workers):
        p.error("--workers: a comma list of counts between 1 and 64")
    for name in ("slots", "scale_runs", "n", "threads", "cluster_workers"):
        if not 1 <= getattr(a, name) <= 100_000:
            p.error(f"--{name.replace('_', '-')} must be between 1 and 100000")
    for scheme, url, flag in (
        ("postgres", a.pg_url, "--pg-url"),
        ("redis", a.redis_url, "--redis-url"),
    ):
        if not urllib.parse.urlsplit(url).scheme.startswith(scheme):
            p.error(f"{flag}: expected a {scheme}... URL")
    return Options(
        scenarios=[s for s in SCENARIOS if s in scenarios],
        workers=workers,
        slots=a.slots,
        scale_runs=a.scale_runs,
        scale_bursts=max(1, a.scale_bursts),
        servers=servers,
        cluster_workers=a.cluster_workers,
        worker_jobs=a.worker_jobs,
        lease_seconds=a.lease_seconds,
        heartbeat_seconds=a.heartbeat_seconds,
        lease_trials=max(1, a.lease_trials),
        lease_run_seconds=a.lease_run_seconds,
        redis_url=a.redis_url,
        label=a.label,
        out_dir=a.out_dir,
        save=not a.no_save,
        bench=bench.Options(
            servers=[s for s in servers if s in bench.SERVER_NAMES],
            n=a.n,
            stream_n=a.n,
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
        ),
    )


def options_json(opts: Options) -> JSON:
    b = opts.bench
    return {
        "scenarios": opts.scenarios,
        "workers": opts.workers,
        "slots": opts.slots,
        "scale_runs": opts.scale_runs,
        "scale_bursts": opts.scale_bursts,
        "servers": opts.servers,
        "cluster_workers": opts.cluster_workers,
        "worker_jobs": opts.worker_jobs,
        "n": b.n,
        "threads": b.threads,
        "bursts": b.bursts,
        "warmup": b.warmup,
        "agentd_jobs": b.agentd_jobs,
        "reference_jobs": b.reference_jobs,
        "lease_env": lease_env(opts) or "agentd's defaults",
        "lease_trials": opts.lease_trials,
        "lease_run_seconds": opts.lease_run_seconds,
        "pg_url": bench.redact_url(b.pg_url),
        "redis_url": bench.redact_url(opts.redis_url),
        "sleep_graph_seconds": bench.SLEEP_GRAPH_SECONDS,
        "request_timeout": b.request_timeout,
        "phase_timeout": b.phase_timeout,
    }


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    # run.py's handler: its flag stops run.py's measurement loops, its SystemExit unwinds
    # through every cluster's cleanup (processes, database, Redis keys).
    signal.signal(signal.SIGTERM, bench.on_sigterm)
    started = datetime.now(UTC)
    report: JSON = {"meta": bench.report_meta(started, options_json(opts))}
    runners = {"scaling": scaling, "compare": compare, "lease": lease}
    for scenario in opts.scenarios:
        print(f"== {scenario}", flush=True)
        report[scenario] = runners[scenario](opts)
    report["meta"]["load_after"] = bench.load_average()
    report["meta"]["duration_s"] = round((datetime.now(UTC) - started).total_seconds(), 1)
    text = render_markdown(report)
    print()
    print(text)
    if opts.save:
        print(f"wrote {bench.save_report(report, opts.out_dir, opts.label, text)} (and .md)")
    return 0 if all(scenario_ok(report, s) for s in opts.scenarios) else 1


if __name__ == "__main__":
    sys.exit(main())
