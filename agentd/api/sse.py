"""Server-sent events framed as the Agent Server does: CRLF lines, an ``id:`` line on
resumable streams, a heartbeat comment while idle, no terminal event (the stream closes when
the run ends); a stream whose subscriber the broker dropped (too far behind) is cut."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi.responses import StreamingResponse

from agentd.api.connection import connection_aborter
from agentd.broker.base import DONE, SubscriberDropped, Subscription
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
    whether the run has ended, in case its end event was lost. A dropped subscriber ends the
    stream; the client did not leave, so ``on_disconnect`` does not run."""
    if visible is None or callable(visible):
        shows = visible
    else:
        names = visible
        shows = lambda event: event_visible(event, names)  # noqa: E731
    finished = False
    try:
        while True:
            try:
                item = await sub.get(HEARTBEAT_SECONDS)
            except SubscriberDropped:
                return
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
        if not finished and not sub.dropped and on_disconnect is not None:
            on_client_gone(on_disconnect)


class EventStream(StreamingResponse):
    """An SSE response that aborts its connection when the broker drops its subscriber: the
    response may be stuck writing to a client that stopped reading, where ending the body
    would not close anything (see agentd.api.connection). The client sees the connection
    reset; a resumable stream's client reconnects with its Last-Event-ID."""

    def __init__(
        self, body: AsyncIterator[bytes], headers: dict[str, str], sub: Subscription | None
    ) -> None:
        super().__init__(
            body, media_type="text/event-stream; charset=utf-8", headers={**HEADERS, **headers}
        )
        self._sub = sub

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        abort = connection_aborter(scope)
        if self._sub is not None and abort is not None:
            loop = asyncio.get_running_loop()
            # From the broker's publish: abort once it has returned.
            self._sub.on_drop(lambda: loop.call_soon(abort))
        await super().__call__(scope, receive, send)


def sse_response(
    body: AsyncIterator[bytes], headers: dict[str, str], sub: Subscription | None = None
) -> StreamingResponse:
    return EventStream(body, headers, sub)
