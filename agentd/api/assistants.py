"""Assistants: each graph's default assistant, and (later) user-made ones."""

from __future__ import annotations

from typing import Annotated

from fastapi import Body, Request
from fastapi.responses import Response

from agentd.api.common import JSON, make_router, page, services, uuid_param
from agentd.schemas import AssistantSearch, NotFound

router = make_router("Assistants")


@router.get("/assistants/{assistant_id}", response_class=JSON)
async def get_assistant(assistant_id: str, request: Request) -> Response:
    svc = services(request)
    assistant = await svc.storage.get_assistant(uuid_param(assistant_id, "assistant"))
    if assistant is None or assistant["graph_id"] not in svc.graphs:
        raise NotFound(f"Assistant {assistant_id} not found")
    return JSON(assistant)


@router.post("/assistants/search", response_class=JSON)
async def search_assistants(
    request: Request, body: Annotated[AssistantSearch | None, Body()] = None
) -> Response:
    svc = services(request)
    body = body or AssistantSearch()
    assistants, total = await svc.storage.search_assistants(
        graph_id=body.graph_id,
        metadata=body.metadata,
        name=body.name,
        limit=body.limit,
        offset=body.offset,
        sort_by=body.sort_by,
        sort_order=body.sort_order,
    )
    return page(assistants, total, body.offset, body.select)
