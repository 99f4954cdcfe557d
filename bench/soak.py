"""Soak test of agentd: thousands of mixed runs against one server, every run accounted for.

Starts ``agentd serve`` (default settings, fresh data dir, free loopback port) unless ``--url``
is given, keeps ``--concurrency`` scenarios in flight until ``--runs`` runs were created, samples
the server's RSS (``VmRSS`` of its pid) every 0.5 s, then checks the final status of every run
against what its scenario expects, looks for wedged threads, and writes
``bench/results/<UTC timestamp>-soak.{json,md}``. See bench/README.md.

    .venv/bin/python bench/soak.py [--runs 10000] [--concurrency 64] [--seed N]

Every request, join and scenario has a timeout: a scenario that hangs is recorded as hung and
the soak goes on. All traffic goes to 127.0.0.1 (or to ``--url``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lean_http import LeanClient, LeanResponse  # beside this script
from run import (  # beside this script: the benchmark's process helpers
    BENCH_DIR,
    HOST,
    REPO_DIR,
    RunningServer,
    child_env,
    fmt,
    free_port,
    git_commit,
    log_tail,
    percentile,
    prepare_workdir,
    rss_kib,
    stop_process,
    wait_until_ok,
)

JSON = dict[str, Any]

SCENARIOS = ("echo", "sleep", "hitl", "doubletext", "cancel")
DEFAULT_MIX = "echo=30,sleep=20,hitl=15,doubletext=15,cancel=20"
CANCEL_MOMENTS = ("before_start", "running", "around_end", "queued_resume")
DEFAULT_CANCEL_MIX = "before_start=25,running=25,around_end=30,queued_resume=20"
TERMINAL = ("success", "error", "timeout", "interrupted")
RSS_INTERVAL_S = 0.5
PROGRESS_INTERVAL_S = 10.0
EXAMPLES_PER_KIND = 5
# Client and server share the machine's clock; this covers the rounding of timestamps.
CLOCK_SLACK_S = 0.01
# after_seconds of the runs cancelled while queued: longer than any request takes here, so the
# cancel surely lands before they start.
QUEUED_DELAY_S = 2

_stop_requested = False


# --------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    runs: int
    concurrency: int
    seed: int
    mix: dict[str, float]
    cancel_mix: dict[str, float]
    double_texts: int
    url: str | None
    pid: int | None
    warmup_runs: int
    request_timeout: float
    join_timeout: float
    scenario_timeout: float
    settle: float
    max_duration: float
    startup_timeout: float
    out_dir: Path
    save: bool
    keep_workdir: bool


def parse_weights(text: str, names: tuple[str, ...], flag: str) -> dict[str, float]:
    weights: dict[str, float] = dict.fromkeys(names, 0.0)
    for part in text.split(","):
        if not part.strip():
            continue
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in weights:
            raise SystemExit(f"{flag}: unknown name {name!r}; choose from {', '.join(names)}")
        try:
            weights[name] = float(value)
        except ValueError:
            raise SystemExit(f"{flag}: {part!r} is not name=weight") from None
        if weights[name] < 0:
            raise SystemExit(f"{flag}: weights must be >= 0")
    if not any(weights.values()):
        raise SystemExit(f"{flag}: at least one weight must be > 0")
    return weights


def parse_args(argv: list[str] | None = None) -> Options:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=10_000, help="runs to create in all (default 10000)")
    p.add_argument("--concurrency", type=int, default=64, help="scenarios in flight (default 64)")
    p.add_argument("--seed", type=int, default=None, help="seed of the plan (default: random)")
    p.add_argument("--mix", default=DEFAULT_MIX, help=f"scenario weights (default {DEFAULT_MIX})")
    p.add_argument(
        "--cancel-mix",
        default=DEFAULT_CANCEL_MIX,
        help=f"weights of the cancel moments (default {DEFAULT_CANCEL_MIX})",
    )
    p.add_argument(
        "--double-texts", type=int, default=3, help="runs per double-text scenario (default 3)"
    )
    p.add_argument("--url", default=None, help="soak this running server instead of starting one")
    p.add_argument("--pid", type=int, default=None, help="with --url: the server's pid, for RSS")
    p.add_argument(
        "--warmup-runs",
        type=int,
        default=None,
        help="runs after which 'RSS after warm-up' is taken (default: 10%% of --runs, 50-1000)",
    )
    p.add_argument("--request-timeout", type=float, default=30.0, help="per request (s)")
    p.add_argument("--join-timeout", type=float, default=30.0, help="per join / cancel-wait (s)")
    p.add_argument("--scenario-timeout", type=float, default=120.0, help="per scenario (s)")
    p.add_argument(
        "--settle",
        type=float,
        default=5.0,
        help="how long a thread may take to reach its expected status; also the quiet period "
        "that tells a wedged thread from a slow one (s)",
    )
    p.add_argument(
        "--max-duration", type=float, default=3600.0, help="stop launching scenarios after (s)"
    )
    p.add_argument("--startup-timeout", type=float, default=120.0, help="seconds to wait for /ok")
    p.add_argument("--out-dir", type=Path, default=BENCH_DIR / "results")
    p.add_argument("--no-save", action="store_true", help="print the report only")
    p.add_argument("--keep-workdir", action="store_true", help="keep the server's data dir and log")
    a = p.parse_args(argv)
    if not 1 <= a.runs <= 1_000_000:
        p.error("--runs must be between 1 and 1000000")
    if not 1 <= a.concurrency <= 1000:
        p.error("--concurrency must be between 1 and 1000")
    if not 2 <= a.double_texts <= 20:
        p.error("--double-texts must be between 2 and 20")
    if a.pid is not None and a.url is None:
        p.error("--pid goes with --url (a started server's pid is known)")
    warmup = a.warmup_runs if a.warmup_runs is not None else min(1000, max(50, a.runs // 10))
    return Options(
        runs=a.runs,
        concurrency=a.concurrency,
        seed=a.seed if a.seed is not None else random.SystemRandom().randrange(1 << 31),
        mix=parse_weights(a.mix, SCENARIOS, "--mix"),
        cancel_mix=parse_weights(a.cancel_mix, CANCEL_MOMENTS, "--cancel-mix"),
        double_texts=a.double_texts,
        url=a.url.rstrip("/") if a.url else None,
        pid=a.pid,
        warmup_runs=min(warmup, a.runs),
        request_timeout=a.request_timeout,
        join_timeout=a.join_timeout,
        scenario_timeout=a.scenario_timeout,
        settle=a.settle,
        max_duration=a.max_duration,
        startup_timeout=a.startup_timeout,
        out_dir=a.out_dir,
        save=not a.no_save,
        keep_workdir=a.keep_workdir,
    )


# --------------------------------------------------------------------------------------------
# Bookkeeping
# --------------------------------------------------------------------------------------------


@dataclass
class RunRecord:
    """One run a scenario created, and what its final status may be."""

    run_id: str
    thread_id: str
    scenario: str
    role: str
    expected: tuple[str, ...]  # empty: decided at accounting time (double-texts)
    token: str
    graph: str
    sent_at: float = 0.0  # epoch seconds (same clock as the server's): create request sent
    answered_at: float = 0.0  # ... and its answer received
    final: str | None = None
    created_at: str | None = None
    ended_at: str | None = None
    ok: bool | None = None


@dataclass
class Problem:
    kind: str
    scenario: str
    detail: str
    thread_id: str | None = None
    run_id: str | None = None

    def as_json(self) -> JSON:
        out = {"scenario": self.scenario, "detail": self.detail[:400]}
        if self.thread_id:
            out["thread_id"] = self.thread_id
        if self.run_id:
            out["run_id"] = self.run_id
        return out


@dataclass
class Planned:
    index: int
    scenario: str  # "echo", ..., "cancel/running"
    runs: int
    seed: int


@dataclass
class Ledger:
    runs: list[RunRecord] = field(default_factory=list)
    threads: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    hung_joins: list[JSON] = field(default_factory=list)
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    step_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    outcomes: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    cancels: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    created: int = 0
    last_created_at: float = 0.0  # time.monotonic() of the last run created
    scenarios_done: int = 0
    doubletext_survivor_not_newest: list[str] = field(default_factory=list)

    def problem(self, kind: str, scenario: str, detail: str, **ids: str | None) -> None:
        self.problems.append(
            Problem(kind, scenario, detail, ids.get("thread_id"), ids.get("run_id"))
        )


# --------------------------------------------------------------------------------------------
# Scenario context: bounded requests, every failure recorded
# --------------------------------------------------------------------------------------------


class Ctx:
    def __init__(self, soak: Soak, planned: Planned):
        self.soak = soak
        self.ledger = soak.ledger
        self.name = planned.scenario
        self.rng = random.Random(planned.seed)
        self.thread_id: str | None = None
        self.step = "start"
        self.failed = False
        self.prefix = f"s{planned.index}"

    def fail(self, kind: str, detail: str, run_id: str | None = None) -> None:
        self.failed = True
        self.ledger.problem(kind, self.name, detail, thread_id=self.thread_id, run_id=run_id)

    def token(self, role: str) -> str:
        return f"{self.prefix}-{role}-{self.rng.randrange(1 << 30):x}"

    async def call(
        self,
        step: str,
        method: str,
        path: str,
        body: Any = None,
        *,
        ok: tuple[int, ...] = (200,),
        join: bool = False,
        run_id: str | None = None,
        quiet: tuple[int, ...] = (),
    ) -> LeanResponse | None:
        """One request. A status outside ``ok`` + ``quiet``, a timeout or a transport error is
        recorded under ``<step>: <what>`` and gives None (``quiet`` statuses are returned)."""
        self.step = step
        client = self.soak.join_client if join else self.soak.client
        payload = json.dumps(body).encode() if body is not None else None
        started = time.perf_counter()
        try:
            resp = await client.request(method, path, payload)
        except TimeoutError:
            limit = client.timeout
            self.fail(f"{step}: no answer in {limit:.0f} s", f"{method} {path}", run_id)
            return None
        except Exception as exc:
            self.fail(f"{step}: {type(exc).__name__}", f"{method} {path}: {exc}"[:400], run_id)
            return None
        self.ledger.step_ms[step].append((time.perf_counter() - started) * 1000)
        if resp.status_code in ok or resp.status_code in quiet:
            return resp
        self.fail(
            f"{step}: HTTP {resp.status_code}",
            f"{method} {path} -> {resp.status_code}: {resp.text[:300]}",
            run_id,
        )
        return None

    async def new_thread(self) -> str | None:
        resp = await self.call(
            "create thread", "POST", "/threads", {"metadata": {"soak": self.soak.soak_id}}
        )
        if resp is None:
            return None
        self.thread_id = str(resp.json()["thread_id"])
        self.ledger.threads.append(self.thread_id)
        return self.thread_id

    async def create_run(
        self,
        role: str,
        graph: str,
        *,
        expected: tuple[str, ...],
        command: JSON | None = None,
        step: str = "create run",
        **extra: Any,
    ) -> RunRecord | None:
        """POST /threads/{id}/runs with input ``{"value": <a fresh token>}`` (or ``command``);
        the run is recorded with the statuses it may end in."""
        token = self.token(role)
        body: JSON = {"assistant_id": graph, **extra}
        if command is not None:
            body["command"] = command
            token = command.get("resume", token)
        else:
            body["input"] = {"value": token}
        sent_at = time.time()
        resp = await self.call(step, "POST", f"/threads/{self.thread_id}/runs", body)
        if resp is None:
            return None
        answered_at = time.time()
        run = resp.json()
        record = RunRecord(
            run_id=str(run["run_id"]),
            thread_id=str(self.thread_id),
            scenario=self.name,
            role=role,
            expected=expected,
            token=str(token),
            graph=graph,
            sent_at=sent_at,
            answered_at=answered_at,
        )
        self.ledger.runs.append(record)
        self.ledger.created += 1
        self.ledger.last_created_at = time.monotonic()
        return record

    async def join(self, run: RunRecord) -> Any:
        """Join a run (bounded by --join-timeout). A join that does not answer is a hung join:
        the run's status in the database at that moment is recorded with it."""
        path = f"/threads/{run.thread_id}/runs/{run.run_id}/join"
        self.step = "join"
        started = time.perf_counter()
        try:
            resp = await self.soak.join_client.request("GET", path, None)
        except TimeoutError:
            status = await self.run_status(run)
            self.ledger.hung_joins.append(
                {
                    "scenario": self.name,
                    "role": run.role,
                    "run_id": run.run_id,
                    "thread_id": run.thread_id,
                    "run_status_when_given_up": status,
                }
            )
            self.fail(
                "join: hung",
                f"no answer in {self.soak.opts.join_timeout:.0f} s; run status then: {status}",
                run.run_id,
            )
            return None
        except Exception as exc:
            self.fail(f"join: {type(exc).__name__}", f"GET {path}: {exc}"[:400], run.run_id)
            return None
        self.ledger.step_ms["join"].append((time.perf_counter() - started) * 1000)
        if resp.status_code != 200:
            self.fail(f"join: HTTP {resp.status_code}", resp.text[:300], run.run_id)
            return None
        try:
            return resp.json()
        except ValueError:
            self.fail("join: body is not JSON", resp.text[:300], run.run_id)
            return None

    async def run_status(self, run: RunRecord) -> str:
        path = f"/threads/{run.thread_id}/runs/{run.run_id}"
        try:
            resp = await self.soak.client.request("GET", path, None)
        except Exception as exc:
            return f"unknown ({type(exc).__name__})"
        if resp.status_code != 200:
            return f"unknown (HTTP {resp.status_code})"
        return str(resp.json().get("status"))

    def check_body(self, what: str, body: Any, expected: Any, run: RunRecord) -> None:
        if body is not None and body != expected:
            got = json.dumps(body)[:200]
            self.fail(f"{what}: wrong result", f"got {got}, expected {expected}", run.run_id)

    async def expect_thread(
        self, status: str | tuple[str, ...], *, value: Any = None, after: str
    ) -> JSON | None:
        """Poll the thread until it has ``status`` (one of them, if several) and
        ``values.value == value`` (when given), for at most --settle seconds; record what it was
        otherwise."""
        allowed = (status,) if isinstance(status, str) else status
        path = f"/threads/{self.thread_id}"
        deadline = time.monotonic() + self.soak.opts.settle
        delay = 0.02
        thread: JSON | None = None
        while True:
            resp = await self.call(f"get thread after {after}", "GET", path)
            if resp is None:
                return None
            thread = resp.json()
            values = thread.get("values") or {}
            got_value = values.get("value") if isinstance(values, dict) else None
            if thread.get("status") in allowed and (value is None or got_value == value):
                return thread
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)
        if thread.get("status") not in allowed:
            self.fail(
                f"thread after {after}: {thread.get('status')} (expected {' or '.join(allowed)})",
                f"still {thread.get('status')} {self.soak.opts.settle:.0f} s later",
            )
        else:
            self.fail(
                f"thread after {after}: wrong values",
                f"values {json.dumps(thread.get('values'))[:200]}, expected value {value!r}",
            )
        return thread

    async def cancel(self, run: RunRecord, *, allow_gone: bool) -> int | None:
        """POST .../cancel, at random with ``wait=true``. Returns the HTTP status, or None."""
        wait = self.rng.random() < 0.5
        path = f"/threads/{run.thread_id}/runs/{run.run_id}/cancel" + ("?wait=1" if wait else "")
        quiet = (404,) if allow_gone else ()
        resp = await self.call(
            "cancel (wait)" if wait else "cancel",
            "POST",
            path,
            ok=(200,) if wait else (202,),
            join=wait,
            run_id=run.run_id,
            quiet=quiet,
        )
        if resp is None:
            self.ledger.cancels[self.name]["failed"] += 1
            return None
        if resp.status_code == 404:
            self.ledger.cancels[self.name]["404 (had ended)"] += 1
        elif wait:
            status = resp.json().get("status")
            self.ledger.cancels[self.name][f"200 {status}"] += 1
            allowed = ("interrupted", "success") if allow_gone else ("interrupted",)
            if status not in allowed:
                self.fail(f"cancel (wait): run {status}", f"answered {status}", run.run_id)
        else:
            self.ledger.cancels[self.name]["202 accepted"] += 1
        return resp.status_code

    async def wait_until_running(self, run: RunRecord) -> None:
        """Poll the run until it is no longer pending (bounded by --settle)."""
        deadline = time.monotonic() + self.soak.opts.settle
        while time.monotonic() < deadline:
            if await self.run_status(run) != "pending":
                return
            await asyncio.sleep(0.01)


