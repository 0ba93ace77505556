"""The JSON API's request and response bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from reward_service.feedback.labeling import Progress
from reward_service.feedback.models import Label, Task
from reward_service.feedback.tasks import MAX_RESPONSES

# Ids are 32-bit on PostgreSQL; a larger number is a bad request, not a database overflow.
MAX_ID = 2**31 - 1
TaskId = Annotated[int, Path(ge=1, le=MAX_ID)]


class ProgressOut(BaseModel):
    labeled: int = Field(description="Your live answers.")
    skipped: int = Field(description="Tasks you skipped.")
    remaining: int = Field(description="Tasks you can still be given.")

    @classmethod
    def of(cls, progress: Progress) -> ProgressOut:
        return cls(**progress.as_dict())


class TaskOut(BaseModel):
    id: int
    kind: Literal["pairwise", "ranking", "rating"]
    prompt: str
    responses: list[str]

    @classmethod
    def of(cls, task: Task) -> TaskOut:
        return cls(id=task.id, kind=task.kind, prompt=task.prompt, responses=task.responses)


class NextOut(BaseModel):
    task: TaskOut | None = Field(description="The next task for you; null when none is left.")
    progress: ProgressOut


class LabelIn(BaseModel):
    """An answer or a skip. The annotator is whoever the token belongs to, never a field."""

    model_config = ConfigDict(extra="forbid")

    task_id: StrictInt = Field(ge=1, le=MAX_ID)
    answer: StrictInt | list[StrictInt] | None = Field(
        None,
        description="pairwise: 0 or 1, the better response; ranking: every response index, "
        "best first; rating: 1 to 5.",
    )
    skip: StrictBool = False
    unsafe: list[StrictBool] | None = Field(
        None, max_length=MAX_RESPONSES, description="One flag per response: true if unsafe."
    )


class LabelOut(BaseModel):
    id: int
    task_id: int
    answer: int | list[int] | None
    skipped: bool
    unsafe: list[bool] | None
    labeled_at: datetime

    @classmethod
    def of(cls, label: Label) -> LabelOut:
        return cls(
            id=label.id,
            task_id=label.task_id,
            answer=label.answer,
            skipped=label.skipped,
            unsafe=label.unsafe,
            labeled_at=label.created_at,
        )


class LabelResult(BaseModel):
    label: LabelOut
    progress: ProgressOut


class Me(BaseModel):
    id: int
    name: str
