"""Run webhooks, through the official client against real servers: a server whose
langgraph.json opts in to loopback targets delivers to a real HTTP receiver in this process;
the session server (default policy) refuses internal targets with a 422 and stores nothing."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient
from langgraph_sdk.errors import UnprocessableEntityError

from tests import db
from tests.receiver import Blackhole, Receiver
from tests.server import ROOT, Server

GRAPHS = ROOT / "tests" / "graphs"
RUN_TIMEOUT = 3.0  # BG_JOB_TIMEOUT_SECS of the webhook server
PAYLOAD_KEYS = {
    "run_id", "thread_id", "assistant_id", "metadata", "status", "kwargs", "multitask_strategy",
    "created_at", "updated_at", "run_started_at", "run_ended_at", "webhook_sent_at", "values",
    "attempt",
}  # fmt: skip


def write_config(directory: Path, **extra: object) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "dependencies": [str(GRAPHS)],
        "graphs": {name: f"{GRAPHS / 'basic.py'}:{name}" for name in ("echo", "fail", "steps")},
        **extra,
    }
    path = directory / "langgraph.json"
    path.write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture(scope="module")
def blackhole() -> Iterator[Blackhole]:
    with Blackhole() as b:
        yield b


@pytest.fixture(scope="module")
def hook_server(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[Server]:
    """Loopback targets allowed, static headers (one from the environment), a run time limit."""
    base = tmp_path_factory.mktemp("webhooks")
    config = write_config(
        base,
        env={"LG_WEBHOOK_TOKEN": "s3cret"},
        webhooks={
            "url": {"disable_loopback": False},
            "headers": {"Authorization": "Bearer ${{ env.LG_WEBHOOK_TOKEN }}", "X-Static": "yes"},
        },
    )
    env = {"BG_JOB_TIMEOUT_SECS": str(RUN_TIMEOUT)}
    srv = Server(base / "data", config=config, env=env, backend=backend).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def quiet_blackhole() -> Iterator[Blackhole]:
    """The strict server's own: no other server's delivery (a retry of one that hung in
    another test) ever reaches it."""
    with Blackhole() as b:
        yield b


@pytest.fixture(scope="module")
def strict_server(
    tmp_path_factory: pytest.TempPathFactory, quiet_blackhole: Blackhole, backend: str
) -> Iterator[Server]:
    """A restrictive URL policy, and delivery switched off."""
    base = tmp_path_factory.mktemp("webhooks-strict")
    config = write_config(
        base,
        http={"disable_webhooks": True},
        webhooks={"url": {
            "require_https": True,
            "disable_loopback": False,
            "allowed_domains": ["localhost", "*.example.com"],
            "allowed_ports": [443, quiet_blackhole.port],
            "max_url_length": 100,
        }},
    )  # fmt: skip
    srv = Server(base / "data", config=config, backend=backend).start()
    yield srv
    srv.stop()


async def _client(server: Server) -> AsyncIterator[LangGraphClient]:
    c = get_client(url=server.url, api_key=None)
    yield c
    await c.http.client.aclose()


@pytest.fixture
async def hooks(hook_server: Server) -> AsyncIterator[LangGraphClient]:
    async for c in _client(hook_server):
        yield c


@pytest.fixture
async def strict(strict_server: Server) -> AsyncIterator[LangGraphClient]:
    async for c in _client(strict_server):
        yield c


def new_path(prefix: str = "/hook") -> str:
    return f"{prefix}/{uuid.uuid4().hex}"


async def wait_for(receiver: Receiver, path: str, count: int = 1) -> list:
    return await asyncio.to_thread(receiver.wait, path, count)


async def wait_running(client: LangGraphClient, thread_id: str, run_id: str) -> None:
    for _ in range(200):
        if (await client.runs.get(thread_id, run_id))["status"] == "running":
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the run never started")


# ---------------------------------------------------------------- delivery


async def test_success_payload_headers_and_query_string(
    hooks: LangGraphClient, receiver: Receiver
) -> None:
    path = new_path()
    url = f"http://localhost:{receiver.port}{path}?token=a%2Fb&x=1&x=2"
    thread = await hooks.threads.create(metadata={"owner": "me"})
    run = await hooks.runs.create(
        thread["thread_id"], "echo", input={"value": 42}, metadata={"m": 1}, webhook=url
    )
    await hooks.runs.join(thread["thread_id"], run["run_id"])
    [hook] = await wait_for(receiver, path)

    assert hook.path == f"{path}?token=a%2Fb&x=1&x=2"  # the query string, byte for byte
    assert hook.headers["host"] == f"localhost:{receiver.port}"  # sent to the checked address
    assert hook.headers["content-type"] == "application/json"
    assert hook.headers["authorization"] == "Bearer s3cret"  # ${{ env.LG_WEBHOOK_TOKEN }}
    assert hook.headers["x-static"] == "yes"
    body = hook.body
    assert set(body) == PAYLOAD_KEYS  # no "error" on success
    stored = await hooks.runs.get(thread["thread_id"], run["run_id"])
    assert body["run_id"] == run["run_id"] and body["thread_id"] == thread["thread_id"]
    assert body["assistant_id"] == run["assistant_id"]
    assert body["status"] == "success" == stored["status"]
    assert body["values"]["value"] == 42
    assert body["values"] == (await hooks.threads.get(thread["thread_id"]))["values"]
    assert body["metadata"] == stored["metadata"] and body["metadata"]["m"] == 1
    assert body["kwargs"] == stored["kwargs"] and body["kwargs"]["webhook"] == url
    assert body["multitask_strategy"] == "enqueue"
    assert body["created_at"] == run["created_at"]
    times = [datetime.fromisoformat(body[k]) for k in
             ("created_at", "run_started_at", "run_ended_at", "webhook_sent_at")]  # fmt: skip
    assert times == sorted(times) and all(t.utcoffset() is not None for t in times)


async def test_error_payload(hooks: LangGraphClient, receiver: Receiver) -> None:
    path = new_path()
    thread = await hooks.threads.create()
    run = await hooks.runs.create(
        thread["thread_id"], "fail", input={"message": "boom"}, webhook=receiver.url(path)
    )
    await hooks.runs.join(thread["thread_id"], run["run_id"])
    [hook] = await wait_for(receiver, path)
    assert hook.body["status"] == "error"
    assert hook.body["error"] == {"error": "ValueError", "message": "boom"}
    assert set(hook.body) == PAYLOAD_KEYS | {"error"}


async def test_timeout_payload(hooks: LangGraphClient, receiver: Receiver) -> None:
    path = new_path()
    thread = await hooks.threads.create()
    run = await hooks.runs.create(
        thread["thread_id"], "steps", input={"delay": RUN_TIMEOUT}, webhook=receiver.url(path)
    )
    [hook] = await wait_for(receiver, path)
    assert hook.body["run_id"] == run["run_id"]
    assert hook.body["status"] == "timeout"
    assert hook.body["error"]["error"] == "TimeoutError"
    assert (await hooks.runs.get(thread["thread_id"], run["run_id"]))["status"] == "timeout"


async def test_interrupted_payload_when_cancelled(
    hooks: LangGraphClient, receiver: Receiver
) -> None:
    path = new_path()
    thread = await hooks.threads.create()
    tid = thread["thread_id"]
    run = await hooks.runs.create(tid, "steps", input={"delay": 1.5}, webhook=receiver.url(path))
    await wait_running(hooks, tid, run["run_id"])
    await hooks.runs.cancel(tid, run["run_id"], wait=True)
    [hook] = await wait_for(receiver, path)
    assert hook.body["status"] == "interrupted"
    assert hook.body["run_started_at"] is not None


async def test_cancelled_pending_run_and_rollback_get_their_webhook(
    hooks: LangGraphClient, receiver: Receiver
) -> None:
    first, second, third = new_path(), new_path(), new_path()
    tid = (await hooks.threads.create())["thread_id"]
    running = await hooks.runs.create(
        tid, "steps", input={"delay": 1.5}, webhook=receiver.url(first)
    )
    await wait_running(hooks, tid, running["run_id"])
    pending = await hooks.runs.create(tid, "echo", input={"value": 1}, webhook=receiver.url(second))
    await hooks.runs.cancel(tid, pending["run_id"])
    [hook] = await wait_for(receiver, second)
    assert hook.body["run_id"] == pending["run_id"]
    assert hook.body["status"] == "interrupted"
    assert hook.body["run_started_at"] is None and hook.body["values"] is None

    # A run superseded with multitask_strategy=rollback is deleted; its webhook says so.
    last = await hooks.runs.create(
        tid, "echo", input={"value": 2}, multitask_strategy="rollback", webhook=receiver.url(third)
    )
    [rolled_back] = await wait_for(receiver, first)
    assert rolled_back.body["run_id"] == running["run_id"]
    assert rolled_back.body["status"] == "rollback"
    [done] = await wait_for(receiver, third)
    assert done.body["run_id"] == last["run_id"] and done.body["status"] == "success"


async def test_wait_stream_and_stateless_runs_deliver(
    hooks: LangGraphClient, receiver: Receiver
) -> None:
    tid = (await hooks.threads.create())["thread_id"]
    waited, streamed, stateless = new_path(), new_path(), new_path()
    assert await hooks.runs.wait(tid, "echo", input={"value": "w"},
                                 webhook=receiver.url(waited))  # fmt: skip
    chunks = [c async for c in hooks.runs.stream(
        tid, "echo", input={"value": "s"}, webhook=receiver.url(streamed))]  # fmt: skip
    assert chunks[0].event == "metadata"
    await hooks.runs.wait(None, "echo", input={"value": "t"}, webhook=receiver.url(stateless))
    [w] = await wait_for(receiver, waited)
    [s] = await wait_for(receiver, streamed)
    [t] = await wait_for(receiver, stateless)
    assert w.body["values"]["value"] == "w" and s.body["values"]["value"] == "s"
    assert s.body["run_id"] == chunks[0].data["run_id"]
    # The stateless run's thread is gone, but its webhook still describes it.
    assert t.body["values"]["value"] == "t" and t.body["kwargs"]["temporary"] is True
    assert t.body["status"] == "success"


async def test_5xx_and_429_are_retried(hooks: LangGraphClient, receiver: Receiver) -> None:
    path = new_path("/status/500,429")
    tid = (await hooks.threads.create())["thread_id"]
    run = await hooks.runs.create(tid, "echo", input={"value": 1}, webhook=receiver.url(path))
    hooks_seen = await wait_for(receiver, path, 3)
    assert len(hooks_seen) == 3  # 500, 429, then 200: and no fourth
    assert {h.body["run_id"] for h in hooks_seen} == {run["run_id"]}
    sent = [h.body["webhook_sent_at"] for h in hooks_seen]
    assert sent == sorted(sent) and len(set(sent)) == 3
    # One delivery: every attempt carries its id, so a receiver can drop duplicates.
    [delivery] = {h.headers["x-agentd-delivery"] for h in hooks_seen}
    assert str(uuid.UUID(delivery)) == delivery
    gaps = [b.at - a.at for a, b in itertools.pairwise(hooks_seen)]
    assert all(g >= 0.9 for g in gaps), gaps  # backed off between attempts


async def test_redirects_and_4xx_are_not_retried_or_followed(
    hooks: LangGraphClient, receiver: Receiver
) -> None:
    redirect, rejected = new_path("/redirect"), new_path("/status/400")
    tid = (await hooks.threads.create())["thread_id"]
    await hooks.runs.wait(tid, "echo", input={"value": 1}, webhook=receiver.url(redirect))
    await hooks.runs.wait(tid, "echo", input={"value": 2}, webhook=receiver.url(rejected))
    await wait_for(receiver, redirect)
    await wait_for(receiver, rejected)
    await asyncio.sleep(2.5)  # longer than the first backoff: a retry would have come
    assert len(receiver.hooks(redirect)) == 1 and len(receiver.hooks(rejected)) == 1
    assert receiver.hooks(f"/target{redirect}") == []


async def test_hanging_receiver_delays_neither_the_run_nor_the_next(
    hooks: LangGraphClient, blackhole: Blackhole
) -> None:
    tid = (await hooks.threads.create())["thread_id"]
    before = blackhole.accepted
    started = time.monotonic()
    await hooks.runs.wait(tid, "echo", input={"value": 1}, webhook=blackhole.url(new_path()))
    second = await hooks.runs.wait(tid, "echo", input={"value": 2}, webhook=blackhole.url("/x"))
    assert second["value"] == 2
    assert time.monotonic() - started < 2.0
    runs = await hooks.runs.list(tid)
    assert [r["status"] for r in runs] == ["success", "success"]
    for _ in range(100):  # the deliveries are under way, waiting on the receiver
        if blackhole.accepted >= before + 2:
            break
        await asyncio.sleep(0.05)
    assert blackhole.accepted >= before + 2


async def test_allowed_fields_and_shutdown_abandoning_a_hanging_delivery(
    tmp_path: Path, receiver: Receiver, blackhole: Blackhole
) -> None:
    config = write_config(
        tmp_path / "cfg",
        webhooks={"url": {"disable_loopback": False}, "allowed_fields": ["run_id", "values"]},
    )
    srv = Server(tmp_path / "data", config=config).start()
    path = new_path()
    try:
        async for client in _client(srv):
            await client.runs.wait(None, "echo", input={"value": 5}, webhook=receiver.url(path))
            [hook] = await wait_for(receiver, path)
            assert set(hook.body) == {"run_id", "values"}
            assert hook.body["values"]["value"] == 5
            await client.runs.wait(None, "echo", input={}, webhook=blackhole.url("/shutdown"))
        started = time.monotonic()
        assert srv.stop() in (0, -15)  # uvicorn re-raises SIGTERM once it has shut down
        assert time.monotonic() - started < 12
    finally:
        srv.kill()
    assert "abandoned 1 webhook delivery" in srv.log()


# ---------------------------------------------------------------- the URL policy


REFUSED = [
    ("http://127.0.0.1:9/hook", "loopback"),
    ("http://localhost:9/hook", "loopback"),
    ("http://[::1]:9/hook", "loopback"),
    ("http://0.0.0.0:9/hook", "loopback"),
    ("http://2130706433/hook", "loopback"),  # 127.0.0.1 written as one number
    ("http://[::ffff:127.0.0.1]/hook", "loopback"),
    ("http://10.1.2.3/hook", "private"),
    ("http://172.16.5.4/hook", "private"),
    ("http://192.168.1.10/hook", "private"),
    ("http://100.64.0.1/hook", "private"),
    ("http://[fd12::1]/hook", "private"),
    ("http://169.254.10.10/hook", "link-local"),
    ("http://[fe80::1]/hook", "link-local"),
    ("http://169.254.169.254/latest/meta-data/", "metadata"),
    ("http://[fd00:ec2::254]/", "metadata"),
    ("/relative/hook", "relative"),
    ("//no-scheme.example/hook", "relative"),
    ("ftp://files.example/hook", "scheme"),
    ("file:///etc/passwd", "scheme"),
    ("http://exa mple.com/hook", "spaces"),
    ("http://host.invalid/hook", "could not be resolved"),
]


@pytest.mark.parametrize(("webhook", "reason"), REFUSED)
async def test_default_policy_refuses_internal_targets(
    client: LangGraphClient, webhook: str, reason: str
) -> None:
    tid = (await client.threads.create())["thread_id"]
    for create in (
        lambda: client.runs.create(tid, "echo", input={}, webhook=webhook),
        lambda: client.runs.wait(tid, "echo", input={}, webhook=webhook),
        lambda: client.runs.create(None, "echo", input={}, webhook=webhook),
    ):
        with pytest.raises((UnprocessableEntityError, httpx.HTTPStatusError)) as info:
            await create()
        assert info.value.response.status_code == 422
        detail = info.value.response.json()["detail"]
        assert isinstance(detail, str) and reason in detail, detail
    with pytest.raises((UnprocessableEntityError, httpx.HTTPStatusError)):
        async for _ in client.runs.stream(tid, "echo", input={}, webhook=webhook):
            pass
    assert await client.runs.list(tid) == []
    assert (await client.threads.get(tid))["status"] == "idle"


async def test_refusal_names_the_opt_in(client: LangGraphClient) -> None:
    tid = (await client.threads.create())["thread_id"]
    with pytest.raises(UnprocessableEntityError) as info:
        await client.runs.create(tid, "echo", webhook="http://127.0.0.1:8/h?secret=xyz")
    detail = info.value.response.json()["detail"]
    assert "webhooks.url.disable_loopback" in detail and "secret" not in detail
    with pytest.raises(UnprocessableEntityError) as info:
        await client.runs.create(tid, "echo", webhook="http://10.0.0.1/h")
    assert "webhooks.url.disable_private_ips" in info.value.response.json()["detail"]


STRICT_REFUSED = [
    ("http://hooks.example.com/h", "must use https"),
    ("https://evil.test/h", "not in webhooks.url.allowed_domains"),
    ("https://example.com/h", "not in webhooks.url.allowed_domains"),  # apex of *.example.com
    ("https://hooks.example.com:8443/h", "port 8443 is not allowed"),
    ("https://hooks.example.com/" + "x" * 100, "too long"),
    ("https://10.0.0.1/h", "not in webhooks.url.allowed_domains"),
]


async def test_configured_policy_and_disabled_delivery(
    strict: LangGraphClient, strict_server: Server, quiet_blackhole: Blackhole
) -> None:
    # One test, so that one xdist worker starts this server.
    tid = (await strict.threads.create())["thread_id"]
    for webhook, reason in STRICT_REFUSED:
        with pytest.raises(UnprocessableEntityError) as info:
            await strict.runs.create(tid, "echo", webhook=webhook)
        assert reason in info.value.response.json()["detail"], webhook
    assert await strict.runs.list(tid) == []

    # http.disable_webhooks: a URL the policy allows is accepted and stored, and never called.
    before = quiet_blackhole.accepted
    url = quiet_blackhole.url("/disabled", scheme="https", host="localhost")
    await strict.runs.wait(tid, "echo", input={"value": 1}, webhook=url)
    [run] = await strict.runs.list(tid)
    assert run["status"] == "success" and run["kwargs"]["webhook"] == url
    await asyncio.sleep(1.5)
    assert quiet_blackhole.accepted == before  # not even a connection
    assert db.query(strict_server, "SELECT count(*) FROM webhook_outbox") == [(0,)]