# --------------------------------------------------------------------------------------------
# Scenarios
# --------------------------------------------------------------------------------------------


async def sc_simple(ctx: Ctx, graph: str) -> None:
    """Background create + join of one run on a fresh thread; the thread ends idle with it."""
    if await ctx.new_thread() is None:
        return
    run = await ctx.create_run("run", graph, expected=("success",))
    if run is None:
        return
    ctx.check_body("join", await ctx.join(run), {"value": run.token}, run)
    await ctx.expect_thread("idle", value=run.token, after="run")


async def hitl_ask(ctx: Ctx) -> RunRecord | None:
    """A run that pauses at interrupt(): success, thread interrupted, __interrupt__ joined."""
    ask = await ctx.create_run("ask", "hitl", expected=("success",))
    if ask is None:
        return None
    body = await ctx.join(ask)
    if body is not None:
        interrupts = body.get("__interrupt__") if isinstance(body, dict) else None
        question = (interrupts or [{}])[0].get("value")
        if question != {"question": ask.token}:
            ctx.fail("join ask: no __interrupt__", json.dumps(body)[:200], ask.run_id)
    await ctx.expect_thread("interrupted", after="interrupt()")
    return ask


async def sc_hitl(ctx: Ctx) -> None:
    """interrupt(), then Command(resume=...): the thread ends idle with the resumed value."""
    if await ctx.new_thread() is None or await hitl_ask(ctx) is None:
        return
    answer = ctx.token("answer")
    resume = await ctx.create_run(
        "resume", "hitl", expected=("success",), command={"resume": answer}, step="create resume"
    )
    if resume is None:
        return
    ctx.check_body("join resume", await ctx.join(resume), {"value": answer}, resume)
    await ctx.expect_thread("idle", value=answer, after="resume")


