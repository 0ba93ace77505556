"""HTTP client for the reward service, usable from any training job.

The PPO trainer uses it to score rollouts while the next chunk generates; TRL's GRPO/RLOO
trainers take it as a ``reward_funcs`` entry; any script can call :meth:`RewardClient.score`.

All requests run on one private event loop in a background thread. That keeps a single
``httpx.AsyncClient`` (and its connection pool) bound to a single loop, whatever the caller is:
blocking code, a ``concurrent.futures.Future`` consumer, or another event loop awaiting
:meth:`RewardClient.ascore`. The module imports no torch, so a job that only needs rewards stays
light.

A reward is never silently missing: every chunk either gets exactly one score per input or the
whole call raises :class:`RewardServiceError` once the retry budget is spent.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import email.utils
import itertools
import math
import random
import threading
import time
from collections.abc import Coroutine, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar

import httpx

T = TypeVar("T")

#: Statuses that mean "the service is busy or briefly unavailable, ask again later": the queue is
#: full (429), the replica is not ready or draining (503), or a proxy in front of it lost the
#: upstream (502, 504). Any other error status is a problem with the request or a server bug,
#: which a retry would only repeat.
RETRYABLE_STATUS = frozenset({429, 502, 503, 504})

#: How long a replica that refused a connection is skipped by the round-robin, so a dead replica
#: costs one failed attempt per cooldown rather than one per request.
REPLICA_COOLDOWN_S = 5.0


class RewardServiceError(RuntimeError):
    """The reward service did not return a usable score for every input.

    ``status`` is the last HTTP status seen (``None`` when the last failure was a connection
    error or a timeout), ``code`` the service's machine-readable error code when it sent one.
    """

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date (RFC 9110).

    Returns ``None`` when the header is absent or unreadable, so the caller falls back to its own
    backoff instead of trusting garbage.
    """
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        now_dt = datetime.fromtimestamp(time.time() if now is None else now, tz=timezone.utc)
        return max(0.0, (when - now_dt).total_seconds())
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def backoff_delay(
    attempt: int, base: float, cap: float, rng: random.Random, retry_after: float | None = None
) -> float:
    """Delay before retry number ``attempt`` (0-based): "full jitter" exponential backoff.

    Full jitter, ``uniform(0, min(cap, base * 2**attempt))``, spreads the retries of many clients
    that failed together, so they do not return as one synchronized wave (AWS Architecture Blog,
    "Exponential Backoff and Jitter"). A server's ``Retry-After`` is a floor: it knows when it
    expects capacity, and asking earlier would only earn another 429. It is capped at ``cap`` so a
    misconfigured server cannot park a training job for hours.
    """
    jittered = rng.uniform(0.0, min(cap, base * (2.0**attempt)))
    if retry_after is None:
        return jittered
    return max(min(retry_after, cap), jittered)


def message_text(message: Any) -> str:
    """Plain text of one chat message's ``content`` (a string or a list of typed parts)."""
    content = message.get("content", "") if isinstance(message, dict) else message
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "") if isinstance(part, dict) else str(part) for part in content
        )
    return str(content)


def as_text(value: Any) -> str:
    """A prompt or completion as plain text: conversational ones join their messages' contents.

    TRL passes conversational datasets as lists of ``{"role", "content"}`` dicts; the reward model
    was trained on plain text, so the contents are joined with newlines and the roles dropped.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return message_text(value)
    if isinstance(value, Sequence):
        return "\n".join(message_text(m) for m in value)
    raise TypeError(f"expected a string or a list of chat messages, got {type(value).__name__}")


def chunked(n: int, size: int) -> list[range]:
    """Index ranges of consecutive chunks of at most ``size`` items covering ``range(n)``."""
    return [range(start, min(start + size, n)) for start in range(0, n, size)]


def error_message(response: httpx.Response) -> tuple[str, str | None]:
    """The service's ``{"error": {"code", "message"}}`` body as (message, code), or the raw text."""
    try:
        body = response.json()
        error = body["error"]
        return str(error.get("message", error)), error.get("code")
    except (ValueError, KeyError, TypeError, AttributeError):
        text = response.text.strip()
        return (text[:300] or response.reason_phrase), None


