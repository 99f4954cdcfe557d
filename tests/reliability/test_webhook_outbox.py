"""The webhook outbox: a delivery is recorded with its run's end and survives ``kill -9``; an
attempt is bounded in time and reads little of the answer; a bounded number run at once, and a
shutdown leaves the rest in the outbox. Real servers, a real receiver in this process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from langgraph_sdk import get_client

from agentd.webhooks.sender import ATTEMPTS, BACKOFF, CONCURRENCY
from tests import db
from tests.api.test_webhooks import new_path, write_config
from tests.receiver import Blackhole, Hook, Receiver
from tests.server import Server

LOOPBACK = {"url": {"disable_loopback": False}}
MIB = 1 << 20


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def hook_server(base: Path, timeout: float | None = None) -> Server:
    """A server that may call loopback receivers; ``timeout``: AGENTD_WEBHOOK_TIMEOUT_SECS."""
    config = write_config(base / "cfg", webhooks=LOOPBACK)
    env = {"AGENTD_WEBHOOK_TIMEOUT_SECS": str(timeout)} if timeout else {}
    return Server(base / "data", config=config, env=env)


def outbox(server: Server) -> list[tuple[str, int]]:
    """(run_id, attempt) of every delivery in the server's outbox (read from its database)."""
    return db.query(server, "SELECT run_id, attempt FROM webhook_outbox")


def rss(server: Server) -> int:
    """The server process's resident memory, in bytes (VmRSS)."""
    assert server.proc is not None
    status = Path(f"/proc/{server.proc.pid}/status").read_text()
    [line] = [x for x in status.splitlines() if x.startswith("VmRSS:")]
    return int(line.split()[1]) * 1024


