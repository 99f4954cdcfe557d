"""Assistants: create, read, update (each update a new version), delete, search, count, list
versions and pick the current one; the graph behind an assistant drawn and described.

A graph's name is accepted wherever an assistant id is: it names that graph's default
assistant. Assistants whose graph is no longer in ``langgraph.json`` are kept but hidden (404,
left out of search and count) until the graph comes back."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Body, Query, Request
from fastapi.responses import Response
from langgraph.pregel import Pregel

from agentd import graph_info
from agentd.api.common import JSON, make_router, page, services, uuid_param
from agentd.ids import default_assistant_id
from agentd.schemas import (
    MAX_OFFSET,
    AssistantCount,
    AssistantCreate,
    AssistantPatch,
    AssistantSearch,
    AssistantVersionChange,
    AssistantVersionSearch,
    BadRequest,
    Conflict,
    NotFound,
    RunConfig,
    Unprocessable,
)
from agentd.services import Services
from agentd.storage.base import Row

router = make_router("Assistants")


# ------------------------------------------------------------------ create, read, update, delete


@router.post("/assistants", response_class=JSON)
async def create_assistant(body: AssistantCreate, request: Request) -> Response:
    svc = services(request)
    _check_graph(svc, body.graph_id)
    config, context = _config_and_context(body.config, body.context)
    context = context or {}
    config = {k: v for k, v in (config or {}).items() if k != "configurable"}
    if context:
        config["configurable"] = context
    assistant_id = _resolve_id(svc, body.assistant_id) if body.assistant_id else str(uuid.uuid4())
    assistant = await svc.storage.create_assistant(
        {
            "assistant_id": assistant_id,
            "graph_id": body.graph_id,
            "config": config,
            "context": context,
            "metadata": body.metadata or {},
            "name": body.name if body.name is not None else "Untitled",
            "description": body.description,
        },
        body.if_exists,
    )
    return JSON(assistant)


@router.get("/assistants/{assistant_id}", response_class=JSON)
async def get_assistant(assistant_id: str, request: Request) -> Response:
    return JSON(await _get_or_404(services(request), assistant_id))


@router.patch("/assistants/{assistant_id}", response_class=JSON)
async def patch_assistant(assistant_id: str, body: AssistantPatch, request: Request) -> Response:
    svc = services(request)
    assistant = await _get_or_404(svc, assistant_id)
    if body.graph_id is not None and body.graph_id != assistant["graph_id"]:
        _check_graph(svc, body.graph_id)
        if _is_default(assistant):
            raise Conflict(
                f"Assistant {assistant['assistant_id']} is the default assistant of graph "
                f"'{assistant['graph_id']}': its graph cannot change. Create an assistant for "
                f"graph '{body.graph_id}' instead."
            )
    config, context = _config_and_context(body.config, body.context)
    updated = await svc.storage.update_assistant(
        assistant["assistant_id"],
        graph_id=body.graph_id,
        config=config or None,  # an empty config keeps the stored one, as the reference does
        context=context,
        metadata=body.metadata,
        name=body.name,
        description=body.description,
    )
    if updated is None:
        raise NotFound(f"Assistant {assistant['assistant_id']} not found")
    return JSON(updated)


@router.delete("/assistants/{assistant_id}", status_code=204)
async def delete_assistant(
    assistant_id: str, request: Request, delete_threads: bool = False
) -> Response:
    svc = services(request)
    assistant = await _get_or_404(svc, assistant_id)
    aid = assistant["assistant_id"]
    if _is_default(assistant):
        # Runs name a graph's default assistant by the graph's name: it must always exist.
        raise Conflict(
            f"Assistant {aid} is the default assistant of graph '{assistant['graph_id']}' and "
            "cannot be deleted; it exists as long as the graph is in langgraph.json. Change it "
            "with PATCH (a new version) or pick an earlier version with POST "
            f"/assistants/{aid}/latest."
        )
    if not await svc.storage.delete_assistant(aid):
        raise NotFound(f"Assistant with ID {aid} not found")
    # Deleted first, so no new run can start on it; then what it still has in flight stops.
    by_thread: dict[str, list[str]] = defaultdict(list)
    for run in await svc.storage.assistant_inflight_runs(aid):
        by_thread[run["thread_id"]].append(run["run_id"])
    for thread_id, run_ids in by_thread.items():
        await svc.runs.cancel(thread_id, run_ids, "interrupt")
    if delete_threads:
        for thread_id in await svc.storage.assistant_thread_ids(aid):
            ids = [r["run_id"] for r in await svc.storage.inflight_runs(thread_id)]
            if ids:
                await svc.runs.cancel(thread_id, ids, "interrupt")
            await svc.storage.delete_thread(thread_id)
    return Response(status_code=204)


# ------------------------------------------------------------------ search, count, versions


@router.post("/assistants/search", response_class=JSON)
async def search_assistants(
    request: Request, body: Annotated[AssistantSearch | None, Body()] = None
) -> Response:
    svc = services(request)
    body = body or AssistantSearch()
    assistants, total = await svc.storage.search_assistants(
        graph_ids=svc.graphs.graph_ids,
        graph_id=body.graph_id,
        metadata=body.metadata,
        name=body.name,
        limit=body.limit,
        offset=body.offset,
        sort_by=body.sort_by,
        sort_order=body.sort_order,
    )
    return page(assistants, total, body.offset, body.select)


@router.post("/assistants/count", response_class=JSON)
async def count_assistants(
    request: Request, body: Annotated[AssistantCount | None, Body()] = None
) -> Response:
    svc = services(request)
    body = body or AssistantCount()
    count = await svc.storage.count_assistants(
        graph_ids=svc.graphs.graph_ids,
        graph_id=body.graph_id,
        metadata=body.metadata,
        name=body.name,
    )
    return JSON(count)


@router.post("/assistants/{assistant_id}/versions", response_class=JSON)
async def list_versions(
    assistant_id: str,
    request: Request,
    body: Annotated[AssistantVersionSearch | None, Body()] = None,
) -> Response:
    svc = services(request)
    body = body or AssistantVersionSearch()
    assistant = await _get_or_404(svc, assistant_id)
    versions = await svc.storage.list_assistant_versions(
        assistant["assistant_id"], metadata=body.metadata, limit=body.limit, offset=body.offset
    )
    return JSON(versions)


@router.post("/assistants/{assistant_id}/latest", response_class=JSON)
async def set_latest_version(
    assistant_id: str,
    request: Request,
    body: Annotated[AssistantVersionChange | None, Body()] = None,
    version: Annotated[int | None, Query(ge=1, le=MAX_OFFSET)] = None,
) -> Response:
    """The version comes in the body (what the SDK sends) or as ``?version=`` (the spec)."""
    svc = services(request)
    wanted = body.version if body and body.version is not None else version
    if wanted is None:
        raise Unprocessable("'version' is required (in the body or as a query parameter)")
    assistant = await _get_or_404(svc, assistant_id)
    aid = assistant["assistant_id"]
    target = await svc.storage.get_assistant_version(aid, wanted)
    if target is None:
        raise NotFound(f"Version {wanted} not found for assistant {aid}")
    _check_graph(svc, target["graph_id"])
    updated = await svc.storage.set_latest_assistant_version(aid, wanted)
    if updated is None:
        raise NotFound(f"Assistant {aid} not found")
    return JSON(updated)


# ------------------------------------------------------------------ the graph behind it


@router.get("/assistants/{assistant_id}/graph", response_class=JSON)
async def get_graph(assistant_id: str, request: Request, xray: str = "false") -> Response:
    svc = services(request)
    depth = _xray(xray)
    assistant = await _get_or_404(svc, assistant_id)
    async with _built(svc, assistant) as graph:
        return JSON(await graph_info.drawing(graph, _graph_config(assistant), depth))


@router.get("/assistants/{assistant_id}/schemas", response_class=JSON)
async def get_schemas(assistant_id: str, request: Request) -> Response:
    svc = services(request)
    assistant = await _get_or_404(svc, assistant_id)
    async with _built(svc, assistant) as graph:
        return JSON({"graph_id": assistant["graph_id"], **graph_info.schemas(graph)})


@router.get("/assistants/{assistant_id}/subgraphs", response_class=JSON)
async def get_subgraphs(assistant_id: str, request: Request, recurse: bool = False) -> Response:
    return await _subgraphs(services(request), assistant_id, None, recurse)


@router.get("/assistants/{assistant_id}/subgraphs/{namespace}", response_class=JSON)
async def get_subgraphs_at(
    assistant_id: str, namespace: str, request: Request, recurse: bool = False
) -> Response:
    return await _subgraphs(services(request), assistant_id, namespace, recurse)


async def _subgraphs(
    svc: Services, assistant_id: str, namespace: str | None, recurse: bool
) -> Response:
    assistant = await _get_or_404(svc, assistant_id)
    async with _built(svc, assistant) as graph:
        return JSON(await graph_info.subgraph_schemas(graph, namespace, recurse))


# ------------------------------------------------------------------ helpers


def _resolve_id(svc: Services, value: str) -> str:
    """A graph's name stands for its default assistant; anything else must be a UUID."""
    if value in svc.graphs:
        return default_assistant_id(value)
    return uuid_param(value, "assistant")


