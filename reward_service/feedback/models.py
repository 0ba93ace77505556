"""The labeling database: annotators, tasks and labels (SQLAlchemy 2.0 typed models).

A label is never deleted: undo stamps ``retracted_at``, so an audit can always see what was
clicked and when. At most one live label per (task, annotator) is enforced by a partial unique
index, which both SQLite and PostgreSQL support, so a double key press cannot count twice.
The schema itself is owned by the alembic migrations beside this module; a test checks that
these models and the migrations agree.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Index, String, Text, TypeDecorator, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

TaskKind = Literal["pairwise", "ranking", "rating"]
KINDS: tuple[TaskKind, ...] = ("pairwise", "ranking", "rating")
RATING_SCALE = (1, 5)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes on every backend (SQLite hands back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("store aware datetimes only")
        return value.astimezone(timezone.utc) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value


class Base(DeclarativeBase):
    pass


class Annotator(Base):
    __tablename__ = "annotators"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    # sha256 of the login token: the token is 256 random bits, so a fast hash cannot be brute
    # forced, and a leaked database does not let anyone log in.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    excluded: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Task(Base):
    __tablename__ = "tasks"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    prompt: Mapped[str] = mapped_column(Text)
    responses: Mapped[list[str]] = mapped_column(JSON)
    # How many annotators should label it; gold tasks go to everyone regardless.
    k: Mapped[int] = mapped_column(default=1)
    # The known answer of a gold task, shaped like a label's answer.
    gold: Mapped[Any | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    # sha256 of (kind, prompt, responses): importing the same file twice adds nothing.
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    # |P(a > b) - 0.5| from the reward service, smallest served first; None until scored.
    uncertainty: Mapped[float | None] = mapped_column(Float, nullable=True)
    scored_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    labels: Mapped[list[Label]] = relationship(back_populates="task")


class Label(Base):
    __tablename__ = "labels"
    __table_args__ = (
        Index(
            "uq_labels_live",
            "task_id",
            "annotator_id",
            unique=True,
            sqlite_where=text("retracted_at IS NULL"),
            postgresql_where=text("retracted_at IS NULL"),
        ),
        Index("ix_labels_annotator", "annotator_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), index=True)
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotators.id"))
    # pairwise: index of the better response; ranking: indices best first; rating: 1-5.
    # None for a skip.
    answer: Mapped[Any | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    skipped: Mapped[bool] = mapped_column(default=False)
    # One bool per response: flagged unsafe by this annotator.
    unsafe: Mapped[list[bool] | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    retracted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    task: Mapped[Task] = relationship(back_populates="labels")
    annotator: Mapped[Annotator] = relationship()
