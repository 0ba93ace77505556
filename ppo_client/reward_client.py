"""HTTP client for the reward service, usable from any training job.

The PPO trainer uses it to score rollouts while the next chunk generates; TRL's GRPO/RLOO
trainers take it as a ``reward_funcs`` entry; any script can call :meth:`RewardClient.score`.

All requests run on one private event loop in a background thread. That keeps a single
``httpx.AsyncClient`` (and its connection pool) bound to a single loop, whatever the caller is:
blocking code, a ``concurrent.futures.Future`` consumer, or another event loop awaiting
:meth:`RewardClient.ascore`. The loop, its thread and the pool are made on first use, per process,
so a client can be pickled into a worker process or survive a ``fork``. The module imports no
torch, so a job that only needs rewards stays light.

A reward is never silently missing: every chunk either gets exactly one finite score per input
or the call raises :class:`RewardServiceError`. A service that is briefly away (a pod restart, a
rolling update, a full queue) is waited for, for up to ``retry_budget`` seconds per chunk.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import email.utils
import itertools
import logging
import math
import os
import random
import re
import threading
import time
import weakref
from collections.abc import Coroutine, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx

T = TypeVar("T")

logger = logging.getLogger(__name__)

#: Statuses that mean "the service is busy or briefly unavailable, ask again later": the queue is
#: full (429), the replica is not ready or draining (503), a proxy in front of it lost the
#: upstream (502, 504) or gave up waiting for the request (408). They are retried for the whole
#: retry budget.
RETRYABLE_STATUS = frozenset({408, 429, 502, 503, 504})

#: Other 5xx are server bugs. One may be a batch-mate's fault and pass on a second try, but a
#: request that keeps hitting one must fail in seconds, not after the whole retry budget.
SERVER_ERROR_RETRIES = 2

#: Failures on the way to the service or back that say nothing about the request itself: nothing
#: listening, a dropped connection, a timeout, a proxy that could not reach the upstream. A
#: malformed URL, an unsupported scheme or a header httpx refuses to send are not among them.
RETRYABLE_TRANSPORT: tuple[type[Exception], ...] = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
    httpx.ProxyError,
)

#: How long a replica that refused a connection is skipped by the round-robin, so a dead replica
#: costs one failed attempt per cooldown rather than one per request.
REPLICA_COOLDOWN_S = 5.0

#: A failure streak shorter than this is backpressure (a 429 answered a moment later), not an
#: outage: it is retried without a log line, so an overloaded service does not flood the log.
OUTAGE_LOG_AFTER_S = 1.0

#: Connecting gets less than the whole per-request timeout: an address that drops packets (a
#: deleted pod's IP) should cost seconds per attempt, not the time a long request may take.
CONNECT_TIMEOUT_S = 5.0


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
    jittered = rng.uniform(0.0, min(cap, base * (2.0 ** min(attempt, 64))))
    if retry_after is None:
        return jittered
    return max(min(retry_after, cap), jittered)


def format_duration(seconds: float) -> str:
    """``4.2 s``, ``45 s``, ``5 min``, ``2 min 30 s``: how long, the way a log reader reads it."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min" if rest == 0 else f"{minutes} min {rest} s"


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``, so a key carried in it never reaches a log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def check_base_url(url: str) -> str:
    """A service base URL without its trailing slash, or ValueError saying what is wrong."""
    shown = redact_url(url)
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ValueError(f"reward service URL {shown!r} is not a URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"reward service URL {shown!r} must look like http://host:port")
    path = parsed.path.rstrip("/")
    if path.endswith(("/v1/score", "/get_reward")):
        raise ValueError(
            f"reward service URL {shown!r}: give the service's base URL; the client adds /v1/score"
        )
    return url.rstrip("/")


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


def checked_texts(name: str, values: Sequence[Any]) -> list[str]:
    """The values as a list, refusing at the call what the service could never be sent.

    A non-string would come back as a 422 for the whole chunk, and a string holding a lone
    surrogate cannot be encoded as UTF-8 at all; both are the caller's bug, named by index.
    """
    out = list(values)
    for i, value in enumerate(out):
        if not isinstance(value, str):
            raise TypeError(f"{name}[{i}] is {type(value).__name__}, expected str")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(
                f"{name}[{i}] cannot be sent as UTF-8: {exc.reason} at character {exc.start}"
            ) from None
    return out


def chunked(n: int, size: int) -> list[range]:
    """Index ranges of consecutive chunks of at most ``size`` items covering ``range(n)``."""
    return [range(start, min(start + size, n)) for start in range(0, n, size)]


def error_message(response: httpx.Response) -> tuple[str, str | None]:
    """(message, code) from the service's ``{"error": {"code", "message"}}``, a plain
    ``{"error": "..."}`` (Open Inference Protocol style), or the start of the raw body."""
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        text = response.text.strip()
        return (text[:300] or response.reason_phrase), None
    if isinstance(error, dict):
        code = error.get("code")
        return str(error.get("message", error))[:300], code if isinstance(code, str) else None
    return str(error)[:300], None


def parse_scores(response: httpx.Response, n: int) -> list[float]:
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
        raise RewardServiceError(f"reward service returned {got} scores for {n} inputs", status=200)
    out = []
    for i, s in enumerate(scores):
        value = math.nan
        if isinstance(s, (int, float)) and not isinstance(s, bool):
            try:
                value = float(s)
            except OverflowError:
                value = math.inf
        if not math.isfinite(value):
            raise RewardServiceError(
                f"reward service returned {s!r} as the score of input {i} of {n}; "
                "the model may produce NaN or infinity for it",
                status=200,
            )
        out.append(value)
    return out


class _Retryable(Exception):
    """One attempt failed in a way that a later attempt may not."""

    def __init__(
        self,
        cause: str,
        status: int | None = None,
        retry_after: float | None = None,
        failover: bool = False,
    ) -> None:
        super().__init__(cause)
        self.cause, self.status, self.retry_after, self.failover = (
            cause,
            status,
            retry_after,
            failover,
        )


class _TooLarge(Exception):
    """413: the chunk is over the service's item or byte limit; halves may pass."""


@dataclass
class _Replica:
    """One service URL, until when the round-robin skips it, and whether it is failing now."""

    url: str
    shown: str
    down_until: float = 0.0
    refusing: bool = False


class _Runtime:
    """The client's event loop, its thread and its connection pool, for one process.

    Nothing here refers back to the RewardClient, so a client nobody holds any more is collected
    and its finalizer stops this loop: no thread or socket outlives the client.
    """

    def __init__(self, headers: dict[str, str], timeout: float, max_concurrency: int) -> None:
        self.pid = os.getpid()
        self._settings = (headers, timeout, max_concurrency)
        self._ready = threading.Event()
        self._failed: BaseException | None = None
        self.thread = threading.Thread(target=self._serve, name="reward-client", daemon=True)
        self.thread.start()
        self._ready.wait()
        if self._failed is not None:
            raise RuntimeError(f"RewardClient could not start: {self._failed}") from self._failed

    def _serve(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            if self._ready.is_set():
                raise
            self._failed = exc  # the starting thread raises it
            self._ready.set()

    async def _main(self) -> None:
        headers, timeout, max_concurrency = self._settings
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.semaphore = asyncio.Semaphore(max_concurrency)
        async with httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT_S)),
            headers=headers,
            limits=httpx.Limits(
                max_connections=max_concurrency, max_keepalive_connections=max_concurrency
            ),
        ) as self.http:
            self._ready.set()
            await self._stop.wait()
            # Cancel and await every request still running before the pool closes, so no task
            # is destroyed pending and no connection is left open.
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self) -> None:
        """Cancels what is running, closes the pool, stops the thread; a no-op in a fork child,
        where the thread does not exist and the sockets are the parent's."""
        if os.getpid() != self.pid or not self.thread.is_alive():
            return
        try:
            self.loop.call_soon_threadsafe(self._stop.set)
        except RuntimeError:  # the loop closed between the check and the call
            return
        if threading.current_thread() is not self.thread:
            self.thread.join()


