"""Health and server information."""

from __future__ import annotations

from importlib.metadata import version

from fastapi import Request
from fastapi.responses import Response

from agentd import __version__
from agentd.api.common import JSON, make_router, services

router = make_router("System")


@router.get("/ok", response_class=JSON)
async def ok(request: Request, check_db: int = 0) -> Response:
    if check_db:
        await services(request).storage.get_assistant("00000000-0000-0000-0000-000000000000")
    return JSON({"ok": True})


@router.get("/info", response_class=JSON)
async def info(request: Request) -> Response:
    svc = services(request)
    return JSON(
        {
            "version": __version__,
            "agentd_version": __version__,
            "langgraph_py_version": version("langgraph"),
            "flags": {"assistants": True, "crons": False, "langsmith": False},
            "host": {"kind": "agentd", "project_id": None, "revision_id": None},
            "workers": {"max": svc.worker.jobs, "active": svc.worker.active},
        }
    )
