"""Active selection: ask the reward service which tasks its model is least sure about.

For every pair of responses in a task, ``/v1/compare`` gives P(a ≻ b) under the served model's
Bradley–Terry scores; a task's uncertainty is the smallest |P − 0.5| over its pairs, and tasks
are served smallest first. A label where the model is already sure teaches it little.

Like a trainer, this talks to the service over HTTP only. Tasks remember which model version
scored them (``name@version``), so a newly published version gets every open task rescored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import combinations

import httpx
from sqlalchemy import select

from reward_service.feedback.db import Database
from reward_service.feedback.models import Task

log = logging.getLogger("reward_service.feedback")

PAIRS_PER_REQUEST = 64  # well under the service's default 256 items per request
RETRIES = 5


class RewardServiceError(RuntimeError):
    """The reward service cannot be reached or refuses; the message says which URL and why."""


def uncertainty(probabilities: Iterable[float]) -> float:
    """How close the model is to a coin flip on its hardest pair: 0 is a coin flip, 0.5 sure."""
    return min(abs(p - 0.5) for p in probabilities)


def retry_after(header: str | None, default: float) -> float:
    """Seconds from a ``Retry-After`` header; its HTTP-date form falls back to ``default``."""
    try:
        return min(max(float(header), 0.0), 60.0) if header else default
    except ValueError:
        return default


def response_pairs(n_responses: int) -> list[tuple[int, int]]:
    return list(combinations(range(n_responses), 2))


@dataclass
class RewardService:
    """A small synchronous client for the two routes active selection needs."""

    url: str
    model: str | None = None
    api_key: str | None = None
    timeout_s: float = 60.0

    def __post_init__(self) -> None:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self.client = httpx.Client(
            base_url=self.url.rstrip("/"), headers=headers, timeout=self.timeout_s
        )

    def close(self) -> None:
        self.client.close()

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        """One request, retried with backoff on connection errors, 429 and 503."""
        attempt = 0
        while True:
            attempt += 1
            retry = attempt < RETRIES
            wait = 0.2 * 2**attempt
            try:
                response = self.client.request(method, path, json=body)
            except httpx.TransportError as exc:
                if not retry:
                    raise RewardServiceError(f"{self.url}{path}: {exc}") from exc
                time.sleep(wait)
                continue
            if response.status_code in (429, 503) and retry:
                time.sleep(retry_after(response.headers.get("retry-after"), wait))
                continue
            if response.status_code != 200:
                raise RewardServiceError(
                    f"{self.url}{path}: HTTP {response.status_code}: {response.text[:300]}"
                )
            return response.json()

    def model_key(self) -> str:
        """``name@version`` of the model to ask: the named one's newest, else the default's."""
        name = self.model
        if not name:
            listing = self._call("GET", "/v1/models")
            name = listing.get("default")
            if not name:
                names = ", ".join(card["id"] for card in listing.get("data", []))
                raise RewardServiceError(
                    f"{self.url} serves several models ({names}) and no default: name one with "
                    "--reward-model"
                )
        return self._call("GET", f"/v1/models/{name}")["id"]

    def probabilities(self, model_key: str, pairs: list[tuple[str, str, str]]) -> list[float]:
        out: list[float] = []
        for start in range(0, len(pairs), PAIRS_PER_REQUEST):
            chunk = pairs[start : start + PAIRS_PER_REQUEST]
            body = {
                "model": model_key,
                "pairs": [{"prompt": p, "chosen": a, "rejected": b} for p, a, b in chunk],
            }
            out.extend(self._call("POST", "/v1/compare", body)["probabilities"])
        return out


def score_open_tasks(
    database: Database,
    service: RewardService,
    on_progress: Callable[[int, int], None] | None = None,
    chunk_tasks: int = 256,
) -> int:
    """Score every comparable, non-gold task not yet scored by the current model version."""
    key = service.model_key()
    with database.read() as session:
        todo = session.scalars(
            select(Task.id).where(
                Task.gold.is_(None),
                Task.kind != "rating",
                (Task.scored_by.is_(None)) | (Task.scored_by != key),
            )
        ).all()
    done = 0
    for start in range(0, len(todo), chunk_tasks):
        ids = todo[start : start + chunk_tasks]
        with database.read() as session:
            tasks = session.scalars(select(Task).where(Task.id.in_(ids)).order_by(Task.id)).all()
        pairs, owners = [], []
        for task in tasks:
            for i, j in response_pairs(len(task.responses)):
                pairs.append((task.prompt, task.responses[i], task.responses[j]))
                owners.append(task.id)
        probabilities = service.probabilities(key, pairs)
        per_task: dict[int, list[float]] = {}
        for owner, p in zip(owners, probabilities, strict=True):
            per_task.setdefault(owner, []).append(p)
        with database.write() as session:
            for task_id, ps in per_task.items():
                task = session.get(Task, task_id)
                task.uncertainty = uncertainty(ps)
                task.scored_by = key
        done += len(ids)
        if on_progress:
            on_progress(done, len(todo))
    return len(todo)
