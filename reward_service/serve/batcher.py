"""Dynamic batching: items from all concurrent requests share backend runs.

One :class:`Batcher` per model. A request is admitted first (:meth:`Batcher.admit`, before it is
tokenized, so an overloaded service spends nothing on work it will refuse), then hands in its
tokenized items and awaits one future. The batcher loop takes queued items first in, first out,
until a padded-token budget is reached (or, when it was idle, until ``max_wait`` has passed),
sorts them by length, splits them where padding would cost more than another run
(:func:`plan_batches`), and runs the backend in its own worker thread, which releases the GIL,
so the event loop keeps reading requests while the model computes. Whatever arrives during a run
forms the next batch: under load batches fill by themselves, and an idle service answers a lone
request after ``max_wait`` at most.

Admission is bounded by queued items (memory) and by the tokens of work ahead of a request:
queued, being tokenized and running (latency: a few batches of work wait a few batch-times, on
any device), and optionally by that work's duration at the measured speed. A refused request
gets HTTP 429 with a ``Retry-After`` at once, instead of growing memory and latency without
limit.

Faults stay with the request that caused them. A run that raises is re-run request by request,
then item by item, so batch-mates still get their scores and only the items the backend cannot
score fail; a run that merely needed to be smaller succeeds that way. A score that is not a
finite number fails its own request, naming the items, rather than being sent as a number.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from reward_service.scorer import LoadedModel
from reward_service.serve.metrics import Metrics
from reward_service.template import EncodedItem, pad

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The model's queue cannot take the request now; retry after ``retry_after`` seconds."""

    def __init__(self, reason: str, retry_after: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class ItemsFailed(Exception):
    """Some items of a request could not be scored; ``items`` are their request indices.

    ``kind`` is ``"non_finite"`` (the model returned NaN or an infinity) or ``"error"`` (the
    backend raised on these items even when run alone).
    """

    def __init__(self, kind: str, items: list[int], detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.items = items
        self.detail = detail


class Aborted(Exception):
    """The service stopped before the request's items were scored (the drain deadline)."""


@dataclass(frozen=True)
class BatchLimits:
    max_batch_tokens: int = 16384
    max_wait_s: float = 0.002
    split_cost_tokens: int = 64
    max_queue: int = 2048
    max_queue_tokens: int = 3 * 16384  # work ahead of a request; 0: no bound
    max_queue_delay_s: float = 0.0  # 0: no bound on the estimated wait


@dataclass(eq=False)
class Job:
    """One request's items and where their scores land."""

    items: list[EncodedItem]
    future: asyncio.Future[np.ndarray]
    enqueued: float
    scores: np.ndarray = field(init=False)
    remaining: int = field(init=False)
    failures: dict[str, list[int]] = field(default_factory=dict)  # kind -> item indices
    detail: str = ""

    def __post_init__(self) -> None:
        self.scores = np.empty(len(self.items), dtype=np.float32)
        self.remaining = len(self.items)

    def fail(self, kind: str, index: int, detail: str = "") -> None:
        self.failures.setdefault(kind, []).append(index)
        self.detail = self.detail or detail


@dataclass(frozen=True)
class Ticket:
    """Room held for a request between admission and the end of its tokenization."""

    items: int
    tokens: int


def plan_batches(lengths: np.ndarray, split_cost: float) -> list[tuple[int, int]]:
    """Split ascending ``lengths`` into runs ``[start, end)`` that minimise padded work.

    A run costs ``split_cost + n * max(length)`` token-equivalents: every item is padded to the
    run's longest, and each run pays a fixed overhead. Because the lengths are sorted, the best
    partition is contiguous and dynamic programming finds it exactly: ``best[j]`` is the cheapest
    way to cover the first ``j`` items, ending in a run ``[i, j)`` whose width is
    ``lengths[j-1]``. O(n²) in numpy over at most a few hundred items.
    """
    n = len(lengths)
    if n == 0:
        return []
    best = np.zeros(n + 1)
    start = np.zeros(n + 1, dtype=np.int64)
    for j in range(1, n + 1):
        i = np.arange(j)
        cost = best[:j] + split_cost + (j - i) * float(lengths[j - 1])
        k = int(np.argmin(cost))
        best[j], start[j] = cost[k], k
    runs = []
    j = n
    while j > 0:
        runs.append((int(start[j]), j))
        j = int(start[j])
    return runs[::-1]


def padded_tokens(lengths: np.ndarray, runs: list[tuple[int, int]]) -> int:
    return sum((end - begin) * int(lengths[end - 1]) for begin, end in runs)


class Batcher:
    def __init__(self, model: LoadedModel, key: str, limits: BatchLimits, metrics: Metrics):
        self.model = model
        self.key = key
        self.limits = limits
        self._metrics = metrics
        self._queue: deque[tuple[Job, int]] = deque()
        self._queued_tokens = 0
        self._held_items = 0  # admitted, still being tokenized
        self._held_tokens = 0
        self._running_tokens = 0  # in the batch the backend is computing now
        self._aborted: str | None = None  # why no more work is taken
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"infer-{key}")
        self._task: asyncio.Task[None] | None = None
        self._inputs = list(model.manifest.inputs)
        self._pad_id = model.manifest.pad_token_id
        self.tokens_per_second = 0.0  # running estimate: batch size, admission, Retry-After

    # -- request side -----------------------------------------------------------------------

    def admit(self, n_items: int, tokens: int) -> Ticket:
        """Hold room for a request of ``n_items`` (about ``tokens``) or raise QueueFull.

        The latency bound looks at the work *ahead* of the request, not at its own size: a
        large request into an idle service is served, and the queue it leaves behind turns the
        next requests away until it has shrunk.
        """
        if self._aborted is not None:
            raise Aborted(self._aborted)
        items = len(self._queue) + self._held_items
        if items + n_items > self.limits.max_queue:
            raise QueueFull(
                f"queue of {self.key} is full ({items} items queued, "
                f"limit {self.limits.max_queue})",
                self.retry_after(),
            )
        reason = self._over_bound()
        if reason:
            raise QueueFull(f"queue of {self.key} holds {reason}", self.retry_after())
        self._held_items += n_items
        self._held_tokens += tokens
        return Ticket(n_items, tokens)

    def release(self, ticket: Ticket) -> None:
        self._held_items -= ticket.items
        self._held_tokens -= ticket.tokens

    async def submit(self, items: list[EncodedItem]) -> np.ndarray:
        """Queue an admitted request's items; returns their scores in order once all ran.

        Cancelling the caller (the client went away) cancels the future, and the loop then
        skips the request's items that are still queued.
        """
        if self._aborted is not None:
            raise Aborted(self._aborted)
        if not items:
            return np.empty(0, dtype=np.float32)
        job = Job(items, asyncio.get_running_loop().create_future(), time.perf_counter())
        self._queue.extend((job, i) for i in range(len(items)))
        self._queued_tokens += sum(len(item.ids) for item in items)
        self._metrics.queue_depth.labels(self.key).set(len(self._queue))
        self._wake.set()
        return await job.future

    def tokens_ahead(self) -> int:
        """Tokens queued, being tokenized (estimated) and running."""
        return self._queued_tokens + self._held_tokens + self._running_tokens

    def running_seconds(self) -> float:
        """The batch in progress at the measured speed: at most what it still needs."""
        speed = self.tokens_per_second
        return self._running_tokens / speed if speed else 0.0

    def wait_ahead(self) -> float:
        """Seconds of that work at the measured speed (0 before anything was measured)."""
        speed = self.tokens_per_second
        return self.tokens_ahead() / speed if speed else 0.0

    def _over_bound(self) -> str:
        """Why the work ahead is over a latency bound, or "" when it is not."""
        limits = self.limits
        ahead = self.tokens_ahead()
        if limits.max_queue_tokens and ahead > limits.max_queue_tokens:
            return f"{ahead} tokens of work, over the bound of {limits.max_queue_tokens}"
        wait = self.wait_ahead()
        if limits.max_queue_delay_s and wait > limits.max_queue_delay_s:
            return f"{wait:.2f}s of work, over the {limits.max_queue_delay_s:.2f}s bound"
        return ""

    def overloaded(self) -> bool:
        """Whether any request would be refused now: the guard's cheap check before a body."""
        return bool(self._over_bound())

    def retry_after(self) -> int:
        return max(1, math.ceil(self.wait_ahead()))

    @property
    def depth(self) -> int:
        return len(self._queue)

    @property
    def idle(self) -> bool:
        """Nothing admitted, queued or running: stopping now fails no request."""
        return not (self._queue or self._held_items or self._running_tokens)

    def abort(self, reason: str) -> int:
        """Fail every queued request now, and any submitted later (the drain deadline);
        returns how many were queued."""
        self._aborted = reason
        jobs = {job for job, _ in self._queue}
        self._queue.clear()
        self._queued_tokens = 0
        for job in jobs:
            if not job.future.done():
                job.future.set_exception(Aborted(reason))
        self._metrics.queue_depth.labels(self.key).set(0)
        return len(jobs)

    # -- batcher side -----------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"batcher-{self.key}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._executor.shutdown(wait=True)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
            await self._fill()
            batch = self._take()
            if not batch:
                continue
            self._running_tokens = sum(len(job.items[i].ids) for job, i in batch)
            try:
                await loop.run_in_executor(self._executor, self._run, batch)
            finally:
                self._running_tokens = 0
            self._resolve(batch)

    async def _fill(self) -> None:
        """Wait up to max_wait after the oldest item for the batch to fill, never longer."""
        deadline = self._queue[0][0].enqueued + self.limits.max_wait_s
        while self._queued_tokens < self.limits.max_batch_tokens:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except TimeoutError:
                return

    def _take(self) -> list[tuple[Job, int]]:
        """First in, first out, while items x longest item stays within the token budget."""
        budget = self.limits.max_batch_tokens
        batch: list[tuple[Job, int]] = []
        width = 0
        while self._queue:
            job, index = self._queue[0]
            n = len(job.items[index].ids)
            if job.future.done():  # the client went away, or the request already failed
                self._queue.popleft()
                self._queued_tokens -= n
                if job.future.cancelled():
                    self._metrics.cancelled_items.labels(self.key).inc()
                continue
            new_width = max(width, n)
            if batch and new_width * (len(batch) + 1) > budget:
                break
            self._queue.popleft()
            self._queued_tokens -= n
            batch.append((job, index))
            width = new_width
        self._metrics.queue_depth.labels(self.key).set(len(self._queue))
        return batch

    def _run(self, batch: list[tuple[Job, int]]) -> None:
        """Worker thread: length-sort, split, pad and score into each job's array."""
        started = time.perf_counter()
        for job, _ in batch:
            self._metrics.queue_wait.labels(self.key).observe(started - job.enqueued)
        lengths = np.fromiter(
            (len(job.items[i].ids) for job, i in batch), dtype=np.int64, count=len(batch)
        )
        order = np.argsort(lengths, kind="stable")
        for begin, end in plan_batches(lengths[order], self.limits.split_cost_tokens):
            self._score_rows(batch, order[begin:end].tolist())
        self._observe_speed(int(lengths.sum()), time.perf_counter() - started)

    def _score_rows(self, batch: list[tuple[Job, int]], rows: list[int]) -> None:
        """Score ``rows`` of the batch in one run; if the backend raises, isolate the cause."""
        items = [batch[r][0].items[batch[r][1]] for r in rows]
        encoded = pad(items, self._pad_id)
        t0 = time.perf_counter()
        try:
            scores = self.model.backend.run(encoded.feeds(self._inputs))
        except Exception as exc:
            self._isolate(batch, rows, exc)
            return
        m = self._metrics
        m.inference_seconds.labels(self.key).observe(time.perf_counter() - t0)
        m.batch_size.labels(self.key).observe(len(rows))
        m.batch_padded_tokens.labels(self.key).observe(encoded.input_ids.size)
        m.tokens_scored.labels(self.key).inc(int(encoded.lengths.sum()))
        finite = np.isfinite(scores)
        for r, score, ok in zip(rows, scores.tolist(), finite.tolist(), strict=True):
            job, index = batch[r]
            job.scores[index] = score
            if not ok:
                job.fail("non_finite", index, f"{score}")

    def _isolate(self, batch: list[tuple[Job, int]], rows: list[int], exc: Exception) -> None:
        """Re-run a failed run request by request, then item by item; a lone item that still
        raises fails its own request alone."""
        if len(rows) == 1:
            job, index = batch[rows[0]]
            job.fail("error", index, f"{type(exc).__name__}: {_first_line(exc)}")
            return
        jobs: dict[Job, list[int]] = {}
        for r in rows:
            jobs.setdefault(batch[r][0], []).append(r)
        groups = list(jobs.values()) if len(jobs) > 1 else [[r] for r in rows]
        log.warning(
            "%s: a run of %d items raised (%s: %s); re-running it in %d parts",
            self.key,
            len(rows),
            type(exc).__name__,
            _first_line(exc),
            len(groups),
        )
        for group in groups:
            self._score_rows(batch, group)

    def _observe_speed(self, tokens: int, seconds: float) -> None:
        speed = tokens / max(seconds, 1e-6)
        old = self.tokens_per_second
        self.tokens_per_second = speed if not old else 0.8 * old + 0.2 * speed

    def _resolve(self, batch: list[tuple[Job, int]]) -> None:
        for job, _ in batch:
            job.remaining -= 1
            if job.future.done():
                continue
            if job.failures:
                kind = "error" if "error" in job.failures else "non_finite"
                items = sorted(job.failures[kind])
                self._metrics.failed_items.labels(self.key, kind).inc(len(items))
                job.future.set_exception(ItemsFailed(kind, items, job.detail))
            elif job.remaining == 0:
                job.future.set_result(job.scores)


def _first_line(exc: Exception) -> str:
    text = str(exc)
    return text.splitlines()[0][:300] if text else ""