async def sc_doubletext(ctx: Ctx, count: int) -> None:
    """``count`` concurrent runs with multitask_strategy=interrupt on one thread, 0-50 ms
    apart: one survives (success), the others end interrupted, the thread ends idle."""
    if await ctx.new_thread() is None:
        return
    offsets, at = [], 0.0
    for _ in range(count):
        offsets.append(at)
        at += ctx.rng.uniform(0, 0.05)

    # With the 2 s graph every run is still in flight when the next one comes; with the 0.2 s
    # one, under load, an earlier run may end before (or as) the next one is committed.
    graph = ctx.rng.choice(("sleep", "slow"))

    async def text(i: int, offset: float) -> RunRecord | None:
        await asyncio.sleep(offset)
        return await ctx.create_run(
            f"text{i + 1}/{count}", graph, expected=(), multitask_strategy="interrupt"
        )

    made = await asyncio.gather(*(text(i, off) for i, off in enumerate(offsets)))
    runs = [r for r in made if r is not None]
    await asyncio.gather(*(ctx.join(r) for r in runs))
    if not runs:
        return
    # The thread's value is the input of the run that ended last with success.
    resp = await ctx.call("list runs", "GET", f"/threads/{ctx.thread_id}/runs?limit=100")
    winners = sorted(
        (r for r in (resp.json() if resp is not None else []) if r.get("status") == "success"),
        key=lambda r: (r.get("updated_at") or "", r["run_id"]),
    )
    by_id = {r.run_id: r for r in runs}
    value = (
        by_id[winners[-1]["run_id"]].token if winners and winners[-1]["run_id"] in by_id else None
    )
    if resp is not None and not winners:
        ctx.fail("double-text: no run succeeded", "every run ended interrupted (or worse)")
    await ctx.expect_thread("idle", value=value, after="double-text")


