"""Threads and their state and history."""

from __future__ import annotations

from typing import Annotated

from fastapi import Body, Header, Query, Request
from fastapi.responses import Response
from langgraph.types import StateUpdate

from agentd.api.common import JSON, get_thread_or_404, make_router, page, services, uuid_param
from agentd.api.streams import publish_state_update
from agentd.graphs import GraphRegistry
from agentd.ids import parse_uuid, uuid7
from agentd.schemas import (
    CheckpointConfig,
    Conflict,
    NotFound,
    ThreadCount,
    ThreadCreate,
    ThreadPatch,
    ThreadPrune,
    ThreadSearch,
    ThreadStateSearch,
    ThreadStateUpdate,
    ThreadTTL,
    Unprocessable,
)
from agentd.services import Services

router = make_router("Threads")


@router.post("/threads", response_class=JSON)
async def create_thread(
    request: Request, body: Annotated[ThreadCreate | None, Body()] = None
) -> Response:
    svc = services(request)
    body = body or ThreadCreate()
    thread_id = uuid_param(body.thread_id, "thread") if body.thread_id else str(uuid7())
    supersteps = _supersteps(body, svc.graphs)
    if_exists = "raise" if supersteps else body.if_exists
    try:
        thread = await svc.storage.create_thread(
            thread_id, body.metadata or {}, if_exists, _ttl(body.ttl)
        )
    except Conflict:
        existing = await svc.storage.get_thread(thread_id)
        if body.if_exists == "do_nothing" and existing is not None:
            return JSON(existing)  # an existing thread's history is not rewritten
        raise
    if supersteps:
        try:
            await svc.states.apply_supersteps(thread, supersteps)
        except BaseException:
            await svc.storage.delete_thread(thread_id)  # nothing stored for a refused request
            raise
        thread = await svc.storage.get_thread(thread_id)
    return JSON(thread)


def _ttl(ttl: ThreadTTL | None) -> tuple[str, float] | None:
    return (ttl.strategy, ttl.ttl) if ttl else None


def _supersteps(body: ThreadCreate, graphs: GraphRegistry) -> list[list[StateUpdate]]:
    """The create body's supersteps as LangGraph updates, checked before anything is stored."""
    if not body.supersteps:
        return []
    graph_id = (body.metadata or {}).get("graph_id")
    if not isinstance(graph_id, str) or graph_id not in graphs:
        raise Unprocessable(
            "supersteps need metadata.graph_id naming a served graph, got " + repr(graph_id)
        )
    steps = []
    for step in body.supersteps:
        if any(u.command is not None for u in step.updates):
            raise Unprocessable("supersteps: 'command' updates are not supported; send 'values'")
        steps.append([StateUpdate(u.values, u.as_node) for u in step.updates])  # type: ignore
    return steps


@router.post("/threads/count", response_class=JSON)
async def count_threads(
    request: Request, body: Annotated[ThreadCount | None, Body()] = None
) -> Response:
    body = body or ThreadCount()
    count = await services(request).storage.count_threads(
        metadata=body.metadata, values=body.values, status=body.status
    )
    return JSON(count)


@router.post("/threads/prune", response_class=JSON)
async def prune_threads(body: ThreadPrune, request: Request) -> Response:
    svc = services(request)
    ids = [parse_uuid(i) for i in body.thread_ids]
    if None in ids:
        raise Unprocessable("Invalid thread ID in 'thread_ids': must be UUIDs")
    ids = list(dict.fromkeys(ids))  # type: ignore[arg-type]
    if body.strategy == "delete":
        # What runs on them stops first; found in one look-up, however many ids were given.
        wanted = set(ids)
        inflight: dict[str, list[str]] = {}
        for thread_id, run_id in await svc.storage.inflight_run_ids(None):
            if thread_id in wanted:
                inflight.setdefault(thread_id, []).append(run_id)
        for thread_id, run_ids in inflight.items():
            await svc.runs.cancel(thread_id, run_ids, "interrupt")
    pruned = await svc.storage.prune_threads(ids, body.strategy)  # type: ignore[arg-type]
    return JSON({"pruned_count": pruned})


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
async def get_thread(thread_id: str, request: Request, include: str | None = None) -> Response:
    svc = services(request)
    thread = await get_thread_or_404(svc, thread_id, with_values=True)
    fields = {f.strip() for f in (include or "").split(",") if f.strip()}
    if fields - {"ttl"}:
        raise Unprocessable(f"Unknown 'include' field(s) {sorted(fields - {'ttl'})}: use 'ttl'")
    if "ttl" in fields:
        ttl = await svc.storage.get_thread_ttl(thread["thread_id"])
        if ttl is not None:
            thread["ttl"] = ttl
    return JSON(thread)


@router.patch("/threads/{thread_id}", response_class=JSON)
async def patch_thread(
    thread_id: str,
    body: ThreadPatch,
    request: Request,
    prefer: Annotated[str | None, Header()] = None,
) -> Response:
    thread = await services(request).storage.update_thread(
        uuid_param(thread_id, "thread"), body.metadata or {}, _ttl(body.ttl)
    )
    if thread is None:
        raise NotFound(f"Thread with ID {thread_id} not found")
    if prefer and "return=minimal" in prefer:
        return Response(status_code=204)
    return JSON(thread)


@router.delete("/threads/{thread_id}", status_code=204)
async def delete_thread(thread_id: str, request: Request) -> Response:
    svc = services(request)
    thread = await get_thread_or_404(svc, thread_id)
    await _cancel_inflight(svc, thread["thread_id"])
    await svc.storage.delete_thread(thread["thread_id"])
    return Response(status_code=204)


async def _cancel_inflight(svc: Services, thread_id: str) -> None:
    """Stop whatever still runs on a thread first, so no worker writes to it once deleted."""
    ids = [r["run_id"] for r in await svc.storage.inflight_runs(thread_id)]
    if ids:
        await svc.runs.cancel(thread_id, ids, "interrupt")


@router.post("/threads/{thread_id}/copy", response_class=JSON)
async def copy_thread(thread_id: str, request: Request) -> Response:
    svc = services(request)
    source = uuid_param(thread_id, "thread")
    thread = await svc.storage.copy_thread(source, str(uuid7()))
    if thread is None:
        raise NotFound(f"Thread with ID {thread_id} not found")
    return JSON(thread)


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
