"""Memory bounds of streams: a client that stops reading is dropped and its connection closed
while the run goes on; resumable runs' events are kept in the database (capped, expired
after the TTL, replayable after a restart) instead of RAM; replays merge kept, buffered and
live events with no gap and no duplicate; wait and join are not dropped."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import orjson
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient

from tests import db
from tests.server import Server

MiB = 1024 * 1024
# 60k events of 2 KB: 120 MB of output.
FLOOD = {"count": 60_000, "size": 2000}


# ---------------------------------------------------------------- a client that stops reading


async def test_stalled_stream_client_is_dropped_and_memory_stays_bounded(tmp_path: Path) -> None:
    server = Server(tmp_path / "data").start()
    try:
        base = await _warm_rss(server)
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            tid = (await http.post("/threads", json={})).json()["thread_id"]
            # on_disconnect=cancel: being dropped is not the client going away.
            body = {"assistant_id": "flood", "input": FLOOD, "stream_mode": "custom",
                    "on_disconnect": "cancel"}  # fmt: skip
            sock, run_id = _stalled_stream(server.port, f"/threads/{tid}/runs/stream", body)
            with sock:
                async with _rss_peak(server) as peak:
                    run = await _until_finished(http, tid, run_id, limit=120)
                assert run["status"] == "success"
                received, ending = _drain(sock)
        # The old broker queued the whole run for this client: +460 MiB.
        assert peak.value - base < 48, f"RSS went from {base:.0f} to {peak.value:.0f} MiB"
        assert ending in ("reset", "eof"), "the server kept the connection open"
        assert received < 16 * MiB  # it got a little before stalling, not the run's 120 MB
        assert "dropped a subscriber of run" in server.log()
        _assert_clean_log(server)
    finally:
        server.stop()


async def test_sdk_reconnects_with_last_event_id_after_being_dropped(tmp_path: Path) -> None:
    """The SDK reconnects to the stream's Location with the last id it saw, and gets the
    rest from the kept events: every event once, in order."""
    server = Server(tmp_path / "data", env={"STREAM_SUBSCRIBER_MAX_BYTES": str(256 * 1024)})
    server.start()
    client = get_client(url=server.url, api_key=None)
    try:
        thread = await client.threads.create()
        seen: list[int] = []
        flood = {"count": 20_000, "size": 1000, "pause_every": 200, "pause": 0.01}
        stream = client.runs.stream(
            thread["thread_id"], "flood", input=flood, stream_mode="custom",
            stream_resumable=True,
        )  # fmt: skip
        async with asyncio.timeout(120):
            async for chunk in stream:
                if chunk.event == "custom":
                    seen.append(chunk.data["i"])
                    if chunk.data["i"] == 100:
                        await asyncio.sleep(4)  # stop reading while the run goes on
        assert seen == list(range(20_000))
        assert "dropped a subscriber of run" in server.log()
        _assert_clean_log(server)
    finally:
        await client.http.client.aclose()
        server.stop()


async def test_wait_and_join_are_not_dropped(tmp_path: Path) -> None:
    """wait and join fold events as they come (and queue only what they fold): under a tiny
    limit, next to a stream client that is dropped, they still return the run's result."""
    server = Server(tmp_path / "data", env={"STREAM_SUBSCRIBER_MAX_BYTES": str(64 * 1024)})
    server.start()
    client = get_client(url=server.url, api_key=None)
    try:
        thread = await client.threads.create()
        tid = thread["thread_id"]
        flood = {"count": 20_000, "size": 1000}
        body = {"assistant_id": "flood", "input": flood, "stream_mode": ["custom", "values"]}
        sock, run_id = _stalled_stream(server.port, f"/threads/{tid}/runs/stream", body)
        with sock:
            async with asyncio.timeout(120):
                joined, waited = await asyncio.gather(
                    client.runs.join(tid, run_id),
                    client.runs.wait(tid, "flood", input={"count": 3000, "size": 1000}),
                )
        assert joined["written"] == 20_000
        assert waited["written"] == 3000
        assert "dropped a subscriber of run" in server.log()
    finally:
        await client.http.client.aclose()
        server.stop()


# ---------------------------------------------------------------- resumable runs


