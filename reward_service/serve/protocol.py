"""uvicorn's HTTP/1.1 protocol with a deadline on request headers.

uvicorn closes idle keep-alive connections, but a client that sends half a request line and
then one byte now and then holds its connection, and the memory behind it, forever: a few
hundred such clients exhaust a server without sending any real load. Here every connection gets
``header_timeout`` seconds from its opening, and again from the end of each response, to finish
the next request's headers; past that it gets a 408 and is closed. The body has a deadline of
its own, enforced by the request guard, which can still answer with the service's error shape.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from reward_service.serve.metrics import Metrics

TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 40\r\nconnection: close\r\n\r\nrequest headers did not arrive in time\r\n"
)


def header_deadline_protocol(header_timeout: float, metrics: Metrics) -> type[HttpToolsProtocol]:
    """The protocol class to give ``uvicorn.Config(http=...)``."""

    class HeaderDeadlineProtocol(HttpToolsProtocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.pipeline and not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(header_timeout, self._expire)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self) -> None:
            self._deadline = None
            if not self.transport.is_closing():
                metrics.timeouts.labels("headers").inc()
                self.transport.write(TIMEOUT_RESPONSE)
                self.transport.close()

    return HeaderDeadlineProtocol