@dataclass
class _Replica:
    """One service URL and until when the round-robin skips it after a refused connection."""

    url: str
    down_until: float = 0.0


class RewardClient:
    """Scores (prompt, response) pairs with the reward service over HTTP.

    ``urls`` is one base URL or several replicas, used round-robin per request; a replica that
    fails is left for the next one. Inputs are split into chunks of ``chunk_size`` pairs, at most
    ``max_concurrency`` requests are in flight, and each chunk retries up to ``max_retries`` times
    on 429/502/503/504, connection errors and timeouts (``timeout`` seconds per request), waiting
    with full-jitter exponential backoff from ``backoff_base`` up to ``backoff_max`` seconds and
    never less than the server's ``Retry-After``. Other 4xx fail at once with the server's message.
    ``normalize`` asks the service for scores normalized with the model's reference mean/std.
    """

    def __init__(
        self,
        urls: str | list[str],
        model: str | None = None,
        *,
        api_key: str | None = None,
        chunk_size: int = 64,
        max_concurrency: int = 4,
        timeout: float = 30.0,
        max_retries: int = 6,
        backoff_base: float = 0.5,
        backoff_max: float = 20.0,
        normalize: bool = False,
    ) -> None:
        url_list = [urls] if isinstance(urls, str) else list(urls)
        if not url_list:
            raise ValueError("RewardClient needs at least one reward service URL")
        for name, value, low in (
            ("chunk_size", chunk_size, 1),
            ("max_concurrency", max_concurrency, 1),
            ("max_retries", max_retries, 0),
        ):
            if value < low:
                raise ValueError(f"{name} must be >= {low}, got {value}")
        if timeout <= 0 or backoff_base < 0 or backoff_max < 0:
            raise ValueError("timeout must be > 0 and backoff_base, backoff_max >= 0")
        self.urls = [u.rstrip("/") for u in url_list]
        self.model = model
        self.chunk_size = chunk_size
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.normalize = normalize
        # TRL names each reward function by ``__name__`` in its logs ("rewards/<name>/mean").
        self.__name__ = f"reward_service_{model}" if model else "reward_service"
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._replicas = [_Replica(u) for u in self.urls]
        self._turn: Iterator[int] = itertools.cycle(range(len(self._replicas)))
        self._rng = random.Random()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._http: httpx.AsyncClient | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self._closed = False

    # -- public API ---------------------------------------------------------------------------

    async def ascore(self, prompts: list[str], responses: list[str]) -> list[float]:
        """Scores from inside any event loop; the requests run on the client's own loop."""
        return await asyncio.wrap_future(self.submit(prompts, responses))

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        """Scores, blocking until every chunk is scored (or raising RewardServiceError)."""
        return self.submit(prompts, responses).result()

    def submit(
        self, prompts: list[str], responses: list[str]
    ) -> concurrent.futures.Future[list[float]]:
        """Starts scoring in the background and returns at once, so generation can go on."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        return self._run(self._score_all(list(prompts), list(responses)))

    def __call__(self, prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
        """TRL ``reward_funcs`` signature; extra dataset columns in ``kwargs`` are ignored."""
        return self.score([as_text(p) for p in prompts], [as_text(c) for c in completions])

    def close(self) -> None:
        """Closes the connection pool and stops the background loop; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._aclose_http(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()

    def __enter__(self) -> RewardClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> RewardClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.close)

    # -- background loop ----------------------------------------------------------------------

    def _run(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        with self._lock:
            if self._closed:
                coro.close()
                raise RuntimeError("RewardClient is closed")
            if self._loop is None:
                self._start_loop()
            assert self._loop is not None
            return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def _start_loop(self) -> None:
        loop = asyncio.new_event_loop()
        started = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout),
                headers=self._headers,
                limits=httpx.Limits(
                    max_connections=self.max_concurrency,
                    max_keepalive_connections=self.max_concurrency,
                ),
            )
            self._semaphore = asyncio.Semaphore(self.max_concurrency)
            loop.call_soon(started.set)
            loop.run_forever()

        self._thread = threading.Thread(target=serve, name="reward-client", daemon=True)
        self._thread.start()
        started.wait()
        self._loop = loop

    async def _aclose_http(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    # -- scoring ------------------------------------------------------------------------------

    async def _score_all(self, prompts: list[str], responses: list[str]) -> list[float]:
        # gather keeps the order of its arguments, so chunk results line up with the inputs
        # however the requests interleave.
        chunks = chunked(len(prompts), self.chunk_size)
        results = await asyncio.gather(
            *(self._score_chunk([prompts[i] for i in c], [responses[i] for i in c]) for c in chunks)
        )
        return [s for chunk in results for s in chunk]

    async def _score_chunk(self, prompts: list[str], responses: list[str]) -> list[float]:
        assert self._semaphore is not None
        payload: dict[str, Any] = {
            "inputs": [
                {"prompt": p, "response": r} for p, r in zip(prompts, responses, strict=True)
            ],
            "normalize": self.normalize,
        }
        if self.model is not None:
            payload["model"] = self.model
        async with self._semaphore:
            return await self._post_with_retries(payload, len(prompts))

    def _next_replica(self) -> _Replica:
        """The next replica in turn that is not cooling down (the next in turn if all are)."""
        now = time.monotonic()
        for _ in range(len(self._replicas)):
            replica = self._replicas[next(self._turn)]
            if replica.down_until <= now:
                return replica
        return replica

    def _any_replica_up(self) -> bool:
        now = time.monotonic()
        return any(r.down_until <= now for r in self._replicas)

    async def _post_with_retries(self, payload: dict[str, Any], n: int) -> list[float]:
        assert self._http is not None
        last_status: int | None = None
        last_cause = "no attempt made"
        for attempt in range(self.max_retries + 1):
            replica = self._next_replica()
            retry_after: float | None = None
            failover = False
            try:
                response = await self._http.post(f"{replica.url}/v1/score", json=payload)
            except httpx.TransportError as exc:
                if isinstance(exc, httpx.ConnectError):
                    # Nothing listens there: skip it for a while and, if another replica is up,
                    # go there now rather than back off.
                    replica.down_until = time.monotonic() + REPLICA_COOLDOWN_S
                    failover = self._any_replica_up()
                last_status = None
                last_cause = f"{type(exc).__name__} from {replica.url}: {exc or 'no detail'}"
            else:
                if response.status_code == 200:
                    return self._parse_scores(response, n)
                message, code = error_message(response)
                last_status = response.status_code
                last_cause = f"HTTP {response.status_code} from {replica.url}: {message}"
                if response.status_code not in RETRYABLE_STATUS:
                    raise RewardServiceError(
                        f"reward service rejected the request: {last_cause}",
                        status=response.status_code,
                        code=code,
                    )
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if attempt < self.max_retries and not failover:
                await asyncio.sleep(
                    backoff_delay(
                        attempt, self.backoff_base, self.backoff_max, self._rng, retry_after
                    )
                )
        raise RewardServiceError(
            f"reward service failed after {self.max_retries + 1} attempts; last: {last_cause}",
            status=last_status,
        )

    @staticmethod
    def _parse_scores(response: httpx.Response, n: int) -> list[float]:
        """Scores from a 200 body, refusing anything but exactly ``n`` finite numbers."""
        try:
            scores = response.json()["scores"]
        except (ValueError, KeyError, TypeError) as exc:
            raise RewardServiceError(
                f"reward service sent a 200 without a 'scores' list: {response.text[:200]!r}",
                status=200,
            ) from exc
        if not isinstance(scores, list) or len(scores) != n:
            got = len(scores) if isinstance(scores, list) else type(scores).__name__
            raise RewardServiceError(
                f"reward service returned {got} scores for {n} inputs", status=200
            )
        out = []
        for s in scores:
            if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s):
                raise RewardServiceError(
                    f"reward service returned a non-finite score {s!r}", status=200
                )
            out.append(float(s))
        return out