async def test_resumable_run_with_large_output_keeps_memory_bounded(tmp_path: Path) -> None:
    """60k events of 2 KB kept for replay: on disk (trimmed to the 64 MiB cap), not in RAM, also
    while its stream client has stopped reading."""
    server = Server(tmp_path / "data").start()
    try:
        base = await _warm_rss(server)
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            tid = (await http.post("/threads", json={})).json()["thread_id"]
            # A fast graph, though one the disk keeps up with: LangGraph queues what a node
            # writes faster than its stream is consumed, and agentd cannot bound that queue.
            flood = {**FLOOD, "pause_every": 100, "pause": 0.01}
            body = {"assistant_id": "flood", "input": flood, "stream_mode": "custom",
                    "stream_resumable": True}  # fmt: skip
            sock, run_id = _stalled_stream(server.port, f"/threads/{tid}/runs/stream", body)
            with sock:
                async with _rss_peak(server) as peak:
                    run = await _until_finished(http, tid, run_id, limit=180)
                    await asyncio.sleep(1)  # the end is written behind
                assert run["status"] == "success"
            after = _rss_mib(server)
            # Kept in RAM, these events alone would be +130 MiB.
            assert peak.value - base < 80, f"RSS went from {base:.0f} to {peak.value:.0f} MiB"
            assert after - base < 80
            # The oldest were trimmed: the replay starts at a later event and ends with the last.
            path = f"/threads/{tid}/runs/{run_id}/stream"
            first = await _first_frames(http, path, "-1", 2)
            assert [f["event"] for f in first] == ["custom", "custom"]
            assert (
                first[0]["data"]["i"] > 20_000
                and first[1]["data"]["i"] == first[0]["data"]["i"] + 1
            )
            kept = _kept_rows(server, run_id)
            assert 7 * 64 * MiB // 8 - 4096 <= kept["bytes"] <= 64 * MiB
            assert kept["last_i"] == FLOOD["count"] - 1
        _assert_clean_log(server)
    finally:
        server.stop()


async def test_replay_after_a_restart_and_ids_keep_increasing(tmp_path: Path) -> None:
    server = Server(tmp_path / "data").start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            tid = (await http.post("/threads", json={})).json()["thread_id"]
            body = {"assistant_id": "flood", "input": {"count": 300, "size": 100},
                    "stream_mode": "custom", "stream_resumable": True}  # fmt: skip
            frames = await _sse(http, "POST", f"/threads/{tid}/runs/stream", json=body)
            run_id = frames[0]["data"]["run_id"]
            assert len(frames) == 301 and all(f["id"] for f in frames)
        server.stop()
        server = Server(tmp_path / "data").start()  # same data, new process
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            path = f"/threads/{tid}/runs/{run_id}/stream"
            assert await _sse(http, "GET", path, headers={"Last-Event-ID": "-1"}) == frames
            for k in (0, 150, 299):
                replay = await _sse(http, "GET", path, headers={"Last-Event-ID": frames[k]["id"]})
                assert replay == frames[k + 1 :]
            # The thread stream replays it too (each run's events its modes show).
            thread_frames = await _first_frames(http, f"/threads/{tid}/stream", "-1", len(frames))
            assert thread_frames == frames
            # A new run's ids come after the old ones.
            later = await _sse(http, "POST", f"/threads/{tid}/runs/stream", json=body)
            assert _key(later[0]["id"]) > _key(frames[-1]["id"])
    finally:
        server.stop()


async def test_replay_mid_run_merges_kept_buffered_and_live_events(client: LangGraphClient) -> None:
    """Joins with Last-Event-ID: -1 at different moments of a resumable run: each gets every
    event once, in order (what is stored, what waits to be written, what comes live)."""
    thread = await client.threads.create()
    tid = thread["thread_id"]
    flood = {"count": 3000, "size": 200, "pause_every": 50, "pause": 0.02}
    run = await client.runs.create(
        tid, "flood", input=flood, stream_mode="custom", stream_resumable=True
    )

    async def join(delay: float) -> list[int]:
        await asyncio.sleep(delay)
        return [
            chunk.data["i"]
            async for chunk in client.runs.join_stream(tid, run["run_id"], last_event_id="-1")
            if chunk.event == "custom"
        ]

    async with asyncio.timeout(120):
        joins = await asyncio.gather(*(join(d) for d in (0.0, 0.3, 0.7, 1.1)))
    for seen in joins:
        assert seen == list(range(3000))


