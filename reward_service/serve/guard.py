"""Pure ASGI middleware around every request: key, body limits, body timeout, metrics.

Everything here happens before a body is read, so a client without a key, or with a body too
big, or while every model's queue is over its latency bound, or while the service already holds
as many bodies as it may, costs nothing but a short answer: 401 (keys are checked first, so a
client learns nothing else without one), 413, 429 (paused for a client that did not wait its
last Retry-After: :data:`REFUSAL_PAUSE_S`).
The body-size limit is enforced from ``Content-Length``; a chunked body without one is buffered
up to the limit and refused past it. A body that does not arrive within ``body_timeout_seconds``
gets 408 and the connection closes; slow headers are the protocol's business (``cli.py``).

Written against raw ASGI rather than as a ``BaseHTTPMiddleware`` because it runs on every
request of a latency-sensitive service: no extra task, no response re-wrapping.
"""

from __future__ import annotations

import asyncio
import time

from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reward_service.serve.auth import CHALLENGE, OPEN_PATHS, UNAUTHORIZED_MESSAGE, authorized
from reward_service.serve.errors import error_response
from reward_service.serve.state import Service

REFUSAL_PAUSE_S = 1.0
"""How long a 429 waits before it is sent to a connection that came back before the Retry-After
of its last 429: such a client then sends one request a second instead of thousands, and the
refusals cannot crowd out the work they protect. Clients that honour Retry-After (RewardClient,
OpenRLHF's one-second sleep) are never paused; a paused refusal costs an idle task."""
CONTROL_PATHS = frozenset({"/v1/admin/reload"})  # POSTs that queue no scoring work
MAX_REMEMBERED = 4096  # connections whose last 429 is remembered; forgotten all at once past it


class Refusals:
    """When each connection (client address and port) was told it could come back."""

    def __init__(self) -> None:
        self._until: dict[tuple, float] = {}

    def came_back_early(self, client: tuple | None) -> bool:
        until = self._until.pop(client, None) if client else None
        return until is not None and time.monotonic() < until

    def remember(self, client: tuple | None, retry_after: int) -> None:
        if not client:
            return
        if len(self._until) >= MAX_REMEMBERED:
            self._until.clear()
        self._until[client] = time.monotonic() + retry_after


class BodyTimeout(HTTPException):
    """The client did not finish sending its body in time.

    An HTTPException, so that FastAPI passes it on from its body reading to the error handlers
    instead of turning it into a 400.
    """

    def __init__(self, timeout: float) -> None:
        super().__init__(
            408, f"the request body did not arrive within {timeout:g} s", {"Connection": "close"}
        )


class BodyTooLarge(Exception):
    """A body grew past the limit while it was read."""


async def buffered(receive: Receive, limit: int) -> Receive:
    """Read a whole body (raising BodyTooLarge past ``limit`` bytes) and return a ``receive``
    that replays it: the size is known before the app parses anything. A client that leaves
    mid-body gets the original ``receive``, whose next message says so."""
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
            raise BodyTooLarge
    body = b"".join(chunks)
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


