"""What an annotator does: get the next task, answer or skip it, undo, see how far they are.

Plain functions over a session, shared by the pages and the JSON API so both behave the same.
Every label is bound to the annotator the caller authenticated; nothing here takes an annotator
id from a request.

Which task comes next:

1. a gold task the annotator has not seen, once every ``gold_every`` tasks;
2. otherwise a task still short of its ``k`` labels that this annotator has neither labeled nor
   skipped: least certain for the reward model first (when one scored them), then the tasks with
   fewest labels, then import order.

Two annotators may be handed the same task at the same moment; both labels are kept (a task
then has more than ``k``), so concurrent work never loses anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, exists, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from reward_service.feedback.models import Annotator, Label, Task, utcnow
from reward_service.feedback.tasks import check_answer

DEFAULT_GOLD_EVERY = 10


class LabelingError(Exception):
    """A request the annotator can fix; ``status`` is the HTTP status it maps to."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Progress:
    labeled: int
    skipped: int
    remaining: int

    def as_dict(self) -> dict[str, int]:
        return {"labeled": self.labeled, "skipped": self.skipped, "remaining": self.remaining}


def _live(annotator_id: int | None = None):
    condition = Label.retracted_at.is_(None)
    if annotator_id is not None:
        condition = and_(condition, Label.annotator_id == annotator_id)
    return condition


def _open_tasks(annotator: Annotator):
    """Tasks this annotator may still be given, with their live (non-skip) label counts."""
    counts = (
        select(Label.task_id, func.count().label("n"))
        .where(_live(), Label.skipped.is_(False))
        .group_by(Label.task_id)
        .subquery()
    )
    seen = exists().where(Label.task_id == Task.id, _live(annotator.id))
    n_labels = func.coalesce(counts.c.n, 0)
    query = (
        select(Task)
        .outerjoin(counts, counts.c.task_id == Task.id)
        .where(~seen, (Task.gold.is_not(None)) | (n_labels < Task.k))
    )
    return query, n_labels


def gold_due(session: Session, annotator: Annotator, gold_every: int) -> bool:
    """Whether the next task should be gold: the annotator's gold_every-th, 2·gold_every-th, …
    task is, counting what they answered or skipped, so the share holds whatever their pace."""
    if gold_every <= 0:
        return False
    rows = session.execute(
        select(Task.gold.is_not(None), func.count())
        .join(Label, Label.task_id == Task.id)
        .where(_live(annotator.id))
        .group_by(Task.gold.is_not(None))
    ).all()
    seen = {bool(is_gold): n for is_gold, n in rows}
    gold, total = seen.get(True, 0), sum(seen.values())
    return (gold + 1) * gold_every <= total + 1


def next_task(
    session: Session, annotator: Annotator, gold_every: int = DEFAULT_GOLD_EVERY
) -> Task | None:
    query, n_labels = _open_tasks(annotator)
    if gold_due(session, annotator, gold_every):
        gold = session.scalar(query.where(Task.gold.is_not(None)).order_by(Task.id).limit(1))
        if gold is not None:
            return gold
    regular = query.where(Task.gold.is_(None)).order_by(
        Task.uncertainty.is_(None), Task.uncertainty, n_labels, Task.id
    )
    task = session.scalar(regular.limit(1))
    if task is None:
        # Nothing regular left: the remaining gold tasks still want an answer.
        task = session.scalar(query.order_by(Task.id).limit(1))
    return task


def progress(session: Session, annotator: Annotator) -> Progress:
    done = dict(
        session.execute(
            select(Label.skipped, func.count()).where(_live(annotator.id)).group_by(Label.skipped)
        ).all()
    )
    query, _ = _open_tasks(annotator)
    remaining = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    return Progress(done.get(False, 0), done.get(True, 0), remaining)


def get_task(session: Session, task_id: int) -> Task:
    task = session.get(Task, task_id)
    if task is None:
        raise LabelingError(404, "not_found", f"no task {task_id}")
    return task


def live_label(session: Session, annotator: Annotator, task_id: int) -> Label | None:
    return session.scalar(select(Label).where(Label.task_id == task_id, _live(annotator.id)))


def submit(
    session: Session,
    annotator: Annotator,
    task_id: int,
    answer: Any = None,
    skip: bool = False,
    unsafe: list[bool] | None = None,
) -> Label:
    """Record an answer (or a skip) for the annotator; 409 if they already have one live."""
    task = get_task(session, task_id)
    if skip == (answer is not None):
        raise LabelingError(422, "invalid_request", "send either an answer or skip, not both")
    if not skip:
        try:
            answer = check_answer(task.kind, len(task.responses), answer)
        except ValueError as exc:
            raise LabelingError(422, "invalid_answer", f"task {task.id}: {exc}") from exc
    if unsafe is not None and len(unsafe) != len(task.responses):
        raise LabelingError(
            422,
            "invalid_request",
            f"unsafe needs one flag per response ({len(task.responses)}), got {len(unsafe)}",
        )
    if live_label(session, annotator, task.id) is not None:
        raise LabelingError(409, "conflict", f"task {task.id} is already answered; undo it first")
    label = Label(
        task_id=task.id, annotator_id=annotator.id, answer=answer, skipped=skip, unsafe=unsafe
    )
    session.add(label)
    try:
        session.flush()
    except IntegrityError as exc:
        # The same annotator answered in another tab between our check and this insert.
        raise LabelingError(
            409, "conflict", f"task {task.id} is already answered; undo it first"
        ) from exc
    return label


def undo(session: Session, annotator: Annotator) -> Label:
    """Retract the annotator's newest live label or skip; the task becomes theirs to redo."""
    label = session.scalar(
        select(Label).where(_live(annotator.id)).order_by(Label.id.desc()).limit(1)
    )
    if label is None:
        raise LabelingError(404, "nothing_to_undo", "nothing to undo")
    # Conditional update: two undos racing retract one label each, never the same one twice.
    retracted = session.execute(
        update(Label)
        .where(Label.id == label.id, Label.retracted_at.is_(None))
        .values(retracted_at=utcnow())
    )
    if retracted.rowcount != 1:
        raise LabelingError(409, "conflict", "that label was undone by another request")
    return label
