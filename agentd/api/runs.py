"""Runs: background, wait, stream, join, cancel, list, get, delete; on a thread or stateless."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Literal

from fastapi import Body, Header, Query, Request
from fastapi.responses import Response, StreamingResponse

from agentd import serde
from agentd.api.common import JSON, get_thread_or_404, make_router, services, uuid_param
from agentd.api.sse import on_client_gone, run_events, sse_response
from agentd.api.streams import checked_event_id, join_stream_modes
from agentd.broker.base import DONE, SubscriberDropped, Subscription
from agentd.ids import uuid7
from agentd.runs.streaming import Reducer, visible_events
from agentd.schemas import (
    MAX_OFFSET,
    TERMINAL_RUN_STATUSES,
    Conflict,
    NotFound,
    RunCreate,
    RunsCancel,
    RunStatus,
    ServiceUnavailable,
)
from agentd.services import Services
from agentd.storage.base import Row

router = make_router("Runs")
KEEPALIVE_SECONDS = 5.0
# What wait and join fold into their result (DONE always comes): nothing else is queued.
RESULT_EVENTS = frozenset({"values", "error"})


# ------------------------------------------------------------------ background runs


@router.post("/threads/{thread_id}/runs", response_class=JSON)
async def create_run(thread_id: str, body: RunCreate, request: Request) -> Response:
    svc = services(request)
    run = await svc.runs.create(uuid_param(thread_id, "thread"), body)
    return JSON(run, headers={"Content-Location": f"/threads/{thread_id}/runs/{run['run_id']}"})


@router.post("/runs", response_class=JSON)
async def create_stateless_run(body: RunCreate, request: Request) -> Response:
    run = await services(request).runs.create(None, body)
    return JSON(run, headers={"Content-Location": f"/runs/{run['run_id']}"})


@router.post("/runs/batch", response_class=JSON)
async def create_run_batch(
    body: Annotated[list[RunCreate], Body(min_length=1, max_length=1000)], request: Request
) -> Response:
    return JSON(await services(request).runs.create_batch(body))


@router.get("/threads/{thread_id}/runs", response_class=JSON)
async def list_runs(
    thread_id: str,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=1000)] = 10,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    status: RunStatus | None = None,
) -> Response:
    svc = services(request)
    thread = await get_thread_or_404(svc, thread_id)
    runs = await svc.storage.list_runs(
        thread["thread_id"], limit=limit, offset=offset, status=status
    )
    return JSON(runs)


async def _get_run_or_404(svc: Services, thread_id: str, run_id: str) -> Row:
    thread = await get_thread_or_404(svc, thread_id)
    run = await svc.storage.get_run(thread["thread_id"], uuid_param(run_id, "run"))
    if run is None:
        raise NotFound(f"Run {run_id} not found")
    return run


@router.get("/threads/{thread_id}/runs/{run_id}", response_class=JSON)
async def get_run(thread_id: str, run_id: str, request: Request) -> Response:
    return JSON(await _get_run_or_404(services(request), thread_id, run_id))


@router.delete("/threads/{thread_id}/runs/{run_id}", status_code=204)
async def delete_run(thread_id: str, run_id: str, request: Request) -> Response:
    svc = services(request)
    run = await _get_run_or_404(svc, thread_id, run_id)
    if run["status"] in ("pending", "running"):
        raise Conflict(f"Run {run_id} is {run['status']}; cancel it before deleting it")
    await svc.storage.delete_run(run["thread_id"], run["run_id"])
    return Response(status_code=204)


# ------------------------------------------------------------------ wait and join


async def _body_after_end(svc: Services, run: Row, reducer: Reducer) -> bytes:
    """The run's result: from its own events when seen, else from what its thread kept."""
    body = reducer.body()
    if body is not None:
        return body
    thread = await svc.storage.get_thread(run["thread_id"])
    if thread is None:
        return b"{}"
    latest = await svc.storage.get_run(run["thread_id"], run["run_id"])
    if (latest and latest["status"] == "error") or thread["status"] == "error":
        return serde.dumps({"__error__": thread["error"]})
    values = thread["values"] or {}
    if thread["status"] == "interrupted" and thread["interrupts"] and isinstance(values, dict):
        values = {**values, "__interrupt__": [i for v in thread["interrupts"].values() for i in v]}
    return serde.dumps(values)


