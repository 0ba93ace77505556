"""``GET /healthz`` (the process answers) and ``GET /readyz`` (models loaded and warm, not
draining). Both stay open when API keys are configured: probes carry no key."""

from __future__ import annotations

from fastapi import APIRouter

from reward_service.serve.errors import ApiError
from reward_service.serve.schemas import Health
from reward_service.serve.state import ServiceDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", responses={503: {"description": "Draining, or no model available."}})
async def readyz(service: ServiceDep) -> Health:
    """Ready lists every model: ``ready``, or ``unavailable: <reason>`` for one that failed."""
    if service.draining:
        raise ApiError(503, "draining", "the service is shutting down")
    models = {
        key: "ready" if s.available else f"unavailable: {s.error}"
        for key, s in sorted(service.registry.models.items())
    }
    if not service.ready:
        raise ApiError(503, "not_ready", "no model is available: " + "; ".join(models.values()))
    return Health(status="ready", models=models)
