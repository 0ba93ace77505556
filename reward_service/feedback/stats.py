"""How labeling is going: labels per annotator, their pace, gold accuracy and agreement.

Pace counts only active time: gaps between one annotator's consecutive actions longer than
``IDLE_GAP_S`` are breaks, not work, so lunch does not halve anyone's throughput. Agreement is
computed per task kind, on the decision each label makes (the better response, the whole
order, or the rating), over live, non-skipped labels of non-gold tasks.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from itertools import combinations, pairwise
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from reward_service.feedback.agreement import cohen_kappa, krippendorff_alpha
from reward_service.feedback.models import KINDS, Annotator, Label, Task

IDLE_GAP_S = 300.0


def active_seconds(times: Sequence[datetime], idle_gap_s: float = IDLE_GAP_S) -> float:
    """Seconds spent working: the sum of gaps between consecutive actions, breaks left out."""
    ordered = sorted(times)
    gaps = ((b - a).total_seconds() for a, b in pairwise(ordered))
    return sum(g for g in gaps if g <= idle_gap_s)


def per_hour(actions: int, seconds: float) -> float | None:
    """Actions per active hour; the first action starts the clock, so it is not counted."""
    return (actions - 1) * 3600.0 / seconds if actions > 1 and seconds > 0 else None


def decision(answer: Any) -> Hashable:
    return tuple(answer) if isinstance(answer, list) else answer


@dataclass
class AnnotatorStats:
    id: int
    name: str
    excluded: bool
    labels: int = 0
    skipped: int = 0
    undone: int = 0
    labels_per_hour: float | None = None
    gold_labels: int = 0
    gold_correct: int = 0

    @property
    def gold_accuracy(self) -> float | None:
        return self.gold_correct / self.gold_labels if self.gold_labels else None


@dataclass
class PairAgreement:
    kind: str
    a: str
    b: str
    shared: int
    kappa: float


@dataclass
class Report:
    tasks: dict[str, int]
    complete: int
    gold_tasks: int
    annotators: list[AnnotatorStats]
    alpha: dict[str, float] = field(default_factory=dict)
    pairs: list[PairAgreement] = field(default_factory=list)

    def as_dict(self) -> dict:
        out = asdict(self)
        for row, stats in zip(out["annotators"], self.annotators, strict=True):
            row["gold_accuracy"] = stats.gold_accuracy
        return _nan_to_none(out)


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value


def build_report(session: Session) -> Report:
    tasks = dict(session.execute(select(Task.kind, func.count()).group_by(Task.kind)).all())
    gold_tasks = session.scalar(select(func.count()).where(Task.gold.is_not(None))) or 0
    annotators = {
        a.id: AnnotatorStats(a.id, a.name, a.excluded)
        for a in session.scalars(select(Annotator).order_by(Annotator.id))
    }
    times: dict[int, list[datetime]] = defaultdict(list)
    # decisions[kind][task_id][annotator_id] = the label's decision
    decisions: dict[str, dict[int, dict[int, Hashable]]] = defaultdict(lambda: defaultdict(dict))
    live_counts: dict[int, int] = defaultdict(int)
    rows = session.execute(select(Label, Task).join(Task, Label.task_id == Task.id)).tuples()
    for label, task in rows:
        who = annotators[label.annotator_id]
        if label.retracted_at is not None:
            who.undone += 1
            continue
        times[who.id].append(label.created_at)
        if label.skipped:
            who.skipped += 1
            continue
        who.labels += 1
        live_counts[task.id] += 1
        if task.gold is not None:
            who.gold_labels += 1
            who.gold_correct += decision(label.answer) == decision(task.gold)
        else:
            decisions[task.kind][task.id][who.id] = decision(label.answer)
    for who in annotators.values():
        who.labels_per_hour = per_hour(len(times[who.id]), active_seconds(times[who.id]))
    k_of = dict(session.execute(select(Task.id, Task.k).where(Task.gold.is_(None))).all())
    report = Report(
        tasks={kind: tasks.get(kind, 0) for kind in KINDS},
        complete=sum(1 for task_id, k in k_of.items() if live_counts[task_id] >= k),
        gold_tasks=gold_tasks,
        annotators=list(annotators.values()),
    )
    for kind, by_task in decisions.items():
        metric = "interval" if kind == "rating" else "nominal"
        report.alpha[kind] = krippendorff_alpha(
            [list(v.values()) for v in by_task.values()], metric
        )
        for a, b in combinations(sorted(annotators), 2):
            shared = [t for t in by_task.values() if a in t and b in t]
            if shared:
                kappa = cohen_kappa([t[a] for t in shared], [t[b] for t in shared])
                report.pairs.append(
                    PairAgreement(kind, annotators[a].name, annotators[b].name, len(shared), kappa)
                )
    return report


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return (
        "–"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else format(value, spec)
    )


def render(report: Report) -> str:
    """The report as text for a terminal."""
    lines = [
        "tasks: "
        + ", ".join(f"{n} {kind}" for kind, n in report.tasks.items())
        + f"; {report.complete} with k labels; {report.gold_tasks} gold",
        "",
        f"{'annotator':<24}{'labels':>8}{'skipped':>9}{'undone':>8}{'per hour':>10}"
        f"{'gold acc':>10}",
    ]
    for a in report.annotators:
        name = a.name + (" (excluded)" if a.excluded else "")
        gold = f"{_fmt(a.gold_accuracy)} /{a.gold_labels}" if a.gold_labels else "–"
        lines.append(
            f"{name:<24}{a.labels:>8}{a.skipped:>9}{a.undone:>8}"
            f"{_fmt(a.labels_per_hour, '.0f'):>10}{gold:>10}"
        )
    if report.alpha:
        lines += ["", "agreement (Krippendorff's alpha, all annotators):"]
        lines += [f"  {kind}: {_fmt(alpha)}" for kind, alpha in report.alpha.items()]
    if report.pairs:
        lines += ["", "agreement per pair (Cohen's kappa on shared tasks):"]
        lines += [
            f"  {p.kind:<9} {p.a} / {p.b}: {_fmt(p.kappa)} on {p.shared}" for p in report.pairs
        ]
    return "\n".join(lines)
