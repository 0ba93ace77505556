"""Every failure as a clear 4xx: JSON ``{"error": {"code", "message"}}`` on the API (the
reward service's shape), a short HTML page on the labeling pages. Never a traceback."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException

from reward_service.feedback.labeling import LabelingError
from reward_service.feedback.pages import message_page

log = logging.getLogger("reward_service.feedback")

CODES = {
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
}
API_PREFIX = "/api/"


def error_response(
    request: Request, status: int, code: str, message: str, headers: dict | None = None
) -> Response:
    if request.url.path.startswith(API_PREFIX):
        return JSONResponse(
            {"error": {"code": code, "message": message}}, status_code=status, headers=headers
        )
    page = message_page("Error", message)
    return HTMLResponse(page.html, status_code=status, headers={**page.headers, **(headers or {})})


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors()[:3]:
        where = ".".join(str(p) for p in error.get("loc", ()))
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install(app: FastAPI) -> None:
    @app.exception_handler(LabelingError)
    async def _labeling(request: Request, exc: LabelingError) -> Response:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return error_response(request, exc.status, exc.code, exc.message, headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        return error_response(request, 422, "invalid_request", _validation_message(exc))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> Response:
        code = CODES.get(exc.status_code, "error")
        return error_response(request, exc.status_code, code, str(exc.detail), exc.headers)

    @app.exception_handler(OperationalError)
    async def _database(request: Request, exc: OperationalError) -> Response:
        # The database is down or locked past its timeout: the client may retry.
        log.error("database error on %s %s: %s", request.method, request.url.path, exc.orig)
        return error_response(
            request,
            503,
            "unavailable",
            "the database is unavailable; try again shortly",
            {"Retry-After": "5"},
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(request, 500, "internal", f"internal error: {type(exc).__name__}")
