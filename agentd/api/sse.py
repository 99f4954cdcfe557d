"""Server-sent events framed as the Agent Server does: CRLF lines, a heartbeat comment while
idle, no terminal event (the stream closes when the run ends)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi.responses import StreamingResponse

from agentd.broker.memory import DONE, Subscription
from agentd.runs.streaming import event_visible

HEARTBEAT_SECONDS = 5.0
HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no", "Connection": "keep-alive"}


def frame(event: str, data: bytes) -> bytes:
    return b"event: " + event.encode() + b"\r\ndata: " + data + b"\r\n\r\n"


async def run_events(
    sub: Subscription,
    visible: frozenset[str],
    on_disconnect: Callable[[], Awaitable[None]] | None = None,
) -> AsyncIterator[bytes]:
    """Frames of one run's events until it ends; ``on_disconnect`` runs if the client leaves."""
    finished = False
    try:
        while True:
            item = await sub.get(HEARTBEAT_SECONDS)
            if item is None:
                yield b": heartbeat\r\n\r\n"
                continue
            event, data = item
            if event == DONE:
                finished = True
                return
            if event_visible(event, visible):
                yield frame(event, data)
    finally:
        sub.close()
        if not finished and on_disconnect is not None:
            await on_disconnect()


def sse_response(body: AsyncIterator[bytes], headers: dict[str, str]) -> StreamingResponse:
    return StreamingResponse(
        body, media_type="text/event-stream; charset=utf-8", headers={**HEADERS, **headers}
    )
