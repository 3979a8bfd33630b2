"""Builds the FastAPI app; nothing else. Serve with ``uvicorn --factory api.main:create_app`` or
``circuits api``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import errors, openapi
from api.deps import Resources
from api.limits import BodySizeLimit
from api.routers import (
    circuits,
    compare,
    cypher,
    experiments,
    health,
    imports,
    jobs,
    models,
    studies,
    tasks,
    timelines,
    web,
)
from api.security import FailedKeys, check_keys_for_bind
from workers.settings import Settings, get_settings

ROUTERS = (health, web, jobs, experiments, timelines, studies, circuits, imports, compare, models, tasks, cypher)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API app with its resources opened at startup and closed at shutdown.

    Raises :class:`api.security.UnsafeKeys` when ``ATLAS_API_HOST`` is not loopback and the
    development keys are on (``circuits api`` checks its ``--host`` the same way)."""
    settings = settings or get_settings()
    check_keys_for_bind(settings, settings.api_host)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.resources = Resources.open(settings)
        try:
            yield
        finally:
            app.state.resources.close()

    app = FastAPI(title="circuit-atlas", version="0.1.0", lifespan=lifespan,
                  description="Circuits of transformer models, discovered by Celery workers and "
                              "stored in Neo4j. Every /v1 route needs an X-API-Key header.")
    for module in ROUTERS:
        app.include_router(module.router)
    app.state.failed_keys = FailedKeys(settings.auth_fail_limit, settings.auth_fail_window_s)
    errors.install(app)
    openapi.install(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    return app
