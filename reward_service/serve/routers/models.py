"""``GET /v1/models`` and ``GET /v1/models/{name}``: what is served, on which runtime, within
which limits."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from reward_service.serve.auth import require_key
from reward_service.serve.registry import ServedModel
from reward_service.serve.schemas import Limits, ModelCard, ModelList, Runtime
from reward_service.serve.settings import Settings
from reward_service.serve.state import ServiceDep

router = APIRouter(prefix="/v1", tags=["models"], dependencies=[Depends(require_key)])


def card(served: ServedModel, settings: Settings) -> ModelCard:
    base = ModelCard(
        id=served.key,
        name=served.name,
        version=served.version,
        available=served.available,
        error=served.error,
    )
    if served.model is None:
        return base
    backend, manifest = served.model.backend, served.model.manifest
    parity = served.model.parity
    base.runtime = Runtime(
        backend=backend.name,
        precision=backend.precision,
        device=backend.device,
        selected_because=served.model.selected_because,
        parity=parity.as_dict() if parity else None,
    )
    base.limits = Limits(
        max_items=settings.max_items,
        max_text_chars=settings.max_text_chars,
        max_request_bytes=settings.max_request_bytes,
        max_length=manifest.template.max_length,
    )
    base.manifest = manifest.model_copy(update={"reference": []})
    return base


@router.get("/models")
async def list_models(service: ServiceDep) -> ModelList:
    registry = service.registry
    cards = [card(s, service.settings) for s in sorted(registry.models.values(), key=_order)]
    return ModelList(default=registry.default, data=cards)


@router.get("/models/{name}")
async def get_model(name: str, service: ServiceDep) -> ModelCard:
    """A name gives its newest available version; ``name@version`` one exactly."""
    return card(service.registry.find(name), service.settings)


def _order(served: ServedModel) -> tuple[str, int]:
    return served.name, served.version
