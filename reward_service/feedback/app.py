"""The labeling web app: the FastAPI stack of the reward service, with its own routers.

Built around an open :class:`~reward_service.feedback.db.Database`; when a reward service URL is
configured, a background thread keeps open tasks scored by its current model version so the
least certain ones are served first.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from reward_service.feedback import errors
from reward_service.feedback.active import RewardService, RewardServiceError, score_open_tasks
from reward_service.feedback.db import Database
from reward_service.feedback.routers import api, pages
from reward_service.feedback.settings import FeedbackSettings
from reward_service.serve.guard import BodyTooLarge, buffered

log = logging.getLogger("reward_service.feedback")
ROUTERS = (pages.router, api.router)
TOKEN_IN_QUERY = re.compile(r"(token=)[^&\s]*")


class RedactTokens(logging.Filter):
    """Access logs print each path with its query string; a login token there is a password."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                TOKEN_IN_QUERY.sub(r"\1[redacted]", a) if isinstance(a, str) else a
                for a in record.args
            )
        return True


class BodyLimit:
    """Raw ASGI: refuse a body over the limit with 413, declared or streamed, before the app
    parses it. Bodies here are small JSON answers, so the rest is buffered and replayed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await self._refuse(send)
        try:
            downstream = await buffered(receive, self.max_bytes)
        except BodyTooLarge:
            return await self._refuse(send)
        return await self.app(scope, downstream, send)

    async def _refuse(self, send: Send) -> None:
        body = b'{"error":{"code":"too_large","message":"request body too large"}}'
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": body})


def rescore_forever(
    database: Database, service: RewardService, every_s: float, stop: threading.Event
) -> None:
    """Keep tasks scored by the service's current model; a failure waits for the next round."""
    while not stop.wait(every_s):
        try:
            if n := score_open_tasks(database, service):
                log.info("rescored %d open tasks with %s", n, service.url)
        except RewardServiceError as exc:
            log.warning("active selection: %s", exc)


def create_app(
    settings: FeedbackSettings, database: Database, service: RewardService | None = None
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        stop = threading.Event()
        if service is not None and settings.rescore_seconds > 0:
            threading.Thread(
                target=rescore_forever,
                args=(database, service, settings.rescore_seconds, stop),
                name="rescore",
                daemon=True,
            ).start()
        yield
        stop.set()

    app = FastAPI(
        title="reward-service feedback",
        summary="Collect human feedback for reward models.",
        version="1",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    app.state.database = database
    errors.install(app)
    for router in ROUTERS:
        app.include_router(router)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    return app
