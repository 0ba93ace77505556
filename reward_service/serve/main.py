"""The FastAPI application: routers, error handlers, the request guard, the batchers' lifetime.

Models are loaded and warmed before this app is built (see :mod:`reward_service.serve.cli`), so
a service that binds is a service that can score.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from reward_service.serve import errors
from reward_service.serve.guard import RequestGuard
from reward_service.serve.reload import Reloader
from reward_service.serve.routers import admin, health, kserve, metrics, models, openrlhf, score
from reward_service.serve.state import Service


def publish_model_info(service: Service) -> None:
    """``reward_model_info`` is 1 for a serving model and 0 for one that failed to load."""
    for served in service.registry.models.values():
        service.metrics.model_info.labels(*served.info_labels).set(int(served.available))


def create_app(service: Service) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        service.registry.start(service.settings, service.metrics)
        publish_model_info(service)
        service.reloader = Reloader(service)
        service.reloader.start()
        yield
        await service.reloader.stop()
        await service.registry.stop()
        service.tokenize_pool.shutdown(wait=False)

    # FastAPI's strict content type stays on: a body is read as JSON only when it says so,
    # which is what keeps a cross-site HTML form (text/plain) from posting to the service.
    app = FastAPI(
        title="reward-service",
        summary="Reward-model scoring for RLHF, with dynamic batching.",
        version="1",
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.api_keys = service.api_keys
    errors.install(app)
    for router in (score.router, models.router, openrlhf.router, kserve.router, admin.router):
        app.include_router(router)
    for router in (health.router, metrics.router):
        app.include_router(router)
    app.add_middleware(RequestGuard, service=service)
    return app
