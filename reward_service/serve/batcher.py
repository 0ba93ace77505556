"""Dynamic batching: items from all concurrent requests share backend runs.

One :class:`Batcher` per model. Requests hand in already-tokenized items and await one future
each. The batcher loop takes queued items first in, first out, until a padded-token budget is
reached (or, when it was idle, until ``max_wait`` has passed), sorts them by length, splits them
where padding would cost more than another run (:func:`plan_batches`), and runs the backend in
its own worker thread, which releases the GIL, so the event loop keeps reading requests while
the model computes. Whatever arrives during a run forms the next batch: under load batches fill
by themselves, and an idle service answers a lone request after ``max_wait`` at most.

The queue is bounded: a request that would overflow it is refused at once with a retry hint
(HTTP 429) instead of growing memory and latency without limit.
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


class InferenceFailed(RuntimeError):
    """The backend raised on a batch; every request in it gets this one-line reason."""


@dataclass(frozen=True)
class BatchLimits:
    max_batch_tokens: int = 16384
    max_wait_s: float = 0.002
    split_cost_tokens: int = 64
    max_queue: int = 2048
    max_queue_delay_s: float = 0.0  # 0: admission by queue length only


@dataclass(eq=False)
class Job:
    """One request's items and where their scores land."""

    items: list[EncodedItem]
    future: asyncio.Future[np.ndarray]
    enqueued: float
    scores: np.ndarray = field(init=False)
    remaining: int = field(init=False)

    def __post_init__(self) -> None:
        self.scores = np.empty(len(self.items), dtype=np.float32)
        self.remaining = len(self.items)


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
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"infer-{key}")
        self._task: asyncio.Task[None] | None = None
        self._inputs = list(model.manifest.inputs)
        self._pad_id = model.manifest.pad_token_id
        self.tokens_per_second = 0.0  # running estimate, feeds Retry-After and admission

    # -- request side -----------------------------------------------------------------------

    async def submit(self, items: list[EncodedItem]) -> np.ndarray:
        """Queue a request's items; returns their scores in order once every batch ran."""
        if not items:
            return np.empty(0, dtype=np.float32)
        self._admit(items)
        job = Job(items, asyncio.get_running_loop().create_future(), time.perf_counter())
        self._queue.extend((job, i) for i in range(len(items)))
        self._queued_tokens += sum(len(item.ids) for item in items)
        self._metrics.queue_depth.labels(self.key).set(len(self._queue))
        self._wake.set()
        return await job.future

    def _admit(self, items: list[EncodedItem]) -> None:
        if len(self._queue) + len(items) > self.limits.max_queue:
            raise QueueFull(
                f"queue of {self.key} is full ({len(self._queue)} items queued, "
                f"limit {self.limits.max_queue})",
                self.retry_after(),
            )
        if self.limits.max_queue_delay_s and self.tokens_per_second:
            wait = (self._queued_tokens + sum(len(i.ids) for i in items)) / self.tokens_per_second
            if wait > self.limits.max_queue_delay_s:
                raise QueueFull(
                    f"queue of {self.key} would wait {wait:.2f}s, over the "
                    f"{self.limits.max_queue_delay_s:.2f}s limit",
                    self.retry_after(),
                )

    def retry_after(self) -> int:
        if not self.tokens_per_second:
            return 1
        return max(1, math.ceil(self._queued_tokens / self.tokens_per_second))

    @property
    def depth(self) -> int:
        return len(self._queue)

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
            started = time.perf_counter()
            try:
                await loop.run_in_executor(self._executor, self._run, batch, started)
            except Exception as exc:  # a backend failure must not kill the loop
                log.exception("%s: batch of %d items failed", self.key, len(batch))
                self._fail(batch, InferenceFailed(f"{type(exc).__name__}: {exc}"))
                continue
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
        batch: list[tuple[Job, int]] = []
        width = 0
        while self._queue:
            job, index = self._queue[0]
            n = len(job.items[index].ids)
            if job.future.done():  # the client went away: skip its items
                self._queue.popleft()
                self._queued_tokens -= n
                continue
            new_width = max(width, n)
            if batch and new_width * (len(batch) + 1) > self.limits.max_batch_tokens:
                break
            self._queue.popleft()
            self._queued_tokens -= n
            batch.append((job, index))
            width = new_width
        self._metrics.queue_depth.labels(self.key).set(len(self._queue))
        return batch

    def _run(self, batch: list[tuple[Job, int]], started: float) -> None:
        """Worker thread: length-sort, split, pad and score; writes into each job's array."""
        m = self._metrics
        for job, _ in batch:
            m.queue_wait.labels(self.key).observe(started - job.enqueued)
        items = [job.items[index] for job, index in batch]
        lengths = np.fromiter((len(item.ids) for item in items), dtype=np.int64, count=len(items))
        order = np.argsort(lengths, kind="stable")
        runs = plan_batches(lengths[order], self.limits.split_cost_tokens)
        for begin, end in runs:
            rows = order[begin:end]
            encoded = pad([items[r] for r in rows], self._pad_id)
            t0 = time.perf_counter()
            scores = self.model.backend.run(encoded.feeds(self._inputs))
            seconds = time.perf_counter() - t0
            for r, score in zip(rows.tolist(), scores.tolist(), strict=True):
                job, index = batch[r]
                job.scores[index] = score
            real = int(lengths[rows].sum())
            m.inference_seconds.labels(self.key).observe(seconds)
            m.batch_size.labels(self.key).observe(len(rows))
            m.batch_padded_tokens.labels(self.key).observe(encoded.input_ids.size)
            m.tokens_scored.labels(self.key).inc(real)
            self._observe_speed(real, seconds)

    def _observe_speed(self, tokens: int, seconds: float) -> None:
        speed = tokens / max(seconds, 1e-6)
        old = self.tokens_per_second
        self.tokens_per_second = speed if not old else 0.8 * old + 0.2 * speed

    def _resolve(self, batch: list[tuple[Job, int]]) -> None:
        for job, _ in batch:
            job.remaining -= 1
            if job.remaining == 0 and not job.future.done():
                job.future.set_result(job.scores)

    def _fail(self, batch: list[tuple[Job, int]], exc: Exception) -> None:
        for job, _ in batch:
            if not job.future.done():
                job.future.set_exception(exc)