async def sc_cancel(ctx: Ctx, moment: str) -> None:
    """A run cancelled at a random moment: it ends interrupted, or success if it had ended
    before the cancel landed (the cancel then answers 404); never pending/running."""
    if await ctx.new_thread() is None:
        return
    if moment == "before_start":
        # A 0.2 s run, then a run queued behind it for later (after_seconds), cancelled while
        # it is surely still queued: the thread ends idle with the first run's value.
        blocker = await ctx.create_run("blocker", "sleep", expected=("success",))
        target = await ctx.create_run(
            "queued", "echo", expected=("interrupted",), after_seconds=QUEUED_DELAY_S
        )
        if target is not None:
            await asyncio.sleep(ctx.rng.uniform(0, 0.3))
            await ctx.cancel(target, allow_gone=False)
        for run in (blocker, target):
            if run is not None:
                await ctx.join(run)
        value = blocker.token if blocker is not None else None
        await ctx.expect_thread("idle", value=value, after="cancel of a queued run")
    elif moment in ("running", "around_end"):
        if moment == "running":
            graph, delay = "slow", ctx.rng.uniform(0.0, 0.5)
        # A cancel takes tens to hundreds of ms to land here under load: sent at once for an
        # echo run, 0-0.3 s after the answer for a 0.2 s run, it lands before, as, or after
        # the run ends ("How the cancels landed" in the report shows the spread).
        elif ctx.rng.random() < 0.5:
            graph, delay = "echo", 0.0
        else:
            graph, delay = "sleep", ctx.rng.uniform(0.0, 0.3)
        run = await ctx.create_run(f"target {graph}", graph, expected=("interrupted", "success"))
        if run is None:
            return
        joiner = asyncio.create_task(ctx.join(run))  # joined before the cancel lands
        try:
            if moment == "running":
                await ctx.wait_until_running(run)
            await asyncio.sleep(delay)
            code = await ctx.cancel(run, allow_gone=True)
            # 404: nothing in flight to cancel, so it had ended, and must have succeeded.
            run.expected = ("success",) if code == 404 else ("interrupted", "success")
            await joiner
        finally:
            joiner.cancel()
        # A run cancelled inside its node leaves that node to do: the thread may then be
        # `interrupted` (as LangGraph's own server reports it) or `idle`; never `busy`.
        final = await ctx.run_status(run)
        await ctx.expect_thread(
            "idle" if final == "success" else ("idle", "interrupted"), after=f"cancel {moment}"
        )
    elif moment == "queued_resume":
        # A resume queued for later (after_seconds), cancelled before it starts: the interrupt
        # is still pending, so the thread stays interrupted and a second resume completes.
        if await hitl_ask(ctx) is None:
            return
        queued = await ctx.create_run(
            "queued resume",
            "hitl",
            expected=("interrupted",),
            command={"resume": ctx.token("never")},
            step="create resume",
            after_seconds=QUEUED_DELAY_S,
        )
        if queued is None:
            return
        await asyncio.sleep(ctx.rng.uniform(0, 0.3))
        await ctx.cancel(queued, allow_gone=False)
        await ctx.join(queued)
        await ctx.expect_thread("interrupted", after="cancelled queued resume")
        answer = ctx.token("answer")
        resume = await ctx.create_run(
            "resume",
            "hitl",
            expected=("success",),
            command={"resume": answer},
            step="create resume after cancelled one",
        )
        if resume is not None:
            ctx.check_body("join resume", await ctx.join(resume), {"value": answer}, resume)
            await ctx.expect_thread("idle", value=answer, after="second resume")


def planned_runs(scenario: str, opts: Options) -> int:
    return {
        "echo": 1,
        "sleep": 1,
        "hitl": 2,
        "doubletext": opts.double_texts,
        "cancel/before_start": 2,
        "cancel/running": 1,
        "cancel/around_end": 1,
        "cancel/queued_resume": 3,
    }[scenario]


def scenario_coro(ctx: Ctx, opts: Options) -> Awaitable[None]:
    name = ctx.name
    if name in ("echo", "sleep"):
        return sc_simple(ctx, name)
    if name == "hitl":
        return sc_hitl(ctx)
    if name == "doubletext":
        return sc_doubletext(ctx, opts.double_texts)
    return sc_cancel(ctx, name.split("/", 1)[1])


def make_plan(opts: Options) -> list[Planned]:
    rng = random.Random(opts.seed)
    names = [n for n in SCENARIOS if opts.mix[n] > 0]
    weights = [opts.mix[n] for n in names]
    moments = [m for m in CANCEL_MOMENTS if opts.cancel_mix[m] > 0]
    moment_weights = [opts.cancel_mix[m] for m in moments]
    plan: list[Planned] = []
    total = 0
    while total < opts.runs:
        name = rng.choices(names, weights)[0]
        if name == "cancel":
            name = "cancel/" + rng.choices(moments, moment_weights)[0]
        runs = planned_runs(name, opts)
        plan.append(Planned(len(plan), name, runs, rng.randrange(1 << 62)))
        total += runs
    return plan


# --------------------------------------------------------------------------------------------
# The soak
# --------------------------------------------------------------------------------------------


