"""Tasks: what an annotator is asked, read from JSON Lines, and what a valid answer looks like.

Two line shapes are accepted, in one file or mixed:

- a task: ``{"prompt", "responses": [...]}`` with optional ``kind``, ``k`` and ``gold``;
- a completion, as ``ppo-client sample`` writes it: ``{"prompt", "response", ...}``. All
  completions of one prompt become one task, in the order the file lists them.

The kind follows from the number of responses (one is rated 1-5, two are compared, more are
ranked) unless ``kind`` says otherwise; ``--kind`` on the command line splits groups to fit
(four samples become two comparisons, or four ratings). A task's identity is its kind, prompt
and responses, so importing a file twice adds nothing the second time.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from reward_service.data.formats import json_lines
from reward_service.feedback.models import KINDS, RATING_SCALE, Task, TaskKind

MAX_RESPONSES = 9  # one key per response on the page


class TaskFileError(ValueError):
    """A task file that cannot be imported; the message starts with ``file:line:``."""


@dataclass
class TaskSpec:
    kind: TaskKind
    prompt: str
    responses: list[str]
    k: int = 1
    gold: Any = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        body = json.dumps([self.kind, self.prompt, self.responses], ensure_ascii=False)
        return hashlib.sha256(body.encode()).hexdigest()


def kind_for(n_responses: int) -> TaskKind:
    return "rating" if n_responses == 1 else "pairwise" if n_responses == 2 else "ranking"


def check_answer(kind: str, n_responses: int, answer: Any) -> Any:
    """The answer in its stored shape, or ValueError saying what a valid one is."""
    if kind == "pairwise":
        if isinstance(answer, bool) or answer not in (0, 1):
            raise ValueError("a comparison's answer is 0 or 1, the index of the better response")
        return int(answer)
    if kind == "ranking":
        if (
            not isinstance(answer, list)
            or any(isinstance(i, bool) or not isinstance(i, int) for i in answer)
            or sorted(answer) != list(range(n_responses))
        ):
            raise ValueError(
                f"a ranking's answer lists every response index 0..{n_responses - 1} once, "
                "best first"
            )
        return list(answer)
    if kind == "rating":
        low, high = RATING_SCALE
        if isinstance(answer, bool) or not isinstance(answer, int) or not low <= answer <= high:
            raise ValueError(f"a rating's answer is a whole number from {low} to {high}")
        return answer
    raise ValueError(f"unknown task kind {kind!r}; expected one of {', '.join(KINDS)}")


def split_to(kind: TaskKind, responses: list[str]) -> list[list[str]]:
    """Cut a group of responses into tasks of one kind: pairs, singles, or the whole ranking."""
    if kind == "ranking" and len(responses) > MAX_RESPONSES:
        raise ValueError(f"{len(responses)} responses to rank; at most {MAX_RESPONSES}")
    if kind == "rating":
        return [[r] for r in responses]
    if kind == "pairwise":
        if len(responses) < 2:
            raise ValueError("a comparison needs two responses")
        return [responses[i : i + 2] for i in range(0, len(responses) - 1, 2)]
    if len(responses) < 2:
        raise ValueError("a ranking needs at least two responses")
    return [responses]


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty string")
    return value


def _response(value: Any, what: str) -> str:
    """A response may be empty: policies do stop at once, and people must be able to say that
    saying nothing is worse (without those labels a reward model never learns it)."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string")
    return value


def _task_line(obj: dict, kind: TaskKind | None, k: int) -> list[TaskSpec]:
    prompt = _text(obj.get("prompt"), "prompt")
    responses = obj["responses"]
    if not isinstance(responses, list) or not responses:
        raise ValueError("responses must be a non-empty list of strings")
    responses = [_response(r, f"responses[{i}]") for i, r in enumerate(responses)]
    line_kind = obj.get("kind", kind)
    if line_kind is not None and line_kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}")
    line_k = obj.get("k", k)
    if isinstance(line_k, bool) or not isinstance(line_k, int) or line_k < 1:
        raise ValueError("k must be a whole number >= 1")
    meta = {key: v for key, v in obj.items() if key not in ("prompt", "responses", "kind", "k")}
    gold = meta.pop("gold", None)
    if gold is not None:
        final_kind = line_kind or kind_for(len(responses))
        if split_to(final_kind, responses) != [responses]:
            raise ValueError(f"a gold task must be one {final_kind} task as it stands")
        gold = check_answer(final_kind, len(responses), gold)
        return [TaskSpec(final_kind, prompt, responses, line_k, gold, meta)]
    final_kind = line_kind or kind_for(len(responses))
    return [
        TaskSpec(final_kind, prompt, part, line_k, None, meta)
        for part in split_to(final_kind, responses)
    ]


def read_tasks(path: Path, kind: TaskKind | None = None, k: int = 1) -> list[TaskSpec]:
    """Every task in a file, or TaskFileError at the first bad line."""
    tasks: list[TaskSpec] = []
    samples: dict[str, list[str]] = {}
    first_line: dict[str, int] = {}
    for lineno, obj in json_lines(path, TaskFileError):
        try:
            if "responses" in obj:
                tasks.extend(_task_line(obj, kind, k))
            elif "response" in obj:
                prompt = _text(obj.get("prompt"), "prompt")
                samples.setdefault(prompt, []).append(_response(obj["response"], "response"))
                first_line.setdefault(prompt, lineno)
            else:
                raise ValueError(
                    "expected prompt + responses (a task) or prompt + response "
                    f"(a ppo-client sample line); got fields {sorted(obj)}"
                )
        except (ValueError, TypeError) as exc:
            raise TaskFileError(f"{path}:{lineno}: {exc}") from exc
    for prompt, responses in samples.items():
        try:
            group_kind = kind or kind_for(len(responses))
            parts = split_to(group_kind, responses)
        except ValueError as exc:
            raise TaskFileError(f"{path}:{first_line[prompt]}: {exc}") from exc
        tasks.extend(TaskSpec(group_kind, prompt, part, k) for part in parts)
    if not tasks:
        raise TaskFileError(f"{path}: no tasks")
    return tasks


def add_tasks(session: Session, specs: Iterable[TaskSpec], source: str) -> tuple[int, int]:
    """Insert the tasks not already present; returns (added, already present)."""
    known = set(session.scalars(select(Task.digest)))
    added = present = 0
    for spec in specs:
        digest = spec.digest
        if digest in known:
            present += 1
            continue
        known.add(digest)
        session.add(
            Task(
                kind=spec.kind,
                prompt=spec.prompt,
                responses=spec.responses,
                k=spec.k,
                gold=spec.gold,
                digest=digest,
                meta={"source": source, **spec.meta},
            )
        )
        added += 1
    return added, present
