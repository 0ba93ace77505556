"""``POST /v1/admin/reload``: check the model repository now, instead of at the next poll.

A publisher (``reward-service export`` in a training loop) calls it right after publishing so
the new version serves within a load's time. Like every route but the probes, it needs a key
when keys are configured (the request guard checks it before anything else).
"""

from __future__ import annotations

from fastapi import APIRouter

from reward_service.serve.errors import ApiError
from reward_service.serve.schemas import ReloadResponse
from reward_service.serve.state import ServiceDep

router = APIRouter(prefix="/v1/admin", tags=["admin"])


@router.post("/reload", responses={503: {"description": "The service is shutting down."}})
async def reload(service: ServiceDep) -> ReloadResponse:
    if service.reloader is None or service.draining:
        raise ApiError(503, "draining", "the service is shutting down")
    changes = await service.reloader.check(settle=False)
    registry = service.registry
    serving = {name: registry.find(name).key for name in sorted(registry.names())}
    return ReloadResponse(changes=changes, serving=serving)
