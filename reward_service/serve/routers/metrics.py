"""``GET /metrics``: Prometheus text exposition, open to scrapers without a key."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from reward_service.serve.state import ServiceDep

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response)
async def metrics(service: ServiceDep) -> Response:
    for served in service.registry.models.values():
        if served.batcher is not None:
            service.metrics.queue_depth.labels(served.key).set(served.batcher.depth)
    body = generate_latest(service.metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
