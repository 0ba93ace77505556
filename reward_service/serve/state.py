"""What every route reaches through ``request.app.state.service``: one object, typed."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from reward_service.serve.errors import ApiError
from reward_service.serve.metrics import Metrics
from reward_service.serve.registry import Registry
from reward_service.serve.settings import Settings

if TYPE_CHECKING:
    from reward_service.serve.reload import Reloader


@dataclass
class Service:
    settings: Settings
    registry: Registry
    metrics: Metrics = field(default_factory=Metrics)
    api_keys: tuple[bytes, ...] = ()
    draining: bool = False
    in_flight: int = 0  # HTTP requests being handled, counted by the request guard
    inflight_bytes: int = 0  # declared body bytes of those requests
    reloader: Reloader | None = None  # set while the app runs
    tokenize_pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(2, thread_name_prefix="tokenize")
    )

    @property
    def ready(self) -> bool:
        return not self.draining and bool(self.registry.available())


async def get_service(request: Request) -> Service:
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]


async def require_serving(request: Request) -> None:
    """Scoring routes refuse new work once draining began; the client retries elsewhere."""
    if request.app.state.service.draining:
        raise ApiError(
            503, "draining", "the service is shutting down; retry", headers={"Retry-After": "1"}
        )
