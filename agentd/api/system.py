"""Health and server information."""

from __future__ import annotations

from importlib.metadata import version

from fastapi import Request
from fastapi.responses import Response

from agentd import __version__
from agentd.api.common import JSON, make_router, services
from agentd.schemas import ApiError

router = make_router("System")


@router.get("/ok", response_class=JSON)
async def ok(request: Request, check_db: int = 0) -> Response:
    """Alive; with ``check_db=1`` the database and the broker's servers answered too (500
    naming the one that did not, as the official server fails a probe)."""
    if not check_db:
        return JSON({"ok": True, "services": {}})
    svc = services(request)
    found: dict[str, str] = {}
    for name, probe in (("database", svc.storage.ping), ("broker", svc.broker.ping)):
        try:
            found.update(await probe())
        except Exception as exc:
            reason = exc.detail if isinstance(exc, ApiError) else type(exc).__name__
            found[name] = "unavailable"
            return JSON(
                {"ok": False, "services": found, "detail": f"The {name} check failed: {reason}"},
                status_code=500,
            )
    return JSON({"ok": True, "services": found})


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
