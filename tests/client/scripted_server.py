"""A real, scriptable HTTP server on loopback for RewardClient tests.

It speaks plain HTTP/1.1 over asyncio sockets so a test can make it misbehave the ways a real
service does: answer 429 with ``Retry-After``, 503, 413 over an item limit, a body that is not
JSON, close the connection without answering, or answer late. Each request takes the next
action of the script; an empty script answers 200 with one score per input, ``len(response)``,
so a test can tell which score belongs to which input.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Reply:
    """Answer with this status (and JSON body and headers) instead of scores."""

    status: int
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Drop:
    """Read the request, then close the socket without a byte of response."""


@dataclass
class Late:
    """Answer with scores, but only after ``seconds``."""

    seconds: float


@dataclass
class Raw:
    """Answer with this status and these exact body bytes (say, JSON that is not JSON)."""

    status: int
    body: bytes


Action = Reply | Drop | Late | Raw


@dataclass
class Seen:
    """One request as the server received it."""

    at: float
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class ScriptedServer:
    def __init__(self) -> None:
        self.script: deque[Action] = deque()
        self.seen: list[Seen] = []
        self.delay_for: Callable[[dict[str, Any]], float] | None = None
        #: Requests with more inputs than this get 413, as the service's ``max_items`` does.
        self.max_items: int | None = None
        self.in_flight = 0
        #: Requests whose client closed the connection before the answer was ready.
        self.hung_up = 0
        self.max_in_flight = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    def start(self, port: int = 0) -> ScriptedServer:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", port), self._loop
        ).result()
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *lines = head.decode("latin-1").split("\r\n")
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in lines if line)
                }
                raw = await reader.readexactly(int(headers.get("content-length", "0")))
                body = json.loads(raw) if raw else {}
                self.seen.append(Seen(time.monotonic(), request_line.split()[1], headers, body))
                action = self.script.popleft() if self.script else Late(0.0)
                if isinstance(action, Drop):
                    writer.transport.abort()
                    return
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
                try:
                    status, payload, extra = await self._respond(action, body, reader)
                finally:
                    self.in_flight -= 1
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                header_lines = [
                    f"HTTP/1.1 {status} X",
                    "Content-Type: application/json",
                    f"Content-Length: {len(data)}",
                    *(f"{k}: {v}" for k, v in extra.items()),
                ]
                writer.write(("\r\n".join(header_lines) + "\r\n\r\n").encode() + data)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            writer.transport.abort()

    async def _sleep_unless_hung_up(self, seconds: float, reader: asyncio.StreamReader) -> None:
        """Wait like a slow model, but notice a client that closes the connection meanwhile."""
        hang_up = asyncio.ensure_future(reader.read(1))
        done, _ = await asyncio.wait([hang_up], timeout=seconds)
        if done and hang_up.result() == b"":
            self.hung_up += 1
            raise ConnectionError("client closed the connection")
        hang_up.cancel()

    async def _respond(
        self, action: Action, body: dict[str, Any], reader: asyncio.StreamReader
    ) -> tuple[int, dict[str, Any] | bytes, dict[str, str]]:
        if isinstance(action, Reply):
            return action.status, action.body or {}, action.headers
        if isinstance(action, Raw):
            return action.status, action.body, {}
        inputs = body.get("inputs", [])
        if self.max_items is not None and len(inputs) > self.max_items:
            error = {"code": "too_many_items", "message": f"{len(inputs)} > {self.max_items}"}
            return 413, {"error": error}, {}
        delay = action.seconds + (self.delay_for(body) if self.delay_for else 0.0)
        await self._sleep_unless_hung_up(delay, reader)
        scores = [float(len(item["response"])) for item in inputs]
        return (
            200,
            {
                "model": body.get("model", "scripted"),
                "version": "1",
                "scores": scores,
                "tokens": [1] * len(inputs),
                "truncated": [False] * len(inputs),
            },
            {},
        )