async def _get_or_404(svc: Services, value: str) -> Row:
    assistant_id = _resolve_id(svc, value)
    assistant = await svc.storage.get_assistant(assistant_id)
    if assistant is None or assistant["graph_id"] not in svc.graphs:
        raise NotFound(f"Assistant {assistant_id} not found")
    return assistant


def _check_graph(svc: Services, graph_id: str) -> None:
    if graph_id not in svc.graphs:
        raise NotFound(f"Graph '{graph_id}' not found. Expected one of: {svc.graphs.graph_ids}")


def _is_default(assistant: Row) -> bool:
    return assistant["assistant_id"] == default_assistant_id(assistant["graph_id"])


def _config_and_context(
    config: RunConfig | None, context: dict[str, Any] | None
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """``config.configurable`` and ``context`` are one setting, as the official server keeps
    them: giving one sets both; giving both is an error."""
    dumped = config.model_dump(exclude_none=True) if config else None
    configurable = dumped.get("configurable") if dumped else None
    if configurable and context:
        raise BadRequest(
            "Cannot specify both configurable and context. Prefer setting context alone."
        )
    if configurable is not None and not context:
        context = configurable
    return dumped, context


def _xray(value: str) -> bool | int:
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        depth = int(value)
    except ValueError:
        depth = -1
    if depth < 0:
        raise Unprocessable(
            f"Invalid xray value: {value!r}; expected true, false or a non-negative integer"
        )
    return depth


def _graph_config(assistant: Row) -> dict[str, Any]:
    config = assistant["config"] or {}
    configurable = {
        **(config.get("configurable") or {}),
        "assistant_id": assistant["assistant_id"],
        "graph_id": assistant["graph_id"],
    }
    return {**config, "configurable": configurable}


@asynccontextmanager
async def _built(svc: Services, assistant: Row) -> AsyncIterator[Pregel]:
    """The assistant's graph; a factory is called with the assistant's config and access
    context ``assistants.read``."""
    async with svc.graphs.bound(
        assistant["graph_id"],
        _graph_config(assistant),
        svc.storage.checkpointer,
        svc.storage.store,
        access="assistants.read",
    ) as graph:
        yield graph
