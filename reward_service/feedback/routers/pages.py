"""The pages people use: ``/login`` sets the session cookie, ``/`` shows the next task."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from reward_service.feedback import labeling
from reward_service.feedback.annotators import by_token
from reward_service.feedback.auth import COOKIE, AnnotatorDep, csrf_token
from reward_service.feedback.pages import Page, done_page, message_page, task_page
from reward_service.feedback.schemas import TaskId

router = APIRouter(include_in_schema=False)

SESSION_DAYS = 30


def html(page: Page, status: int = 200) -> HTMLResponse:
    return HTMLResponse(page.html, status_code=status, headers=page.headers)


@router.get("/login")
def login(request: Request, token: str = "") -> Response:
    """Trade the link's token for a session cookie, then drop the token from the address bar."""
    with request.app.state.database.read() as session:
        annotator = by_token(session, token)
    if annotator is None:
        page = message_page(
            "Login failed", "This login link is not valid (any more). Ask for a new one."
        )
        return html(page, 401)
    response = RedirectResponse("/", status_code=303, headers={"Referrer-Policy": "no-referrer"})
    response.set_cookie(
        COOKIE,
        token,
        max_age=SESSION_DAYS * 86400,
        httponly=True,
        samesite="lax",
        secure=request.app.state.settings.secure_cookies,
    )
    return response


@router.get("/")
def label_next(annotator: AnnotatorDep, request: Request) -> HTMLResponse:
    csrf = csrf_token(request.state.session_token)
    with request.app.state.database.read() as session:
        task = labeling.next_task(session, annotator, request.app.state.settings.gold_every)
        progress = labeling.progress(session, annotator)
    if task is None:
        return html(done_page(annotator.name, progress, csrf))
    return html(task_page(task, annotator.name, progress, csrf))


@router.get("/tasks/{task_id}")
def label_task(task_id: TaskId, annotator: AnnotatorDep, request: Request) -> Response:
    """One task by id (where undo sends you); one you already answered sends you on."""
    with request.app.state.database.read() as session:
        task = labeling.get_task(session, task_id)
        if labeling.live_label(session, annotator, task_id) is not None:
            return RedirectResponse("/", status_code=303)
        progress = labeling.progress(session, annotator)
    return html(task_page(task, annotator.name, progress, csrf_token(request.state.session_token)))