class RequestGuard:
    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app = app
        self.service = service
        self.refusals = Refusals()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        service = self.service
        started = time.perf_counter()
        status: int | None = None
        reserved = 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if status == 429:
                    retry_after = dict(message.get("headers", [])).get(b"retry-after", b"1")
                    self.refusals.remember(scope.get("client"), int(retry_after))
            await send(message)

        service.in_flight += 1
        try:
            headers = dict(scope["headers"])
            refusal = self._refusal(scope, headers)
            early = self.refusals.came_back_early(scope.get("client"))
            if refusal is not None:
                if refusal.status_code == 429 and early:
                    await asyncio.sleep(REFUSAL_PAUSE_S)
                await refusal(scope, receive, send_status)
                return
            reserved = self._body_size(headers)
            service.inflight_bytes += reserved
            timed = self._timed(receive)
            try:
                downstream = await self._buffer_chunked(headers, timed)
            except BodyTimeout as exc:
                response = error_response(
                    408, "request_timeout", exc.detail, exc.headers, scope["path"]
                )
                await response(scope, receive, send_status)
                return
            except BodyTooLarge:
                await self._too_large(scope)(scope, receive, send_status)
                return
            try:
                await self.app(scope, downstream, send_status)
            except asyncio.CancelledError:
                # The server stopped waiting for this request (a shutdown past its deadline):
                # a 503 to retry elsewhere, rather than the 500 the server would send.
                if status is not None:
                    raise
                await error_response(
                    503,
                    "draining",
                    "the service stopped; retry",
                    {"Retry-After": "1"},
                    scope["path"],
                )(scope, receive, send_status)
        finally:
            service.in_flight -= 1
            service.inflight_bytes -= reserved
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            metrics = service.metrics
            metrics.requests.labels(path, str(status or 500)).inc()
            metrics.request_seconds.labels(path).observe(time.perf_counter() - started)

    def _refusal(self, scope: Scope, headers: dict[bytes, bytes]) -> JSONResponse | None:
        """The response that ends the request before its body is read, or None."""
        service = self.service
        if self._needs_key(scope) and not authorized(
            headers.get(b"authorization"), service.api_keys
        ):
            return error_response(
                401, "unauthorized", UNAUTHORIZED_MESSAGE, CHALLENGE, scope["path"]
            )
        limit = service.settings.max_request_bytes
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            return self._too_large(scope)
        scoring = scope["method"] == "POST" and scope["path"] not in CONTROL_PATHS
        if scoring and not service.draining and service.registry.overloaded():
            # Every model would refuse this request: say so before reading or parsing its
            # body, so that a crowd of clients retrying at once costs the service little.
            retry_after = service.registry.retry_after()
            service.metrics.rejected.labels("*", "overloaded").inc()
            return error_response(
                429,
                "queue_full",
                "every model's queue holds more work than the latency bound allows; retry",
                {"Retry-After": str(retry_after)},
                scope["path"],
            )
        size = self._body_size(headers)
        budget = service.settings.max_inflight_bytes
        if size and service.inflight_bytes + size > budget:
            service.metrics.rejected.labels("*", "inflight_bytes").inc()
            return error_response(
                429,
                "busy",
                f"the service holds {budget} bytes of request bodies already; retry",
                {"Retry-After": "1"},
                scope["path"],
            )
        return None

    def _needs_key(self, scope: Scope) -> bool:
        """Deny by default: with keys on, only probes and the scraper go without one."""
        return bool(self.service.api_keys) and scope["path"] not in OPEN_PATHS

    def _body_size(self, headers: dict[bytes, bytes]) -> int:
        """Bytes a body will hold: its declared length, or the limit when it is chunked."""
        length = headers.get(b"content-length")
        if length is not None:
            return int(length)
        if b"transfer-encoding" in headers:
            return self.service.settings.max_request_bytes
        return 0

    def _timed(self, receive: Receive) -> Receive:
        """``receive`` that raises BodyTimeout once the body is late; after it, no deadline."""
        timeout = self.service.settings.body_timeout_seconds
        deadline = asyncio.get_running_loop().time() + timeout
        complete = False

        async def timed_receive() -> Message:
            nonlocal complete
            if complete:
                return await receive()
            remaining = deadline - asyncio.get_running_loop().time()
            try:
                message = await asyncio.wait_for(receive(), max(remaining, 0.0))
            except TimeoutError:
                self.service.metrics.timeouts.labels("body").inc()
                raise BodyTimeout(timeout) from None
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        return timed_receive

    async def _buffer_chunked(self, headers: dict[bytes, bytes], receive: Receive) -> Receive:
        """A chunked body is read here, up to the limit, and replayed downstream."""
        if b"content-length" in headers or b"transfer-encoding" not in headers:
            return receive
        return await buffered(receive, self.service.settings.max_request_bytes)

    def _too_large(self, scope: Scope) -> JSONResponse:
        limit = self.service.settings.max_request_bytes
        message = f"request body over {limit} bytes; split the request"
        return error_response(413, "body_too_large", message, path=scope["path"])
