"""The ASGI application: routes, error mapping, and the services' lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from agentd import __version__
from agentd.api import assistants, crons, runs, store, streams, system, threads
from agentd.api.body_limit import BodyLimit
from agentd.api.common import JSON
from agentd.api.strict_json import BodyRangeError
from agentd.config import Settings
from agentd.graphs import GraphRegistry
from agentd.schemas import ApiError
from agentd.services import open_services

log = logging.getLogger("agentd.api")


def create_app(settings: Settings, graphs: GraphRegistry) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_services(settings, graphs) as svc:
            app.state.services = svc
            yield

    app = FastAPI(
        title="agentd",
        version=__version__,
        description="A self-hosted server for LangGraph agents, speaking the Agent Server API.",
        lifespan=lifespan,
        default_response_class=JSON,
        # FastAPI's OpenTelemetry hooks look the providers up on every request; agentd does
        # not document OpenTelemetry, so they are off rather than a cost on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    for module in (system, assistants, threads, runs, streams, crons, store):
        # The routes go straight into the app's router: an included router is matched as a
        # nested router on every request, which cost ~10% of a request's CPU here.
        app.router.routes.extend(module.router.routes)

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> Response:
        return JSON({"detail": exc.detail}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        invalid = [e for e in errors if e.get("type") == "json_invalid"]
        if invalid:
            detail = "Invalid JSON in request body"
            if isinstance(exc.__cause__, BodyRangeError):
                detail += f": {exc.__cause__.msg}"
            return JSON({"detail": detail}, status_code=422)
        detail = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
            for e in errors
        ]
        return JSON({"detail": detail}, status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> Response:
        return JSON({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSON({"detail": "Internal server error"}, status_code=500)

    return app