async def test_events_expire_after_the_ttl_and_at_start_up(tmp_path: Path) -> None:
    ttl = 1.5
    server = Server(tmp_path / "data", env={"RESUMABLE_STREAM_TTL_SECONDS": str(ttl)}).start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            tid = (await http.post("/threads", json={})).json()["thread_id"]
            body = {"assistant_id": "flood", "input": {"count": 50, "size": 10},
                    "stream_mode": "custom", "stream_resumable": True}  # fmt: skip
            frames = await _sse(http, "POST", f"/threads/{tid}/runs/stream", json=body)
            ended = time.monotonic()
            run_id = frames[0]["data"]["run_id"]
            path = f"/threads/{tid}/runs/{run_id}/stream"
            assert await _sse(http, "GET", path, headers={"Last-Event-ID": "-1"}) == frames
            # Gone from the database by the next sweep after the TTL, and from replays at once.
            await _until(lambda: _kept_rows(server, run_id)["events"] == 0, limit=15)
            assert time.monotonic() - ended >= ttl - 0.2
            assert await _sse(http, "GET", path, headers={"Last-Event-ID": "-1"}) == []
            # A run whose TTL passes while no server runs is swept at start-up.
            frames = await _sse(http, "POST", f"/threads/{tid}/runs/stream", json=body)
            run_id = frames[0]["data"]["run_id"]
        server.stop()
        assert _kept_rows(server, run_id)["events"] == 51
        await asyncio.sleep(ttl + 0.5)
        server = Server(tmp_path / "data", env={"RESUMABLE_STREAM_TTL_SECONDS": str(ttl)}).start()
        assert _kept_rows(server, run_id)["events"] == 0
    finally:
        server.stop()


async def test_caps_trim_the_oldest_events(tmp_path: Path) -> None:
    caps = {"RESUMABLE_STREAM_MAX_EVENTS": "500", "RESUMABLE_STREAM_MAX_BYTES": "300000"}
    server = Server(tmp_path / "data", env=caps).start()
    client = get_client(url=server.url, api_key=None)
    try:
        thread = await client.threads.create()
        tid = thread["thread_id"]
        for size, cap in ((10, "events"), (2000, "bytes")):
            run = await client.runs.create(
                tid, "flood", input={"count": 2000, "size": size}, stream_mode="custom",
                stream_resumable=True,
            )  # fmt: skip
            await client.runs.join(tid, run["run_id"])
            await _until_log_ended(server, run["run_id"])
            replay = [
                (chunk.event, chunk.data)
                async for chunk in client.runs.join_stream(tid, run["run_id"], last_event_id="-1")
            ]
            # The newest events, without a gap; the oldest (metadata first) are gone.
            assert all(event == "custom" for event, _ in replay)
            seen = [data["i"] for _, data in replay]
            assert seen == list(range(seen[0], 2000))
            kept = _kept_rows(server, run["run_id"])
            assert kept["events"] == len(seen)
            # Trimmed to an eighth below a cap once over it (Redis's approximate MAXLEN).
            if cap == "events":
                assert 500 - 500 // 8 <= len(seen) <= 500
            else:
                assert 300000 - 300000 // 8 - 2100 <= kept["bytes"] <= 300000
    finally:
        await client.http.client.aclose()
        server.stop()


# ---------------------------------------------------------------- helpers


