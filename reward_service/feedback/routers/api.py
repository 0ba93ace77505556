"""The JSON API: the same actions as the pages, for scripts and simulated annotators."""

from __future__ import annotations

from fastapi import APIRouter, Request

from reward_service.feedback import labeling
from reward_service.feedback.auth import AnnotatorDep
from reward_service.feedback.schemas import (
    LabelIn,
    LabelOut,
    LabelResult,
    Me,
    NextOut,
    ProgressOut,
    TaskId,
    TaskOut,
)

router = APIRouter(prefix="/api/v1", tags=["labeling"])


@router.get("/me")
def me(annotator: AnnotatorDep) -> Me:
    return Me(id=annotator.id, name=annotator.name)


@router.get("/next")
def next_task(annotator: AnnotatorDep, request: Request) -> NextOut:
    """The task you should do next (null when none is left), and your progress."""
    with request.app.state.database.read() as session:
        task = labeling.next_task(session, annotator, request.app.state.settings.gold_every)
        return NextOut(
            task=TaskOut.of(task) if task else None,
            progress=ProgressOut.of(labeling.progress(session, annotator)),
        )


@router.get("/tasks/{task_id}")
def get_task(task_id: TaskId, annotator: AnnotatorDep, request: Request) -> TaskOut:
    with request.app.state.database.read() as session:
        return TaskOut.of(labeling.get_task(session, task_id))


@router.get("/progress")
def progress(annotator: AnnotatorDep, request: Request) -> ProgressOut:
    with request.app.state.database.read() as session:
        return ProgressOut.of(labeling.progress(session, annotator))


@router.post("/labels", status_code=201)
def submit(body: LabelIn, annotator: AnnotatorDep, request: Request) -> LabelResult:
    """Answer or skip a task as the token's annotator; committed before the response is sent."""
    database = request.app.state.database
    with database.write() as session:
        label = labeling.submit(
            session, annotator, body.task_id, body.answer, body.skip, body.unsafe
        )
        out = LabelOut.of(label)
    with database.read() as session:
        return LabelResult(
            label=out, progress=ProgressOut.of(labeling.progress(session, annotator))
        )


@router.post("/undo")
def undo(annotator: AnnotatorDep, request: Request) -> LabelResult:
    """Retract your newest answer or skip; its task is yours to answer again."""
    database = request.app.state.database
    with database.write() as session:
        out = LabelOut.of(labeling.undo(session, annotator))
    with database.read() as session:
        return LabelResult(
            label=out, progress=ProgressOut.of(labeling.progress(session, annotator))
        )
