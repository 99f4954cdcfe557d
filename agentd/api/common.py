"""What every resource module uses: the JSON response, path-id checks, the services."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute

from agentd import serde
from agentd.api import strict_json
from agentd.ids import parse_uuid
from agentd.schemas import NotFound, Unprocessable
from agentd.services import Services
from agentd.storage.base import Row


class _StrictJSONRequest(Request):
    """Parses bodies as strict JSON (see ``strict_json``)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = strict_json.loads(await self.body())
        return self._json


class _StrictRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(_StrictJSONRequest(request.scope, request.receive))

        return strict


def make_router(tag: str) -> APIRouter:
    """The router every resource module uses."""
    return APIRouter(tags=[tag], route_class=_StrictRoute)


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        if isinstance(content, bytes):  # already-encoded JSON passes straight through
            return content
        return serde.dumps(content)


def services(request: Request) -> Services:
    return request.app.state.services


def uuid_param(value: str, kind: str) -> str:
    """The canonical UUID of a path parameter, or 422 naming which id was malformed."""
    parsed = parse_uuid(value)
    if parsed is None:
        raise Unprocessable(f"Invalid {kind} ID: must be a UUID")
    return parsed


async def get_thread_or_404(svc: Services, thread_id: str, *, with_values: bool = False) -> Row:
    """The thread, or 404. Its ``values`` and ``interrupts`` (the bulk of a long conversation)
    are read only when asked for."""
    thread = await svc.storage.get_thread(uuid_param(thread_id, "thread"), with_values=with_values)
    if thread is None:
        raise NotFound(f"Thread with ID {thread_id} not found")
    return thread


def page(rows: list[Row], total: int, offset: int, select: list[str] | None) -> JSON:
    """A search result: the rows (only the ``select``ed fields) and the pagination headers."""
    if select:
        rows = [{k: r[k] for k in select} for r in rows]
    headers = {"X-Pagination-Total": str(total)}
    if offset + len(rows) < total:
        headers["X-Pagination-Next"] = str(offset + len(rows))
    return JSON(rows, headers=headers)