class Soak:
    def __init__(self, opts: Options, base_url: str, pid: int | None):
        self.opts = opts
        self.base_url = base_url
        self.pid = pid
        self.soak_id = str(uuid.uuid4())
        parts = urlsplit(base_url)
        host, port = parts.hostname or HOST, parts.port or 80
        self.client = LeanClient(host, port, timeout=opts.request_timeout)
        self.join_client = LeanClient(host, port, timeout=opts.join_timeout)
        self.ledger = Ledger()
        self.rss: list[tuple[float, int, int]] = []  # (seconds since start, runs created, KiB)
        self.marks: dict[str, JSON] = {}
        self.t0 = time.monotonic()
        self.server_died: str | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.meta: JSON = {}

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def sample_rss(self) -> int | None:
        if self.pid is None:
            return None
        kib = rss_kib(self.pid)
        if kib:
            self.rss.append((round(self.elapsed(), 2), self.ledger.created, kib))
        return kib or None

    def mark(self, name: str) -> None:
        kib = self.sample_rss()
        self.marks[name] = {
            "t_s": round(self.elapsed(), 2),
            "runs_created": self.ledger.created,
            "rss_mib": round(kib / 1024, 1) if kib else None,
        }

    async def rss_sampler(self) -> None:
        while True:
            self.sample_rss()
            if "warm" not in self.marks and self.ledger.created >= self.opts.warmup_runs:
                self.mark("warm")
            await asyncio.sleep(RSS_INTERVAL_S)

    async def progress(self, total_runs: int) -> None:
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL_S)
            led = self.ledger
            rss = f", RSS {self.rss[-1][2] / 1024:.1f} MiB" if self.rss else ""
            print(
                f"  {self.elapsed():6.0f} s: {led.created}/{total_runs} runs created, "
                f"{led.scenarios_done} scenarios done, {len(led.problems)} problems, "
                f"{len(led.hung_joins)} hung joins{rss}",
                flush=True,
            )

    async def one(self, planned: Planned) -> None:
        ctx = Ctx(self, planned)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.opts.scenario_timeout):
                await scenario_coro(ctx, self.opts)
        except TimeoutError:
            ctx.fail(
                f"scenario hung at '{ctx.step}'",
                f"not done after {self.opts.scenario_timeout:.0f} s",
            )
        except Exception as exc:  # a bug of the soak itself: record it, go on
            ctx.fail(f"soak error: {type(exc).__name__}", repr(exc)[:400])
        elapsed_ms = (time.perf_counter() - started) * 1000
        self.ledger.latencies[planned.scenario].append(elapsed_ms)
        self.ledger.outcomes[planned.scenario]["failed" if ctx.failed else "ok"] += 1
        self.ledger.scenarios_done += 1

    async def drive(self, plan: list[Planned]) -> JSON:
        slots = asyncio.Semaphore(self.opts.concurrency)
        tasks: set[asyncio.Task[None]] = set()
        launched = 0
        deadline = time.monotonic() + self.opts.max_duration
        started = time.monotonic()
        stop_reason = None
        for planned in plan:
            await slots.acquire()
            if _stop_requested:
                stop_reason = "stopped by a signal"
            elif time.monotonic() > deadline:
                stop_reason = f"--max-duration {self.opts.max_duration:.0f} s reached"
            elif self.proc is not None and self.proc.poll() is not None:
                self.server_died = f"the server exited with code {self.proc.returncode}"
                stop_reason = self.server_died
            if stop_reason:
                slots.release()
                break
            task = asyncio.create_task(self.one(planned))
            tasks.add(task)
            task.add_done_callback(lambda t: (tasks.discard(t), slots.release()))
            launched += 1
        if tasks:
            await asyncio.gather(*tasks)
        wall = time.monotonic() - started
        if self.proc is not None and self.proc.poll() is not None and not self.server_died:
            self.server_died = f"the server exited with code {self.proc.returncode}"
        creating = max(self.ledger.last_created_at - started, 1e-9)
        return {
            "scenarios_planned": len(plan),
            "scenarios_launched": launched,
            "stopped_early": stop_reason,
            "wall_s": round(wall, 2),
            "create_phase_s": round(creating, 2),
        }

    # ---------------------------------------------------------------- final accounting

    async def get_json(self, path: str, body: Any = None) -> Any:
        method = "GET" if body is None else "POST"
        payload = json.dumps(body).encode() if body is not None else None
        resp = await self.client.request(method, path, payload)
        if resp.status_code != 200:
            raise RuntimeError(f"{method} {path} -> {resp.status_code}: {resp.text[:200]}")
        return resp.json()

    async def gather_bounded(
        self, items: list[Any], fn: Callable[[Any], Awaitable[Any]], limit: int = 32
    ) -> list[Any]:
        sem = asyncio.Semaphore(limit)

        async def one(item: Any) -> Any:
            async with sem:
                try:
                    return await fn(item)
                except Exception as exc:
                    return exc

        return await asyncio.gather(*(one(i) for i in items))

    async def account(self) -> JSON:
        """Fetch every thread's runs; check each recorded run's final status."""
        led = self.ledger
        threads = sorted(set(led.threads))
        lists = await self.gather_bounded(
            threads, lambda tid: self.get_json(f"/threads/{tid}/runs?limit=1000")
        )
        found: dict[str, JSON] = {}
        fetch_errors: list[str] = []
        unreadable: set[str] = set()
        for tid, result in zip(threads, lists, strict=True):
            if isinstance(result, BaseException):
                unreadable.add(tid)
                fetch_errors.append(f"{tid}: {type(result).__name__}: {result}"[:300])
                continue
            for run in result:
                found[run["run_id"]] = run
        for record in led.runs:
            run = found.get(record.run_id)
            if run is None:
                record.final = "unknown" if record.thread_id in unreadable else "missing"
                continue
            record.final = run.get("status")
            record.created_at = run.get("created_at")
            record.ended_at = run.get("updated_at")
        self.decide_double_texts()
        unexpected: dict[str, list[RunRecord]] = defaultdict(list)
        for record in led.runs:
            record.ok = record.final in record.expected
            if not record.ok:
                key = (
                    f"{record.scenario} {record.role.split('/')[0]}: {record.final} "
                    f"(expected {'/'.join(record.expected)})"
                )
                unexpected[key].append(record)
        by_status = Counter(r.final for r in led.runs)
        return {
            "runs_checked": len(led.runs),
            "threads": len(threads),
            "by_status": dict(by_status.most_common()),
            "stuck_in_flight": by_status["pending"] + by_status["running"],
            "unexpected": sum(len(v) for v in unexpected.values()),
            "unexpected_by_kind": {
                key: {
                    "count": len(records),
                    "examples": [
                        {"run_id": r.run_id, "thread_id": r.thread_id}
                        for r in records[:EXAMPLES_PER_KIND]
                    ],
                }
                for key, records in sorted(unexpected.items(), key=lambda kv: -len(kv[1]))
            },
            "fetch_errors": fetch_errors[:20],
            "doubletext_survivor_not_newest": len(led.doubletext_survivor_not_newest),
        }

    def decide_double_texts(self) -> None:
        """In a double-text group the run created last must succeed and every earlier one end
        interrupted; an earlier one may have succeeded if it ended before a later one was
        answered (so perhaps before that one was committed).
        Concurrent creates may commit in another order than their ids: if the newest run is
        interrupted and exactly one other run succeeded without that excuse, that one was the
        last committed (counted, not a failure)."""
        groups: dict[str, list[RunRecord]] = defaultdict(list)
        for record in self.ledger.runs:
            if record.scenario == "doubletext":
                groups[record.thread_id].append(record)
        for group in groups.values():
            group.sort(key=lambda r: (r.created_at or "", r.run_id))
            early_ok: set[str] = set()
            for i, run in enumerate(group[:-1]):
                # A later run was committed before its answer reached the client: a run that
                # ended after that answer was in flight when the later run cancelled everything
                # in flight, and cannot have succeeded. Ended before it, it may have.
                first_answer = min(r.answered_at for r in group[i + 1 :])
                if run.final == "success" and run.ended_at:
                    ended = datetime.fromisoformat(run.ended_at).timestamp()
                    if ended <= first_answer + CLOCK_SLACK_S:
                        early_ok.add(run.run_id)
            survivor = group[-1]
            others = [r for r in group[:-1] if r.final == "success" and r.run_id not in early_ok]
            if survivor.final == "interrupted" and len(others) == 1:
                survivor = others[0]
                self.ledger.doubletext_survivor_not_newest.append(survivor.thread_id)
            for run in group:
                if run is survivor:
                    run.expected = ("success",)
                    run.role = f"last {run.graph}"
                elif run.run_id in early_ok:
                    run.expected = ("interrupted", "success")
                    run.role = f"earlier {run.graph}"
                else:
                    run.expected = ("interrupted",)
                    run.role = f"earlier {run.graph}"

    async def find_wedged(self) -> JSON:
        """Threads still busy after the soak whose runs do not move over --settle seconds."""
        mine = set(self.ledger.threads)

        async def snapshot() -> dict[str, JSON]:
            busy: dict[str, JSON] = {}
            for offset in range(0, 100_000, 1000):
                page = await self.get_json(
                    "/threads/search",
                    {
                        "status": "busy",
                        "metadata": {"soak": self.soak_id},
                        "limit": 1000,
                        "offset": offset,
                        "select": ["thread_id", "status", "updated_at"],
                    },
                )
                for t in page:
                    if t["thread_id"] in mine:
                        busy[t["thread_id"]] = t
                if len(page) < 1000:
                    break
            tids = sorted(busy)
            runs = await self.gather_bounded(
                tids, lambda tid: self.get_json(f"/threads/{tid}/runs?limit=1000")
            )
            for tid, result in zip(tids, runs, strict=True):
                busy[tid]["runs"] = (
                    []
                    if isinstance(result, BaseException)
                    else [(r["run_id"], r["status"], r["updated_at"]) for r in result]
                )
            return busy

        try:
            first = await snapshot()
            if first:
                await asyncio.sleep(self.opts.settle)
            second = await snapshot() if first else {}
        except Exception as exc:
            return {"count": None, "error": f"{type(exc).__name__}: {exc}"[:300]}
        wedged: dict[str, list[JSON]] = defaultdict(list)
        for tid, now in second.items():
            before = first.get(tid)
            if before is None or before["runs"] != now["runs"]:
                continue  # it is moving
            in_flight = [r for r in now["runs"] if r[1] in ("pending", "running")]
            if not in_flight:
                reason = "busy with no pending/running run"
            else:
                reason = "busy, run stuck " + "+".join(sorted({r[1] for r in in_flight}))
            scen = next((r.scenario for r in self.ledger.runs if r.thread_id == tid), "?")
            wedged[reason].append(
                {
                    "thread_id": tid,
                    "scenario": scen,
                    "runs": [{"run_id": r[0], "status": r[1]} for r in now["runs"]],
                }
            )
        by_scenario = Counter(w["scenario"] for ws in wedged.values() for w in ws)
        return {
            "count": sum(len(v) for v in wedged.values()),
            "busy_at_end": len(first),
            "by_reason": {k: len(v) for k, v in wedged.items()},
            "by_scenario": dict(by_scenario.most_common()),
            "examples": {k: v[:EXAMPLES_PER_KIND] for k, v in wedged.items()},
        }


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def slope_per_1000(points: list[tuple[int, int]]) -> float | None:
    """Least-squares slope of RSS (MiB) over runs created, per 1,000 runs."""
    if len(points) < 2:
        return None
    xs = [x / 1000 for x, _ in points]
    ys = [kib / 1024 for _, kib in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return None
    return round(sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var, 3)


def rss_summary(soak: Soak, total_runs: int) -> JSON:
    if not soak.rss:
        return {"sampled": False, "why": "no --pid" if soak.pid is None else "no samples"}
    half = total_runs / 2
    second_half = [(runs, kib) for _, runs, kib in soak.rss if runs >= half]
    mib = [kib / 1024 for _, _, kib in soak.rss]
    return {
        "sampled": True,
        "pid": soak.pid,
        "samples": len(soak.rss),
        "start_mib": soak.marks.get("start", {}).get("rss_mib"),
        "warm_mib": soak.marks.get("warm", {}).get("rss_mib"),
        "warm_at_runs": soak.marks.get("warm", {}).get("runs_created"),
        "end_mib": soak.marks.get("end", {}).get("rss_mib"),
        "after_accounting_mib": soak.marks.get("accounted", {}).get("rss_mib"),
        "max_mib": round(max(mib), 1),
        "second_half_slope_mib_per_1000_runs": slope_per_1000(second_half),
        "second_half_samples": len(second_half),
    }


def latency_table(ledger: Ledger) -> JSON:
    out: JSON = {}
    for name in sorted(ledger.latencies):
        values = sorted(ledger.latencies[name])
        out[name] = {
            "count": len(values),
            "ok": ledger.outcomes[name]["ok"],
            "failed": ledger.outcomes[name]["failed"],
            "p50_ms": round(percentile(values, 50), 1),
            "p90_ms": round(percentile(values, 90), 1),
            "max_ms": round(values[-1], 1),
        }
    return out


def problems_by_kind(ledger: Ledger) -> JSON:
    groups: dict[str, list[Problem]] = defaultdict(list)
    for p in ledger.problems:
        groups[p.kind].append(p)
    return {
        kind: {
            "count": len(items),
            "scenarios": dict(Counter(p.scenario for p in items).most_common()),
            "examples": [p.as_json() for p in items[:EXAMPLES_PER_KIND]],
        }
        for kind, items in sorted(groups.items(), key=lambda kv: -len(kv[1]))
    }


def server_log_summary(path: Path | None) -> JSON | None:
    if path is None or not path.exists():
        return None
    counts: Counter[str] = Counter()
    firsts: dict[str, str] = {}
    with path.open(errors="replace") as f:
        for line in f:
            for level in ("ERROR", "WARNING", "CRITICAL", "Traceback"):
                if level in line:
                    counts[level] += 1
                    # the message without its timestamp, to group repeats
                    msg = line.split(f" {level} ", 1)[-1].strip()[:200]
                    key = f"{level}: {msg[:80]}"
                    firsts.setdefault(key, line.strip()[:300])
                    break
    return {
        "lines_by_level": dict(counts),
        "first_lines": list(firsts.values())[:15],
        "tail": log_tail(path, 15),
    }


def build_report(
    soak: Soak,
    opts: Options,
    meta: JSON,
    drive: JSON,
    plan: list[Planned],
    accounting: JSON,
    wedged: JSON,
    log: JSON | None,
) -> JSON:
    led = soak.ledger
    hung = led.hung_joins
    hung_states = Counter(h["run_status_when_given_up"] for h in hung)
    failed_scenarios = sum(c["failed"] for c in led.outcomes.values())
    problem_count = len(led.problems) + accounting.get("unexpected", 0) + (wedged.get("count") or 0)
    wall = drive["wall_s"] or 1e-9
    troubled = {p.thread_id for p in led.problems} | {r.thread_id for r in led.runs if not r.ok}
    return {
        "meta": meta,
        "summary": {
            "ok": problem_count == 0 and not soak.server_died and not drive["stopped_early"],
            "runs_created": led.created,
            "runs_planned": sum(p.runs for p in plan),
            "scenarios_done": led.scenarios_done,
            "scenarios_failed": failed_scenarios,
            "wall_s": drive["wall_s"],
            "runs_per_s": round(led.created / wall, 1),
            # Not held back by the last scenarios' timeouts: runs created / time to the last one.
            "create_phase_s": drive["create_phase_s"],
            "runs_per_s_until_last_created": round(led.created / drive["create_phase_s"], 1),
            "scenarios_per_s": round(led.scenarios_done / wall, 1),
            "stopped_early": drive["stopped_early"],
            "server_died": soak.server_died,
            "hung_joins": len(hung),
            "wedged_threads": wedged.get("count"),
            "unexpected_statuses": accounting.get("unexpected"),
            "stuck_in_flight": accounting.get("stuck_in_flight"),
            "problems_recorded": len(led.problems),
        },
        "rss": rss_summary(soak, led.created),
        # every RSS sample: [seconds since start, runs created, VmRSS KiB]
        "rss_series": [list(sample) for sample in soak.rss],
        "scenarios": latency_table(led),
        "steps_ms": {
            step: {
                "n": len(v),
                "p50": round(percentile(sorted(v), 50), 1),
                "p99": round(percentile(sorted(v), 99), 1),
            }
            for step, v in sorted(led.step_ms.items())
            if v
        },
        "cancels": {name: dict(c) for name, c in sorted(led.cancels.items())},
        "accounting": accounting,
        "hung_joins": {
            "count": len(hung),
            "by_run_status_when_given_up": dict(hung_states),
            "by_scenario": dict(Counter(h["scenario"] for h in hung).most_common()),
            "all": hung,
        },
        "wedged_threads": wedged,
        "problems_by_kind": problems_by_kind(led),
        # every problem: [kind, scenario, thread_id, run_id, detail]
        "problems": [
            [p.kind, p.scenario, p.thread_id, p.run_id, p.detail[:300]] for p in led.problems
        ],
        "server_log": log,
        # the runs of threads where anything went wrong (every run's outcome is counted in
        # "accounting"; listing 10,000 good runs would put ~1.4 MB in git per soak):
        # [run_id, thread_id, scenario, role, final status, expected, ok, created_at, ended_at
        # (its updated_at), create sent, create answered (epoch s, client clock)]
        "runs": [run_row(r, True) for r in led.runs if r.thread_id in troubled],
    }


def run_row(r: RunRecord, timings: bool) -> list[Any]:
    row: list[Any] = [r.run_id, r.thread_id, r.scenario, r.role, r.final, "/".join(r.expected)]
    row.append(r.ok)
    if timings:
        row += [r.created_at, r.ended_at, round(r.sent_at, 3), round(r.answered_at, 3)]
    return row


def render_markdown(report: JSON) -> str:
    meta, s, rss = report["meta"], report["summary"], report["rss"]
    o = meta["options"]
    server = meta["server"]
    lines = [
        f"# agentd soak — {meta['timestamp']}",
        "",
        f"commit `{meta['git_commit']}`{' (dirty tree)' if meta.get('git_dirty') else ''} · "
        f"{meta['nproc']} cores · {meta['platform']} · runs={o['runs']} "
        f"concurrency={o['concurrency']} seed={o['seed']} · server: {server['how']}"
        + (f", version {server['version']}" if server.get("version") else ""),
        "",
        f"mix {o['mix']} · cancel moments {o['cancel_mix']} · double-texts of "
        f"{o['double_texts']} · timeouts: request {o['request_timeout']} s, join "
        f"{o['join_timeout']} s, scenario {o['scenario_timeout']} s, settle {o['settle']} s",
        "",
        "**Result: "
        + ("PASS**" if s["ok"] else "FAIL**")
        + (f" — stopped early: {s['stopped_early']}" if s["stopped_early"] else "")
        + (f" — {s['server_died']}" if s["server_died"] else ""),
        "",
        "| | |",
        "| --- | ---: |",
        f"| runs created (planned) | {s['runs_created']} ({s['runs_planned']}) |",
        f"| scenarios done / failed | {s['scenarios_done']} / {s['scenarios_failed']} |",
        f"| wall time (s) | {fmt(s['wall_s'])} |",
        f"| runs/s (runs created / wall time) | {fmt(s['runs_per_s'])} |",
        f"| runs/s until the last run was created ({fmt(s['create_phase_s'])} s) | "
        f"{fmt(s['runs_per_s_until_last_created'])} |",
        f"| hung joins | {s['hung_joins']} |",
        f"| wedged threads | {fmt(s['wedged_threads'])} |",
        f"| runs with an unexpected final status | {fmt(s['unexpected_statuses'])} |",
        f"| runs still pending/running at the end | {fmt(s['stuck_in_flight'])} |",
        f"| problems recorded by scenarios | {s['problems_recorded']} |",
    ]
    if rss.get("sampled"):
        lines += [
            f"| RSS at start (MiB) | {fmt(rss['start_mib'])} |",
            f"| RSS after warm-up ({rss['warm_at_runs']} runs) (MiB) | {fmt(rss['warm_mib'])} |",
            f"| RSS at the end (MiB) | {fmt(rss['end_mib'])} |",
            f"| RSS max (MiB) | {fmt(rss['max_mib'])} |",
            "| RSS slope over the second half (MiB per 1,000 runs) | "
            f"{fmt(rss['second_half_slope_mib_per_1000_runs'])} |",
        ]
    else:
        lines.append(f"| RSS | not sampled ({rss.get('why')}) |")
    lines += [
        "",
        "## Scenarios",
        "",
        "| scenario | count | ok | failed | latency p50 (ms) | p90 (ms) | max (ms) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, row in report["scenarios"].items():
        lines.append(
            f"| {name} | {row['count']} | {row['ok']} | {row['failed']} | {fmt(row['p50_ms'])} "
            f"| {fmt(row['p90_ms'])} | {fmt(row['max_ms'])} |"
        )
    if report.get("cancels"):
        lines += [
            "",
            "How the cancels landed (HTTP answer of POST .../cancel, `wait=1` or not):",
            "",
        ]
        for name, outcomes in report["cancels"].items():
            lines.append(f"- {name}: " + ", ".join(f"{k} {v}" for k, v in outcomes.items()))
    acc = report["accounting"]
    lines += [
        "",
        "## Every run accounted for",
        "",
        f"{acc.get('runs_checked')} runs on {acc.get('threads')} threads; final statuses: "
        + ", ".join(f"{k} {v}" for k, v in (acc.get("by_status") or {}).items()),
        "",
    ]
    if acc.get("unexpected_by_kind"):
        lines += [
            "| scenario, run: final status (expected) | runs | example run ids |",
            "| --- | ---: | --- |",
        ]
        for key, entry in acc["unexpected_by_kind"].items():
            ids = ", ".join(f"`{e['run_id']}`" for e in entry["examples"][:3])
            lines.append(f"| {key} | {entry['count']} | {ids} |")
    else:
        lines.append("Every run ended as its scenario expects.")
    if acc.get("doubletext_survivor_not_newest"):
        lines += [
            "",
            f"Double-texts whose surviving run was not the newest id (creates "
            f"committed in another order; not a failure): "
            f"{acc['doubletext_survivor_not_newest']}",
        ]
    hung = report["hung_joins"]
    lines += ["", "## Hung joins", ""]
    if hung["count"]:
        lines.append(
            f"{hung['count']} joins gave no answer within the join timeout. Run status when "
            f"given up: {hung['by_run_status_when_given_up']}; by scenario: {hung['by_scenario']}."
        )
        lines += [""] + [
            f"- `{h['run_id']}` ({h['scenario']}, {h['role']}; thread `{h['thread_id']}`): "
            f"{h['run_status_when_given_up']}"
            for h in hung["all"][:5]
        ]
    else:
        lines.append("None.")
    wedged = report["wedged_threads"]
    lines += ["", "## Wedged threads", ""]
    if wedged.get("count") is None:
        lines.append(f"Not checked: {wedged.get('error')}")
    elif wedged["count"]:
        lines.append(
            f"{wedged['count']} threads still `busy` and unchanged over the settle period "
            f"({wedged['busy_at_end']} busy when the soak ended). By reason: "
            f"{wedged['by_reason']}; by scenario: {wedged['by_scenario']}."
        )
        for reason, examples in wedged["examples"].items():
            for w in examples[:3]:
                runs = ", ".join(f"`{r['run_id']}` {r['status']}" for r in w["runs"])
                lines.append(f"- {reason}: thread `{w['thread_id']}` ({w['scenario']}): {runs}")
    else:
        lines.append(f"None ({wedged.get('busy_at_end', 0)} threads busy when the soak ended).")
    lines += ["", "## Problems recorded by scenarios, by kind", ""]
    if report["problems_by_kind"]:
        lines += ["| kind | count | scenarios | example |", "| --- | ---: | --- | --- |"]
        for kind, entry in report["problems_by_kind"].items():
            ex = entry["examples"][0]
            ids = " ".join(f"{k} `{ex[k]}`" for k in ("run_id", "thread_id") if ex.get(k))
            detail = ex["detail"].replace("|", "\\|").replace("\n", " ")[:160]
            scen = ", ".join(f"{k} {v}" for k, v in entry["scenarios"].items())
            lines.append(f"| {kind} | {entry['count']} | {scen} | {ids} {detail} |")
    else:
        lines.append("None.")
    log = report.get("server_log")
    if log:
        lines += ["", "## Server log", "", f"Lines by level: {log['lines_by_level'] or 'none'}"]
        if log["first_lines"]:
            lines += ["", "```", *log["first_lines"][:8], "```"]
    lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def git_dirty() -> bool | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_DIR), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(out.stdout.strip())


async def soak_main(soak: Soak, opts: Options, log_path: Path | None) -> JSON:
    plan = make_plan(opts)
    total_runs = sum(p.runs for p in plan)
    info = None
    with contextlib.suppress(Exception):
        info = await soak.get_json("/info")
    counts = Counter(p.scenario for p in plan)
    print(
        f"plan: {len(plan)} scenarios, {total_runs} runs, seed {opts.seed}: "
        + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())),
        flush=True,
    )
    soak.mark("start")
    sampler = asyncio.create_task(soak.rss_sampler())
    progress = asyncio.create_task(soak.progress(total_runs))
    try:
        drive = await soak.drive(plan)
        soak.mark("end")
        print(f"soak done in {drive['wall_s']:.1f} s; accounting for every run ...", flush=True)
        await asyncio.sleep(1.0)
        accounting = await soak.account()
        print("looking for wedged threads ...", flush=True)
        wedged = await soak.find_wedged()
        soak.mark("accounted")
    finally:
        for task in (sampler, progress):
            task.cancel()
        await asyncio.gather(sampler, progress, return_exceptions=True)
    meta = soak.meta
    meta["server"]["version"] = (info or {}).get("version")
    meta["server"]["info"] = info
    meta["duration_s"] = round(soak.elapsed(), 1)
    return build_report(
        soak, opts, meta, drive, plan, accounting, wedged, server_log_summary(log_path)
    )


