"""One error shape for every failure: ``{"error": {"code", "message"}}`` with the right status.

Clients (ours and OpenRLHF's) branch on the status and show the message; a stable ``code`` lets
them do so without parsing prose. Anything a client sends that we did not anticipate must still
land here as a 4xx, never as a 500 with a traceback.

The Open Inference Protocol's routes (``/v2``) answer in that protocol's own shape instead,
``{"error": "<message>"}``: tritonclient and kserve read the string and fail on anything else.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
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


def is_open_inference(path: str) -> bool:
    return path == "/v2" or path.startswith("/v2/")


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, path: str = ""
) -> JSONResponse:
    body = message if is_open_inference(path) else {"code": code, "message": message}
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    """First few pydantic errors as ``body.inputs.0: Field required; …`` on one line."""
    parts = []
    errors = exc.errors()
    if errors and errors[0].get("loc") == ("body",) and isinstance(errors[0].get("input"), bytes):
        # FastAPI hands over raw bytes when the Content-Type is not JSON.
        return "the body must be a JSON object sent as Content-Type: application/json"
    for error in exc.errors()[:3]:
        where = ".".join(str(p) for p in error.get("loc", ()))
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    more = len(exc.errors()) - len(parts)
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
