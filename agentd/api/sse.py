"""Server-sent events framed as the Agent Server does: CRLF lines, an ``id:`` line on
resumable streams, a heartbeat comment while idle, no terminal event (the stream closes when
the run ends)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi.responses import StreamingResponse

from agentd.broker.memory import DONE, Subscription
from agentd.runs.streaming import event_visible

HEARTBEAT_SECONDS = 5.0
HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no", "Connection": "keep-alive"}
# Work started when a client goes away; held so it is not garbage-collected half-way.
_after_disconnect: set[asyncio.Task[None]] = set()


def frame(event: str, data: bytes, event_id: str | None = None) -> bytes:
    head = b"event: " + event.encode() + b"\r\ndata: " + data + b"\r\n"
    if event_id is not None:
        head += b"id: " + event_id.encode() + b"\r\n"
    return head + b"\r\n"


def on_client_gone(work: Callable[[], Awaitable[None]]) -> None:
    """Run ``work`` in its own task: the response's task is being cancelled, so it cannot
    await anything itself."""
    task = asyncio.get_running_loop().create_task(work())  # type: ignore[arg-type]
    _after_disconnect.add(task)
    task.add_done_callback(_after_disconnect.discard)


async def run_events(
    sub: Subscription,
    visible: frozenset[str] | Callable[[str], bool] | None,
    on_disconnect: Callable[[], Awaitable[None]] | None = None,
    *,
    with_ids: bool = False,
    until_done: bool = True,
    ended: Callable[[], Awaitable[bool]] | None = None,
) -> AsyncIterator[bytes]:
    """Frames of a subscription's events until its run ends (``until_done``) or the client
    leaves, in which case ``on_disconnect`` runs. ``visible``: the event names sent (before any
    "|namespace"), or a test of the name; None sends all. ``ended`` is asked at each heartbeat
    whether the run has ended, in case its end event was lost."""
    if visible is None or callable(visible):
        shows = visible
    else:
        names = visible
        shows = lambda event: event_visible(event, names)  # noqa: E731
    finished = False
    try:
        while True:
            item = await sub.get(HEARTBEAT_SECONDS)
            if item is None:
                if until_done and ended is not None and await ended():
                    finished = True
                    return
                yield b": heartbeat\r\n\r\n"
                continue
            event_id, event, data = item
            if event == DONE:
                if until_done:
                    finished = True
                    return
                continue
            if shows is None or shows(event):
                yield frame(event, data, event_id if with_ids else None)
    finally:
        sub.close()
        if not finished and on_disconnect is not None:
            on_client_gone(on_disconnect)


def sse_response(body: AsyncIterator[bytes], headers: dict[str, str]) -> StreamingResponse:
    return StreamingResponse(
        body, media_type="text/event-stream; charset=utf-8", headers={**HEADERS, **headers}
    )
