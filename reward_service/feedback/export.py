"""Export labels as training data that ``reward-service train --data FILE`` reads.

One line per label, so k annotators on one task give k lines (disagreeing votes then pull the
reward model toward an uncertain margin, as they should). Every line keeps who labeled it and
when: ``annotator``, ``annotator_id``, ``labeled_at`` (UTC ISO-8601), ``task_id``, ``label_id``;
the trainer ignores fields it does not use.

- ``pairwise``: ``prompt``, ``chosen``, ``rejected``; a ranking of K gives its C(K,2) pairs.
- ``rankings``: ``prompt``, ``responses`` best first; a comparison is a ranking of two.
- ``ratings``: ``prompt``, ``response``, ``score`` (1-5).
- ``safety``: ``prompt``, ``response``, ``safe``: one line per response of every label that
  carries safety flags (the page always sends them; unflagged means the annotator judged it
  safe). The binary safety format of the cost model.

Left out: skips, undone labels, gold tasks (they measure annotators; ``--include-gold`` keeps
them), annotators marked excluded or named with ``--exclude``, and labels the chosen format
cannot express (ratings in a pairwise file); the summary counts each.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from reward_service.feedback.models import Annotator, Label, Task

ExportFormat = Literal["pairwise", "rankings", "ratings", "safety"]
FORMATS: tuple[ExportFormat, ...] = ("pairwise", "rankings", "ratings", "safety")


@dataclass
class ExportSummary:
    lines: int = 0
    labels: int = 0
    left_out: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict:
        return {"lines": self.lines, "labels": self.labels, "left_out": dict(self.left_out)}


def label_rows(session: Session) -> Iterator[tuple[Label, Task, Annotator]]:
    """Every live label, oldest first, with its task and annotator."""
    query = (
        select(Label, Task, Annotator)
        .join(Task, Label.task_id == Task.id)
        .join(Annotator, Label.annotator_id == Annotator.id)
        .where(Label.retracted_at.is_(None))
        .order_by(Label.id)
    )
    yield from session.execute(query).tuples()


def records(fmt: ExportFormat, label: Label, task: Task) -> list[dict]:
    """The training records one label gives in a format; empty if the format cannot hold it."""
    responses = task.responses
    if fmt == "safety":
        if label.unsafe is None:
            return []
        return [
            {"prompt": task.prompt, "response": r, "safe": not flag}
            for r, flag in zip(responses, label.unsafe, strict=True)
        ]
    if task.kind == "rating":
        if fmt != "ratings":
            return []
        return [{"prompt": task.prompt, "response": responses[0], "score": label.answer}]
    if fmt == "ratings":
        return []
    order = [label.answer, 1 - label.answer] if task.kind == "pairwise" else label.answer
    ranked = [responses[i] for i in order]
    if fmt == "rankings":
        return [{"prompt": task.prompt, "responses": ranked}]
    return [
        {"prompt": task.prompt, "chosen": better, "rejected": worse}
        for better, worse in combinations(ranked, 2)
    ]


def export_labels(
    session: Session,
    output: Path,
    fmt: ExportFormat,
    exclude: frozenset[str] = frozenset(),
    include_gold: bool = False,
) -> ExportSummary:
    """Write the file atomically (a temporary file renamed into place); nothing on failure."""
    summary = ExportSummary()
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.partial")
    with partial.open("w", encoding="utf-8") as fh:
        for label, task, annotator in label_rows(session):
            if label.skipped:
                summary.left_out["skipped"] += 1
                continue
            if annotator.excluded or annotator.name in exclude:
                summary.left_out["excluded annotator"] += 1
                continue
            if task.gold is not None and not include_gold:
                summary.left_out["gold task"] += 1
                continue
            lines = records(fmt, label, task)
            if not lines:
                summary.left_out[f"{task.kind} label, not in {fmt}"] += 1
                continue
            provenance = {
                "annotator": annotator.name,
                "annotator_id": annotator.id,
                "labeled_at": label.created_at.isoformat(),
                "task_id": task.id,
                "label_id": label.id,
            }
            for record in lines:
                fh.write(json.dumps({**record, **provenance}, ensure_ascii=False) + "\n")
            summary.labels += 1
            summary.lines += len(lines)
        fh.flush()
        os.fsync(fh.fileno())
    if summary.lines == 0:
        partial.unlink()
        return summary
    partial.replace(output)
    return summary
