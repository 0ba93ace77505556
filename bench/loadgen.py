"""Async HTTP load generator for the reward service (and the naive baseline), loopback only.

The default client is a minimal HTTP/1.1 keep-alive client on asyncio streams: httpx costs about
3 ms of CPU per request here, and on two shared cores that made the load generator, not the
server, the bottleneck being measured. ``--client httpx`` keeps the httpx path.

Closed loop (``--concurrency N``): N clients each send a request, wait for the answer, send the
next: the classic saturation measurement. With ``--honor-retry-after`` a closed-loop client that
gets a 429 sleeps for its ``Retry-After`` first, as RewardClient does (OpenRLHF sleeps 1 s);
without it, it sends again at once, the worst case. Open loop (``--rate R``): requests leave on
a Poisson schedule whatever the server does, the only honest way to overload a server, since a
closed loop slows down with it. Both stop at ``--requests`` or ``--duration``, whichever comes
first, so a run is bounded however slow the server is. A 429 without ``Retry-After`` is counted
apart, as ``429-no-retry-after``.

    python bench/loadgen.py --url http://127.0.0.1:8000/v1/score --concurrency 64 --items 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit

import httpx
import numpy as np

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class RawConnection:
    """One keep-alive HTTP/1.1 connection; enough protocol for JSON POSTs to our servers."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.head = f"POST {parts.path} HTTP/1.1\r\nHost: {self.host}\r\n{extra}".encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, body: bytes) -> tuple[int, str | None]:
        """Status and Retry-After of one exchange."""
        reused = self.writer is not None
        try:
            return await self._exchange(body)
        except (ConnectionError, asyncio.IncompleteReadError):
            self.close()
            if not reused:
                raise
            # The server may close a keep-alive connection that sat idle; that is not a failed
            # request, so send it once more on a fresh connection.
            return await self._exchange(body)

    async def _exchange(self, body: bytes) -> tuple[int, str | None]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(self.head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionResetError("server closed the connection")
        status = int(status_line.split()[1])
        length, close, retry_after = 0, False, None
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
            elif name == b"retry-after":
                retry_after = value.strip().decode()
        await self.reader.readexactly(length)
        if close:
            self.close()
        return status, retry_after

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


@dataclass
class LoadResult:
    mode: str
    concurrency: int
    rate: float
    items_per_request: int
    sent: int
    ok: int
    seconds: float
    statuses: dict[str, int]
    items_per_second: float
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    latencies_ms: list[float] = field(default_factory=list, repr=False)

    def summary(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "latencies_ms"}


def check_loopback(url: str) -> None:
    host = urlsplit(url).hostname
    if host not in LOOPBACK:
        raise SystemExit(f"loadgen: refusing {url}: only loopback hosts ({', '.join(LOOPBACK)})")


def corpus_texts(n: int = 2000, seed: int = 0, max_chars: int = 300) -> list[str]:
    """Short fortunes: real text of varied length (~5-80 tokens), the same for every server."""
    from reward_service.data.corpus import read_entries

    texts = read_entries(max_chars=max_chars)
    random.Random(seed).shuffle(texts)
    return texts[:n]


def payload(route: str, texts: list[str]) -> dict:
    return {"query": texts} if route.endswith("/get_reward") else {"inputs": texts}


def _result(mode, concurrency, rate, items, sent, latencies, statuses, seconds) -> LoadResult:
    ok = statuses.get("200", 0)
    lat = np.array(latencies) if latencies else np.array([np.nan])
    return LoadResult(
        mode=mode,
        concurrency=concurrency,
        rate=rate,
        items_per_request=items,
        sent=sent,
        ok=ok,
        seconds=seconds,
        statuses=dict(statuses),
        items_per_second=ok * items / seconds,
        requests_per_second=ok / seconds,
        p50_ms=float(np.percentile(lat, 50) * 1000),
        p99_ms=float(np.percentile(lat, 99) * 1000),
        latencies_ms=[x * 1000 for x in latencies],
    )


async def run_load(
    url: str,
    texts: list[str],
    *,
    items: int = 1,
    concurrency: int = 1,
    rate: float = 0.0,
    max_requests: int = 1000,
    duration: float = 20.0,
    headers: dict[str, str] | None = None,
    seed: int = 0,
    client_kind: str = "raw",
    honor_retry_after: bool = False,
) -> LoadResult:
    """Latencies are kept for 200 answers only: a fast 429 is not a served request."""
    check_loopback(url)
    rng = random.Random(seed)
    bodies = [json.dumps(payload(url, rng.sample(texts, items))).encode() for _ in range(256)]
    statuses: Counter[str] = Counter()
    latencies: list[float] = []
    sent = 0
    limits = httpx.Limits(max_connections=max(concurrency, 1024), max_keepalive_connections=1024)
    hdrs = {"content-type": "application/json", **(headers or {})}
    idle: list[RawConnection] = []
    async with httpx.AsyncClient(limits=limits, timeout=120.0, headers=hdrs) as client:

        async def post(body: bytes) -> tuple[str, str | None]:
            if client_kind == "httpx":
                response = await client.post(url, content=body)
                return str(response.status_code), response.headers.get("retry-after")
            connection = idle.pop() if idle else RawConnection(url, hdrs)
            try:
                status, retry_after = await asyncio.wait_for(connection.post(body), 120)
            except BaseException:
                connection.close()
                raise
            idle.append(connection)
            return str(status), retry_after

        async def one(body: bytes) -> float:
            """Sends one request; returns how long its client should wait before the next."""
            started = time.perf_counter()
            retry_after = None
            try:
                code, retry_after = await post(body)
            except (httpx.HTTPError, OSError, asyncio.TimeoutError, ValueError) as exc:
                code = type(exc).__name__
            if code == "429" and retry_after is None:
                code = "429-no-retry-after"
            statuses[code] += 1
            if code == "200":
                latencies.append(time.perf_counter() - started)
            if honor_retry_after and code == "429" and retry_after is not None:
                return float(retry_after)
            return 0.0

        started = time.perf_counter()
        deadline = started + duration
        if rate <= 0:

            async def client_loop() -> None:
                nonlocal sent
                while sent < max_requests and time.perf_counter() < deadline:
                    sent += 1
                    pause = await one(bodies[sent % len(bodies)])
                    await asyncio.sleep(min(pause, max(0.0, deadline - time.perf_counter())))

            loops = [asyncio.create_task(client_loop()) for _ in range(concurrency)]
            await _bounded(loops, deadline + duration, statuses)
            mode = "closed"
        else:
            tasks = []
            next_at = started
            while sent < max_requests and next_at < deadline:
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
                sent += 1
                tasks.append(asyncio.create_task(one(bodies[sent % len(bodies)])))
                next_at += rng.expovariate(rate)
            await _bounded(tasks, deadline + duration, statuses)
            mode = "open"
        seconds = time.perf_counter() - started
        for connection in idle:
            connection.close()
    return _result(mode, concurrency, rate, items, sent, latencies, statuses, seconds)


async def _bounded(tasks: list[asyncio.Task], hard_stop: float, statuses: Counter) -> None:
    """Wait for in-flight requests until ``hard_stop``; cancel and count what is left, so a
    slow server cannot stretch a run beyond twice its duration."""
    _, pending = await asyncio.wait(tasks, timeout=max(0.0, hard_stop - time.perf_counter()))
    for task in pending:
        task.cancel()
    if pending:
        statuses["unfinished"] += len(pending)
        await asyncio.gather(*pending, return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000/v1/score")
    parser.add_argument("--items", type=int, default=1, help="texts per request")
    parser.add_argument("--concurrency", type=int, default=8, help="closed-loop clients")
    parser.add_argument("--rate", type=float, default=0.0, help="open loop: requests per second")
    parser.add_argument("--requests", type=int, default=1000, help="stop after this many")
    parser.add_argument("--duration", type=float, default=20.0, help="stop after this long (s)")
    parser.add_argument("--api-key", help="bearer key, when the service has auth on")
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw")
    parser.add_argument(
        "--honor-retry-after", action="store_true", help="closed loop: sleep Retry-After on 429"
    )
    args = parser.parse_args()
    headers = {"authorization": f"Bearer {args.api_key}"} if args.api_key else None
    result = asyncio.run(
        run_load(
            args.url,
            corpus_texts(),
            items=args.items,
            concurrency=args.concurrency,
            rate=args.rate,
            max_requests=args.requests,
            duration=args.duration,
            headers=headers,
            client_kind=args.client,
            honor_retry_after=args.honor_retry_after,
        )
    )
    print(json.dumps(result.summary(), indent=2))


if __name__ == "__main__":
    main()
