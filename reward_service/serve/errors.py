"""One error shape for every failure: ``{"error": {"code", "message"}}`` with the right status.

Clients (ours and OpenRLHF's) branch on the status and show the message; a stable ``code`` lets
them do so without parsing prose. Anything a client sends that we did not anticipate must still
land here as a 4xx, never as a 500 with a traceback.

The Open Inference Protocol's routes (``/v2``) answer in that protocol's own shape instead,
``{"error": "<message>"}``: tritonclient and kserve read the string and fail on anything else.

Messages may quote a little of what the client sent (a model name, a field name), so they are
clipped and rendered as ASCII JSON: an error about a huge or unencodable value (a lone
surrogate) can neither grow the response nor fail to serialize it.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 500
MAX_QUOTE_CHARS = 64

STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "queue_full",
    503: "unavailable",
}


class ApiError(Exception):
    """Raised anywhere below a route; rendered by :func:`install` into the error shape."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


class AsciiJSONResponse(JSONResponse):
    """JSON with every non-ASCII character escaped: any Python string serializes."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False).encode("ascii")


def clip(value: object, limit: int = MAX_QUOTE_CHARS) -> str:
    """``repr`` of a client-supplied value, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def is_open_inference(path: str) -> bool:
    return path == "/v2" or path.startswith("/v2/")


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, path: str = ""
) -> JSONResponse:
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 1] + "…"
    body = message if is_open_inference(path) else {"code": code, "message": message}
    return AsciiJSONResponse({"error": body}, status_code=status, headers=headers)


def _where(loc: tuple) -> str:
    """``body.inputs.0``; a key the client invented is quoted, clipped, never whole."""
    return ".".join(str(p) if isinstance(p, int) else clip(p, 40).strip("'\"") for p in loc)


def _validation_message(exc: RequestValidationError) -> str:
    """First few pydantic errors as ``body.inputs.0: Field required; …`` on one line."""
    parts = []
    errors = exc.errors()
    if errors and errors[0].get("loc") == ("body",) and isinstance(errors[0].get("input"), bytes):
        # FastAPI hands over raw bytes when the Content-Type is not JSON.
        return "the body must be a JSON object sent as Content-Type: application/json"
    for error in errors[:3]:
        parts.append(f"{_where(error.get('loc', ()))}: {error.get('msg', 'invalid')}")
    more = len(errors) - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message = _validation_message(exc)
        return error_response(422, "invalid_request", message, path=request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = STATUS_CODES.get(exc.status_code, "error")
        path = request.url.path
        return error_response(exc.status_code, code, str(exc.detail), exc.headers, path)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug on our side: log the traceback for us, give the client one line.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        message = f"internal error: {type(exc).__name__}"
        return error_response(500, "internal", message, path=request.url.path)
