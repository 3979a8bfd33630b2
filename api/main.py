"""Builds the FastAPI app; nothing else. Serve with ``uvicorn --factory api.main:create_app`` or
``circuits api``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.deps import Resources
from api.routers import circuits, health, jobs
from workers.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API app with its resources opened at startup and closed at shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.resources = Resources.open(settings or get_settings())
        try:
            yield
        finally:
            app.state.resources.close()

    app = FastAPI(title="circuit-atlas", version="0.1.0", lifespan=lifespan)
    for module in (health, jobs, circuits):
        app.include_router(module.router)
    return app