async def _result_stream(
    svc: Services, run: Row, sub: Subscription, cancel_on_disconnect: bool
) -> AsyncIterator[bytes]:
    """Newlines while the run is in flight (keeps proxies from cutting the connection), then
    the result as JSON."""
    reducer = Reducer()
    finished = False
    try:
        while True:
            try:
                item = await sub.get(KEEPALIVE_SECONDS)
            except SubscriberDropped:
                # It folds events as they come, so only a burst that never let it run gets
                # here. What it missed is in the thread once the run ends: follow the run's
                # end from now on, and read the result from there.
                reducer = Reducer()
                sub = await svc.broker.subscribe(run["run_id"], only=RESULT_EVENTS)
                if await has_ended(svc, run):
                    finished = True
                    break
                continue
            if item is None:
                if await has_ended(svc, run):
                    finished = True
                    break
                yield b"\n"
                continue
            _, event, data = item
            if event == DONE:
                finished = True
                break
            reducer.add(event, data)
    finally:
        sub.close()
        if not finished and cancel_on_disconnect:
            on_client_gone(_canceller(svc, run))
    yield await _body_after_end(svc, run, reducer)


async def has_ended(svc: Services, run: Row) -> bool:
    """Whether the run has ended by storage's account. Checked at every keep-alive: the
    safety net under the broker's end event, so a lost wake-up delays a waiter by one
    keep-alive, never forever."""
    try:
        latest = await svc.storage.get_run(run["thread_id"], run["run_id"])
    except ServiceUnavailable:
        return False  # not known now (the database is away): asked again at the next one
    return latest is None or latest["status"] in TERMINAL_RUN_STATUSES


def _canceller(svc: Services, run: Row) -> Callable[[], Awaitable[None]]:
    async def cancel() -> None:
        await svc.runs.cancel(run["thread_id"], [run["run_id"]], "interrupt")

    return cancel


async def _create_subscribed(
    svc: Services, thread_id: str | None, body: RunCreate, only: frozenset[str] | None = None
) -> tuple[Row, Subscription]:
    """Create a run, subscribed to its events before it exists so that none is missed."""
    run_id = str(uuid7())
    sub = await svc.broker.subscribe(run_id, only=only)
    try:
        run = await svc.runs.create(thread_id, body, run_id=run_id)
    except BaseException:
        sub.close()
        raise
    return run, sub


async def _subscribed_run(
    svc: Services,
    thread_id: str,
    run_id: str,
    last_event_id: str | None = None,
    only: frozenset[str] | None = None,
) -> tuple[Row, Subscription]:
    """An existing run, subscribed to its events before its status is read."""
    sub = await svc.broker.subscribe(uuid_param(run_id, "run"), last_event_id, only=only)
    try:
        return await _get_run_or_404(svc, thread_id, run_id), sub
    except BaseException:
        sub.close()
        raise


async def _wait(svc: Services, thread_id: str | None, body: RunCreate) -> Response:
    run, sub = await _create_subscribed(svc, thread_id, body, RESULT_EVENTS)
    base = f"/threads/{run['thread_id']}/runs/{run['run_id']}"
    return StreamingResponse(
        _result_stream(svc, run, sub, body.on_disconnect == "cancel"),
        media_type="application/json",
        headers={"Location": f"{base}/join", "Content-Location": base},
    )


@router.post("/threads/{thread_id}/runs/wait")
async def wait_run(thread_id: str, body: RunCreate, request: Request) -> Response:
    return await _wait(services(request), uuid_param(thread_id, "thread"), body)


@router.post("/runs/wait")
async def wait_stateless_run(body: RunCreate, request: Request) -> Response:
    return await _wait(services(request), None, body)


@router.get("/threads/{thread_id}/runs/{run_id}/join")
async def join_run(
    thread_id: str, run_id: str, request: Request, cancel_on_disconnect: bool = False
) -> Response:
    svc = services(request)
    run, sub = await _subscribed_run(svc, thread_id, run_id, only=RESULT_EVENTS)
    if run["status"] in TERMINAL_RUN_STATUSES:
        sub.close()
        return JSON(await _body_after_end(svc, run, Reducer()))
    return StreamingResponse(
        _result_stream(svc, run, sub, cancel_on_disconnect), media_type="application/json"
    )