async def until(predicate: Callable[[], bool], limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def all_closed(receiver: Receiver, path: str, count: int) -> Callable[[], bool]:
    """``count`` requests reached ``path`` and the server closed each before its answer ended."""
    return lambda: sum(h.closed_at is not None for h in receiver.hooks(path)) >= count


def without_sent_at(hook: Hook) -> dict:
    return {k: v for k, v in hook.body.items() if k != "webhook_sent_at"}


async def test_deliveries_survive_kill_9_and_are_sent_once_more(
    tmp_path: Path, receiver: Receiver
) -> None:
    """A run's end and a cancelled pending run: each first attempt reaches a receiver that
    never answers, the server dies (kill -9), and the restarted one delivers each exactly once
    more, with the same delivery id, and empties the outbox."""
    ended, cancelled = new_path("/hang/1"), new_path("/hang/1")
    # On PostgreSQL the restarted server sends them again once their leases run out: the
    # attempt's bound (5 s: long enough for the kill to come first) plus the DNS check's and
    # the margin, 18 s.
    server = hook_server(tmp_path, timeout=5).start()
    try:
        client = get_client(url=server.url, api_key=None)
        tid = (await client.threads.create())["thread_id"]
        run = await client.runs.create(tid, "echo", input={"value": 7}, webhook=receiver.url(ended))
        # Queued behind a running run, then cancelled: it ends without ever starting.
        busy = (await client.threads.create())["thread_id"]
        await client.runs.create(busy, "steps", input={"done": [], "delay": 0.5})
        pending = await client.runs.create(
            busy, "echo", input={"value": 8}, webhook=receiver.url(cancelled)
        )
        await client.runs.cancel(busy, pending["run_id"])
        [first] = await asyncio.to_thread(receiver.wait, ended)
        [first_cancelled] = await asyncio.to_thread(receiver.wait, cancelled)
        assert sorted(run_id for run_id, _ in outbox(server)) == sorted(
            [run["run_id"], pending["run_id"]]
        )  # recorded, and not delivered: the receiver has not answered
        server.kill()
    finally:
        server.kill()

    restarted = Server(
        server.data_dir, config=server.config, backend=server.backend, env=server.env
    ).start()
    try:
        for path, previous in ((ended, first), (cancelled, first_cancelled)):
            hooks = await asyncio.to_thread(receiver.wait, path, 2, 40)
            again = hooks[1]
            assert previous.closed_at is not None  # the dead server's connection went away
            # The same delivery, so a receiver can drop a duplicate by its id.
            assert again.headers["x-agentd-delivery"] == previous.headers["x-agentd-delivery"]
            assert without_sent_at(again) == without_sent_at(previous)
            assert again.body["webhook_sent_at"] > previous.body["webhook_sent_at"]
        assert first.headers["x-agentd-delivery"] != first_cancelled.headers["x-agentd-delivery"]
        assert first.body["run_id"] == run["run_id"] and first.body["status"] == "success"
        assert first.body["values"]["value"] == 7
        assert first_cancelled.body["run_id"] == pending["run_id"]
        assert first_cancelled.body["status"] == "interrupted"
        # Delivered and deleted: no other attempt can come.
        await until(lambda: not outbox(restarted), 5, "the outbox to empty")
        assert len(receiver.hooks(ended)) == 2 and len(receiver.hooks(cancelled)) == 2
    finally:
        restarted.stop()
    if restarted.backend == "sqlite":  # the file's only process: every lease was an orphan
        assert "2 webhook deliveries cut short by a previous process" in restarted.log()


async def test_a_huge_answer_is_not_read(tmp_path: Path, receiver: Receiver) -> None:
    """A receiver answering 400 MiB (a 200, and a 500 retried twice) costs the server a few
    MiB at most: it reads 64 KiB of an answer and hangs up."""
    server = hook_server(tmp_path).start()
    try:
        client = get_client(url=server.url, api_key=None)
        warm = new_path()  # the first delivery loads the code every later one uses
        await client.runs.wait(None, "echo", input={"value": 0}, webhook=receiver.url(warm))
        await asyncio.to_thread(receiver.wait, warm)
        await asyncio.sleep(0.5)
        baseline = peak = rss(server)
        ok, failing = new_path("/big/200/400"), new_path("/big/500/400")
        await client.runs.wait(None, "echo", input={"value": 1}, webhook=receiver.url(ok))
        await client.runs.wait(None, "echo", input={"value": 2}, webhook=receiver.url(failing))
        deadline = time.monotonic() + 30
        while not (all_closed(receiver, ok, 1)() and all_closed(receiver, failing, ATTEMPTS)()):
            assert time.monotonic() < deadline, (
                f"the big answers were not cut off; VmRSS {baseline // MIB} MiB, "
                f"peak {peak // MIB} MiB"
            )
            peak = max(peak, rss(server))
            await asyncio.sleep(0.01)
        hooks = receiver.hooks(ok) + receiver.hooks(failing)
        assert len(hooks) == 1 + ATTEMPTS  # the 200 is delivered; the 500 retried, not more
        # The receiver could write little more than what the socket buffers hold.
        assert all(h.sent < 64 * MIB for h in hooks), [h.sent // MIB for h in hooks]
        print(f"VmRSS baseline {baseline / MIB:.1f} MiB, peak {peak / MIB:.1f} MiB")
        assert peak - baseline < 32 * MIB, (baseline // MIB, peak // MIB)
    finally:
        server.stop()
    assert f"answered 500: '{'x' * 10}" in server.log()  # the start of the answer, for the log


async def test_a_dripping_receiver_is_cut_off(tmp_path: Path, receiver: Receiver) -> None:
    """A byte a second resets any per-read timeout; the attempt's bound in all cuts it off.
    A drip before the status is a timeout, retried; after a 200 the delivery counts as done."""
    bound = 2.0
    server = hook_server(tmp_path, timeout=bound).start()
    head, body = new_path("/drip/head"), new_path("/drip/body/200")
    try:
        client = get_client(url=server.url, api_key=None)
        await client.runs.wait(None, "echo", input={"value": 1}, webhook=receiver.url(head))
        await client.runs.wait(None, "echo", input={"value": 2}, webhook=receiver.url(body))
        limit = ATTEMPTS * bound + BACKOFF * (2**ATTEMPTS) + 5  # attempts and backoffs
        await until(all_closed(receiver, body, 1), bound + 5, "the dripped body to be cut")
        await until(all_closed(receiver, head, ATTEMPTS), limit, "every dripped head to be cut")
        for hook in receiver.hooks(head) + receiver.hooks(body):
            assert hook.closed_at is not None
            # Cut at the bound, not before; the slack is for a loaded machine.
            assert bound - 0.5 < hook.closed_at - hook.at < bound + 1.5, hook.closed_at - hook.at
        # Given up and delivered: both gone from the outbox, so no other attempt can come.
        await until(lambda: not outbox(server), 5, "the outbox to empty")
        assert len(receiver.hooks(head)) == ATTEMPTS and len(receiver.hooks(body)) == 1
    finally:
        server.stop()
    log = server.log()
    assert f"failed after {ATTEMPTS} attempts: TimeoutError" in log
    assert f"delivered to http://127.0.0.1:{receiver.port}{body} (200)" in log


async def test_deliveries_run_a_bounded_number_at_a_time(tmp_path: Path) -> None:
    """More deliveries than slots, to a receiver that never answers: the runs end at once,
    CONCURRENCY deliveries are under way, the rest wait in the outbox; a shutdown hands the
    ones under way back, uncounted, for the next start."""
    count = CONCURRENCY + 8
    server = hook_server(tmp_path).start()
    try:
        with Blackhole() as blackhole:
            client = get_client(url=server.url, api_key=None)
            started = time.monotonic()
            runs = await asyncio.gather(*(
                client.runs.wait(None, "echo", input={"value": i}, webhook=blackhole.url(f"/{i}"))
                for i in range(count)
            ))  # fmt: skip
            assert [r["value"] for r in runs] == list(range(count))
            assert time.monotonic() - started < 20  # no run waited for a 30 s delivery
            await until(lambda: blackhole.accepted >= CONCURRENCY, 10, "deliveries to start")
            await asyncio.sleep(1.0)
            assert blackhole.accepted == CONCURRENCY
            assert server.stop() in (0, -15)
    finally:
        server.kill()
    assert f"abandoned {CONCURRENCY} webhook deliveries still under way" in server.log()
    rows = outbox(server)
    assert len(rows) == count and {attempt for _, attempt in rows} == {0}
