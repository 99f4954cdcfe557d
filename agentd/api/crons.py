"""Crons: create (on a thread or stateless), get, update, delete, search, count."""

from __future__ import annotations

from typing import Annotated

from fastapi import Body, Request
from fastapi.responses import Response

from agentd.api.common import JSON, make_router, page, services, uuid_param
from agentd.schemas import (
    CronCount,
    CronCreate,
    CronPatch,
    CronSearch,
    NotFound,
    ThreadCronCreate,
)
from agentd.services import Services

router = make_router("Crons")


@router.post("/threads/{thread_id}/runs/crons", response_class=JSON)
async def create_thread_cron(thread_id: str, body: ThreadCronCreate, request: Request) -> Response:
    return JSON(await services(request).crons.create(uuid_param(thread_id, "thread"), body))


@router.post("/runs/crons", response_class=JSON)
async def create_cron(body: CronCreate, request: Request) -> Response:
    return JSON(await services(request).crons.create(None, body))


def _filters(
    svc: Services, assistant_id: str | None, thread_id: str | None
) -> dict[str, str | None]:
    """The search filters as stored ids: a graph name stands for its default assistant."""
    if assistant_id is not None:
        resolved = svc.graphs.resolve_assistant_id(assistant_id)
        if resolved == assistant_id:
            resolved = uuid_param(assistant_id, "assistant")
        assistant_id = resolved
    if thread_id is not None:
        thread_id = uuid_param(thread_id, "thread")
    return {"assistant_id": assistant_id, "thread_id": thread_id}


@router.post("/runs/crons/search", response_class=JSON)
async def search_crons(
    request: Request, body: Annotated[CronSearch | None, Body()] = None
) -> Response:
    svc = services(request)
    body = body or CronSearch()
    crons, total = await svc.storage.search_crons(
        **_filters(svc, body.assistant_id, body.thread_id),
        enabled=body.enabled,
        metadata=body.metadata,
        limit=body.limit,
        offset=body.offset,
        sort_by=body.sort_by,
        sort_order=body.sort_order,
    )
    return page(crons, total, body.offset, body.select)


@router.post("/runs/crons/count", response_class=JSON)
async def count_crons(
    request: Request, body: Annotated[CronCount | None, Body()] = None
) -> Response:
    svc = services(request)
    body = body or CronCount()
    count = await svc.storage.count_crons(
        **_filters(svc, body.assistant_id, body.thread_id), metadata=body.metadata
    )
    return JSON(count)


@router.get("/runs/crons/{cron_id}", response_class=JSON)
async def get_cron(cron_id: str, request: Request) -> Response:
    cron = await services(request).storage.get_cron(uuid_param(cron_id, "cron"))
    if cron is None:
        raise NotFound(f"Cron '{cron_id}' not found")
    return JSON(cron)


@router.patch("/runs/crons/{cron_id}", response_class=JSON)
async def patch_cron(cron_id: str, body: CronPatch, request: Request) -> Response:
    return JSON(await services(request).crons.update(uuid_param(cron_id, "cron"), body))


@router.delete("/runs/crons/{cron_id}", status_code=204)
async def delete_cron(cron_id: str, request: Request) -> Response:
    await services(request).crons.delete(uuid_param(cron_id, "cron"))
    return Response(status_code=204)