# ------------------------------------------------------------------ streaming


async def _stream(svc: Services, thread_id: str | None, body: RunCreate) -> Response:
    run, sub = await _create_subscribed(svc, thread_id, body)
    base = f"/threads/{run['thread_id']}/runs/{run['run_id']}"
    kwargs = run["kwargs"]
    return sse_response(
        run_events(
            sub,
            visible_events(kwargs["stream_mode"]),
            _canceller(svc, run) if body.on_disconnect == "cancel" else None,
            with_ids=bool(kwargs.get("resumable")),
            ended=lambda: has_ended(svc, run),
        ),
        {"Location": f"{base}/stream", "Content-Location": base},
        sub,
    )


@router.post("/threads/{thread_id}/runs/stream")
async def stream_run(thread_id: str, body: RunCreate, request: Request) -> Response:
    return await _stream(services(request), uuid_param(thread_id, "thread"), body)


@router.post("/runs/stream")
async def stream_stateless_run(body: RunCreate, request: Request) -> Response:
    return await _stream(services(request), None, body)


@router.get("/threads/{thread_id}/runs/{run_id}/stream")
async def join_stream(
    thread_id: str,
    run_id: str,
    request: Request,
    cancel_on_disconnect: bool = False,
    stream_mode: Annotated[list[str] | None, Query()] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> Response:
    svc = services(request)
    if last_event_id is not None:
        last_event_id = checked_event_id(last_event_id)
    run, sub = await _subscribed_run(svc, thread_id, run_id, last_event_id)
    modes = join_stream_modes(stream_mode)
    # Without a filter, what the run's own stream shows (as the reference, which publishes
    # only the modes asked for): an SDK reconnecting after a drop gets what it got before.
    if modes:
        visible = visible_events(modes, join_filter=True)
    else:
        visible = visible_events(run["kwargs"].get("stream_mode") or ())
    if run["status"] in TERMINAL_RUN_STATUSES and (last_event_id is None or not sub.kept):
        # Finished and its events are not kept (or were not asked for): nothing to send.
        sub.close()
        return sse_response(_nothing(), {})
    return sse_response(
        run_events(
            sub,
            visible,
            _canceller(svc, run) if cancel_on_disconnect else None,
            with_ids=bool(run["kwargs"].get("resumable")),
            ended=lambda: has_ended(svc, run),
        ),
        {},
        sub,
    )


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""


# ------------------------------------------------------------------ cancel


@router.post("/threads/{thread_id}/runs/{run_id}/cancel")
async def cancel_run(
    thread_id: str,
    run_id: str,
    request: Request,
    wait: bool = False,
    action: Literal["interrupt", "rollback"] = "interrupt",
) -> Response:
    svc = services(request)
    run = await _get_run_or_404(svc, thread_id, run_id)
    sub = await svc.broker.subscribe(run["run_id"], only=frozenset()) if wait else None
    try:
        cancelled = await svc.runs.cancel(run["thread_id"], [run["run_id"]], action)
        if not cancelled:
            raise NotFound(f"Run {run_id} is {run['status']}: no matching runs to cancel")
        if sub is None:
            return Response(status_code=202)
        if not cancelled[0].ended:  # its executor ends it once it has unwound
            while True:
                item = await sub.get(KEEPALIVE_SECONDS)
                if item is not None and item[1] == DONE:
                    break
                if item is None and await has_ended(svc, run):
                    break
    finally:
        if sub is not None:
            sub.close()
    latest = await svc.storage.get_run(run["thread_id"], run["run_id"])
    return JSON(latest if latest is not None else {**run, "status": "interrupted"})


@router.post("/runs/cancel", status_code=204)
async def cancel_runs(
    body: RunsCancel,
    request: Request,
    action: Literal["interrupt", "rollback"] = "interrupt",
) -> Response:
    svc = services(request)
    thread_id = uuid_param(body.thread_id, "thread") if body.thread_id is not None else None
    run_ids = [uuid_param(r, "run") for r in body.run_ids] if body.run_ids else None
    cancelled = await svc.runs.cancel_many(
        thread_id=thread_id, run_ids=run_ids, status=body.status, action=action
    )
    if not cancelled:
        raise NotFound("No runs found to cancel.")
    return Response(status_code=204)