def _rss_mib(server: Server) -> float:
    assert server.proc is not None
    with open(f"/proc/{server.proc.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def _warm_rss(server: Server) -> float:
    """RSS after a first small run (imports and caches a first run fills are not the test's)."""
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        body = {"assistant_id": "flood", "input": {"count": 100, "size": 2000},
                "stream_mode": "custom", "stream_resumable": True}  # fmt: skip
        await _sse(http, "POST", "/runs/stream", json=body)
    await asyncio.sleep(0.5)
    return _rss_mib(server)


class _Peak:
    value = 0.0


@asynccontextmanager
async def _rss_peak(server: Server) -> AsyncIterator[_Peak]:
    """The highest RSS of ``server`` while the block runs (sampled every 50 ms)."""
    peak = _Peak()

    async def sample() -> None:
        while True:
            peak.value = max(peak.value, _rss_mib(server))
            await asyncio.sleep(0.05)

    task = asyncio.create_task(sample())
    try:
        yield peak
    finally:
        task.cancel()
        peak.value = max(peak.value, _rss_mib(server))


def _stalled_stream(port: int, path: str, body: dict) -> tuple[socket.socket, str]:
    """POST a stream and read only its headers: a client that stopped reading. Returns the
    socket and the run id (from the Location header)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    payload = orjson.dumps(body)
    request = (
        f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    )
    sock.sendall(request.encode() + payload)
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1024)
        assert chunk, "connection closed before the headers"
        head += chunk
    lines = head.split(b"\r\n\r\n")[0].decode().split("\r\n")
    assert lines[0].startswith("HTTP/1.1 200"), lines[0]
    location = next(v for k, v in (line.split(": ", 1) for line in lines[1:]) if k == "location")
    return sock, location.split("/")[-2]


def _drain(sock: socket.socket, limit: float = 15) -> tuple[int, str]:
    """Read what the server still sends for ``limit`` seconds: (bytes, how it ended: reset,
    eof, or open)."""
    deadline = time.monotonic() + limit
    received = 0
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received, "reset"
        except TimeoutError:
            break
        if not chunk:
            return received, "eof"
        received += len(chunk)
    return received, "open"


async def _until_finished(http: httpx.AsyncClient, tid: str, run_id: str, limit: float) -> dict:
    deadline = time.monotonic() + limit
    while True:
        run = (await http.get(f"/threads/{tid}/runs/{run_id}")).json()
        if run["status"] not in ("pending", "running"):
            return run
        assert time.monotonic() < deadline, f"run still {run['status']} after {limit} s"
        await asyncio.sleep(0.2)


def _kept_rows(server: Server, run_id: str) -> dict:
    """What the database keeps of a run's events: how many, their bytes, the last one's i, and
    whether the log is ended (the run's end written)."""
    [(events, size)] = db.query(
        server,
        "SELECT count(*), coalesce(sum(length(data)), 0) FROM run_events WHERE run_id = ?",
        (run_id,),
    )
    last = db.query(
        server,
        "SELECT data FROM run_events WHERE run_id = ? ORDER BY ms DESC, seq DESC LIMIT 1",
        (run_id,),
    )
    ended = db.query(
        server, "SELECT expires_at IS NOT NULL FROM run_event_logs WHERE run_id = ?", (run_id,)
    )
    return {
        "events": events,
        "bytes": size,
        "last_i": orjson.loads(last[0][0]).get("i") if last else None,
        "ended": bool(ended and ended[0][0]),
    }


async def _until_log_ended(server: Server, run_id: str) -> None:
    """Until the run's end is written (the last events are written behind)."""
    await _until(lambda: _kept_rows(server, run_id)["ended"], limit=10)


def _assert_clean_log(server: Server) -> None:
    log = server.log()
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]


def _key(event_id: str) -> tuple[int, int]:
    ms, seq = event_id.split("-")
    return int(ms), int(seq)


def _frames(text: str) -> list[dict]:
    frames: list[dict] = []
    for block in text.split("\r\n\r\n"):
        if not block.strip() or block.startswith(":"):
            continue
        fields = dict(line.split(": ", 1) for line in block.split("\r\n"))
        frames.append(
            {"event": fields["event"], "data": orjson.loads(fields["data"]), "id": fields.get("id")}
        )
    return frames


async def _sse(http: httpx.AsyncClient, method: str, path: str, **kwargs) -> list[dict]:  # type: ignore[no-untyped-def]
    async with http.stream(method, path, **kwargs) as res:
        assert res.status_code == 200, await res.aread()
        return _frames((await res.aread()).decode())


async def _first_frames(
    http: httpx.AsyncClient, path: str, last_event_id: str, n: int
) -> list[dict]:
    """The first ``n`` frames of a (possibly endless) stream."""
    text = ""
    async with asyncio.timeout(60):
        async with http.stream("GET", path, headers={"Last-Event-ID": last_event_id}) as res:
            assert res.status_code == 200
            async for chunk in res.aiter_text():
                text += chunk
                frames = _frames(text.rsplit("\r\n\r\n", 1)[0] + "\r\n\r\n")
                if len(frames) >= n:
                    return frames[:n]
    raise AssertionError(f"the stream ended after {len(_frames(text))} frames")


async def _until(predicate, limit: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)