class RewardClient:
    """Scores (prompt, response) pairs with the reward service over HTTP.

    ``urls`` is one base URL or several replicas, used round-robin per request; a replica that
    fails is left for the next one. Inputs are split into chunks of ``chunk_size`` pairs and at
    most ``max_concurrency`` requests are in flight. Each request may take ``timeout`` seconds.
    A chunk that fails with 429/408/502/503/504, a connection error or a timeout is retried with
    full-jitter exponential backoff (``backoff_base`` doubling up to ``backoff_max`` seconds,
    never sooner than the server's ``Retry-After``) until it has been failing for
    ``retry_budget`` seconds; then the call raises :class:`RewardServiceError`. A chunk over the
    service's size limit (413) is split in halves. Other 4xx fail at once with the server's
    message. ``normalize`` asks for scores normalized with the model's reference mean/std.

    The client pickles as its settings: the copy opens its own connections on first use.
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
        retry_budget: float = 300.0,
        backoff_base: float = 0.5,
        backoff_max: float = 10.0,
        normalize: bool = False,
    ) -> None:
        url_list = [urls] if isinstance(urls, str) else list(urls)
        if not url_list:
            raise ValueError("RewardClient needs at least one reward service URL")
        for name, value, low in (
            ("chunk_size", chunk_size, 1),
            ("max_concurrency", max_concurrency, 1),
        ):
            if value < low:
                raise ValueError(f"{name} must be >= {low}, got {value}")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        for name, value in (
            ("retry_budget", retry_budget),
            ("backoff_base", backoff_base),
            ("backoff_max", backoff_max),
        ):
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value}")
        if api_key is not None and not re.fullmatch(r"[!-~]+", api_key):
            raise ValueError("api_key must be printable ASCII without spaces")
        self._settings: dict[str, Any] = {
            "urls": url_list,
            "model": model,
            "api_key": api_key,
            "chunk_size": chunk_size,
            "max_concurrency": max_concurrency,
            "timeout": timeout,
            "retry_budget": retry_budget,
            "backoff_base": backoff_base,
            "backoff_max": backoff_max,
            "normalize": normalize,
        }
        self.urls = [check_base_url(u) for u in url_list]
        self.model = model
        self.chunk_size = chunk_size
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self.retry_budget = retry_budget
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.normalize = normalize
        # TRL names each reward function by ``__name__`` in its logs ("rewards/<name>/mean").
        self.__name__ = f"reward_service_{model}" if model else "reward_service"
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._replicas = [_Replica(u, redact_url(u)) for u in self.urls]
        self._turn: Iterator[int] = itertools.cycle(range(len(self._replicas)))
        self._rng = random.Random()
        self._lock = threading.Lock()
        self._runtime: _Runtime | None = None
        self._finalizer: weakref.finalize | None = None
        self._closed = False
        self._outage_since: float | None = None
        self._outage_failures = 0
        self._outage_logged = False
        _LIVE_CLIENTS.add(self)

    # -- pickling: settings only ---------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        return dict(self._settings)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    # -- public API ---------------------------------------------------------------------------

    async def ascore(self, prompts: list[str], responses: list[str]) -> list[float]:
        """Scores from inside any event loop; the requests run on the client's own loop.

        Cancelling the awaiting task cancels the requests too.
        """
        return await asyncio.wrap_future(self.submit(prompts, responses))

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        """Scores, blocking until every chunk is scored (or raising RewardServiceError)."""
        return self.submit(prompts, responses).result()

    def submit(
        self, prompts: list[str], responses: list[str]
    ) -> concurrent.futures.Future[list[float]]:
        """Starts scoring in the background and returns at once, so generation can go on.

        ``future.cancel()`` stops the requests and retries of this call.
        """
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        prompts = checked_texts("prompts", prompts)
        responses = checked_texts("responses", responses)
        runtime = self._runtime_here()
        return runtime.submit(self._score_all(runtime, prompts, responses))

    def __call__(self, prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
        """TRL ``reward_funcs`` signature; extra dataset columns in ``kwargs`` are ignored."""
        return self.score([as_text(p) for p in prompts], [as_text(c) for c in completions])

    def close(self) -> None:
        """Cancels requests in flight, closes the connection pool, stops the loop; idempotent."""
        with self._lock:
            self._closed = True
            finalizer, self._finalizer, self._runtime = self._finalizer, None, None
        if finalizer is not None:
            finalizer()

    def __enter__(self) -> RewardClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> RewardClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.close)

    # -- the background loop ------------------------------------------------------------------

    def _runtime_here(self) -> _Runtime:
        """This process's loop and pool, started on first use."""
        with self._lock:
            if self._closed:
                raise RuntimeError("RewardClient is closed")
            if self._runtime is None:
                runtime = _Runtime(self._headers, self.timeout, self.max_concurrency)
                # Closes the loop when the client is collected, or at interpreter exit.
                self._finalizer = weakref.finalize(self, runtime.close)
                self._runtime = runtime
            return self._runtime

    def _forget_runtime_after_fork(self) -> None:
        """In a fork child: the loop thread was not copied, so start afresh on next use."""
        self._lock = threading.Lock()
        if self._finalizer is not None:
            self._finalizer.detach()
        self._finalizer, self._runtime = None, None
        self._outage_since = None

    # -- scoring ------------------------------------------------------------------------------

    async def _score_all(
        self, runtime: _Runtime, prompts: list[str], responses: list[str]
    ) -> list[float]:
        items = [{"prompt": p, "response": r} for p, r in zip(prompts, responses, strict=True)]
        chunks = [items[c.start : c.stop] for c in chunked(len(items), self.chunk_size)]
        results = await _all_or_nothing([self._score_chunk(runtime, c) for c in chunks])
        return [s for chunk in results for s in chunk]

    async def _score_chunk(self, runtime: _Runtime, items: list[dict[str, str]]) -> list[float]:
        """One chunk, retried until it is scored or has been failing for the retry budget."""
        payload: dict[str, Any] = {"inputs": items, "normalize": self.normalize}
        if self.model is not None:
            payload["model"] = self.model
        failing_since: float | None = None
        attempts = waits = server_errors = 0
        while True:
            replica = self._next_replica()
            attempts += 1
            try:
                scores = await self._post(runtime, replica, payload, len(items))
            except _TooLarge as exc:
                if len(items) == 1:
                    raise RewardServiceError(
                        f"reward service refused a single input as too large: {exc}", status=413
                    ) from None
                half = len(items) // 2
                halves = [items[:half], items[half:]]
                first, second = await _all_or_nothing(
                    [self._score_chunk(runtime, h) for h in halves]
                )
                return first + second
            except _Retryable as failure:
                now = time.monotonic()
                failing_since = now if failing_since is None else failing_since
                if failure.status is not None and failure.status not in RETRYABLE_STATUS:
                    server_errors += 1
                    if server_errors > SERVER_ERROR_RETRIES:
                        raise RewardServiceError(
                            f"reward service failed {server_errors} times: {failure.cause}",
                            status=failure.status,
                        ) from None
                remaining = failing_since + self.retry_budget - now
                if remaining <= 0:
                    raise RewardServiceError(
                        f"reward service failed for {format_duration(now - failing_since)} "
                        f"({attempts} attempts), the whole retry budget of "
                        f"{format_duration(self.retry_budget)}; last: {failure.cause}",
                        status=failure.status,
                    ) from None
                if failure.failover:
                    continue
                self._note_outage(failure.cause)
                delay = backoff_delay(
                    waits, self.backoff_base, self.backoff_max, self._rng, failure.retry_after
                )
                await asyncio.sleep(min(delay, remaining))
                waits += 1
            else:
                self._note_recovery()
                return scores

    async def _post(
        self, runtime: _Runtime, replica: _Replica, payload: dict[str, Any], n: int
    ) -> list[float]:
        """One attempt: scores, or _Retryable / _TooLarge / RewardServiceError saying why not."""
        try:
            async with runtime.semaphore:
                response = await runtime.http.post(f"{replica.url}/v1/score", json=payload)
        except RETRYABLE_TRANSPORT as exc:
            cause = f"{type(exc).__name__} from {replica.shown}: {exc or 'no detail'}"
            failover = False
            if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
                # Nothing listens there: skip it for a while and, if another replica is up, go
                # there now rather than back off.
                replica.down_until = time.monotonic() + REPLICA_COOLDOWN_S
                failover = self._any_replica_up()
                if len(self._replicas) > 1 and not replica.refusing:
                    logger.warning(
                        "reward service replica %s is unreachable (%s)", replica.shown, exc
                    )
                replica.refusing = True
            raise _Retryable(cause, failover=failover) from exc
        except httpx.HTTPError as exc:
            raise RewardServiceError(
                f"cannot send a request to {replica.shown}: {type(exc).__name__}: {exc}"
            ) from exc
        if replica.refusing:
            replica.refusing = False
            if len(self._replicas) > 1:
                logger.info("reward service replica %s is answering again", replica.shown)
        status = response.status_code
        if status == 200:
            return parse_scores(response, n)
        message, code = error_message(response)
        cause = f"HTTP {status} from {replica.shown}: {message}"
        if status == 413:
            raise _TooLarge(cause)
        if status in RETRYABLE_STATUS or status >= 500:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise _Retryable(cause, status=status, retry_after=retry_after)
        raise RewardServiceError(
            f"reward service rejected the request: {cause}", status=status, code=code
        )

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

    def _note_outage(self, cause: str) -> None:
        """One log line once the service has been failing for a moment, not one per retry."""
        now = time.monotonic()
        if self._outage_since is None:
            self._outage_since, self._outage_failures, self._outage_logged = now, 0, False
        self._outage_failures += 1
        if not self._outage_logged and now - self._outage_since >= OUTAGE_LOG_AFTER_S:
            self._outage_logged = True
            logger.warning(
                "reward service unavailable for %s (%s); retrying with backoff for up to %s "
                "per request",
                format_duration(now - self._outage_since),
                cause,
                format_duration(self.retry_budget),
            )

    def _note_recovery(self) -> None:
        if self._outage_since is not None and self._outage_logged:
            logger.info(
                "reward service answering again after %s (%d failed attempts)",
                format_duration(time.monotonic() - self._outage_since),
                self._outage_failures,
            )
        self._outage_since = None


async def _all_or_nothing(coros: list[Coroutine[Any, Any, T]]) -> list[T]:
    """``gather`` that cancels the rest when one fails: a chunk that gave up must not leave its
    siblings retrying in the background for minutes."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


#: Every client alive in this process, so a fork child can drop the loops it did not inherit.
_LIVE_CLIENTS: weakref.WeakSet[RewardClient] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for client in list(_LIVE_CLIENTS):
        client._forget_runtime_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
