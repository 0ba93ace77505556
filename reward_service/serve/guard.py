"""Pure ASGI middleware around every request: body-size limit, in-flight count, metrics.

Written against raw ASGI rather than as a ``BaseHTTPMiddleware`` because it runs on every
request of a latency-sensitive service: no extra task, no response re-wrapping. The body limit
is enforced from ``Content-Length`` before anything is read; a chunked body without one is
buffered up to the limit and refused past it, so no client can make the service hold more.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reward_service.serve.errors import error_response
from reward_service.serve.state import Service


class RequestGuard:
    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        service = self.service
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        service.in_flight += 1
        try:
            receive = await self._limit_body(scope, receive, send_status)
            if receive is not None:
                await self.app(scope, receive, send_status)
        finally:
            service.in_flight -= 1
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            metrics = service.metrics
            metrics.requests.labels(path, str(status)).inc()
            metrics.request_seconds.labels(path).observe(time.perf_counter() - started)

    async def _limit_body(self, scope: Scope, receive: Receive, send: Send) -> Receive | None:
        """The receive to use downstream, or None when a 413 was already sent."""
        limit = self.service.settings.max_request_bytes
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit() or int(length) > limit:
                await self._too_large(scope, receive, send, limit)
                return None
            return receive
        if b"transfer-encoding" not in headers:
            return receive
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return receive
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > limit:
                await self._too_large(scope, receive, send, limit)
                return None
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return replay

    async def _too_large(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        response = error_response(
            413,
            "body_too_large",
            f"request body over {limit} bytes; split the request",
            path=scope["path"],
        )
        await response(scope, receive, send)
