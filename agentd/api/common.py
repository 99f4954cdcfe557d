"""What every resource module uses: the JSON response, path-id checks, the services."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response

from agentd import serde
from agentd.ids import parse_uuid
from agentd.schemas import NotFound, Unprocessable
from agentd.services import Services
from agentd.storage.base import Row


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


async def get_thread_or_404(svc: Services, thread_id: str) -> Row:
    thread = await svc.storage.get_thread(uuid_param(thread_id, "thread"))
    if thread is None:
        raise NotFound(f"Thread with ID {thread_id} not found")
    return thread
