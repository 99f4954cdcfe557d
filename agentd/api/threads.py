"""Threads and their state and history."""

from __future__ import annotations

from typing import Annotated

from fastapi import Body, Query, Request
from fastapi.responses import Response

from agentd.api.common import JSON, get_thread_or_404, make_router, page, services, uuid_param
from agentd.api.streams import publish_state_update
from agentd.ids import parse_uuid, uuid7
from agentd.schemas import (
    CheckpointConfig,
    NotFound,
    ThreadCreate,
    ThreadPatch,
    ThreadSearch,
    ThreadStateSearch,
    ThreadStateUpdate,
    Unprocessable,
)

router = make_router("Threads")


@router.post("/threads", response_class=JSON)
async def create_thread(
    request: Request, body: Annotated[ThreadCreate | None, Body()] = None
) -> Response:
    body = body or ThreadCreate()
    thread_id = uuid_param(body.thread_id, "thread") if body.thread_id else str(uuid7())
    thread = await services(request).storage.create_thread(
        thread_id, body.metadata or {}, body.if_exists
    )
    return JSON(thread)


@router.post("/threads/search", response_class=JSON)
async def search_threads(
    request: Request, body: Annotated[ThreadSearch | None, Body()] = None
) -> Response:
    body = body or ThreadSearch()
    ids = None
    if body.ids is not None:
        ids = [parse_uuid(i) for i in body.ids]
        if None in ids:
            raise Unprocessable("Invalid thread ID in 'ids': must be UUIDs")
    threads, total = await services(request).storage.search_threads(
        ids=ids,  # type: ignore[arg-type]
        metadata=body.metadata,
        values=body.values,
        status=body.status,
        limit=body.limit,
        offset=body.offset,
        sort_by=body.sort_by,
        sort_order=body.sort_order,
    )
    return page(threads, total, body.offset, body.select)


@router.get("/threads/{thread_id}", response_class=JSON)
async def get_thread(thread_id: str, request: Request) -> Response:
    return JSON(await get_thread_or_404(services(request), thread_id))


@router.patch("/threads/{thread_id}", response_class=JSON)
async def patch_thread(thread_id: str, body: ThreadPatch, request: Request) -> Response:
    thread = await services(request).storage.update_thread(
        uuid_param(thread_id, "thread"), body.metadata or {}
    )
    if thread is None:
        raise NotFound(f"Thread with ID {thread_id} not found")
    return JSON(thread)


@router.delete("/threads/{thread_id}", status_code=204)
async def delete_thread(thread_id: str, request: Request) -> Response:
    svc = services(request)
    thread = await get_thread_or_404(svc, thread_id)
    # Stop whatever still runs on it first, so no worker writes to a deleted thread.
    ids = [r["run_id"] for r in await svc.storage.inflight_runs(thread["thread_id"])]
    if ids:
        await svc.runs.cancel(thread["thread_id"], ids, "interrupt")
    await svc.storage.delete_thread(thread["thread_id"])
    return Response(status_code=204)


# ------------------------------------------------------------------ state


@router.get("/threads/{thread_id}/state", response_class=JSON)
async def get_state(thread_id: str, request: Request, subgraphs: bool = False) -> Response:
    svc = services(request)
    thread = await get_thread_or_404(svc, thread_id)
    return JSON(await svc.states.get(thread, subgraphs=subgraphs))


@router.get("/threads/{thread_id}/state/{checkpoint_id}", response_class=JSON)
async def get_state_at(
    thread_id: str, checkpoint_id: str, request: Request, subgraphs: bool = False
) -> Response:
    svc = services(request)
    thread = await get_thread_or_404(svc, thread_id)
    checkpoint = CheckpointConfig(checkpoint_id=uuid_param(checkpoint_id, "checkpoint"))
    return JSON(await svc.states.get(thread, checkpoint=checkpoint, subgraphs=subgraphs))


@router.post("/threads/{thread_id}/state/checkpoint", response_class=JSON)
async def post_state_at(
    thread_id: str,
    request: Request,
    checkpoint: Annotated[CheckpointConfig, Body(embed=True)],
    subgraphs: Annotated[bool, Body(embed=True)] = False,
) -> Response:
    svc = services(request)
    thread = await get_thread_or_404(svc, thread_id)
    return JSON(await svc.states.get(thread, checkpoint=checkpoint, subgraphs=subgraphs))


@router.post("/threads/{thread_id}/state", response_class=JSON)
async def update_state(thread_id: str, body: ThreadStateUpdate, request: Request) -> Response:
    svc = services(request)
    thread = await get_thread_or_404(svc, thread_id)
    checkpoint = body.checkpoint
    if body.checkpoint_id:
        checkpoint = CheckpointConfig(checkpoint_id=uuid_param(body.checkpoint_id, "checkpoint"))
    result = await svc.states.update(
        thread, values=body.values, as_node=body.as_node, checkpoint=checkpoint
    )
    await publish_state_update(svc, thread["thread_id"])
    return JSON(result)


# ------------------------------------------------------------------ history


@router.get("/threads/{thread_id}/history", response_class=JSON)
async def get_history(
    thread_id: str,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1,
    before: str | None = None,
) -> Response:
    svc = services(request)
    thread = await get_thread_or_404(svc, thread_id)
    before_cfg = None
    if before:
        before_cfg = CheckpointConfig(checkpoint_id=uuid_param(before, "checkpoint"))
    return JSON(
        await svc.states.history(
            thread, limit=limit, before=before_cfg, metadata=None, checkpoint=None
        )
    )


@router.post("/threads/{thread_id}/history", response_class=JSON)
async def post_history(
    thread_id: str, request: Request, body: Annotated[ThreadStateSearch | None, Body()] = None
) -> Response:
    svc = services(request)
    body = body or ThreadStateSearch()
    thread = await get_thread_or_404(svc, thread_id)
    before = body.before
    if isinstance(before, str):
        before = CheckpointConfig(checkpoint_id=before)
    return JSON(
        await svc.states.history(
            thread,
            limit=body.limit,
            before=before,
            metadata=body.metadata,
            checkpoint=body.checkpoint,
        )
    )
