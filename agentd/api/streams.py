"""The thread stream (``GET /threads/{id}/stream``: every run on a thread, and its state
updates) and the stream parameters that joins accept (``stream_mode``, ``Last-Event-ID``)."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import Header, Query, Request
from fastapi.responses import Response

from agentd import serde
from agentd.api.common import get_thread_or_404, make_router, services
from agentd.api.sse import run_events, sse_response
from agentd.broker.base import parse_event_id
from agentd.runs.streaming import SUPPORTED_MODES
from agentd.schemas import Unprocessable
from agentd.services import Services

router = make_router("Threads")
THREAD_STREAM_MODES = ("run_modes", "lifecycle", "state_update")


async def publish_state_update(svc: Services, thread_id: str) -> None:
    """Tell the thread's stream subscribers (``state_update`` mode) its new state."""
    if not svc.broker.has_thread_subscribers(thread_id):
        return
    thread = await svc.storage.get_thread(thread_id)
    if thread is not None:
        state = await svc.states.get(thread)
        payload = serde.dumps({"state": state, "thread_id": thread_id})
        await svc.broker.publish_thread(thread_id, "state_update", payload)


def checked_event_id(value: str) -> str:
    if parse_event_id(value) is None:
        raise Unprocessable(
            f"Invalid Last-Event-ID {value!r}: must be an event id sent by this server "
            "('<ms>-<seq>'), or -1 for the start"
        )
    return value


def _values(raw: list[str] | None) -> list[str]:
    """Query values given repeated, comma-separated or as a JSON array."""
    out: list[str] = []
    for value in raw or ():
        value = value.strip()
        if value.startswith("["):
            try:
                items = orjson.loads(value)
            except orjson.JSONDecodeError:
                raise Unprocessable(f"Invalid stream mode list: {value}") from None
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                raise Unprocessable(f"Invalid stream mode list: {value}")
            out.extend(items)
        else:
            out.extend(v.strip() for v in value.split(",") if v.strip())
    return out


def join_stream_modes(raw: list[str] | None) -> list[str]:
    modes = _values(raw)
    unknown = [m for m in modes if m not in SUPPORTED_MODES]
    if unknown:
        raise Unprocessable(
            f"Invalid stream mode: {', '.join(unknown)}. "
            f"Supported: {', '.join(sorted(SUPPORTED_MODES))}"
        )
    return modes


@router.get("/threads/{thread_id}/stream")
async def thread_stream(
    thread_id: str,
    request: Request,
    stream_mode: Annotated[list[str] | None, Query()] = None,
    stream_modes: Annotated[list[str] | None, Query()] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> Response:
    """Every event of every run on the thread as it happens (``run_modes``), or only the runs'
    starts and ends (``lifecycle``), and/or the thread's state updates (``state_update``).
    Never ends by itself."""
    svc = services(request)
    thread = await get_thread_or_404(svc, thread_id)
    modes = _values((stream_mode or []) + (stream_modes or [])) or ["run_modes"]
    unknown = [m for m in modes if m not in THREAD_STREAM_MODES]
    if unknown:
        raise Unprocessable(
            f"Invalid stream mode: {', '.join(unknown)}. "
            f"Supported: {', '.join(THREAD_STREAM_MODES)}"
        )
    if last_event_id is not None:
        checked_event_id(last_event_id)
    sub = await svc.broker.subscribe_thread(thread["thread_id"], last_event_id)
    shown = {"state_update"} if "state_update" in modes else set()
    if "lifecycle" in modes:
        shown.add("metadata")
    every_run_event = "run_modes" in modes

    def shows(event: str) -> bool:
        return event in shown or (every_run_event and event != "state_update")

    frames = run_events(sub, shows, with_ids=True, until_done=False)
    return sse_response(frames, {}, sub)