def write_report(report: JSON, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{report['meta']['timestamp']}-soak"
    # One line per run and per problem keeps a 10,000-run file readable and diffable.
    tables = {key: report.pop(key) for key in ("rss_series", "problems", "runs")}
    text = json.dumps(report, indent=2, default=str)
    text = text[: text.rstrip().rfind("}")].rstrip()
    for key, rows in tables.items():
        body = ",\n".join("    " + json.dumps(r) for r in rows)
        text += f',\n  "{key}": [\n{body}\n  ]' if rows else f',\n  "{key}": []'
    text += "\n}\n"
    report.update(tables)
    json_path = out_dir / f"{stem}.json"
    json_path.write_text(text)
    (out_dir / f"{stem}.md").write_text(render_markdown(report))
    return json_path


def start_server(opts: Options, workdir: Path) -> RunningServer:
    exe = REPO_DIR / ".venv" / "bin" / "agentd"
    if not exe.exists():
        raise SystemExit(f"{exe} not found: run `make .venv/bin/agentd` first")
    prepare_workdir(workdir)
    port = free_port()
    log_path = workdir / "server.log"
    args = [
        str(exe),
        "serve",
        "--config",
        str(workdir / "langgraph.json"),
        "--host",
        HOST,
        "--port",
        str(port),
        "--data-dir",
        str(workdir / "data"),
    ]
    started = time.perf_counter()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            args,
            cwd=workdir,
            env=child_env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = RunningServer("agentd", proc, f"http://{HOST}:{port}", log_path)
    try:
        wait_until_ok(server, opts.startup_timeout)
    except Exception as exc:
        stop_process(proc)
        raise SystemExit(f"agentd did not start: {exc}\n{log_tail(log_path)}") from exc
    server.startup_s = time.perf_counter() - started
    return server


def on_sigterm(signum: int, _frame: object) -> None:
    global _stop_requested
    _stop_requested = True
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    signal.signal(signal.SIGTERM, on_sigterm)
    started = datetime.now(UTC)
    meta: JSON = {
        "timestamp": started.strftime("%Y%m%dT%H%M%SZ"),
        "git_commit": git_commit(),
        "git_dirty": git_dirty(),
        "nproc": os.cpu_count(),
        "platform": f"{platform.system()} {platform.machine()}, Python {platform.python_version()}",
        "hostname": socket.gethostname(),
        "run_id": str(uuid.uuid4()),
        "options": {
            "runs": opts.runs,
            "concurrency": opts.concurrency,
            "seed": opts.seed,
            "mix": {k: v for k, v in opts.mix.items() if v},
            "cancel_mix": {k: v for k, v in opts.cancel_mix.items() if v},
            "double_texts": opts.double_texts,
            "warmup_runs": opts.warmup_runs,
            "request_timeout": opts.request_timeout,
            "join_timeout": opts.join_timeout,
            "scenario_timeout": opts.scenario_timeout,
            "settle": opts.settle,
            "max_duration": opts.max_duration,
            "url": opts.url,
        },
    }
    workdir_ctx: Any = (
        contextlib.nullcontext(tempfile.mkdtemp(prefix="soak-agentd-"))
        if opts.keep_workdir
        else tempfile.TemporaryDirectory(prefix="soak-agentd-")
    )
    with workdir_ctx as tmp:
        server: RunningServer | None = None
        try:
            if opts.url is None:
                server = start_server(opts, Path(tmp))
                base_url, pid = server.base_url, server.proc.pid
                meta["server"] = {
                    "how": "agentd serve (started by the soak, default settings)",
                    "pid": pid,
                    "startup_s": round(server.startup_s, 2),
                }
                print(
                    f"agentd up at {base_url} (pid {pid}) in {server.startup_s:.1f} s", flush=True
                )
            else:
                base_url, pid = opts.url, opts.pid
                meta["server"] = {"how": f"already running at {opts.url}", "pid": pid}
                if pid is None:
                    print("no --pid: RSS is not sampled", flush=True)
            soak = Soak(opts, base_url, pid)
            soak.meta = meta
            soak.proc = server.proc if server else None
            report = asyncio.run(soak_main(soak, opts, server.log_path if server else None))
        finally:
            if server is not None:
                stop_process(server.proc)
        if opts.keep_workdir:
            print(f"kept the server's data dir and log in {tmp}")
    print()
    print(render_markdown(report))
    if opts.save:
        print(f"wrote {write_report(report, opts.out_dir)} (and .md)")
    return 0 if report["summary"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
